package embed

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/compassml/compass/internal/atomicfile"
)

// Cache keeps the vectors one embedder gave, keyed by the SHA-256 of
// each text, in one append-only file per embedder in a directory, so that
// a re-run embeds only texts it has not seen.
//
// The file, <dir>/<first 32 hex digits of SHA-256(name)>.embcache, is
//
//	header:  "CMPEMBC1" | dim uint32 | len(name) uint32 | name
//	records: SHA-256(text) [32]byte | dim float32 | CRC-32C of the hash and vector, uint32
//
// all little-endian. The header is written once, whole, by atomicfile.WriteNew
// (never over a cache another process created meanwhile); records are appended, each batch with one write and
// an fsync. Opening the file reads every record's hash and checks its
// checksum into an index of offsets; vectors are read from the file when
// asked for, so the index, not the vectors, is what stays in memory. A
// crash can leave a partly written batch at the end: the cache keeps the
// records before the first incomplete or damaged one, says so on its warn
// writer and cuts the file there, so that appends go on from a record
// boundary. Processes sharing a cache take turns (an flock on the file,
// where the system has it): an append and the reading of the records on
// opening each hold it, so that an opener never cuts a live append.
type Cache struct {
	path  string
	name  string
	dim   int
	file  *os.File // nil until the first Put creates the file
	index map[[32]byte]int64
	warn  io.Writer
}

var cacheMagic = []byte("CMPEMBC1")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenCache opens (or prepares to create) the cache of embedder name
// in dir. The cache is the one of the name's EmbedderID: a checkpoint
// moved or copied to another directory keeps its vectors. Warnings about
// a damaged file go to warn (nil: discarded).
func OpenCache(dir, name string, warn io.Writer) (*Cache, error) {
	if warn == nil {
		warn = io.Discard
	}
	name = EmbedderID(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embed: embedding cache: %w", err)
	}
	sum := sha256.Sum256([]byte(name))
	c := &Cache{
		path:  filepath.Join(dir, hex.EncodeToString(sum[:16])+".embcache"),
		name:  name,
		index: map[[32]byte]int64{},
		warn:  warn,
	}
	f, err := os.OpenFile(c.path, os.O_RDWR|os.O_APPEND, 0)
	if os.IsNotExist(err) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("embed: embedding cache: %w", err)
	}
	c.file = f
	if err := c.lockedLoad(); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// lockedLoad is load with the file's lock held.
func (c *Cache) lockedLoad() error {
	unlock, err := lockFile(c.file)
	if err != nil {
		return fmt.Errorf("embed: embedding cache %s: lock: %w", c.path, err)
	}
	defer unlock()
	return c.load()
}

// Path returns the cache file's path.
func (c *Cache) Path() string { return c.path }

// Len returns how many vectors the cache holds.
func (c *Cache) Len() int { return len(c.index) }

func (c *Cache) recordSize() int64 { return int64(32 + 4*c.dim + 4) }

// load reads the header and indexes the records.
func (c *Cache) load() error {
	r := bufio.NewReaderSize(c.file, 1<<20)
	var head [16]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || !bytes.Equal(head[:8], cacheMagic) {
		return fmt.Errorf("embed: %s is not an embedding cache (bad header)", c.path)
	}
	c.dim = int(binary.LittleEndian.Uint32(head[8:]))
	nameLen := int(binary.LittleEndian.Uint32(head[12:]))
	if c.dim <= 0 || c.dim > 1<<20 || nameLen > 1<<16 {
		return fmt.Errorf("embed: %s: bad header (dimension %d, name of %d bytes)", c.path, c.dim, nameLen)
	}
	name := make([]byte, nameLen)
	if _, err := io.ReadFull(r, name); err != nil {
		return fmt.Errorf("embed: %s: bad header: %w", c.path, err)
	}
	if string(name) != c.name {
		return fmt.Errorf("embed: %s holds vectors of %q, not %q", c.path, name, c.name)
	}
	off := int64(16 + nameLen)
	rec := make([]byte, c.recordSize())
	for {
		n, err := io.ReadFull(r, rec)
		if err == io.EOF {
			return nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return fmt.Errorf("embed: %s: %w", c.path, err)
		}
		body := rec[:len(rec)-4]
		if n < len(rec) || crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(rec[len(rec)-4:]) {
			return c.cut(off)
		}
		c.index[[32]byte(rec[:32])] = off
		off += int64(len(rec))
	}
}

