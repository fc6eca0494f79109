package embed

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/model/tokenizer"
)

// E5 prefixes: multilingual-e5 was trained with every input starting with
// one of them, and its card asks for "query: " on queries and for tasks
// other than retrieval, "passage: " on the documents retrieved.
const (
	E5Query   = "query: "
	E5Passage = "passage: "
)

// EncoderOptions configure an EncoderEmbedder; zero values take the
// defaults.
type EncoderOptions struct {
	// BatchTokens bounds the tokens of one forward pass, padding included.
	// Default DefaultBatchTokens; a text longer than it runs alone.
	BatchTokens int
	// MaxLen truncates each text to MaxLen tokens, special tokens
	// included, keeping the closing one (</s>, [SEP]) as HF's truncation
	// does. Default, and at most, what the position embeddings cover
	// (512 for e5).
	MaxLen int
	// Pooling is encoder.PoolMean (the default, e5's) or encoder.PoolCLS.
	Pooling encoder.Pooling
	// Prefix is put before every text: E5Query, E5Passage, or "" for
	// encoders trained without one.
	Prefix string
	// Unnormalized keeps the pooled vectors at their length; by default
	// they are scaled to unit length (L2), as e5's usage does and cosine
	// clustering wants.
	Unnormalized bool
	// Progress is told after each forward pass; nil for none.
	Progress *Progress
}

// EncoderEmbedder embeds texts with a sentence encoder (XLM-R or BERT,
// e.g. multilingual-e5): each text, after Prefix, is tokenized with the
// encoder's special tokens, truncated to MaxLen, and its last hidden states
// pooled (mean over its tokens, or its first token) and scaled to unit
// length. Texts are sorted by length and batched up to BatchTokens; a
// batch is right-padded and the padding masked out of every key, so a
// vector does not depend on what else is in its batch.
type EncoderEmbedder struct {
	model  *encoder.Model
	tok    *tokenizer.Tokenizer
	suffix []int // the post-processor's closing tokens, kept by truncation
	name   string
	opts   EncoderOptions
	tokens int64
}

// NewEncoderEmbedder returns an embedder over m with its tokenizer tok;
// source names the checkpoint (ModelSignature of its directory). A
// tokenizer whose ids go past the encoder's vocabulary is an error.
func NewEncoderEmbedder(m *encoder.Model, tok *tokenizer.Tokenizer, source string, opts EncoderOptions) (*EncoderEmbedder, error) {
	if m == nil || tok == nil {
		return nil, errors.New("embed: NewEncoderEmbedder needs an encoder and its tokenizer")
	}
	if tok.VocabSize() > m.Config.VocabSize {
		return nil, fmt.Errorf("embed: tokenizer %s has %d tokens, more than the encoder's vocab_size %d: not this encoder's tokenizer",
			tok.Path(), tok.VocabSize(), m.Config.VocabSize)
	}
	maxTokens := m.Config.MaxTokens()
	if opts.BatchTokens < 0 || opts.MaxLen < 0 {
		return nil, fmt.Errorf("embed: batch tokens %d and max length %d must not be negative", opts.BatchTokens, opts.MaxLen)
	}
	_, suffix := tok.SpecialAround()
	if opts.MaxLen > maxTokens {
		return nil, fmt.Errorf("embed: max length %d is more than the %d tokens %s's position embeddings cover", opts.MaxLen, maxTokens, source)
	}
	opts.BatchTokens = cmp.Or(opts.BatchTokens, DefaultBatchTokens)
	opts.MaxLen = cmp.Or(opts.MaxLen, maxTokens)
	if opts.MaxLen <= len(suffix) {
		return nil, fmt.Errorf("embed: max length %d leaves no room for text", opts.MaxLen)
	}
	if opts.Pooling == "" {
		opts.Pooling = encoder.PoolMean
	}
	if _, err := encoder.ParsePooling(string(opts.Pooling)); err != nil {
		return nil, err
	}
	norm := "l2"
	if opts.Unnormalized {
		norm = "none"
	}
	// Everything that changes the vectors is part of the name, so that a
	// cache never serves a vector made another way.
	name := fmt.Sprintf("encoder;%s;pool=%s;maxlen=%d;prefix=%q;norm=%s", source, opts.Pooling, opts.MaxLen, opts.Prefix, norm)
	return &EncoderEmbedder{model: m, tok: tok, suffix: suffix, name: name, opts: opts}, nil
}

// Name returns the encoder's source with the pooling, truncation, prefix
// and normalisation.
func (e *EncoderEmbedder) Name() string { return e.name }

// Dim returns the length of the vectors: the encoder's hidden size.
func (e *EncoderEmbedder) Dim() int { return e.model.Config.HiddenSize }

// Tokens returns how many tokens the embedder has encoded (before
// truncation) since it was made.
func (e *EncoderEmbedder) Tokens() int64 { return e.tokens }

// Encode returns the token ids the embedder runs for text: the prefix and
// the text with the special tokens, truncated to MaxLen.
func (e *EncoderEmbedder) Encode(text string) ([]int, error) {
	ids, err := e.tok.Encode(e.opts.Prefix+text, true)
	if err != nil {
		return nil, err
	}
	e.tokens += int64(len(ids))
	if len(ids) > e.opts.MaxLen {
		keep := e.opts.MaxLen - len(e.suffix)
		ids = append(ids[:keep:keep], e.suffix...)
	}
	return ids, nil
}

// Embed embeds texts; see EncoderEmbedder.
func (e *EncoderEmbedder) Embed(texts []string) ([][]float32, error) {
	ids := make([][]int, len(texts))
	for i, text := range texts {
		seq, err := e.Encode(text)
		if err != nil {
			return nil, &TextError{i, fmt.Errorf("tokenize: %w", err)}
		}
		if len(seq) == 0 {
			return nil, &TextError{i, errors.New("no tokens")}
		}
		ids[i] = seq
	}
	out := make([][]float32, len(texts))
	for _, batch := range lengthBatches(ids, e.opts.BatchTokens) {
		seqs, lengths := make([][]int, len(batch)), make([]int, len(batch))
		tokens := 0
		for k, i := range batch {
			seqs[k], lengths[k] = ids[i], len(ids[i])
			tokens += len(ids[i])
		}
		h, err := e.model.Forward(seqs)
		if err != nil {
			return nil, fmt.Errorf("embed: %w", err)
		}
		vecs, err := encoder.Pool(h, lengths, e.opts.Pooling, !e.opts.Unnormalized)
		if err != nil {
			return nil, fmt.Errorf("embed: %w", err)
		}
		for k, i := range batch {
			out[i] = vecs[k]
		}
		e.opts.Progress.addEmbedded(len(batch), tokens)
	}
	return out, nil
}
