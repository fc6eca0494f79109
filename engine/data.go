package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model/tokenizer"
)

// DataOptions say how training data is read and tokenized.
type DataOptions struct {
	Files      []string                  // data files (any format/schema dataset reads)
	Schema     dataset.Schema            // "" = auto
	SeqLen     int                       // row length; longer examples are cut or split
	Long       string                    // "cut" (default) or "split" (dataset.Fit)
	LossOn     string                    // aya: "target" (default: loss on the target part only) or "all"
	Chat       *tokenizer.Chat           // for chat data: the checkpoint's chat template (nil: error on chat data)
	AddSpecial bool                      // text/aya: add the tokenizer's special tokens (e.g. Llama-3's BOS); the trainer's default is true
	AppendEOS  bool                      // text/aya: append EOS, with loss on it; the trainer's default is true
	EOS        int32                     // EOS id (from tokenizer_config.json / generation_config.json / config.json)
	SkipBad    bool                      // skip and count bad rows instead of failing
	Progress   func(done, total float64) // may be nil; done counts files, total is len(Files)
}

// DataStats say what LoadExamples read and made.
type DataStats struct {
	Files         []FileStats
	Examples      int // examples returned (a split example counts each chunk)
	Tokens        int // their tokens
	TargetTokens  int // their target tokens
	Cut           int // examples cut to SeqLen
	Split         int // examples split into chunks of SeqLen
	Dropped       int // cut examples dropped because their targets were all past SeqLen
	DroppedTokens int // tokens past SeqLen in no example returned
	Empty         int // records without a target token (a chat without an assistant turn), left out
	Skipped       int // bad rows skipped with SkipBad
}

// FileStats identify a data file: what a run's config records.
type FileStats struct {
	Path     string `json:"path"`
	SHA256   string `json:"sha256"` // of the file's bytes, as stored (compressed or not)
	Schema   string `json:"schema"`
	Examples int    `json:"examples"` // examples it gave
}

// Loss placement for aya data.
const (
	LossOnTarget = "target"
	LossOnAll    = "all"
)

// LoadExamples reads the data files, tokenizes every record and makes the
// examples fit in SeqLen tokens (dataset.Fit). Where the loss goes depends
// on the schema:
//
//   - text (and the multiple-choice schemas, by their Text): every token
//     but the first;
//   - aya: inputs + "\n" + targets is tokenized as one text, so the target's
//     tokens are those that follow the prompt in it; with LossOn "target"
//     the targets are the tokens whose text starts at or after the target's
//     first byte, with "all" every token but the first;
//   - chat: the conversation rendered with Chat's template; the targets are
//     the assistant turns' tokens (tokenizer.Chat.Encode), the template
//     writes any BOS and end-of-turn tokens itself, so AddSpecial and
//     AppendEOS do not apply.
//
// With AppendEOS the EOS token ends every text and aya example as a target.
// A record with no target is left out and counted (Empty); a file that
// gives no example at all is an error naming it. A bad row is an error
// naming its file and line unless SkipBad. Examples keep the order of the
// files and rows; tokenizing runs on all CPUs. A cancelled ctx stops it
// between batches of records with ctx's error.
func LoadExamples(ctx context.Context, tok *tokenizer.Tokenizer, opts DataOptions) ([]dataset.Example, DataStats, error) {
	var st DataStats
	if err := opts.check(tok); err != nil {
		return nil, st, err
	}
	var all []dataset.Example
	for i, path := range opts.Files {
		progress := func(p float64) {
			if opts.Progress != nil {
				opts.Progress(float64(i)+p, float64(len(opts.Files)))
			}
		}
		fs, ex, fst, err := loadFile(ctx, tok, &opts, path, progress)
		if err != nil {
			return nil, st, err
		}
		fitted, fit, err := dataset.Fit(ex, opts.SeqLen, opts.Long)
		if err != nil {
			return nil, st, fmt.Errorf("data: %s: %w", path, err)
		}
		if len(fitted) == 0 {
			why := "it has no records"
			if n := len(ex) + fst.Empty; n > 0 {
				why = fmt.Sprintf("none of its %d records has a target token within --seq-len %d", n, opts.SeqLen)
			}
			if fst.Skipped > 0 {
				why += fmt.Sprintf(" (%d bad rows skipped)", fst.Skipped)
			}
			return nil, st, fmt.Errorf("data: %s: no usable example: %s", path, why)
		}
		fs.Examples = len(fitted)
		st.Files = append(st.Files, fs)
		st.Empty += fst.Empty + fit.Empty
		st.Skipped += fst.Skipped
		st.Cut += fit.Cut
		st.Split += fit.Split
		st.Dropped += fit.Dropped
		st.DroppedTokens += fit.DroppedTokens
		all = append(all, fitted...)
		progress(1)
	}
	for _, e := range all {
		st.Tokens += len(e.IDs)
		st.TargetTokens += e.Targets()
	}
	st.Examples = len(all)
	return all, st, nil
}