// cut drops everything from off on: an incomplete or damaged record and
// whatever follows it.
func (c *Cache) cut(off int64) error {
	st, err := c.file.Stat()
	if err != nil {
		return fmt.Errorf("embed: %s: %w", c.path, err)
	}
	fmt.Fprintf(c.warn, "warning: embedding cache %s: dropping %d bytes after record %d (an interrupted write?); %d vectors kept\n",
		c.path, st.Size()-off, len(c.index), len(c.index))
	if err := c.file.Truncate(off); err != nil {
		return fmt.Errorf("embed: %s: %w", c.path, err)
	}
	return c.file.Sync()
}

// Get returns the vector cached for the text with this SHA-256, if any.
func (c *Cache) Get(hash [32]byte) ([]float32, bool, error) {
	off, ok := c.index[hash]
	if !ok {
		return nil, false, nil
	}
	rec := make([]byte, c.recordSize())
	if _, err := c.file.ReadAt(rec, off); err != nil {
		return nil, false, fmt.Errorf("embed: %s: %w", c.path, err)
	}
	if crc32.Checksum(rec[:len(rec)-4], castagnoli) != binary.LittleEndian.Uint32(rec[len(rec)-4:]) {
		return nil, false, fmt.Errorf("embed: %s: record at byte %d is damaged", c.path, off)
	}
	if [32]byte(rec[:32]) != hash {
		return nil, false, fmt.Errorf("embed: %s: the record at byte %d is another text's (the file was cut and rewritten since it was opened?)", c.path, off)
	}
	v := make([]float32, c.dim)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(rec[32+4*i:]))
	}
	return v, true, nil
}

// Put appends vectors for the texts with these hashes, in one write.
func (c *Cache) Put(hashes [][32]byte, vecs [][]float32) error {
	if len(hashes) != len(vecs) {
		return fmt.Errorf("embed: embedding cache: %d hashes for %d vectors", len(hashes), len(vecs))
	}
	if len(vecs) == 0 {
		return nil
	}
	if c.file == nil {
		if err := c.create(len(vecs[0])); err != nil {
			return err
		}
	}
	size := c.recordSize()
	buf := make([]byte, 0, int64(len(vecs))*size)
	for i, v := range vecs {
		if len(v) != c.dim {
			return fmt.Errorf("embed: embedding cache %s: a vector of %d values, the cache holds %d", c.path, len(v), c.dim)
		}
		start := len(buf)
		buf = append(buf, hashes[i][:]...)
		for _, x := range v {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf[start:], castagnoli))
	}
	unlock, err := lockFile(c.file)
	if err != nil {
		return fmt.Errorf("embed: embedding cache %s: lock: %w", c.path, err)
	}
	defer unlock()
	if _, err := c.file.Write(buf); err != nil {
		return fmt.Errorf("embed: embedding cache %s: %w", c.path, err)
	}
	if err := c.file.Sync(); err != nil {
		return fmt.Errorf("embed: embedding cache %s: %w", c.path, err)
	}
	// O_APPEND left the offset at the end of what was just written.
	end, err := c.file.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("embed: embedding cache %s: %w", c.path, err)
	}
	off := end - int64(len(buf))
	for i := range vecs {
		c.index[hashes[i]] = off + int64(i)*size
	}
	return nil
}

