package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// EmbedModel is a checkpoint loaded for embedding: the model, its
// tokenizer, and its signature, which names the embedding space in caches
// and files. Several Embed calls can share one (the adapt pipeline embeds
// the pool and every language's data with the same model).
type EmbedModel struct {
	Model     *model.Model
	Signature string // embed.ModelSignature of the directory
	tok       *tokenizer.Tokenizer
	tokens    int64 // tokens encoded so far, for EmbedResult.Tokens
}

// LoadEmbedModel loads the checkpoint in dir (config.json, safetensors,
// tokenizer.json) on be (nil: the CPU). The caller closes it.
func LoadEmbedModel(dir string, be tensor.Backend) (*EmbedModel, error) {
	sig, err := embed.ModelSignature(dir)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	m, err := model.Load(dir, be)
	if err != nil {
		return nil, err
	}
	return &EmbedModel{Model: m, Signature: sig, tok: tok}, nil
}

// Embedder returns an embedder over the model: texts encoded as the model
// saw them in training (with the tokenizer's special tokens, Llama's BOS),
// mean-pooled final hidden states.
func (m *EmbedModel) Embedder(o embed.ModelOptions) (*embed.ModelEmbedder, error) {
	encode := func(text string) ([]int, error) {
		ids, err := m.tok.Encode(text, true)
		m.tokens += int64(len(ids))
		return ids, err
	}
	return embed.NewModelEmbedder(m.Model, encode, m.Signature, o)
}

// Close releases the model.
func (m *EmbedModel) Close() { m.Model.Close() }

// EmbedOptions say what `compass embed` runs: the records of one data file
// through a model into an embedding matrix and its rows file.
type EmbedOptions struct {
	// ModelDir is the checkpoint, loaded on Backend and closed at the end;
	// or Model, already loaded, which is left open.
	ModelDir string
	Model    *EmbedModel
	Backend  tensor.Backend // nil: the CPU

	// EncoderDir, or Encoder already loaded (left open), is a sentence
	// encoder (XLM-R, BERT: multilingual-e5) that embeds the texts instead
	// of ModelDir's decoder, with Pooling ("mean", the default, or "cls")
	// and Prefix before every text (e5's "query: " or "passage: ").
	EncoderDir string
	Encoder    *EmbedEncoder
	Pooling    string
	Prefix     string

	Input string          // data set: .jsonl, .csv, .tsv or .parquet, optionally .zst
	Data  dataset.Options // schema, language of rows that name none, bad rows
	// Output is the matrix, .safetensors or .npy, written atomically with
	// its rows file (embed.RowsPath) beside it.
	Output string

	// CacheDir holds the embedding cache, so that a re-run embeds only
	// texts it has not seen; "": no cache.
	CacheDir string
	// BatchTokens and MaxLen are embed.ModelOptions' (or
	// EncoderOptions'); 0 takes the defaults.
	BatchTokens, MaxLen int

	Progress io.Writer // a terminal for the progress line; nil for none
	Warn     io.Writer // warnings, e.g. about a damaged cache; nil discards
}

// EmbedResult is what Embed did.
type EmbedResult struct {
	Records   int
	Schema    dataset.Schema
	Rows      string // the rows file written beside the output
	Embedded  int    // texts the model embedded
	Cached    int    // texts served from the cache
	CachePath string // the cache file; "" without a cache
	Tokens    int64  // tokens the model read (before truncation to MaxLen)
	// Skipped counts bad rows left out (Data.SkipBad), FirstSkipped says
	// why the first was.
	Skipped      int
	FirstSkipped error
}

// Embed embeds every record of o.Input and writes the vectors to o.Output.
// Bad input (the output's format, the data set) fails before a model is
// loaded. A cancelled ctx stops it between chunks of records, writing
// nothing (the cache keeps what was embedded).
func Embed(ctx context.Context, o EmbedOptions) (*EmbedResult, error) {
	if ext := strings.ToLower(filepath.Ext(o.Output)); ext != ".safetensors" && ext != ".npy" {
		return nil, fmt.Errorf("embed: output %q: want a .safetensors or .npy file", o.Output)
	}
	r, err := dataset.Open(o.Input, o.Data)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var progress *embed.Progress
	if o.Progress != nil {
		progress = embed.NewProgress(o.Progress, r.Progress)
	}
	var (
		e      embed.Embedder
		dim    int
		tokens func() int64 // read by the embedder
	)
	if o.EncoderDir != "" || o.Encoder != nil {
		enc := o.Encoder
		if enc == nil {
			if enc, err = LoadEmbedEncoder(o.EncoderDir, o.Backend); err != nil {
				return nil, err
			}
			defer enc.Close()
		}
		pooling, err := encoder.ParsePooling(cmp.Or(o.Pooling, string(encoder.PoolMean)))
		if err != nil {
			return nil, err
		}
		ee, err := enc.Embedder(embed.EncoderOptions{BatchTokens: o.BatchTokens, MaxLen: o.MaxLen, Pooling: pooling,
			Prefix: o.Prefix, Progress: progress})
		if err != nil {
			return nil, err
		}
		e, dim, tokens = ee, ee.Dim(), ee.Tokens
	} else {
		em := o.Model
		if em == nil {
			if em, err = LoadEmbedModel(o.ModelDir, o.Backend); err != nil {
				return nil, err
			}
			defer em.Close()
		}
		me, err := em.Embedder(embed.ModelOptions{BatchTokens: o.BatchTokens, MaxLen: o.MaxLen, Progress: progress})
		if err != nil {
			return nil, err
		}
		start := em.tokens
		e, dim, tokens = me, me.Dim(), func() int64 { return em.tokens - start }
	}
	var cached *embed.CachedEmbedder
	if o.CacheDir != "" {
		if cached, err = embed.NewCachedEmbedder(e, o.CacheDir, o.Warn); err != nil {
			return nil, err
		}
		defer cached.Close()
		cached.Progress = progress
		e = cached
	}

	// The vectors go to a scratch file as they are made, not to memory:
	// a pool of millions of rows is gigabytes of them.
	n, err := embed.RecordsToFile(ctx, r, e, dim, progress, o.Output)
	progress.Finish()
	if errors.Is(err, embed.ErrNoRecords) {
		if n, first := r.Skipped(); n > 0 {
			return nil, fmt.Errorf("embed: %s: no records: all %d rows were bad (--skip-bad); the first: %v", o.Input, n, first)
		}
		return nil, fmt.Errorf("embed: %s: no records", o.Input)
	}
	if err != nil {
		return nil, err
	}
	res := &EmbedResult{Records: n, Schema: r.Schema(), Rows: embed.RowsPath(o.Output),
		Embedded: n, Tokens: tokens()}
	if cached != nil {
		res.Cached, res.Embedded = cached.Stats()
		res.CachePath = cached.Cache().Path()
	}
	res.Skipped, res.FirstSkipped = r.Skipped()
	return res, nil
}

// DefaultEmbedCacheDir is compass/embeddings under the user's cache
// directory ($XDG_CACHE_HOME, ~/.cache).
func DefaultEmbedCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("embed: no user cache directory: %w", err)
	}
	return filepath.Join(base, "compass", "embeddings"), nil
}
