package encoder

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// Tiny random encoders of both families. The XLM-R one has XLM-R's
// padding index 1 (so positions start at 2) and one token type; the BERT
// one two token types and BERT's epsilon.
var (
	tinyXLMR = []byte(`{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
		"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
		"vocab_size": 50, "max_position_embeddings": 40, "type_vocab_size": 1, "layer_norm_eps": 1e-05,
		"pad_token_id": 1, "hidden_act": "gelu", "position_embedding_type": "absolute"}`)
	tinyBert = []byte(`{"architectures": ["BertModel"], "model_type": "bert",
		"hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 48,
		"vocab_size": 60, "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
		"pad_token_id": 0, "hidden_act": "gelu"}`)
)

func TestPublishedConfigs(t *testing.T) {
	for _, c := range []struct {
		file      string
		family    Family
		hidden    int
		vocab     int
		maxTokens int
		params    int64 // XLMRobertaModel / BertModel with the pooler
	}{
		// xlm-roberta-base: 278,043,648 parameters.
		{"multilingual-e5-base.json", FamilyXLMRoberta, 768, 250002, 512, 278_043_648},
		// Multilingual-MiniLM-L12-H384 with XLM-R's vocabulary: 117,653,760.
		{"multilingual-e5-small.json", FamilyBert, 384, 250037, 512, 117_653_760},
	} {
		cfg, err := LoadConfig(filepath.Join("..", "..", "testdata", "configs", c.file))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Family != c.family || cfg.HiddenSize != c.hidden || cfg.VocabSize != c.vocab || cfg.NumHiddenLayers != 12 {
			t.Errorf("%s: parsed %+v", c.file, cfg)
		}
		if got := cfg.MaxTokens(); got != c.maxTokens {
			t.Errorf("%s: MaxTokens %d, want %d", c.file, got, c.maxTokens)
		}
		if got := cfg.NumParameters(); got != c.params {
			t.Errorf("%s: %d parameters, want %d", c.file, got, c.params)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	base := map[string]any{}
	if err := json.Unmarshal(tinyXLMR, &base); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  string
		val  any
		want string
	}{
		{"model_type", "llama", `model_type "llama"`},
		{"architectures", []string{"LlamaForCausalLM"}, "architectures"},
		{"architectures", []string{"BertModel"}, "none is a xlm-roberta encoder"},
		{"hidden_act", "gelu_new", `hidden_act "gelu_new"`},
		{"position_embedding_type", "relative_key", "relative_key"},
		{"hidden_size", nil, `missing "hidden_size"`},
		{"num_attention_heads", 5, "not a multiple"},
		{"pad_token_id", 39, "no position after the padding index"},
		// Tensors lists every layer's tensors, NumParameters multiplies
		// sizes in int64.
		{"num_hidden_layers", 10000000, "num_hidden_layers 10000000 is beyond what compass loads (at most 4096)"},
		{"max_position_embeddings", 4000000000, "max_position_embeddings 4000000000 is beyond"},
	} {
		raw := map[string]any{}
		for k, v := range base {
			raw[k] = v
		}
		if c.val == nil {
			delete(raw, c.key)
		} else {
			raw[c.key] = c.val
		}
		data, _ := json.Marshal(raw)
		_, err := ParseConfig(data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s = %v: error %v, want one containing %q", c.key, c.val, err, c.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteRandomCheckpoint(dir, tinyXLMR, tensor.F32, 1, "roberta."); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, nil) // the masked-LM prefix loads
	if err != nil {
		t.Fatal(err)
	}
	m.Close()

	// A config whose vocabulary is not the embedding's: an error naming
	// the weights file and both sizes.
	bad := strings.Replace(string(tinyXLMR), `"vocab_size": 50`, `"vocab_size": 51`, 1)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, nil)
	if err == nil || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), "vocab_size is 51") {
		t.Errorf("vocabulary mismatch: %v", err)
	}

	// A missing tensor.
	dir2 := t.TempDir()
	if _, err := WriteRandomCheckpoint(dir2, tinyBert, tensor.F32, 1, ""); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir2, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var entries []safetensors.Entry
	for _, name := range f.Names() {
		if name == "encoder.layer.1.output.LayerNorm.bias" {
			continue
		}
		x, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tensor.FromBytes(x.DType(), x.Shape(), append([]byte(nil), x.Bytes()...))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, safetensors.EntryFromTensor(name, c))
	}
	f.Close()
	if err := safetensors.Write(filepath.Join(dir2, "model.safetensors"), entries, nil); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir2, nil)
	if err == nil || !strings.Contains(err.Error(), "encoder.layer.1.output.LayerNorm.bias") || !strings.Contains(err.Error(), dir2) {
		t.Errorf("missing tensor: %v", err)
	}

	// pytorch_model.bin alone is refused with the reason.
	dir3 := t.TempDir()
	os.WriteFile(filepath.Join(dir3, "config.json"), tinyBert, 0o644)
	os.WriteFile(filepath.Join(dir3, "pytorch_model.bin"), []byte("not read"), 0o644)
	_, err = Load(dir3, nil)
	if err == nil || !strings.Contains(err.Error(), "pytorch_model.bin") {
		t.Errorf("pytorch_model.bin: %v", err)
	}

	// A decoder's config is not an encoder's.
	dir4 := t.TempDir()
	os.WriteFile(filepath.Join(dir4, "config.json"), []byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}`), 0o644)
	_, err = Load(dir4, nil)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir4, "config.json")) {
		t.Errorf("decoder config: %v", err)
	}
}

// randomSeqs returns n sequences of lengths in [1, maxLen] of ids in
// [0, vocab), starting with start (the <s> or [CLS] of real inputs).
func randomSeqs(rng *rand.Rand, n, maxLen, vocab, start int) [][]int {
	seqs := make([][]int, n)
	for i := range seqs {
		s := make([]int, 1+rng.IntN(maxLen))
		s[0] = start
		for t := 1; t < len(s); t++ {
			s[t] = rng.IntN(vocab)
		}
		seqs[i] = s
	}
	seqs[0] = seqs[0][:1] // one token alone
	for len(seqs[1]) < maxLen {
		seqs[1] = append(seqs[1], 2+rng.IntN(vocab-2)) // one at the longest
	}
	return seqs
}

func referencePython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("COMPASS_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		t.Fatalf("the PyTorch reference needs %s with torch (apt-get install python3-torch, or set COMPASS_PYTHON): %v\n%s", py, err, out)
	}
	return py
}

// referenceEncode runs tools/reference's encode (in float64) on seqs.
func referenceEncode(t *testing.T, modelDir string, seqs [][]int) map[string][]float64 {
	t.Helper()
	dir := t.TempDir()
	in, _ := json.Marshal(map[string]any{"input_ids": seqs})
	inPath, outPath := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.safetensors")
	if err := os.WriteFile(inPath, in, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(referencePython(t), filepath.Join("..", "..", "tools", "reference", "reference.py"),
		"encode", "--model", modelDir, "--input", inPath, "--output", outPath, "--float64", "--output-f64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference.py encode: %v\n%s", err, out)
	}
	f, err := safetensors.Open(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float64{}
	for _, name := range f.Names() {
		b, err := f.Bytes(name)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]float64, len(b)/8)
		for i := range v {
			v[i] = math.Float64frombits(leU64(b[8*i:]))
		}
		out[name] = v
	}
	return out
}

func leU64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// maxAbsDiff is max |got - want|.
func maxAbsDiff(got []float32, want []float64) float64 {
	worst := 0.0
	for i, w := range want {
		d := math.Abs(float64(got[i]) - w)
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		worst = max(worst, d)
	}
	return worst
}

func flat(vs [][]float32) []float32 {
	var out []float32
	for _, v := range vs {
		out = append(out, v...)
	}
	return out
}

// TestReferenceParity holds the forward pass and the pooling to the
// PyTorch reference (HF's modeling code, in float64) on ragged batches:
// hidden states within 1e-4 absolute (they are O(1) after each LayerNorm),
// pooled vectors within 1e-5.
func TestReferenceParity(t *testing.T) {
	for _, c := range []struct {
		name   string
		config []byte
		prefix string
		start  int
	}{
		{"xlm-roberta", tinyXLMR, "", 0},
		{"bert", tinyBert, "bert.", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := WriteRandomCheckpoint(dir, c.config, tensor.F32, 7, c.prefix)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Load(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			rng := rand.New(rand.NewPCG(11, 12))
			seqs := randomSeqs(rng, 6, cfg.MaxTokens(), cfg.VocabSize, c.start)
			seqs[2] = append(seqs[2], cfg.PadTokenID, 5) // a padding id inside a text: XLM-R's positions skip it
			h, err := m.Forward(seqs)
			if err != nil {
				t.Fatal(err)
			}
			ref := referenceEncode(t, dir, seqs)
			if d := maxAbsDiff(h.F32(), ref["hidden"]); d > 1e-4 {
				t.Errorf("hidden states differ by %.3g > 1e-4", d)
			} else {
				t.Logf("hidden states: max difference %.3g", d)
			}
			lengths := make([]int, len(seqs))
			for i, s := range seqs {
				lengths[i] = len(s)
			}
			for _, p := range []struct {
				name      string
				pool      Pooling
				normalize bool
			}{{"mean", PoolMean, false}, {"mean_l2", PoolMean, true}, {"cls", PoolCLS, false}, {"cls_l2", PoolCLS, true}} {
				vecs, err := Pool(h, lengths, p.pool, p.normalize)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxAbsDiff(flat(vecs), ref[p.name]); d > 1e-5 {
					t.Errorf("%s: pooled vectors differ by %.3g > 1e-5", p.name, d)
				} else {
					t.Logf("%s: max difference %.3g", p.name, d)
				}
			}
		})
	}
}

// TestPaddingInvariance: a text's embedding does not depend on what else
// is in its batch (how much padding it gets).
func TestPaddingInvariance(t *testing.T) {
	dir := t.TempDir()
	cfg, err := WriteRandomCheckpoint(dir, tinyXLMR, tensor.F32, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	seqs := randomSeqs(rng, 5, cfg.MaxTokens(), cfg.VocabSize, 0)
	lengths := make([]int, len(seqs))
	for i, s := range seqs {
		lengths[i] = len(s)
	}
	h, err := m.Forward(seqs)
	if err != nil {
		t.Fatal(err)
	}
	batched, err := Pool(h, lengths, PoolMean, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		hi, err := m.Forward([][]int{s})
		if err != nil {
			t.Fatal(err)
		}
		alone, err := Pool(hi, []int{len(s)}, PoolMean, true)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float64, len(alone[0]))
		for j, x := range alone[0] {
			want[j] = float64(x)
		}
		// Only the GEMMs' blocking may differ with the batch's shape.
		if d := maxAbsDiff(batched[i], want); d > 1e-6 {
			t.Errorf("text %d (%d tokens in a batch of %d): embedding differs alone by %.3g", i, len(s), h.Dim(1), d)
		}
	}
}

func TestForwardBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg, err := WriteRandomCheckpoint(dir, tinyBert, tensor.F32, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	long := make([]int, cfg.MaxTokens()+1)
	for _, c := range []struct {
		seqs [][]int
		want string
	}{
		{nil, "no sequences"},
		{[][]int{{2}, {}}, "sequence 1 is empty"},
		{[][]int{{2, 60}}, "id 60 is outside the vocabulary of 60"},
		{[][]int{{2, -1}}, "id -1"},
		{[][]int{long}, "33 tokens, more than the 32"},
	} {
		_, err := m.Forward(c.seqs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.seqs, err, c.want)
		}
	}
	h, _ := m.Forward([][]int{{2, 3}})
	if _, err := Pool(h, []int{3}, PoolMean, true); err == nil {
		t.Error("Pool with a length past T: no error")
	}
	if _, err := ParsePooling("max"); err == nil {
		t.Error(`ParsePooling("max"): no error`)
	}
}