// create writes the header of a new cache file, complete or not at all.
// If another process created the cache meanwhile, that file is used.
func (c *Cache) create(dim int) error {
	if dim <= 0 {
		return fmt.Errorf("embed: embedding cache: vectors of %d values", dim)
	}
	head := append([]byte(nil), cacheMagic...)
	head = binary.LittleEndian.AppendUint32(head, uint32(dim))
	head = binary.LittleEndian.AppendUint32(head, uint32(len(c.name)))
	head = append(head, c.name...)
	err := atomicfile.WriteNew(c.path, func(w io.Writer) error {
		_, err := w.Write(head)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("embed: embedding cache: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("embed: embedding cache: %w", err)
	}
	c.file = f
	if err := c.lockedLoad(); err != nil {
		c.Close()
		return err
	}
	if c.dim != dim {
		return fmt.Errorf("embed: embedding cache %s holds vectors of %d values, not %d", c.path, c.dim, dim)
	}
	return nil
}

// Close closes the cache file.
func (c *Cache) Close() error {
	if c.file == nil {
		return nil
	}
	err := c.file.Close()
	c.file = nil
	return err
}

// CachedEmbedder serves texts from an Cache and embeds only the rest
// with the embedder it wraps, adding their vectors to the cache.
type CachedEmbedder struct {
	inner  Embedder
	cache  *Cache
	hits   int
	misses int
	// Progress, when set, counts the texts served from the cache.
	Progress *Progress
}

// NewCachedEmbedder wraps inner with the cache of inner.Name() in dir.
func NewCachedEmbedder(inner Embedder, dir string, warn io.Writer) (*CachedEmbedder, error) {
	c, err := OpenCache(dir, inner.Name(), warn)
	if err != nil {
		return nil, err
	}
	return &CachedEmbedder{inner: inner, cache: c}, nil
}

// Name is the wrapped embedder's: the cache does not change the vectors.
func (c *CachedEmbedder) Name() string { return c.inner.Name() }

// Dim returns the wrapped embedder's dimension when it knows it, else
// the cache's (0 for an empty cache).
func (c *CachedEmbedder) Dim() int {
	if d, ok := c.inner.(interface{ Dim() int }); ok {
		return d.Dim()
	}
	return c.cache.dim
}

// Stats returns how many texts were served from the cache (a text that
// appears twice in one call counts once embedded, once served) and how
// many were embedded.
func (c *CachedEmbedder) Stats() (hits, misses int) { return c.hits, c.misses }

// Cache returns the cache.
func (c *CachedEmbedder) Cache() *Cache { return c.cache }

// Embed returns cached vectors where there are some and embeds the rest.
func (c *CachedEmbedder) Embed(texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	hashes := make([][32]byte, len(texts))
	var missTexts []string
	var missHashes [][32]byte
	first := map[[32]byte]int{} // a missing text's place in missTexts
	hits := 0
	for i, t := range texts {
		hashes[i] = sha256.Sum256([]byte(t))
		if _, ok := first[hashes[i]]; ok {
			hits++
			continue
		}
		v, ok, err := c.cache.Get(hashes[i])
		if err != nil {
			return nil, err
		}
		if ok {
			out[i] = v
			hits++
			continue
		}
		first[hashes[i]] = len(missTexts)
		missTexts = append(missTexts, t)
		missHashes = append(missHashes, hashes[i])
	}
	c.Progress.addCached(hits)
	if len(missTexts) > 0 {
		vecs, err := c.inner.Embed(missTexts)
		if err != nil {
			var te *TextError
			if errors.As(err, &te) && te.Index >= 0 && te.Index < len(missTexts) {
				// Name the text by its place in this call, not among the misses.
				return nil, &TextError{Index: slices.Index(hashes, missHashes[te.Index]), Err: te.Err}
			}
			return nil, err
		}
		if len(vecs) != len(missTexts) {
			return nil, fmt.Errorf("embed: %s gave %d vectors for %d texts", c.inner.Name(), len(vecs), len(missTexts))
		}
		if err := c.cache.Put(missHashes, vecs); err != nil {
			return nil, err
		}
		for i := range texts {
			if out[i] == nil {
				out[i] = vecs[first[hashes[i]]]
			}
		}
	}
	c.hits += hits
	c.misses += len(missTexts)
	return out, nil
}

// Close closes the cache.
func (c *CachedEmbedder) Close() error { return c.cache.Close() }