// check validates the options and fills in defaults.
func (o *DataOptions) check(tok *tokenizer.Tokenizer) error {
	switch {
	case tok == nil:
		return errors.New("data: no tokenizer")
	case len(o.Files) == 0:
		return errors.New("data: no data files")
	case o.SeqLen < 2:
		return fmt.Errorf("data: sequence length %d: want at least 2", o.SeqLen)
	}
	if o.Long == "" {
		o.Long = dataset.LongCut
	}
	if o.Long != dataset.LongCut && o.Long != dataset.LongSplit {
		return fmt.Errorf("data: long examples: %q, want %q or %q", o.Long, dataset.LongCut, dataset.LongSplit)
	}
	if o.LossOn == "" {
		o.LossOn = LossOnTarget
	}
	if o.LossOn != LossOnTarget && o.LossOn != LossOnAll {
		return fmt.Errorf("data: loss on %q, want %q or %q", o.LossOn, LossOnTarget, LossOnAll)
	}
	if o.AppendEOS && (o.EOS < 0 || int(o.EOS) >= tok.VocabSize()) {
		return fmt.Errorf("data: EOS id %d is outside the tokenizer's vocabulary of %d", o.EOS, tok.VocabSize())
	}
	return nil
}

// fileStats counts what one file gave besides examples.
type fileStats struct{ Empty, Skipped int }

// recordBatch is how many records are tokenized together, in parallel.
const recordBatch = 512

// loadFile hashes one file and turns its records into examples, in order.
func loadFile(ctx context.Context, tok *tokenizer.Tokenizer, opts *DataOptions, path string, progress func(float64)) (FileStats, []dataset.Example, fileStats, error) {
	fs := FileStats{Path: path}
	var st fileStats
	sum, err := FileSHA256(path)
	if err != nil {
		return fs, nil, st, fmt.Errorf("data: %w", err)
	}
	fs.SHA256 = sum
	r, err := dataset.Open(path, dataset.Options{Schema: opts.Schema, SkipBad: opts.SkipBad})
	if err != nil {
		return fs, nil, st, err
	}
	defer r.Close()

	var out []dataset.Example
	recs := make([]dataset.Record, 0, recordBatch)
	flush := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		schema := r.Schema()
		if schema == dataset.SchemaChat && opts.Chat == nil {
			return fmt.Errorf("data: %s: chat data needs the model's chat template, and there is none (give a chat format)", path)
		}
		ex, errs := tokenizeRecords(tok, opts, schema, recs)
		for k, err := range errs {
			switch {
			case err != nil && opts.SkipBad:
				st.Skipped++
			case err != nil:
				return fmt.Errorf("data: %s: %w", recs[k].Source, err)
			case ex[k].Targets() == 0:
				st.Empty++
			default:
				out = append(out, ex[k])
			}
		}
		recs = recs[:0]
		progress(r.Progress())
		return nil
	}
	for r.Next() {
		recs = append(recs, r.Record())
		if len(recs) == recordBatch {
			if err := flush(); err != nil {
				return fs, nil, st, err
			}
		}
	}
	if err := r.Err(); err != nil {
		return fs, nil, st, err
	}
	if err := flush(); err != nil {
		return fs, nil, st, err
	}
	skipped, _ := r.Skipped()
	st.Skipped += skipped
	fs.Schema = string(r.Schema())
	if fs.Schema == string(dataset.SchemaAuto) {
		fs.Schema = "" // a file without records
	}
	return fs, out, st, nil
}

// tokenizeRecords makes an example of each record on all CPUs; errs[i] is
// record i's error. The tokenizer and the chat template are safe for
// concurrent use.
func tokenizeRecords(tok *tokenizer.Tokenizer, opts *DataOptions, schema dataset.Schema, recs []dataset.Record) ([]dataset.Example, []error) {
	ex := make([]dataset.Example, len(recs))
	errs := make([]error, len(recs))
	workers := min(runtime.GOMAXPROCS(0), len(recs))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(recs); i += workers {
				ex[i], errs[i] = makeExample(tok, opts, schema, recs[i])
			}
		}()
	}
	wg.Wait()
	return ex, errs
}

// makeExample tokenizes one record and marks its targets (see LoadExamples).
func makeExample(tok *tokenizer.Tokenizer, opts *DataOptions, schema dataset.Schema, rec dataset.Record) (dataset.Example, error) {
	e := dataset.Example{Source: rec.Source}
	var ids []int
	switch schema {
	case dataset.SchemaChat:
		msgs := make([]tokenizer.Message, len(rec.Messages))
		for i, m := range rec.Messages {
			msgs[i] = tokenizer.Message{Role: m.Role, Content: m.Content}
		}
		var mask []bool
		var err error
		if ids, mask, err = opts.Chat.Encode(msgs, false); err != nil {
			return e, err
		}
		e.Loss = mask
	case dataset.SchemaAya:
		var spans []tokenizer.Span
		var err error
		if ids, spans, err = tok.EncodeOffsets(rec.Text, opts.AddSpecial); err != nil {
			return e, err
		}
		// Text is inputs + "\n" + targets: the target starts after both.
		targetStart := len(rec.Fields["inputs"]) + 1
		e.Loss = make([]bool, len(ids))
		for i, s := range spans {
			e.Loss[i] = opts.LossOn == LossOnAll || (s.Start >= targetStart && s.End > s.Start)
		}
	default:
		var err error
		if ids, err = tok.Encode(rec.Text, opts.AddSpecial); err != nil {
			return e, err
		}
		e.Loss = make([]bool, len(ids))
		for i := range e.Loss {
			e.Loss[i] = true
		}
	}
	e.IDs = make([]int32, len(ids), len(ids)+1)
	for i, id := range ids {
		e.IDs[i] = int32(id)
	}
	if schema != dataset.SchemaChat && opts.AppendEOS {
		e.IDs = append(e.IDs, opts.EOS)
		e.Loss = append(e.Loss, true)
	}
	if len(e.Loss) > 0 {
		e.Loss[0] = false // nothing comes before it
	}
	return e, nil
}
