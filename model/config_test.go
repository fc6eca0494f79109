package model

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func loadTestConfig(t *testing.T, name string) *Config {
	t.Helper()
	c, err := LoadConfig(filepath.Join("..", "testdata", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The values of the REFERENCE.md table, read from the published files.
func TestRealConfigs(t *testing.T) {
	tests := []struct {
		file string
		want Config
	}{
		{"llama-3.1-8b.json", Config{
			Architecture: "LlamaForCausalLM", Family: FamilyLlama,
			HiddenSize: 4096, IntermediateSize: 14336, NumHiddenLayers: 32,
			NumAttentionHeads: 32, NumKeyValueHeads: 8, HeadDim: 128, VocabSize: 128256,
			RMSNormEps: 1e-5, RopeTheta: 500000, MaxPositionEmbeddings: 131072,
			RopeScaling: RopeScaling{Type: RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4,
				OriginalMaxPositionEmbeddings: 8192},
			PartialRotaryFactor: 1, TorchDtype: "bfloat16", HiddenAct: "silu",
			BOSTokenID: intPtr(128000), EOSTokenIDs: []int{128001},
		}},
		{"qwen2.5-7b.json", Config{
			Architecture: "Qwen2ForCausalLM", Family: FamilyQwen2,
			HiddenSize: 3584, IntermediateSize: 18944, NumHiddenLayers: 28,
			NumAttentionHeads: 28, NumKeyValueHeads: 4, HeadDim: 128, VocabSize: 152064,
			RMSNormEps: 1e-6, RopeTheta: 1000000, MaxPositionEmbeddings: 131072,
			RopeScaling:         RopeScaling{Type: RopeDefault},
			PartialRotaryFactor: 1, QKVBias: true, TorchDtype: "bfloat16", HiddenAct: "silu",
			BOSTokenID: intPtr(151643), EOSTokenIDs: []int{151643},
			// sliding_window 131072 is recorded in the file but unused
			// because use_sliding_window is false.
			MaxWindowLayers: 28,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c := loadTestConfig(t, tt.file)
			if !reflect.DeepEqual(*c, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *c, tt.want)
			}
		})
	}
}

func TestRealConfigPhi4Mini(t *testing.T) {
	c := loadTestConfig(t, "phi-4-mini-instruct.json")
	if c.Architecture != "Phi3ForCausalLM" || c.Family != FamilyPhi3 {
		t.Errorf("architecture %q family %q", c.Architecture, c.Family)
	}
	ints := []struct {
		name      string
		got, want int
	}{
		{"hidden", c.HiddenSize, 3072},
		{"intermediate", c.IntermediateSize, 8192},
		{"layers", c.NumHiddenLayers, 32},
		{"heads", c.NumAttentionHeads, 24},
		{"kv heads", c.NumKeyValueHeads, 8},
		{"head dim", c.HeadDim, 128},
		{"vocab", c.VocabSize, 200064},
		{"max positions", c.MaxPositionEmbeddings, 131072},
		{"original max positions", c.OriginalMaxPositionEmbeddings, 4096},
		{"rotary dims", c.RotaryDims(), 96},
		{"sliding window", c.SlidingWindow, 262144},
	}
	for _, v := range ints {
		if v.got != v.want {
			t.Errorf("%s = %d, want %d", v.name, v.got, v.want)
		}
	}
	if c.RMSNormEps != 1e-5 || c.RopeTheta != 10000 || c.PartialRotaryFactor != 0.75 {
		t.Errorf("eps %v theta %v partial %v", c.RMSNormEps, c.RopeTheta, c.PartialRotaryFactor)
	}
	if !c.TieWordEmbeddings || c.QKVBias || c.OutputBias || c.MLPBias {
		t.Errorf("tied %v biases %v %v %v", c.TieWordEmbeddings, c.QKVBias, c.OutputBias, c.MLPBias)
	}
	if *c.BOSTokenID != 199999 || !reflect.DeepEqual(c.EOSTokenIDs, []int{199999}) {
		t.Errorf("bos %d eos %v", *c.BOSTokenID, c.EOSTokenIDs)
	}

	rs := c.RopeScaling
	if rs.Type != RopeLongRope || len(rs.ShortFactor) != 48 || len(rs.LongFactor) != 48 {
		t.Fatalf("rope %s, %d short, %d long factors", rs.Type, len(rs.ShortFactor), len(rs.LongFactor))
	}
	for i, f := range rs.ShortFactor {
		if f != 1 {
			t.Errorf("short_factor[%d] = %v, want 1", i, f)
		}
	}
	// Spot checks against the published array (the full array was
	// compared with a second copy when the file was added).
	for i, want := range map[int]float64{0: 1, 1: 1.118320672, 20: 9.36110372, 30: 28.64115884, 31: 32.03, 46: 44.16, 47: 47.77} {
		if rs.LongFactor[i] != want {
			t.Errorf("long_factor[%d] = %v, want %v", i, rs.LongFactor[i], want)
		}
	}
	// ln 32 / ln 4096 = 5/12 exactly.
	if got, want := c.RopeAttentionFactor(), math.Sqrt(17.0/12.0); math.Abs(got-want) > 1e-12 {
		t.Errorf("RopeAttentionFactor = %v, want %v", got, want)
	}
}

// Hand arithmetic (V vocab, H hidden, I intermediate, L layers):
//
// Llama-3.1-8B: V 128256, H 4096, I 14336, L 32, q 4096, k = v 8×128 = 1024.
//
//	embed = lm_head = 128256 × 4096             =   525,336,576 each
//	layer: q 4096×4096 = 16,777,216; k = v 1024×4096 = 4,194,304;
//	       o 16,777,216; gate = up = down 14336×4096 = 58,720,256;
//	       two norms 8192: 2×16,777,216 + 2×4,194,304 + 3×58,720,256 + 8192
//	                                             =   218,112,000
//	32 layers                                    = 6,979,584,000
//	total = 2×525,336,576 + 6,979,584,000 + 4096 = 8,030,261,248
//
// Qwen2.5-7B: V 152064, H 3584, I 18944, L 28, q 3584, k = v 4×128 = 512.
//
//	embed = lm_head = 152064 × 3584             =   544,997,376 each
//	layer: q 3584×3584 = 12,845,056 (+3584 bias); k = v 512×3584 =
//	       1,835,008 (+512 bias each); o 12,845,056; gate = up = down
//	       18944×3584 = 67,895,296; norms 7168:
//	       29,360,128 + 4608 + 203,685,888 + 7168 =   233,057,792
//	28 layers                                    = 6,525,618,176
//	total = 2×544,997,376 + 6,525,618,176 + 3584 = 7,615,616,512
//
// Phi-4-mini-instruct: V 200064, H 3072, I 8192, L 32, q 3072, k = v 1024, tied.
//
//	embed = 200064 × 3072                        =   614,596,608
//	layer: o 3072×3072 = 9,437,184; qkv (3072+2×1024)×3072 = 15,728,640;
//	       gate_up 16384×3072 = 50,331,648; down 3072×8192 = 25,165,824;
//	       norms 6144                            =   100,669,440
//	32 layers                                    = 3,221,422,080
//	total = 614,596,608 + 3,221,422,080 + 3072   = 3,836,021,760
func TestNumParametersRealConfigs(t *testing.T) {
	tests := []struct {
		file    string
		params  int64
		tensors int
	}{
		{"llama-3.1-8b.json", 8_030_261_248, 1 + 32*9 + 2},
		{"qwen2.5-7b.json", 7_615_616_512, 1 + 28*12 + 2},
		{"phi-4-mini-instruct.json", 3_836_021_760, 1 + 32*6 + 1},
	}
	for _, tt := range tests {
		c := loadTestConfig(t, tt.file)
		if got := c.NumParameters(); got != tt.params {
			t.Errorf("%s: NumParameters = %d, want %d", tt.file, got, tt.params)
		}
		if got := len(c.Tensors()); got != tt.tensors {
			t.Errorf("%s: %d tensors, want %d", tt.file, got, tt.tensors)
		}
	}
}

func TestTensorsOrderAndShapes(t *testing.T) {
	qwen := loadTestConfig(t, "qwen2.5-7b.json")
	specs := qwen.Tensors()
	wantQwen := []TensorSpec{
		{"model.embed_tokens.weight", []int{152064, 3584}},
		{"model.layers.0.self_attn.q_proj.weight", []int{3584, 3584}},
		{"model.layers.0.self_attn.q_proj.bias", []int{3584}},
		{"model.layers.0.self_attn.k_proj.weight", []int{512, 3584}},
		{"model.layers.0.self_attn.k_proj.bias", []int{512}},
		{"model.layers.0.self_attn.v_proj.weight", []int{512, 3584}},
		{"model.layers.0.self_attn.v_proj.bias", []int{512}},
		{"model.layers.0.self_attn.o_proj.weight", []int{3584, 3584}},
		{"model.layers.0.mlp.gate_proj.weight", []int{18944, 3584}},
		{"model.layers.0.mlp.up_proj.weight", []int{18944, 3584}},
		{"model.layers.0.mlp.down_proj.weight", []int{3584, 18944}},
		{"model.layers.0.input_layernorm.weight", []int{3584}},
		{"model.layers.0.post_attention_layernorm.weight", []int{3584}},
		{"model.layers.1.self_attn.q_proj.weight", []int{3584, 3584}},
	}
	if !reflect.DeepEqual(specs[:len(wantQwen)], wantQwen) {
		t.Errorf("qwen2 tensors:\ngot  %v\nwant %v", specs[:len(wantQwen)], wantQwen)
	}
	wantTail := []TensorSpec{
		{"model.norm.weight", []int{3584}},
		{"lm_head.weight", []int{152064, 3584}},
	}
	if !reflect.DeepEqual(specs[len(specs)-2:], wantTail) {
		t.Errorf("qwen2 tail: got %v, want %v", specs[len(specs)-2:], wantTail)
	}

	phi := loadTestConfig(t, "phi-4-mini-instruct.json")
	specs = phi.Tensors()
	wantPhi := []TensorSpec{
		{"model.embed_tokens.weight", []int{200064, 3072}},
		{"model.layers.0.self_attn.o_proj.weight", []int{3072, 3072}},
		{"model.layers.0.self_attn.qkv_proj.weight", []int{5120, 3072}},
		{"model.layers.0.mlp.gate_up_proj.weight", []int{16384, 3072}},
		{"model.layers.0.mlp.down_proj.weight", []int{3072, 8192}},
		{"model.layers.0.input_layernorm.weight", []int{3072}},
		{"model.layers.0.post_attention_layernorm.weight", []int{3072}},
	}
	if !reflect.DeepEqual(specs[:len(wantPhi)], wantPhi) {
		t.Errorf("phi3 tensors:\ngot  %v\nwant %v", specs[:len(wantPhi)], wantPhi)
	}
	if last := specs[len(specs)-1]; last.Name != "model.norm.weight" {
		t.Errorf("tied phi3 ends with %s, want model.norm.weight (no lm_head)", last.Name)
	}
}

func TestLlamaBiases(t *testing.T) {
	c, err := ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
		"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10,
		"attention_bias":true,"mlp_bias":true,"tie_word_embeddings":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range c.Tensors() {
		names = append(names, s.Name)
	}
	want := []string{
		"model.embed_tokens.weight",
		"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
		"model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.k_proj.bias",
		"model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.v_proj.bias",
		"model.layers.0.self_attn.o_proj.weight", "model.layers.0.self_attn.o_proj.bias",
		"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.gate_proj.bias",
		"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.bias",
		"model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.bias",
		"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
		"model.norm.weight",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("got %q\nwant %q", names, want)
	}
	// head_dim 4, kv 1×4: embed 10×8 = 80; layer: q 8×8+8 = 72, k = v 4×8+4 = 36,
	// o 72, gate = up 16×8+16 = 144, down 8×16+8 = 136, norms 16: 656; norm 8.
	if got := c.NumParameters(); got != 80+656+8 {
		t.Errorf("NumParameters = %d, want %d", got, 80+656+8)
	}
}

// A config with only the required keys gets transformers' defaults.
func TestDefaults(t *testing.T) {
	const sizes = `"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"vocab_size":100`
	tests := []struct {
		arch string
		want Config
	}{
		{"LlamaForCausalLM", Config{Architecture: "LlamaForCausalLM", Family: FamilyLlama,
			NumKeyValueHeads: 8, RMSNormEps: 1e-6, MaxPositionEmbeddings: 2048}},
		{"Qwen2ForCausalLM", Config{Architecture: "Qwen2ForCausalLM", Family: FamilyQwen2,
			NumKeyValueHeads: 0, // 32 is Qwen2Config's default: see TestQwen2KeyValueHeadsDefault
			RMSNormEps:       1e-6, MaxPositionEmbeddings: 32768, QKVBias: true, MaxWindowLayers: 28}},
		{"Phi3ForCausalLM", Config{Architecture: "Phi3ForCausalLM", Family: FamilyPhi3,
			NumKeyValueHeads: 8, RMSNormEps: 1e-5, MaxPositionEmbeddings: 4096, OriginalMaxPositionEmbeddings: 4096}},
	}
	for _, tt := range tests {
		t.Run(tt.arch, func(t *testing.T) {
			data := `{"architectures":["` + tt.arch + `"],` + sizes
			if tt.want.Family == FamilyQwen2 {
				// Give kv heads so that the rest of the defaults parse.
				data += `,"num_key_value_heads":8`
				tt.want.NumKeyValueHeads = 8
			}
			c, err := ParseConfig([]byte(data + "}"))
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.HiddenSize, want.IntermediateSize, want.NumHiddenLayers = 64, 128, 2
			want.NumAttentionHeads, want.VocabSize, want.HeadDim = 8, 100, 8
			want.RopeTheta, want.PartialRotaryFactor, want.HiddenAct = 10000, 1, "silu"
			want.RopeScaling = RopeScaling{Type: RopeDefault}
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("got  %+v\nwant %+v", *c, want)
			}
			if c.RotaryDims() != 8 || c.RopeAttentionFactor() != 1 {
				t.Errorf("rotary dims %d attention factor %v", c.RotaryDims(), c.RopeAttentionFactor())
			}
		})
	}
}

// Qwen2Config defaults num_key_value_heads to 32, not to the head count;
// an explicit null means the head count.
func TestQwen2KeyValueHeadsDefault(t *testing.T) {
	const base = `{"architectures":["Qwen2ForCausalLM"],"hidden_size":4096,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":64,"vocab_size":100`
	c, err := ParseConfig([]byte(base + "}"))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumKeyValueHeads != 32 {
		t.Errorf("absent num_key_value_heads = %d, want 32", c.NumKeyValueHeads)
	}
	c, err = ParseConfig([]byte(base + `,"num_key_value_heads":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumKeyValueHeads != 64 {
		t.Errorf("null num_key_value_heads = %d, want 64", c.NumKeyValueHeads)
	}
}

func TestParseVariants(t *testing.T) {
	const llama = `"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100`
	const phi = `"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100`
	ones := func(n int) string { return "[" + strings.TrimSuffix(strings.Repeat("1,", n), ",") + "]" }

	t.Run("eos list", func(t *testing.T) {
		c := mustParse(t, `{`+llama+`,"eos_token_id":[128001,128008,128009],"bos_token_id":null}`)
		if !reflect.DeepEqual(c.EOSTokenIDs, []int{128001, 128008, 128009}) || c.BOSTokenID != nil {
			t.Errorf("eos %v bos %v", c.EOSTokenIDs, c.BOSTokenID)
		}
	})
	t.Run("explicit head_dim", func(t *testing.T) {
		c := mustParse(t, `{`+llama+`,"head_dim":32}`)
		if c.HeadDim != 32 || c.RotaryDims() != 32 {
			t.Errorf("head dim %d rotary %d", c.HeadDim, c.RotaryDims())
		}
		if p := c.Projections(); p[0].Out != 128 || p[3].In != 128 {
			t.Errorf("q out %d, o in %d, want 128", p[0].Out, p[3].In)
		}
	})
	t.Run("legacy type key", func(t *testing.T) {
		c := mustParse(t, `{`+llama+`,"rope_scaling":{"type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}}`)
		if c.RopeScaling.Type != RopeLlama3 {
			t.Errorf("type %q", c.RopeScaling.Type)
		}
	})
	t.Run("rope_scaling default", func(t *testing.T) {
		c := mustParse(t, `{`+llama+`,"rope_scaling":{"rope_type":"default"}}`)
		if c.RopeScaling.Type != RopeDefault {
			t.Errorf("type %q", c.RopeScaling.Type)
		}
	})
	t.Run("phi3 su is longrope", func(t *testing.T) {
		// 16×0.5 = 8 rotary dims, 4 factors.
		c := mustParse(t, `{`+phi+`,"partial_rotary_factor":0.5,"max_position_embeddings":131072,
			"rope_scaling":{"type":"su","short_factor":`+ones(4)+`,"long_factor":`+ones(4)+`}}`)
		if c.RopeScaling.Type != RopeLongRope || c.RotaryDims() != 8 {
			t.Errorf("type %q rotary %d", c.RopeScaling.Type, c.RotaryDims())
		}
	})
	t.Run("explicit attention_factor", func(t *testing.T) {
		c := mustParse(t, `{`+phi+`,"max_position_embeddings":131072,
			"rope_scaling":{"rope_type":"longrope","attention_factor":1.5,"short_factor":`+ones(8)+`,"long_factor":`+ones(8)+`}}`)
		if c.RopeAttentionFactor() != 1.5 {
			t.Errorf("attention factor %v", c.RopeAttentionFactor())
		}
	})
	t.Run("longrope factor without original", func(t *testing.T) {
		// No top-level original: factor from rope_scaling, logarithm of
		// max_position_embeddings (HF's _compute_longrope_parameters).
		c := mustParse(t, `{`+llama+`,"max_position_embeddings":4096,
			"rope_scaling":{"rope_type":"longrope","factor":8,"short_factor":`+ones(8)+`,"long_factor":`+ones(8)+`}}`)
		want := math.Sqrt(1 + math.Log(8)/math.Log(4096))
		if got := c.RopeAttentionFactor(); math.Abs(got-want) > 1e-15 {
			t.Errorf("attention factor %v, want %v", got, want)
		}
	})
	t.Run("longrope no extension", func(t *testing.T) {
		c := mustParse(t, `{`+phi+`,"rope_scaling":{"rope_type":"longrope","short_factor":`+ones(8)+`,"long_factor":`+ones(8)+`}}`)
		if c.RopeAttentionFactor() != 1 {
			t.Errorf("max = original: attention factor %v, want 1", c.RopeAttentionFactor())
		}
	})
	t.Run("transformers 5 rope_parameters", func(t *testing.T) {
		c := mustParse(t, `{`+phi+`,"max_position_embeddings":131072,"dtype":"bfloat16",
			"rope_parameters":{"rope_type":"longrope","rope_theta":250000,"partial_rotary_factor":0.5,
			"short_factor":`+ones(4)+`,"long_factor":`+ones(4)+`}}`)
		if c.RopeTheta != 250000 || c.PartialRotaryFactor != 0.5 || c.RopeScaling.Type != RopeLongRope || c.TorchDtype != "bfloat16" {
			t.Errorf("theta %v partial %v type %q dtype %q", c.RopeTheta, c.PartialRotaryFactor, c.RopeScaling.Type, c.TorchDtype)
		}
	})
	t.Run("model_type without architectures", func(t *testing.T) {
		c := mustParse(t, `{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100}`)
		if c.Architecture != "Qwen2ForCausalLM" {
			t.Errorf("architecture %q", c.Architecture)
		}
	})
	t.Run("qwen2 sliding window off", func(t *testing.T) {
		c := mustParse(t, `{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
			"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"use_sliding_window":false,"sliding_window":4096,"max_window_layers":21}`)
		if c.UseSlidingWindow || c.SlidingWindow != 0 || c.MaxWindowLayers != 21 {
			t.Errorf("use %v window %d max layers %d", c.UseSlidingWindow, c.SlidingWindow, c.MaxWindowLayers)
		}
	})
}

func mustParse(t *testing.T, data string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseErrors(t *testing.T) {
	const sizes = `"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100`
	llama := func(extra string) string { return `{"architectures":["LlamaForCausalLM"],` + sizes + extra + `}` }
	phi := func(extra string) string { return `{"architectures":["Phi3ForCausalLM"],` + sizes + extra + `}` }
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{"hidden_size":`, "unexpected end"},
		{"wrong type", llama(`,"rms_norm_eps":"small"`), "rms_norm_eps"},
		{"unknown architecture", `{"architectures":["MistralForCausalLM"],` + sizes + `}`, `"MistralForCausalLM"`},
		{"unknown model_type", `{"model_type":"gemma",` + sizes + `}`, `"gemma"`},
		{"model_type mismatch", `{"architectures":["LlamaForCausalLM"],"model_type":"mistral",` + sizes + `}`, `model_type "mistral"`},
		{"missing hidden_size", `{"architectures":["LlamaForCausalLM"],"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}`, `missing "hidden_size"`},
		{"zero layers", llama(`,"num_hidden_layers":0`), "num_hidden_layers must be positive"},
		{"negative vocab", llama(`,"vocab_size":-1`), "vocab_size must be positive"},
		{"zero kv heads", llama(`,"num_key_value_heads":0`), "num_key_value_heads must be positive"},
		{"heads not divisible", llama(`,"num_key_value_heads":3`), "not a multiple of num_key_value_heads 3"},
		// Found by FuzzParseConfig's seeds: Tensors lists every layer's
		// tensors, and NumParameters multiplies sizes in int64.
		{"ten million layers", llama(`,"num_hidden_layers":10000000`), "num_hidden_layers 10000000 is beyond what compass loads (at most 4096)"},
		{"huge sizes", `{"architectures":["LlamaForCausalLM"],"hidden_size":4000000000,"intermediate_size":4000000000,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":4000000000}`, "hidden_size 4000000000 is beyond"},
		{"huge heads", llama(`,"head_dim":65536,"num_attention_heads":64,"num_key_value_heads":64`), "num_attention_heads 64 x head_dim 65536 = 4194304 is beyond"},
		{"hidden not divisible", `{"architectures":["LlamaForCausalLM"],"hidden_size":65,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}`, "no head_dim"},
		{"zero eps", llama(`,"rms_norm_eps":0`), "rms_norm_eps"},
		{"gelu", llama(`,"hidden_act":"gelu"`), `hidden_act "gelu"`},
		{"eos string", llama(`,"eos_token_id":"</s>"`), "eos_token_id"},
		{"yarn", llama(`,"rope_scaling":{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}`), `rope type "yarn" is not supported`},
		{"legacy dynamic", llama(`,"rope_scaling":{"type":"dynamic","factor":2.0}`), `rope type "dynamic" is not supported`},
		{"linear", llama(`,"rope_scaling":{"rope_type":"linear","factor":2.0}`), `rope type "linear" is not supported`},
		{"factor without type", llama(`,"rope_scaling":{"factor":2.0}`), `no "rope_type"`},
		{"llama3 missing keys", llama(`,"rope_scaling":{"rope_type":"llama3","factor":8}`), "llama3 needs"},
		{"llama3 bad bands", llama(`,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1,"original_max_position_embeddings":8192}`), "low_freq_factor < high_freq_factor"},
		{"llama3 on phi3", phi(`,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}`), "not supported for Phi3ForCausalLM"},
		{"longrope missing factors", phi(`,"rope_scaling":{"rope_type":"longrope","long_factor":[1,1,1,1,1,1,1,1]}`), "needs short_factor and long_factor"},
		{"long factor length", phi(`,"rope_scaling":{"rope_type":"longrope","short_factor":[1,1,1,1,1,1,1,1],"long_factor":[1,1,1]}`), "long_factor has 3 values, want rotary dims / 2 = 8"},
		{"short factor length with partial", phi(`,"partial_rotary_factor":0.5,"rope_scaling":{"rope_type":"longrope","short_factor":[1,1,1,1,1,1,1,1],"long_factor":[1,1,1,1]}`), "short_factor has 8 values, want rotary dims / 2 = 4"},
		{"zero long factor", phi(`,"rope_scaling":{"rope_type":"longrope","short_factor":[1,1,1,1,1,1,1,1],"long_factor":[1,1,1,0,1,1,1,1]}`), "long_factor[3] must be positive"},
		{"partial zero", phi(`,"partial_rotary_factor":0`), "partial_rotary_factor must be in (0, 1]"},
		{"partial above one", phi(`,"partial_rotary_factor":1.5`), "partial_rotary_factor must be in (0, 1]"},
		{"partial odd dims", phi(`,"partial_rotary_factor":0.2`), "= 3 must be even"},
		{"partial on llama", llama(`,"partial_rotary_factor":0.5`), "not supported for LlamaForCausalLM"},
		{"qwen2 sliding window", `{"architectures":["Qwen2ForCausalLM"],` + sizes + `,"num_key_value_heads":2,"use_sliding_window":true,"sliding_window":4096}`, "use_sliding_window true"},
		{"sliding layer types", `{"architectures":["Qwen2ForCausalLM"],` + sizes + `,"num_key_value_heads":2,"layer_types":["full_attention","sliding_attention"]}`, `layer_types[1] "sliding_attention"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.data))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "model: parse config: ") {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadConfigErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	data := `{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "MistralForCausalLM") {
		t.Errorf("error %v, want it to name %s and MistralForCausalLM", err, path)
	}

	missing := filepath.Join(dir, "absent.json")
	_, err = LoadConfig(missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("error %v, want it to name %s", err, missing)
	}
}

func intPtr(v int) *int { return &v }
