package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// ScoreRecord is one output line of Score.
type ScoreRecord struct {
	Line       int       `json:"line"`
	Tokens     int       `json:"tokens"`   // tokens in the input
	LogProbs   []float32 `json:"logprobs"` // log p(token i | tokens < i) for i = 1..tokens-1
	Sum        float64   `json:"sum"`      // sum of LogProbs
	Perplexity float64   `json:"perplexity"`
}

// Encoder turns text into token ids (the model's tokenizer).
type Encoder interface {
	Encode(text string) ([]int, error)
}

// Score reads JSONL lines {"ids": [...]} or {"text": "..."} from r and
// writes, for each, the log-probability of every token given the ones
// before it, their sum and the perplexity exp(-sum/(tokens-1)). The first
// token has no prediction. enc may be nil when every line has ids. A bad
// line is an error naming its number; lines already written stay valid.
// A cancelled ctx stops it before the next line, with ctx's error.
func Score(ctx context.Context, m *model.Model, enc Encoder, r io.Reader, w io.Writer) (int, error) {
	lines := dataset.NewJSONLines(r, "")
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	enc2 := json.NewEncoder(bw)
	n := 0
	for lines.Next() {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		line := lines.Line()
		var in struct {
			IDs  []int   `json:"ids"`
			Text *string `json:"text"`
		}
		if err := lines.Decode(&in); err != nil {
			return n, fmt.Errorf("score: %w", err)
		}
		ids := in.IDs
		switch {
		case in.Text == nil && ids == nil:
			return n, fmt.Errorf("score: line %d: no \"ids\" or \"text\" field", line)
		case in.Text != nil && ids != nil:
			return n, fmt.Errorf("score: line %d: give ids or text, not both", line)
		case in.Text != nil:
			if enc == nil {
				return n, fmt.Errorf("score: line %d: text needs a tokenizer (tokenizer.json in the model directory)", line)
			}
			var err error
			if ids, err = enc.Encode(*in.Text); err != nil {
				return n, fmt.Errorf("score: line %d: %w", line, err)
			}
		}
		if len(ids) < 2 {
			return n, fmt.Errorf("score: line %d: need at least 2 tokens, got %d", line, len(ids))
		}
		// Past the positions the model was trained on, RoPE's angles are
		// ones it never saw: the numbers would mean nothing.
		if maxPos := m.Config.MaxPositionEmbeddings; maxPos > 0 && len(ids) > maxPos {
			return n, fmt.Errorf("score: line %d: %d tokens, beyond the model's %d positions (max_position_embeddings)", line, len(ids), maxPos)
		}
		rec, err := scoreIDs(m, ids)
		if err != nil {
			return n, fmt.Errorf("score: line %d: %w", line, err)
		}
		if math.IsNaN(rec.Sum) || math.IsInf(rec.Sum, 0) {
			return n, fmt.Errorf("score: line %d: the log-probabilities are not finite (sum %v): the model's or the adapter's weights hold NaN or Inf", line, rec.Sum)
		}
		rec.Line = line
		if err := enc2.Encode(rec); err != nil {
			return n, err
		}
		n++
	}
	if err := lines.Err(); err != nil {
		return n, fmt.Errorf("score: %w", err)
	}
	return n, bw.Flush()
}

func scoreIDs(m *model.Model, ids []int) (*ScoreRecord, error) {
	T := len(ids)
	in := make([]int32, T)
	labels := make([]int32, T)
	for i, id := range ids {
		if id < 0 || id >= m.Config.VocabSize {
			return nil, fmt.Errorf("token id %d at position %d is outside the vocabulary [0, %d)", id, i, m.Config.VocabSize)
		}
		in[i] = int32(id)
		labels[i] = model.IgnoreIndex
		if i > 0 {
			labels[i-1] = int32(id) // position i-1 predicts token i
		}
	}
	idT, _ := tensor.FromI32(in, 1, T)
	labT, _ := tensor.FromI32(labels, 1, T)
	out, err := m.Forward(model.Batch{IDs: idT, Labels: labT})
	if err != nil {
		return nil, err
	}
	lp := out.LogProbs.F32()[:T-1]
	rec := &ScoreRecord{Tokens: T, LogProbs: append([]float32(nil), lp...)}
	for _, v := range lp {
		rec.Sum += float64(v)
	}
	rec.Perplexity = math.Exp(-rec.Sum / float64(T-1))
	return rec, nil
}
