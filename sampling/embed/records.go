package embed

import (
	"context"
	"errors"
	"fmt"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/tensor"
)

// Chunk is how many records Records reads before it embeds
// them: enough to fill batches of similar lengths, few enough that the
// texts waiting in memory stay small.
const Chunk = 512

// Records reads every record of r and embeds its Text with e, a chunk
// of records at a time, so that only the vectors (N x D float32) and the
// rows accumulate in memory, not the texts. progress, when not nil, is
// told of each chunk. dim is the vector length to give an empty input
// (0 when unknown). ctx is checked before each chunk: a cancelled one
// ends the work with its error.
func Records(ctx context.Context, r *dataset.Reader, e Embedder, dim int, progress *Progress) (*Embeddings, error) {
	var vectors []float32
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
		for _, v := range vecs {
			if len(vectors) == 0 {
				dim = len(v)
			}
			if len(v) != dim || dim == 0 {
				return fmt.Errorf("embed: %s gave a vector of %d values, the first had %d", e.Name(), len(v), dim)
			}
			vectors = append(vectors, v...)
		}
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
				return nil, err
			}
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []Row{}
	}
	t, err := tensor.FromF32(vectors, len(rows), dim)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	return &Embeddings{Vectors: t, Rows: rows, Embedder: e.Name()}, nil
}
