package engine

import (
	"fmt"
	"math"
	"slices"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// llRequest is one (context, continuation) request of a multiple-choice
// item, tokenized, with its score once computed.
type llRequest struct {
	Context      string  `json:"-"`
	Continuation string  `json:"continuation"`
	ContextLen   int     `json:"context_tokens"`
	ContIDs      []int   `json:"continuation_ids"`
	LogLik       float64 `json:"loglikelihood"`
	Truncated    bool    `json:"truncated,omitempty"` // the context lost tokens on the left

	full []int // context+continuation, cut on the left to the model's length + 1
}

// input is what the model reads: every token but the last.
func (r *llRequest) input() []int { return r.full[:len(r.full)-1] }

// llScorer computes log-likelihoods of continuations with a model, as
// the harness's _loglikelihood_tokens does: (context+continuation) cut on
// the left to max_length+1 tokens, the last token dropped, and the
// continuation's log-probabilities summed over the last positions.
type llScorer struct {
	m      *model.Model
	maxLen int
	// batchTokens bounds rows × longest row of one forward pass.
	batchTokens int
	// logitsBytes bounds the logits of one sequence computed whole when
	// the choices of an item share their input (see score).
	logitsBytes int64
}

// newRequest tokenizes nothing: ctx and cont come from PairEncoder.
func (s *llScorer) newRequest(context, continuation string, ctx, cont []int) (*llRequest, error) {
	full := append(slices.Clone(ctx), cont...)
	r := &llRequest{Context: context, Continuation: continuation, ContextLen: len(ctx), ContIDs: cont}
	if len(full) > s.maxLen+1 {
		full = full[len(full)-(s.maxLen+1):]
		r.Truncated = true
	}
	if len(full) < 2 {
		return nil, fmt.Errorf("eval: request has %d tokens: nothing to condition the continuation on", len(full))
	}
	r.full = full
	for _, id := range full {
		if id < 0 || id >= s.m.Config.VocabSize {
			return nil, fmt.Errorf("eval: token id %d is outside the model's vocabulary [0, %d)", id, s.m.Config.VocabSize)
		}
	}
	return r, nil
}

// contLen is the number of continuation tokens scored: all of them unless
// the continuation alone is longer than the model's context.
func (r *llRequest) contLen() int { return min(len(r.ContIDs), len(r.full)-1) }

// score fills LogLik of every request. The requests of one item that
// differ only in a one-token continuation have the same input (the
// harness's MMLU case, choices " A".." D"): their input is run once and
// the log-softmax of its last position read at each choice's token, when
// that one sequence's logits fit logitsBytes. Every other request is run
// in batches of rows padded on the right (the causal mask keeps padding
// out of the real positions), longest first.
func (s *llScorer) score(reqs []*llRequest) error {
	var rest []*llRequest
	for i := 0; i < len(reqs); {
		j := i + 1
		for j < len(reqs) && reqs[i].contLen() == 1 && reqs[j].contLen() == 1 && slices.Equal(reqs[i].input(), reqs[j].input()) {
			j++
		}
		group := reqs[i:j]
		size := int64(len(reqs[i].input())) * int64(s.m.Config.VocabSize) * 4
		if len(group) > 1 && size <= s.logitsBytes {
			if err := s.scoreShared(group); err != nil {
				return err
			}
		} else {
			rest = append(rest, group...)
		}
		i = j
	}
	return s.scoreBatched(rest)
}

// scoreShared runs the common input of one-token continuations once.
func (s *llScorer) scoreShared(group []*llRequest) error {
	in := group[0].input()
	ids := make([]int32, len(in))
	for i, id := range in {
		ids[i] = int32(id)
	}
	idT, err := tensor.FromI32(ids, 1, len(ids))
	if err != nil {
		return err
	}
	logits, err := s.m.Logits(idT)
	if err != nil {
		return fmt.Errorf("eval: forward: %w", err)
	}
	V := s.m.Config.VocabSize
	last := logits.F32()[(len(in)-1)*V : len(in)*V]
	lse := logSumExp(last)
	for _, r := range group {
		r.LogLik = float64(last[r.full[len(r.full)-1]]) - lse
	}
	return nil
}

func logSumExp(x []float32) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = max(mx, float64(v))
	}
	sum := 0.0
	for _, v := range x {
		sum += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(sum)
}

// scoreBatched runs requests as rows of forward passes.
func (s *llScorer) scoreBatched(reqs []*llRequest) error {
	order := slices.Clone(reqs)
	slices.SortStableFunc(order, func(a, b *llRequest) int { return len(b.full) - len(a.full) })
	for start := 0; start < len(order); {
		T := len(order[start].input())
		end := start + 1
		for end < len(order) && (end-start+1)*T <= s.batchTokens {
			end++
		}
		if err := s.forwardRows(order[start:end], T); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (s *llScorer) forwardRows(rows []*llRequest, T int) error {
	B := len(rows)
	ids := make([]int32, B*T)
	labels := make([]int32, B*T)
	for i := range labels {
		labels[i] = model.IgnoreIndex
	}
	for b, r := range rows {
		in := r.input()
		for t, id := range in {
			ids[b*T+t] = int32(id)
		}
		for t := len(in) - r.contLen(); t < len(in); t++ {
			labels[b*T+t] = int32(r.full[t+1])
		}
	}
	idT, _ := tensor.FromI32(ids, B, T)
	labT, _ := tensor.FromI32(labels, B, T)
	out, err := s.m.Forward(model.Batch{IDs: idT, Labels: labT})
	if err != nil {
		return fmt.Errorf("eval: forward: %w", err)
	}
	lp := out.LogProbs.F32()
	for b, r := range rows {
		n := len(r.input())
		r.LogLik = 0
		for t := n - r.contLen(); t < n; t++ {
			r.LogLik += float64(lp[b*T+t])
		}
	}
	return nil
}
