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
	rows, dim, err := embedAll(ctx, r, e, dim, progress, func(chunk []float32) error {
		chunks = append(chunks, chunk)
		return nil
	})
	if err != nil {
		return nil, err
	}
	vectors := make([]float32, 0, len(rows)*dim)
	for i, c := range chunks {
		vectors = append(vectors, c...)
		chunks[i] = nil // collectable once copied
	}
	t, err := tensor.FromF32(vectors, len(rows), dim)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	return &Embeddings{Vectors: t, Rows: rows, Embedder: e.Name()}, nil
}

// RecordsToFile embeds every record of r as Records does and saves the
// vectors and the rows to path as Save does, without holding the vectors
// in memory: each chunk's go to a scratch file beside path as they are
// made, and the matrix file is written from it at the end (the scratch
// file is removed, whatever happens). It returns how many rows it wrote;
// an input without a record writes nothing and is ErrNoRecords.
func RecordsToFile(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress, path string) (int, error) {
	if err := checkSaveFormat(path); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	scratch, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".vectors*")
	if err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	defer func() {
		scratch.Close()
		os.Remove(scratch.Name())
	}()
	w := bufio.NewWriterSize(scratch, 1<<20)
	var buf []byte
	rows, dim, err := embedAll(ctx, r, e, dim, progress, func(chunk []float32) error {
		buf = buf[:0]
		for _, v := range chunk {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		_, err := w.Write(buf)
		return err
	})
	if err != nil {
		return 0, err
	}
	if len(rows) == 0 {
		return 0, ErrNoRecords
	}
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	if _, err := scratch.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	if err := saveFrom(path, rows, e.Name(), len(rows), dim, bufio.NewReaderSize(scratch, 1<<20)); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// embedAll reads every record of r and embeds its Text with e, a chunk of
// records at a time (see Records), and hands each chunk's vectors, row
// after row, to keep. It returns the rows and the vectors' length (dim
// when there are none).
func embedAll(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress, keep func([]float32) error) ([]Row, int, error) {
	n := 0 // vectors so far
	var rows []Row
	var texts []string
	flush := func() error {
		if len(texts) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		first := len(rows) - len(texts) // the chunk's first row
		vecs, err := e.Embed(texts)
		var te *TextError
		if errors.As(err, &te) && te.Index >= 0 && te.Index < len(texts) {
			return fmt.Errorf("embed: embed %s: %w", rows[first+te.Index].Source, te.Err)
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
		if err := keep(chunk); err != nil {
			return fmt.Errorf("embed: %w", err)
		}
		n += len(vecs)
		texts = texts[:0]
		progress.setRecords(len(rows))
		return nil
	}
	for r.Next() {
		rec := r.Record()
		rows = append(rows, Row{ID: rec.ID, Language: rec.Language, Source: rec.Source})
		texts = append(texts, rec.Text)
		if len(texts) == Chunk {
			if err := flush(); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, 0, err
	}
	if err := flush(); err != nil {
		return nil, 0, err
	}
	if rows == nil {
		rows = []Row{}
	}
	return rows, dim, nil
}
