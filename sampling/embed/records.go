package embed

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/tensor"
)

// Chunk is how many records Records reads before it embeds
// them: enough to fill batches of similar lengths, few enough that the
// texts waiting in memory stay small.
const Chunk = 512

// ErrNoRecords is RecordsToFile's error for an input without a record: a
// matrix of no rows would fail later, in cluster or select, far from its
// cause.
var ErrNoRecords = errors.New("embed: no records")

// Records reads every record of r and embeds its Text with e, a chunk
// of records at a time, so that only the vectors (N x D float32) and the
// rows accumulate in memory, not the texts. progress, when not nil, is
// told of each chunk. dim is the vector length to give an empty input
// (0 when unknown). ctx is checked before each chunk: a cancelled one
// ends the work with its error.
func Records(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress) (*Embeddings, error) {
	// Each chunk's vectors in a slice of their own, stacked once at the
	// end: appending to one growing slice held the old and the new arrays
	// of each growth, and the garbage collector let that reach 3.3 times
	// the matrix (5.1 GB for 500k x 768); stacked, the chunks and the
	// matrix are both live only at the end (3.9 GB, 2.5 times).
	// RecordsToFile holds none of them.
	var chunks [][]float32
	rows := []Row{}
	n, dim, err := embedAll(ctx, r, e, dim, progress, func(chunkRows []Row, chunk []float32) error {
		rows = append(rows, chunkRows...)
		chunks = append(chunks, chunk)
		return nil
	})
	if err != nil {
		return nil, err
	}
	vectors := make([]float32, 0, n*dim)
	for i, c := range chunks {
		vectors = append(vectors, c...)
		chunks[i] = nil // collectable once copied
	}
	t, err := tensor.FromF32(vectors, n, dim)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	return &Embeddings{Vectors: t, Rows: rows, Embedder: e.Name()}, nil
}

// RecordsToFile embeds every record of r as Records does and saves the
// vectors and the rows to path as Save does, without holding either in
// memory: each chunk's go to two scratch files beside path as they are
// made, and the output files are written from them at the end (the
// scratch files are removed, whatever happens). It returns how many rows
// it wrote; an input without a record writes nothing and is ErrNoRecords.
func RecordsToFile(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress, path string) (int, error) {
	if err := checkSaveFormat(path); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	var scratchFiles []*os.File // removed on any return
	defer func() {
		for _, f := range scratchFiles {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	scratch := func(what string) (*os.File, *bufio.Writer, error) {
		f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"."+what+"*")
		if err != nil {
			return nil, nil, fmt.Errorf("embed: %w", err)
		}
		scratchFiles = append(scratchFiles, f)
		return f, bufio.NewWriterSize(f, 1<<20), nil
	}
	vf, vw, err := scratch("vectors")
	if err != nil {
		return 0, err
	}
	rf, rw, err := scratch("rows")
	if err != nil {
		return 0, err
	}
	lines := newRowsWriter(rw)
	var buf []byte
	n, dim, err := embedAll(ctx, r, e, dim, progress, func(rows []Row, chunk []float32) error {
		for _, row := range rows {
			if err := lines.write(row); err != nil {
				return err
			}
		}
		buf = buf[:0]
		for _, v := range chunk {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		_, err := vw.Write(buf)
		return err
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, ErrNoRecords
	}
	// Both scratch files read back from their start.
	for _, f := range []struct {
		f *os.File
		w *bufio.Writer
	}{{vf, vw}, {rf, rw}} {
		if err := f.w.Flush(); err != nil {
			return 0, fmt.Errorf("embed: %w", err)
		}
		if _, err := f.f.Seek(0, io.SeekStart); err != nil {
			return 0, fmt.Errorf("embed: %w", err)
		}
	}
	copyRows := func(w io.Writer) error {
		_, err := io.Copy(w, rf)
		return err
	}
	if err := saveFrom(path, copyRows, e.Name(), n, dim, bufio.NewReaderSize(vf, 1<<20)); err != nil {
		return 0, err
	}
	return n, nil
}

// embedAll reads every record of r and embeds its Text with e, a chunk of
// records at a time (see Records), and hands each chunk's rows and
// vectors (row after row) to keep. It returns how many rows there were
// and the vectors' length (dim when there are none).
func embedAll(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress, keep func([]Row, []float32) error) (int, int, error) {
	n := 0 // rows embedded so far
	var rows []Row
	var texts []string
	flush := func() error {
		if len(texts) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		vecs, err := e.Embed(texts)
		var te *TextError
		if errors.As(err, &te) && te.Index >= 0 && te.Index < len(texts) {
			return fmt.Errorf("embed: embed %s: %w", rows[te.Index].Source, te.Err)
		}
		if err != nil {
			return err
		}
		if len(vecs) != len(texts) {
			return fmt.Errorf("embed: %s gave %d vectors for %d texts", e.Name(), len(vecs), len(texts))
		}
		if n == 0 && len(vecs) > 0 {
			dim = len(vecs[0])
		}
		chunk := make([]float32, 0, len(vecs)*dim)
		for _, v := range vecs {
			if len(v) != dim || dim == 0 {
				return fmt.Errorf("embed: %s gave a vector of %d values, the first had %d", e.Name(), len(v), dim)
			}
			chunk = append(chunk, v...)
		}
		if err := keep(rows, chunk); err != nil {
			return fmt.Errorf("embed: %w", err)
		}
		n += len(vecs)
		rows, texts = nil, texts[:0]
		progress.setRecords(n)
		return nil
	}
	for r.Next() {
		rec := r.Record()
		rows = append(rows, Row{ID: rec.ID, Language: rec.Language, Source: rec.Source})
		texts = append(texts, rec.Text)
		if len(texts) == Chunk {
			if err := flush(); err != nil {
				return 0, 0, err
			}
		}
	}
	if err := r.Err(); err != nil {
		return 0, 0, err
	}
	if err := flush(); err != nil {
		return 0, 0, err
	}
	return n, dim, nil
}
