package embed

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// Embedder turns texts into vectors. Implementations: ModelEmbedder (the
// hidden states of a decoder compass loads), CachedEmbedder (any embedder
// behind an on-disk cache); a dedicated multilingual encoder can be another.
type Embedder interface {
	// Embed returns one vector per text, in order, all of one length.
	Embed(texts []string) ([][]float32, error)
	// Name identifies the embedding space: two embedders with the same name
	// give the same vector for the same text. Caches are keyed by it.
	Name() string
}

// TextError is a failure to embed one text of a call to Embed.
type TextError struct {
	Index int // the text's index in the call
	Err   error
}

func (e *TextError) Error() string { return fmt.Sprintf("embed: text %d: %v", e.Index, e.Err) }

func (e *TextError) Unwrap() error { return e.Err }

// ModelOptions configure a ModelEmbedder; zero values take the defaults.
type ModelOptions struct {
	// BatchTokens bounds the tokens of one forward pass, padding included
	// (sequences x longest sequence). Default 4096; a text longer than it
	// runs alone.
	BatchTokens int
	// MaxLen truncates each text to its first MaxLen tokens. Default 512.
	MaxLen int
	// Progress is told after each forward pass; nil for none.
	Progress *Progress
}

// Defaults of ModelOptions. They are ours: the paper does not say how it
// pooled or truncated.
const (
	DefaultBatchTokens = 4096
	DefaultMaxLen      = 512
)

// ModelEmbedder embeds texts with a decoder: each text is tokenized,
// truncated to MaxLen tokens, and the last hidden states (the output of
// the final RMSNorm, model.LastHidden) are averaged over its tokens and
// scaled to unit length. Texts are sorted by length and batched up to
// BatchTokens; a batch is right-padded, and because attention is causal
// and the mean covers only a text's own positions, a vector does not
// depend on what else is in its batch.
type ModelEmbedder struct {
	model  *model.Model
	encode func(string) ([]int, error)
	name   string
	opts   ModelOptions
}

// NewModelEmbedder returns an embedder over m. encode tokenizes a text
// (with the special tokens the model expects, such as Llama's BOS); source
// names the model, e.g. ModelSignature of its directory.
func NewModelEmbedder(m *model.Model, encode func(string) ([]int, error), source string, opts ModelOptions) (*ModelEmbedder, error) {
	if m == nil || encode == nil {
		return nil, fmt.Errorf("embed: NewModelEmbedder needs a model and an encode function")
	}
	if opts.BatchTokens < 0 || opts.MaxLen < 0 {
		return nil, fmt.Errorf("embed: batch tokens %d and max length %d must not be negative", opts.BatchTokens, opts.MaxLen)
	}
	opts.BatchTokens = cmp.Or(opts.BatchTokens, DefaultBatchTokens)
	opts.MaxLen = cmp.Or(opts.MaxLen, DefaultMaxLen)
	// Truncation and pooling change the vectors, so they are part of the name.
	name := fmt.Sprintf("%s;pool=mean;maxlen=%d", source, opts.MaxLen)
	return &ModelEmbedder{model: m, encode: encode, name: name, opts: opts}, nil
}

// Name returns the model's source with the pooling and truncation.
func (e *ModelEmbedder) Name() string { return e.name }

// Dim returns the length of the vectors: the model's hidden size.
func (e *ModelEmbedder) Dim() int { return e.model.Config.HiddenSize }

// Embed embeds texts; see ModelEmbedder.
func (e *ModelEmbedder) Embed(texts []string) ([][]float32, error) {
	vocab := e.model.Config.VocabSize
	ids := make([][]int, len(texts))
	for i, text := range texts {
		seq, err := e.encode(text)
		if err != nil {
			return nil, &TextError{i, fmt.Errorf("tokenize: %w", err)}
		}
		if len(seq) == 0 {
			return nil, &TextError{i, errors.New("no tokens")}
		}
		for _, id := range seq {
			if id < 0 || id >= vocab {
				return nil, &TextError{i, fmt.Errorf("token id %d is outside the vocabulary of %d", id, vocab)}
			}
		}
		ids[i] = seq[:min(len(seq), e.opts.MaxLen)]
	}

	out := make([][]float32, len(texts))
	for _, batch := range lengthBatches(ids, e.opts.BatchTokens) {
		vecs, err := e.forward(ids, batch, len(ids[batch[0]]))
		if err != nil {
			return nil, err
		}
		tokens := 0
		for k, i := range batch {
			out[i] = vecs[k]
			tokens += len(ids[i])
		}
		e.opts.Progress.addEmbedded(len(batch), tokens)
	}
	return out, nil
}

// lengthBatches orders the texts longest first and cuts that order into
// batches of at most batchTokens tokens once padded to their first (longest)
// text, one text at least: padding is least when similar lengths share a
// batch, and the longest texts run first, so running out of memory shows
// early.
func lengthBatches(ids [][]int, batchTokens int) [][]int {
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(ids[b]), len(ids[a])) })
	var batches [][]int
	for start := 0; start < len(order); {
		longest := len(ids[order[start]])
		end := start + 1
		for end < len(order) && (end-start+1)*longest <= batchTokens {
			end++
		}
		batches = append(batches, order[start:end])
		start = end
	}
	return batches
}

// forward runs one right-padded batch and pools each text's hidden states.
func (e *ModelEmbedder) forward(ids [][]int, batch []int, seqLen int) ([][]float32, error) {
	flat := make([]int32, len(batch)*seqLen) // padding is token 0: never attended to, never pooled
	for k, i := range batch {
		for t, id := range ids[i] {
			flat[k*seqLen+t] = int32(id)
		}
	}
	in, err := tensor.FromI32(flat, len(batch), seqLen)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	h, err := e.model.LastHidden(in)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	hidden := e.model.Config.HiddenSize
	states := h.F32()
	vecs := make([][]float32, len(batch))
	for k, i := range batch {
		rows := states[k*seqLen*hidden : (k*seqLen+len(ids[i]))*hidden]
		v, err := meanNormalized(rows, hidden)
		if err != nil {
			return nil, &TextError{i, err}
		}
		vecs[k] = v
	}
	return vecs, nil
}

// meanNormalized returns the mean of the rows (each of length dim) scaled
// to unit length, summing in float64.
func meanNormalized(rows []float32, dim int) ([]float32, error) {
	sum := make([]float64, dim)
	for off := 0; off < len(rows); off += dim {
		for j, x := range rows[off : off+dim] {
			sum[j] += float64(x)
		}
	}
	var norm float64
	for _, s := range sum {
		norm += s * s
	}
	norm = math.Sqrt(norm) // the 1/n of the mean cancels in the normalisation
	if norm == 0 || math.IsNaN(norm) || math.IsInf(norm, 0) {
		return nil, fmt.Errorf("the pooled hidden state has norm %v", norm)
	}
	v := make([]float32, dim)
	for j, s := range sum {
		v[j] = float32(s / norm)
	}
	return v, nil
}

// ModelSignature names a checkpoint directory for embedding caches:
// "model:" + its absolute path + "#" + the start of model.CheckpointHash,
// its content's hash. Weights rewritten in place change it, so a cache
// never serves vectors of other weights; a copy of the checkpoint
// elsewhere has the same hash (EmbedderID).
func ModelSignature(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("embed: %w", err)
	}
	sum, err := model.CheckpointHash(abs)
	if err != nil {
		return "", fmt.Errorf("embed: model signature: %w", err)
	}
	return "model:" + abs + "#" + sum[:16], nil
}
