package embed

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// embedTestConfig is a tiny Llama: 2 layers, hidden 32, GQA 2.
const embedTestConfig = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":61,"rms_norm_eps":1e-5,
	"max_position_embeddings":2048,"rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"float32"}`

func tinyEmbedModel(t *testing.T) (*model.Model, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(embedTestConfig), tensor.F32, 7); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

// embedByteEncode is a stand-in tokenizer: BOS (1), then one token per byte.
func embedByteEncode(s string) ([]int, error) {
	ids := []int{1}
	for _, b := range []byte(s) {
		ids = append(ids, 2+int(b)%59)
	}
	return ids, nil
}

// embedReference computes one text's vector on its own: the hidden
// states of the unpadded sequence, averaged and normalised in float64.
func embedReference(t *testing.T, m *model.Model, ids []int) []float64 {
	t.Helper()
	in := make([]int32, len(ids))
	for i, id := range ids {
		in[i] = int32(id)
	}
	x, err := tensor.FromI32(in, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	h, err := m.LastHidden(x)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Config.HiddenSize
	mean := make([]float64, d)
	for i, v := range h.F32() {
		mean[i%d] += float64(v) / float64(len(ids))
	}
	var norm float64
	for _, v := range mean {
		norm += v * v
	}
	for i := range mean {
		mean[i] /= math.Sqrt(norm)
	}
	return mean
}

func embedMaxDiff(a []float32, b []float64) float64 {
	worst := 0.0
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i])-b[i]))
	}
	return worst
}

