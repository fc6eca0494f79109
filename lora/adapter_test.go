package lora

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// llamaModules are the linear modules of a tiny llama-shaped model: hidden
// 16, 4 heads of 4, 2 KV heads, intermediate 24, vocabulary 40.
func llamaModules(layers int) []Module {
	var ms []Module
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		ms = append(ms,
			Module{p + "self_attn.q_proj", 16, 16},
			Module{p + "self_attn.k_proj", 16, 8},
			Module{p + "self_attn.v_proj", 16, 8},
			Module{p + "self_attn.o_proj", 16, 16},
			Module{p + "mlp.gate_proj", 16, 24},
			Module{p + "mlp.up_proj", 16, 24},
			Module{p + "mlp.down_proj", 24, 16},
		)
	}
	return append(ms, Module{"lm_head", 16, 40})
}

// phi3Modules are the linear modules of a tiny Phi-3-shaped model, with
// fused qkv_proj [(4 + 2*2) * 4, 16] and gate_up_proj [2 * 24, 16].
func phi3Modules(layers int) []Module {
	var ms []Module
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		ms = append(ms,
			Module{p + "self_attn.qkv_proj", 16, 32},
			Module{p + "self_attn.o_proj", 16, 16},
			Module{p + "mlp.gate_up_proj", 16, 48},
			Module{p + "mlp.down_proj", 24, 16},
		)
	}
	return append(ms, Module{"lm_head", 16, 40})
}

func configFor(targets Targets) Config {
	c := DefaultConfig()
	c.TargetModules = targets
	return c
}

