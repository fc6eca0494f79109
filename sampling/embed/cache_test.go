package embed

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// embedCountingEmbedder makes a vector from each text's bytes and records what
// it was asked to embed.
type embedCountingEmbedder struct {
	name  string
	dim   int
	calls [][]string
}

func (c *embedCountingEmbedder) Name() string { return c.name }

func (c *embedCountingEmbedder) Embed(texts []string) ([][]float32, error) {
	c.calls = append(c.calls, slices.Clone(texts))
	out := make([][]float32, len(texts))
	for i, t := range texts {
		if t == "bad" {
			return nil, &TextError{Index: i, Err: errors.New("cannot embed")}
		}
		h := sha256.Sum256([]byte(t))
		v := make([]float32, c.dim)
		for j := range v {
			v[j] = float32(h[j%32]) - 127.5
		}
		out[i] = v
	}
	return out, nil
}

func (c *embedCountingEmbedder) embedded() []string {
	var all []string
	for _, call := range c.calls {
		all = append(all, call...)
	}
	return all
}

func TestCachedEmbedderHitsAndMisses(t *testing.T) {
	dir := t.TempDir()
	inner := &embedCountingEmbedder{name: "fake", dim: 5}
	c, err := NewCachedEmbedder(inner, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Embed([]string{"a", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if hits, misses := c.Stats(); hits != 1 || misses != 2 || !reflect.DeepEqual(inner.embedded(), []string{"a", "b"}) {
		t.Errorf("first call: hits %d misses %d, embedded %q", hits, misses, inner.embedded())
	}
	if !reflect.DeepEqual(first[0], first[2]) || reflect.DeepEqual(first[0], first[1]) {
		t.Errorf("vectors: %v", first)
	}
	c.Close()

	// A re-run embeds only the new text, and serves the old ones exactly.
	inner2 := &embedCountingEmbedder{name: "fake", dim: 5}
	c, err = NewCachedEmbedder(inner2, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cache().Len() != 2 {
		t.Errorf("reopened cache holds %d vectors, want 2", c.Cache().Len())
	}
	again, err := c.Embed([]string{"c", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if hits, misses := c.Stats(); hits != 2 || misses != 1 || !reflect.DeepEqual(inner2.embedded(), []string{"c"}) {
		t.Errorf("second run: hits %d misses %d, embedded %q", hits, misses, inner2.embedded())
	}
	if !reflect.DeepEqual(again[1], first[1]) || !reflect.DeepEqual(again[2], first[0]) {
		t.Errorf("cached vectors changed")
	}
	// Everything cached: the inner embedder is not called at all.
	if _, err := c.Embed([]string{"a", "b", "c"}); err != nil || len(inner2.calls) != 1 {
		t.Errorf("all cached: %d calls, %v", len(inner2.calls), err)
	}
	c.Close()

	// Another embedder name is another cache.
	other := &embedCountingEmbedder{name: "fake;maxlen=8", dim: 5}
	c, err = NewCachedEmbedder(other, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Embed([]string{"a"}); err != nil || len(other.calls) != 1 {
		t.Errorf("other embedder: %d calls, %v", len(other.calls), err)
	}
	c.Close()
}

// The same checkpoint in another directory makes the same vectors: its
// cache is the same one, and another checkpoint's is not.
func TestCachedEmbedderCheckpointMoved(t *testing.T) {
	dir := t.TempDir()
	embedOnce := func(name string) int {
		t.Helper()
		inner := &embedCountingEmbedder{name: name, dim: 3}
		c, err := NewCachedEmbedder(inner, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Embed([]string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
		return len(inner.embedded())
	}
	if n := embedOnce("model:/models/e5#0123abcd;maxlen=512"); n != 2 {
		t.Fatalf("first run embedded %d texts, want 2", n)
	}
	if n := embedOnce("model:/elsewhere/e5-copy#0123abcd;maxlen=512"); n != 0 {
		t.Errorf("the moved checkpoint embedded %d texts again, want 0 (served from the cache)", n)
	}
	if n := embedOnce("model:/models/e5#4567cdef;maxlen=512"); n != 2 {
		t.Errorf("other weights embedded %d texts, want 2 (not the first one's cache)", n)
	}
}

// A crash mid-append leaves a partial record: it is dropped with a
// warning, the rest is kept, and appending goes on from there.
func TestEmbedCacheTruncatedRecord(t *testing.T) {
	dir := t.TempDir()
	inner := &embedCountingEmbedder{name: "fake", dim: 7}
	c, err := NewCachedEmbedder(inner, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"one", "two", "three"}
	want, err := c.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	path := c.Cache().Path()
	c.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, damage := range []string{"cut", "flip"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		switch damage {
		case "cut":
			data = data[:st.Size()-10]
		case "flip":
			data[len(data)-20] ^= 0xff // inside the last vector: its checksum fails
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var warn bytes.Buffer
		inner := &embedCountingEmbedder{name: "fake", dim: 7}
		c, err := NewCachedEmbedder(inner, dir, &warn)
		if err != nil {
			t.Fatalf("%s: %v", damage, err)
		}
		if c.Cache().Len() != 2 || !strings.Contains(warn.String(), "warning: embedding cache") || !strings.Contains(warn.String(), "2 vectors kept") {
			t.Errorf("%s: %d vectors, warning %q", damage, c.Cache().Len(), warn.String())
		}
		got, err := c.Embed(texts)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(inner.embedded(), []string{"three"}) {
			t.Errorf("%s: embedded %q", damage, inner.embedded())
		}
		c.Close()
		// The file is whole again.
		if st2, _ := os.Stat(path); st2.Size() != st.Size() {
			t.Errorf("%s: size %d after repair, want %d", damage, st2.Size(), st.Size())
		}
	}
}

// Another process's append in progress (half a record at the end, its
// lock held) is not a crashed write: an opener waits for it, then sees the
// whole record, and cuts nothing.
func TestEmbedCacheAppendInProgress(t *testing.T) {
	dir := t.TempDir()
	first, err := OpenCache(dir, "fake", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	one, two := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	if err := first.Put([][32]byte{one}, [][]float32{{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	// The second record, as Put encodes it, written in two halves by a
	// writer that holds the lock.
	rec := append([]byte(nil), two[:]...)
	for _, x := range []float32{4, 5, 6} {
		rec = binary.LittleEndian.AppendUint32(rec, math.Float32bits(x))
	}
	rec = binary.LittleEndian.AppendUint32(rec, crc32.Checksum(rec, castagnoli))
	unlock, err := lockFile(first.file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.file.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	opened := make(chan *Cache)
	go func() {
		c, err := OpenCache(dir, "fake", &warn)
		if err != nil {
			t.Error(err)
		}
		opened <- c
	}()
	time.Sleep(100 * time.Millisecond) // the opener reaches the lock meanwhile
	if _, err := first.file.Write(rec[len(rec)/2:]); err != nil {
		t.Fatal(err)
	}
	unlock()
	second := <-opened
	if second == nil {
		return
	}
	defer second.Close()
	v, ok, err := second.Get(two)
	if err != nil || !ok || !slices.Equal(v, []float32{4, 5, 6}) || warn.Len() != 0 {
		t.Errorf("the opener found %v (%v, %v) for the record being appended; warned %q", v, ok, err, warn.String())
	}

	// A record rewritten under an open cache (another process cut the file
	// and appended its own) is not served for the text the index names.
	f, err := os.OpenFile(first.Path(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(rec, first.index[one])
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := first.Get(one); err == nil || !strings.Contains(err.Error(), "another text's") {
		t.Errorf("a record of another text served for \"one\": %v, %v", v, err)
	}
}

func TestEmbedCacheErrors(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(dir, "fake", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("x"))
	if err := c.Put([][32]byte{h}, [][]float32{{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Put([][32]byte{h}, [][]float32{{1, 2}}); err == nil || !strings.Contains(err.Error(), "a vector of 2 values, the cache holds 3") {
		t.Errorf("dimension change: %v", err)
	}
	if v, ok, err := c.Get(h); !ok || err != nil || !reflect.DeepEqual(v, []float32{1, 2, 3}) {
		t.Errorf("Get: %v %v %v", v, ok, err)
	}
	path := c.Path()
	c.Close()

	// A cache file under another embedder's name is refused.
	sum := sha256.Sum256([]byte("other"))
	otherPath := strings.Replace(path, path[len(dir)+1:len(dir)+33], fmt.Sprintf("%x", sum[:16]), 1)
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(otherPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCache(dir, "other", nil); err == nil || !strings.Contains(err.Error(), `holds vectors of "fake", not "other"`) {
		t.Errorf("name mismatch: %v", err)
	}
	// A file that is not a cache.
	if err := os.WriteFile(path, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCache(dir, "fake", nil); err == nil || !strings.Contains(err.Error(), "not an embedding cache") {
		t.Errorf("garbage file: %v", err)
	}

	// A failing text is named by its place in the call, not among the misses.
	inner := &embedCountingEmbedder{name: "idx", dim: 3}
	ce, err := NewCachedEmbedder(inner, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ce.Close()
	if _, err := ce.Embed([]string{"a"}); err != nil {
		t.Fatal(err)
	}
	_, err = ce.Embed([]string{"a", "b", "bad"})
	var te *TextError
	if !errors.As(err, &te) || te.Index != 2 {
		t.Errorf("error %v, want text 2", err)
	}
}