func TestModelEmbedderPooling(t *testing.T) {
	m, _ := tinyEmbedModel(t)
	e, err := NewModelEmbedder(m, embedByteEncode, "tiny", ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	short := "habari"
	long := "a much longer text, so that the short one is padded on the right"
	alone, err := e.Embed([]string{short})
	if err != nil {
		t.Fatal(err)
	}
	// In one batch with a longer text, the short text is right-padded; the
	// padding must not reach its vector.
	together, err := e.Embed([]string{long, short, long[:20]})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := embedByteEncode(short)
	ref := embedReference(t, m, ids)
	if d := embedMaxDiff(alone[0], ref); d > 1e-6 {
		t.Errorf("alone: differs from the reference by %g", d)
	}
	if d := embedMaxDiff(together[1], ref); d > 1e-6 {
		t.Errorf("padded in a batch: differs from the reference by %g", d)
	}
	longIDs, _ := embedByteEncode(long)
	if d := embedMaxDiff(together[0], embedReference(t, m, longIDs)); d > 1e-6 {
		t.Errorf("long text: differs from the reference by %g", d)
	}
	// Unit length, and distinct texts give distinct vectors.
	for i, v := range together {
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if math.Abs(math.Sqrt(n)-1) > 1e-6 {
			t.Errorf("vector %d has norm %v", i, math.Sqrt(n))
		}
	}
	if embedMaxDiff(together[0], ref) < 1e-3 {
		t.Errorf("different texts gave the same vector")
	}
	if e.Dim() != 32 || len(alone[0]) != 32 {
		t.Errorf("dimension %d, vector of %d", e.Dim(), len(alone[0]))
	}
}

// Batching by the token budget changes no vector: one text per pass
// (a budget of 1) and all texts in one pass agree.
func TestModelEmbedderBatching(t *testing.T) {
	m, _ := tinyEmbedModel(t)
	texts := []string{"moja", "mbili tatu", "nne tano sita saba", "x", "mbili tatu", "kumi na moja, kumi na mbili"}
	one, err := NewModelEmbedder(m, embedByteEncode, "tiny", ModelOptions{BatchTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	all, err := NewModelEmbedder(m, embedByteEncode, "tiny", ModelOptions{BatchTokens: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	a, err := one.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := all.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range texts {
		ref := make([]float64, len(b[i]))
		for j, x := range b[i] {
			ref[j] = float64(x)
		}
		if d := embedMaxDiff(a[i], ref); d > 1e-6 {
			t.Errorf("text %d: one per pass and all in one pass differ by %g", i, d)
		}
	}
	// Truncation: with MaxLen 4 a text is its BOS and first 3 bytes.
	cut, err := NewModelEmbedder(m, embedByteEncode, "tiny", ModelOptions{MaxLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cut.Embed([]string{"nne tano sita saba"})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := embedByteEncode("nne")
	if d := embedMaxDiff(got[0], embedReference(t, m, ids)); d > 1e-6 {
		t.Errorf("truncated text differs from its prefix by %g", d)
	}
	if cut.Name() != "tiny;pool=mean;maxlen=4" || all.Name() != "tiny;pool=mean;maxlen=512" {
		t.Errorf("names %q, %q", cut.Name(), all.Name())
	}
	if v, err := all.Embed(nil); err != nil || len(v) != 0 {
		t.Errorf("no texts: %v, %v", v, err)
	}
}

func TestModelEmbedderErrors(t *testing.T) {
	m, _ := tinyEmbedModel(t)
	encode := func(s string) ([]int, error) {
		switch s {
		case "":
			return nil, nil
		case "big":
			return []int{1, 61}, nil
		case "fail":
			return nil, errors.New("unknown byte")
		}
		return embedByteEncode(s)
	}
	e, err := NewModelEmbedder(m, encode, "tiny", ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		texts []string
		index int
		want  string
	}{
		{[]string{"ok", ""}, 1, "text 1: no tokens"},
		{[]string{"big"}, 0, "text 0: token id 61 is outside the vocabulary of 61"},
		{[]string{"ok", "ok", "fail"}, 2, "text 2: tokenize: unknown byte"},
	} {
		_, err := e.Embed(tc.texts)
		var te *TextError
		if !errors.As(err, &te) || te.Index != tc.index || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want text %d: %q", tc.texts, err, tc.index, tc.want)
		}
	}
	if _, err := NewModelEmbedder(m, nil, "x", ModelOptions{}); err == nil {
		t.Errorf("no encode function accepted")
	}
	if _, err := NewModelEmbedder(m, encode, "x", ModelOptions{MaxLen: -1}); err == nil {
		t.Errorf("negative max length accepted")
	}
}

func TestModelSignature(t *testing.T) {
	_, dir := tinyEmbedModel(t)
	a, err := ModelSignature(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ModelSignature(dir)
	if a != b || !strings.HasPrefix(a, "model:"+dir+"#") {
		t.Fatalf("signature %q then %q", a, b)
	}
	// A copy elsewhere, with other modification times, is the same
	// embedder: a checkpoint copied to a serving machine keeps its
	// reference.
	copyDir := t.TempDir()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Hour)
		os.Chtimes(filepath.Join(copyDir, e.Name()), later, later)
	}
	if c, err := ModelSignature(copyDir); err != nil || EmbedderID(c) != EmbedderID(a) || c == a {
		t.Errorf("a copy's signature %q (%v); the original's %q: want the same hash in another directory", c, err, a)
	}
	// Other weights of the same shapes, written over the same files, or
	// another config, make another signature.
	if _, err := model.WriteRandomCheckpoint(dir, []byte(embedTestConfig), tensor.F32, 8); err != nil {
		t.Fatal(err)
	}
	c, _ := ModelSignature(dir)
	if c == a {
		t.Errorf("signature unchanged after new weights of the same shapes")
	}
	if _, err := model.WriteRandomCheckpoint(dir, []byte(strings.Replace(embedTestConfig, "10000.0", "20000.0", 1)), tensor.F32, 8); err != nil {
		t.Fatal(err)
	}
	if d, _ := ModelSignature(dir); d == c || d == a {
		t.Errorf("signature unchanged after another config")
	}
	if _, err := ModelSignature(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a directory without config.json has a signature")
	}
}

func TestEmbedProgress(t *testing.T) {
	if NewProgress(nil, nil) != nil {
		t.Fatal("a progress line on no writer")
	}
	var nilProgress *Progress
	nilProgress.addEmbedded(1, 2) // a nil progress draws nothing and does not panic
	nilProgress.Finish()
	var buf bytes.Buffer
	p := NewProgress(&buf, func() float64 { return 0.5 })
	p.addEmbedded(1200, 83210)
	p.addCached(3)
	p.setRecords(1203)
	p.Finish()
	out := buf.String()
	for _, want := range []string{"\r", "50%", "1,203 records", "1,200 embedded (83,210 tokens", "3 cached", "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output %q lacks %q", out, want)
		}
	}
	if groupDigits(1234567) != "1,234,567" || groupDigits(-1000) != "-1,000" || groupDigits(999) != "999" {
		t.Errorf("groupDigits: %s %s %s", groupDigits(1234567), groupDigits(-1000), groupDigits(999))
	}
}

// Every text goes into exactly one batch, longest first; a batch holds at
// most batchTokens tokens padded to its first text, and one text at least
// (a text longer than the budget runs alone).
func TestLengthBatches(t *testing.T) {
	lens := []int{3, 9, 1, 4, 4, 12, 2, 7}
	ids := make([][]int, len(lens))
	for i, n := range lens {
		ids[i] = make([]int, n)
	}
	batches := lengthBatches(ids, 10)
	want := [][]int{{5}, {1}, {7}, {3, 4}, {0, 6, 2}}
	if !reflect.DeepEqual(batches, want) {
		t.Fatalf("batches %v, want %v", batches, want)
	}
	if got := lengthBatches([][]int{make([]int, 5), make([]int, 5)}, 10); !reflect.DeepEqual(got, [][]int{{0, 1}}) {
		t.Errorf("two texts of 5 in a budget of 10: batches %v, want one", got)
	}
	if got := lengthBatches(nil, 10); len(got) != 0 {
		t.Errorf("no texts: batches %v", got)
	}
}