func TestNewShapes(t *testing.T) {
	c := configFor(TargetString("all-linear"))
	c.RankPattern = RankPattern{{"down_proj", 2}}
	a, err := New(c, llamaModules(2), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Modules) != 14 || !slices.IsSorted(a.Modules) || slices.Contains(a.Modules, "lm_head") {
		t.Fatalf("modules %v: want the 14 projections, sorted, without lm_head", a.Modules)
	}
	var params int64
	for _, m := range llamaModules(2) {
		if m.Name == "lm_head" {
			continue
		}
		r := 8
		if strings.HasSuffix(m.Name, "down_proj") {
			r = 2
		}
		if got := a.A[m.Name].Shape(); !slices.Equal(got, []int{r, m.In}) {
			t.Errorf("%s: A %v, want [%d %d]", m.Name, got, r, m.In)
		}
		if got := a.B[m.Name].Shape(); !slices.Equal(got, []int{m.Out, r}) {
			t.Errorf("%s: B %v, want [%d %d]", m.Name, got, m.Out, r)
		}
		params += int64(r * (m.In + m.Out))
	}
	if got := a.NumParameters(); got != params {
		t.Errorf("NumParameters %d, want %d", got, params)
	}

	// On Phi-3, the fused modules carry the adapter; B has the fused rows.
	p, err := New(configFor(TargetNames("qkv_proj", "gate_up_proj")), phi3Modules(1), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model.layers.0.mlp.gate_up_proj", "model.layers.0.self_attn.qkv_proj"}
	if !slices.Equal(p.Modules, want) {
		t.Errorf("phi3 modules %v, want %v", p.Modules, want)
	}
	if got := p.B["model.layers.0.self_attn.qkv_proj"].Shape(); !slices.Equal(got, []int{32, 8}) {
		t.Errorf("qkv_proj B %v, want [32 8]", got)
	}
	if got := p.B["model.layers.0.mlp.gate_up_proj"].Shape(); !slices.Equal(got, []int{48, 8}) {
		t.Errorf("gate_up_proj B %v, want [48 8]", got)
	}
}

func TestNewInitStatistics(t *testing.T) {
	const in, out, r = 4096, 32, 64
	modules := []Module{{"model.layers.0.mlp.down_proj", in, out}}
	a, err := New(configFor(TargetNames("down_proj")), modules, 42)
	if err != nil {
		t.Fatal(err)
	}
	name := modules[0].Name
	x := a.A[name].F32()
	bound := 1 / math.Sqrt(in)
	var sum, sumSq float64
	for _, v := range x {
		if math.Abs(float64(v)) > bound {
			t.Fatalf("A value %v outside ±1/sqrt(in) = %v", v, bound)
		}
		sum += float64(v)
		sumSq += float64(v) * float64(v)
	}
	n := float64(len(x))
	mean := sum / n
	variance := sumSq/n - mean*mean
	// The mean's standard deviation is bound/sqrt(3n) = 1.8e-5.
	if math.Abs(mean) > 1e-4 {
		t.Errorf("A mean %v, want about 0", mean)
	}
	// kaiming_uniform(a = sqrt 5): variance 1/(3 in); the sample variance
	// is within 0.06% (one standard deviation) of it here.
	if want := 1 / (3.0 * in); math.Abs(variance-want) > 0.01*want {
		t.Errorf("A variance %v, want 1/(3 in) = %v", variance, want)
	}
	for i, v := range a.B[name].F32() {
		if v != 0 {
			t.Fatalf("B[%d] = %v, want 0", i, v)
		}
	}

	same, err := New(configFor(TargetNames("down_proj")), modules, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(same.A[name].F32(), x) {
		t.Error("the same seed gave different A")
	}
	other, err := New(configFor(TargetNames("down_proj")), modules, 43)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(other.A[name].F32(), x) {
		t.Error("another seed gave the same A")
	}
}

func TestNewSeedPerModule(t *testing.T) {
	// A module's initial weights depend on the seed and its name only, and
	// modules differ from each other.
	all, err := New(configFor(TargetNames("q_proj", "v_proj")), llamaModules(2), 7)
	if err != nil {
		t.Fatal(err)
	}
	some, err := New(configFor(TargetNames("v_proj")), llamaModules(2), 7)
	if err != nil {
		t.Fatal(err)
	}
	v := "model.layers.1.self_attn.v_proj"
	if !slices.Equal(all.A[v].F32(), some.A[v].F32()) {
		t.Error("v_proj's A depends on which other modules are adapted")
	}
	if slices.Equal(all.A["model.layers.0.self_attn.v_proj"].F32()[:8], all.A[v].F32()[:8]) {
		t.Error("two modules got the same A")
	}
}

func TestNewOtherInits(t *testing.T) {
	modules := []Module{{"model.layers.0.mlp.down_proj", 1024, 512}}
	name := modules[0].Name

	c := configFor(TargetNames("down_proj"))
	c.InitLoraWeights = false
	a, err := New(c, modules, 1)
	if err != nil {
		t.Fatal(err)
	}
	// As nn.Linear's default initialisation: A is U(±1/sqrt(in)) and B is
	// U(±1/sqrt(r)), of standard deviation bound/sqrt(3). The sample
	// standard deviation of A's 8192 values (B's 4096) has a relative
	// standard deviation of 0.5% (0.7%); the test allows 3%.
	for _, tc := range []struct {
		name  string
		x     []float32
		bound float64
	}{
		{"A", a.A[name].F32(), 1 / math.Sqrt(1024)},
		{"B", a.B[name].F32(), 1 / math.Sqrt(8)},
	} {
		var sumSq float64
		for _, v := range tc.x {
			if math.Abs(float64(v)) > tc.bound {
				t.Fatalf("init false: %s value %v outside ±%v", tc.name, v, tc.bound)
			}
			sumSq += float64(v) * float64(v)
		}
		sd, want := math.Sqrt(sumSq/float64(len(tc.x))), tc.bound/math.Sqrt(3)
		if math.Abs(sd-want) > 0.03*want {
			t.Errorf("init false: %s standard deviation %v, want bound/sqrt(3) = %v", tc.name, sd, want)
		}
	}

	c.InitLoraWeights = "gaussian"
	g, err := New(c, modules, 1)
	if err != nil {
		t.Fatal(err)
	}
	var sumSq float64
	for _, v := range g.A[name].F32() {
		sumSq += float64(v) * float64(v)
	}
	if sd := math.Sqrt(sumSq / float64(8*1024)); math.Abs(sd-1.0/8) > 0.01/8 {
		t.Errorf("gaussian: A standard deviation %v, want 1/r = 0.125", sd)
	}

	c.InitLoraWeights = "orthogonal"
	if _, err := New(c, modules, 1); err == nil || !strings.Contains(err.Error(), "orthogonal") {
		t.Errorf("orthogonal init: error %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	_, err := New(configFor(TargetNames("q_proj", "v_proj")), phi3Modules(2), 1)
	if err == nil {
		t.Fatal("no error when nothing matches")
	}
	for _, s := range []string{`"q_proj"`, `"v_proj"`, "model.layers.0.self_attn.qkv_proj", "9 linear modules"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}

	cases := []struct {
		modules []Module
		want    string
	}{
		{[]Module{{"a.q_proj", 4, 4}, {"a.q_proj", 4, 4}}, "twice"},
		{[]Module{{"a.q_proj", 0, 4}}, "positive"},
		{[]Module{{"", 4, 4}}, "no name"},
	}
	for _, tc := range cases {
		if _, err := New(configFor(TargetNames("q_proj")), tc.modules, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("modules %v: error %v, want %q", tc.modules, err, tc.want)
		}
	}
	bad := configFor(TargetNames("q_proj"))
	bad.UseDora = true
	if _, err := New(bad, llamaModules(1), 1); err == nil || !strings.Contains(err.Error(), "use_dora") {
		t.Errorf("DoRA config: error %v", err)
	}
}

// randomize fills an adapter's weights with nonzero values, as training
// would.
func randomize(a *Adapter) {
	for i, m := range a.Modules {
		for j, x := range [][]float32{a.A[m].F32(), a.B[m].F32()} {
			for k := range x {
				x[k] = float32(math.Sin(float64(1+i*7+j*3+k))) * 0.01
			}
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	c := configFor(TargetString("all-linear"))
	c.BaseModelNameOrPath = "tiny"
	c.R, c.LoraAlpha = 4, 8
	c.RankPattern = RankPattern{{"down_proj", 2}}
	c.AlphaPattern = AlphaPattern{{"q_proj", 3}}
	modules := llamaModules(2)
	a, err := New(c, modules, 3)
	if err != nil {
		t.Fatal(err)
	}
	randomize(a)
	dir := filepath.Join(t.TempDir(), "adapter") // Save creates it
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{ConfigName, WeightsName}; !slices.Equal(names, want) {
		t.Errorf("directory holds %v, want %v (no temporary files)", names, want)
	}

	f, err := safetensors.Open(filepath.Join(dir, WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	if md := f.Metadata(); !reflect.DeepEqual(md, map[string]string{"format": "pt"}) {
		t.Errorf("metadata %v, want format pt", md)
	}
	info, ok := f.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
	if !ok || info.DType != safetensors.F32 || !slices.Equal(info.Shape, []int{4, 16}) {
		t.Errorf("q_proj lora_A: %+v, %v", info, ok)
	}
	if len(f.Names()) != 2*len(a.Modules) {
		t.Errorf("%d tensors, want %d", len(f.Names()), 2*len(a.Modules))
	}
	f.Close()

	b, err := Load(dir, modules)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.Config.RankPattern, c.RankPattern) || !reflect.DeepEqual(b.Config.TargetModules, c.TargetModules) {
		t.Errorf("config changed: %+v", b.Config)
	}
	if !slices.Equal(b.Modules, a.Modules) {
		t.Fatalf("modules %v, want %v", b.Modules, a.Modules)
	}
	for _, m := range a.Modules {
		for _, pair := range [][2]*tensor.Tensor{{a.A[m], b.A[m]}, {a.B[m], b.B[m]}} {
			if !pair[0].SameShape(pair[1]) || !slices.Equal(pair[0].Bytes(), pair[1].Bytes()) {
				t.Errorf("%s: weights differ after a round trip", m)
			}
		}
	}

	// Saving again over the directory replaces both files.
	b.Config.LoraAlpha = 5
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	again, err := Load(dir, modules)
	if err != nil {
		t.Fatal(err)
	}
	if again.Config.LoraAlpha != 5 {
		t.Errorf("alpha %v after saving over, want 5", again.Config.LoraAlpha)
	}
}

// writeAdapter writes an adapter directory by hand: a config and the given
// tensors (F32 from float32 values, or BF16/F16 by conversion).
func writeAdapter(t *testing.T, dir, config string, tensors map[string][]int, dtype safetensors.DType) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ConfigName), config)
	var entries []safetensors.Entry
	for name, shape := range tensors {
		n := 1
		for _, d := range shape {
			n *= d
		}
		values := make([]float32, n)
		for i := range values {
			values[i] = float32(i%7) * 0.125
		}
		src, err := tensor.FromF32(values, shape...)
		if err != nil {
			t.Fatal(err)
		}
		dt, _ := dtype.TensorDType()
		dst := tensor.New(dt, shape...)
		if dt.IsFloat() { // an I32 tensor stays zero
			if err := tensor.NewCPU().Copy(dst, src); err != nil {
				t.Fatal(err)
			}
		}
		entries = append(entries, safetensors.EntryFromTensor(name, dst))
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsName), entries, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

const qvConfig = `{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "bias": "none"}`

// qvTensors are the tensors of qvConfig on llamaModules(1).
func qvTensors() map[string][]int {
	return map[string][]int{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {2, 16},
		"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": {16, 2},
		"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": {2, 16},
		"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight": {8, 2},
	}
}

func TestLoadDTypesAndNames(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		dir := filepath.Join(t.TempDir(), dt.String())
		writeAdapter(t, dir, qvConfig, qvTensors(), dt)
		a, err := Load(dir, llamaModules(1))
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		B := a.B["model.layers.0.self_attn.v_proj"]
		if B.DType() != tensor.F32 || !slices.Equal(B.Shape(), []int{8, 2}) || B.F32()[3] != 0.375 {
			t.Errorf("%s: v_proj B is %s with %v", dt, B, B.F32())
		}
	}

	// Without the "base_model.model." prefix (transformers' integration).
	bare := make(map[string][]int)
	for name, shape := range qvTensors() {
		bare[strings.TrimPrefix(name, "base_model.model.")] = shape
	}
	dir := filepath.Join(t.TempDir(), "bare")
	writeAdapter(t, dir, qvConfig, bare, safetensors.F32)
	if _, err := Load(dir, llamaModules(1)); err != nil {
		t.Errorf("names without the prefix: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	modules := llamaModules(1)
	withBoth := func(tensors map[string][]int, name string, shape []int) map[string][]int {
		tensors[name] = shape
		return tensors
	}
	without := func(name string) map[string][]int {
		tensors := qvTensors()
		delete(tensors, name)
		return tensors
	}
	replaceConfig := func(old, new string) string { return strings.Replace(qvConfig, old, new, 1) }
	const qA = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
	const vB = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
	cases := []struct {
		name    string
		config  string
		tensors map[string][]int
		dtype   safetensors.DType
		want    []string
	}{
		{"wrong shape", qvConfig, withBoth(qvTensors(), qA, []int{2, 8}), safetensors.F32, []string{qA, "shape [2 8], want [2 16]"}},
		{"wrong rank", qvConfig, withBoth(qvTensors(), vB, []int{8, 4}), safetensors.F32, []string{vB, "want [8 2]"}},
		{"missing lora_B", qvConfig, without(vB), safetensors.F32, []string{vB, "no tensor"}},
		{"missing lora_A", qvConfig, without(qA), safetensors.F32, []string{qA, "no tensor"}},
		{"unknown tensor", qvConfig, withBoth(qvTensors(), "base_model.model.model.embed_tokens.weight", []int{40, 16}), safetensors.F32, []string{"embed_tokens", "not a LoRA weight"}},
		{"untargeted module", qvConfig, withBoth(qvTensors(), "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", []int{2, 16}), safetensors.F32, []string{"k_proj", "does not target"}},
		{"adapter name", qvConfig, withBoth(qvTensors(), "base_model.model.model.layers.0.self_attn.k_proj.lora_A.default.weight", []int{2, 16}), safetensors.F32, []string{"lora_A.default.weight", "adapter name"}},
		{"twice", qvConfig, withBoth(qvTensors(), "model.layers.0.self_attn.q_proj.lora_A.weight", []int{2, 16}), safetensors.F32, []string{"twice"}},
		{"dtype", qvConfig, qvTensors(), safetensors.I32, []string{"dtype I32"}},
		{"bias", replaceConfig(`"bias": "none"`, `"bias": "all"`), qvTensors(), safetensors.F32, []string{ConfigName, "bias"}},
		{"dora", replaceConfig(`"bias": "none"`, `"bias": "none", "use_dora": true`), qvTensors(), safetensors.F32, []string{ConfigName, "use_dora", "DoRA"}},
		{"modules to save", replaceConfig(`"bias": "none"`, `"bias": "none", "modules_to_save": ["lm_head"]`), qvTensors(), safetensors.F32, []string{ConfigName, "modules_to_save", "lm_head"}},
		{"no match", replaceConfig(`["q_proj", "v_proj"]`, `["qkv_proj"]`), qvTensors(), safetensors.F32, []string{ConfigName, "qkv_proj", "match none"}},
	}
	for _, tc := range cases {
		dir := filepath.Join(t.TempDir(), "adapter")
		writeAdapter(t, dir, tc.config, tc.tensors, tc.dtype)
		_, err := Load(dir, modules)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, s := range tc.want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, s)
			}
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: error %q does not name the file", tc.name, err)
		}
	}

	// Missing files.
	dir := t.TempDir()
	if _, err := Load(dir, modules); err == nil || !strings.Contains(err.Error(), ConfigName) {
		t.Errorf("no config: error %v", err)
	}
	writeFile(t, filepath.Join(dir, ConfigName), qvConfig)
	if _, err := Load(dir, modules); err == nil || !strings.Contains(err.Error(), WeightsName) {
		t.Errorf("no weights: error %v", err)
	}
	writeFile(t, filepath.Join(dir, "adapter_model.bin"), "pickle")
	if _, err := Load(dir, modules); err == nil || !strings.Contains(err.Error(), "adapter_model.bin") {
		t.Errorf("pickle weights: error %v", err)
	}
	writeFile(t, filepath.Join(dir, WeightsName), "short")
	if _, err := Load(dir, modules); err == nil || !strings.Contains(err.Error(), WeightsName) {
		t.Errorf("corrupt weights: error %v", err)
	}
}

func TestSaveErrors(t *testing.T) {
	a, err := New(configFor(TargetNames("q_proj")), llamaModules(1), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := a.Modules[0]
	a.B[m] = tensor.New(tensor.F32, 16, 3)
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir); err == nil || !strings.Contains(err.Error(), m) {
		t.Errorf("wrong B: error %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a failed save left %s behind", dir)
	}

	a.B[m] = tensor.New(tensor.F32, 16, 8)
	a.Config.TargetModules = TargetNames("v_proj")
	if err := a.Save(dir); err == nil || !strings.Contains(err.Error(), "not targeted") {
		t.Errorf("untargeted module: error %v", err)
	}
}
