package lora

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// WeightsName is the name of the weights file in an adapter directory.
const WeightsName = "adapter_model.safetensors"

// Module is one linear layer of the base model that an adapter may target:
// its full Hugging Face module name without the ".weight" suffix, such as
// "model.layers.0.self_attn.q_proj" (or Phi-3's fused
// "model.layers.0.self_attn.qkv_proj"), and its dimensions: the weight is
// [Out, In].
type Module struct {
	Name    string
	In, Out int
}

// Adapter holds the LoRA weights of every targeted module, in float32.
type Adapter struct {
	Config  Config
	Modules []string                  // the targeted modules' full names, sorted
	A, B    map[string]*tensor.Tensor // by module: A [r, in] and B [out, r], F32
}

// The names PEFT gives a module's weights in adapter_model.safetensors.
const (
	peftPrefix = "base_model.model."
	suffixA    = ".lora_A.weight"
	suffixB    = ".lora_B.weight"
)

// TensorNames returns the names of module's A and B in
// adapter_model.safetensors.
func TensorNames(module string) (a, b string) {
	return peftPrefix + module + suffixA, peftPrefix + module + suffixB
}

// New returns a new adapter for the modules that cfg targets, initialised
// as PEFT initialises it, in distribution: with init_lora_weights true, A
// is kaiming_uniform(a = sqrt 5), which is U(-1/sqrt(in), 1/sqrt(in)), and B
// is zero; with "gaussian", A is N(0, 1/r^2) and B zero; with false, B is
// U(-1/sqrt(r), 1/sqrt(r)) too, as nn.Linear's default initialisation. Each
// module draws from its own random stream, seeded by seed and the module's
// name, so the same seed gives the same weights, whichever other modules
// are adapted.
func New(cfg Config, modules []Module, seed uint64) (*Adapter, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("lora: config: %w", err)
	}
	targeted, err := targetedModules(cfg, modules)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	a := &Adapter{
		Config: cfg,
		A:      make(map[string]*tensor.Tensor, len(targeted)),
		B:      make(map[string]*tensor.Tensor, len(targeted)),
	}
	for _, m := range targeted {
		r := cfg.Rank(m.Name)
		A := tensor.New(tensor.F32, r, m.In)
		B := tensor.New(tensor.F32, m.Out, r)
		h := fnv.New64a()
		h.Write([]byte(m.Name))
		rng := rand.New(rand.NewPCG(seed, h.Sum64()))
		switch init := cfg.InitLoraWeights; {
		case init == true:
			fillUniform(A.F32(), 1/math.Sqrt(float64(m.In)), rng)
		case init == false:
			fillUniform(A.F32(), 1/math.Sqrt(float64(m.In)), rng)
			fillUniform(B.F32(), 1/math.Sqrt(float64(r)), rng)
		case isString(init, "gaussian"):
			x := A.F32()
			for i := range x {
				x[i] = float32(rng.NormFloat64() / float64(r))
			}
		default:
			return nil, fmt.Errorf("lora: init_lora_weights %v needs the base weights or training data; New initialises with true, false or \"gaussian\"", init)
		}
		a.Modules = append(a.Modules, m.Name)
		a.A[m.Name] = A
		a.B[m.Name] = B
	}
	return a, nil
}

// isString reports whether v is the string s, ignoring case as PEFT does.
func isString(v any, s string) bool {
	str, ok := v.(string)
	return ok && strings.EqualFold(str, s)
}

// fillUniform fills x with draws from U(-bound, bound).
func fillUniform(x []float32, bound float64, rng *rand.Rand) {
	for i := range x {
		x[i] = float32((2*rng.Float64() - 1) * bound)
	}
}

// targetedModules checks the model's list of modules and returns those cfg
// targets, sorted by name; no match is an error naming the targets and a
// few of the modules.
func targetedModules(cfg Config, modules []Module) ([]Module, error) {
	seen := make(map[string]bool, len(modules))
	var targeted []Module
	for i, m := range modules {
		switch {
		case m.Name == "":
			return nil, fmt.Errorf("module %d has no name", i)
		case seen[m.Name]:
			return nil, fmt.Errorf("module %q is listed twice", m.Name)
		case m.In <= 0 || m.Out <= 0:
			return nil, fmt.Errorf("module %q: dimensions in %d, out %d must be positive", m.Name, m.In, m.Out)
		}
		seen[m.Name] = true
		if cfg.Matches(m.Name) {
			targeted = append(targeted, m)
		}
	}
	if len(targeted) == 0 {
		var names []string
		for _, m := range modules[:min(len(modules), 4)] {
			names = append(names, m.Name)
		}
		if len(modules) > len(names) {
			names = append(names, "...")
		}
		exclude := ""
		if cfg.ExcludeModules.Kind != TargetNone {
			exclude = " less exclude_modules " + cfg.ExcludeModules.String()
		}
		return nil, fmt.Errorf("target_modules %s%s match none of the model's %d linear modules (%s)",
			cfg.TargetModules, exclude, len(modules), strings.Join(names, ", "))
	}
	slices.SortFunc(targeted, func(a, b Module) int { return strings.Compare(a.Name, b.Name) })
	return targeted, nil
}

// Load reads the adapter in dir (adapter_config.json and
// adapter_model.safetensors, as PEFT's save_pretrained writes them) for a
// model with the given linear modules. Every module the config targets
// must have its A [r, in] and B [out, r], and the file must hold nothing
// else; F32, BF16 and F16 tensors are converted to F32.
func Load(dir string, modules []Module) (*Adapter, error) {
	cfgPath := filepath.Join(dir, ConfigName)
	cfg, err := ReadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	targeted, err := targetedModules(cfg, modules)
	if err != nil {
		return nil, fmt.Errorf("lora: %s: %w", cfgPath, err)
	}

	path := filepath.Join(dir, WeightsName)
	f, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, statErr := os.Stat(filepath.Join(dir, "adapter_model.bin")); statErr == nil {
				return nil, fmt.Errorf("lora: %s: no %s, and adapter_model.bin (PyTorch pickle) is not supported: save the adapter with safetensors", dir, WeightsName)
			}
		}
		return nil, fmt.Errorf("lora: %w", err)
	}
	defer f.Close()

	byName := make(map[string]Module, len(targeted))
	for _, m := range targeted {
		byName[m.Name] = m
	}
	a := &Adapter{
		Config: cfg,
		A:      make(map[string]*tensor.Tensor, len(targeted)),
		B:      make(map[string]*tensor.Tensor, len(targeted)),
	}
	for _, name := range f.Names() {
		module, isA, err := splitTensorName(name)
		if err != nil {
			return nil, fmt.Errorf("lora: %s: tensor %q: %w", path, name, err)
		}
		m, ok := byName[module]
		if !ok {
			return nil, fmt.Errorf("lora: %s: tensor %q: the config does not target a module %q of this model", path, name, module)
		}
		r := cfg.Rank(module)
		dst, want := a.B, []int{m.Out, r}
		if isA {
			dst, want = a.A, []int{r, m.In}
		}
		if dst[module] != nil {
			return nil, fmt.Errorf("lora: %s: tensor %q: the module's weight is in the file twice, with and without the %q prefix", path, name, peftPrefix)
		}
		info, _ := f.Info(name) // name comes from f.Names
		if !slices.Equal(info.Shape, want) {
			return nil, fmt.Errorf("lora: %s: tensor %q: shape %v, want %v (r %d, module %s [%d, %d])", path, name, info.Shape, want, r, module, m.Out, m.In)
		}
		switch info.DType {
		case safetensors.F32, safetensors.BF16, safetensors.F16:
		default:
			return nil, fmt.Errorf("lora: %s: tensor %q: dtype %s, want F32, BF16 or F16", path, name, info.DType)
		}
		t, err := f.Tensor(name)
		if err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
		// A copy: the file's mapping is read-only and goes away on Close.
		dst[module], err = tensor.FromF32(t.ToF32(), want...)
		if err != nil {
			return nil, fmt.Errorf("lora: %s: tensor %q: %w", path, name, err)
		}
	}
	for _, m := range targeted {
		nameA, nameB := TensorNames(m.Name)
		if a.A[m.Name] == nil {
			return nil, fmt.Errorf("lora: %s: no tensor %q: module %s is targeted by the config", path, nameA, m.Name)
		}
		if a.B[m.Name] == nil {
			return nil, fmt.Errorf("lora: %s: no tensor %q: module %s is targeted by the config", path, nameB, m.Name)
		}
		a.Modules = append(a.Modules, m.Name)
	}
	return a, nil
}

// splitTensorName returns the module of an adapter tensor and whether it is
// A (else B). The "base_model.model." prefix that PeftModel adds is
// optional, as when PEFT or transformers load a file.
func splitTensorName(name string) (module string, isA bool, err error) {
	rest := strings.TrimPrefix(name, peftPrefix)
	switch {
	case strings.HasSuffix(rest, suffixA) && len(rest) > len(suffixA):
		return strings.TrimSuffix(rest, suffixA), true, nil
	case strings.HasSuffix(rest, suffixB) && len(rest) > len(suffixB):
		return strings.TrimSuffix(rest, suffixB), false, nil
	case strings.Contains(rest, ".lora_A.") || strings.Contains(rest, ".lora_B."):
		// Such as lora_A.default.weight, from a model's own state_dict:
		// PEFT saves without the adapter name and would ignore it.
		return "", false, fmt.Errorf("not a name PEFT saves (want %s<module>%s or %s); a name with an adapter name in it comes from a state_dict, not from save_pretrained", peftPrefix, suffixA, suffixB)
	}
	return "", false, fmt.Errorf("not a LoRA weight (want %s<module>%s or %s)", peftPrefix, suffixA, suffixB)
}

// NumParameters is the number of trained parameters: the elements of every
// A and B.
func (a *Adapter) NumParameters() int64 {
	var n int64
	for _, m := range a.Modules {
		n += int64(a.A[m].NumElements()) + int64(a.B[m].NumElements())
	}
	return n
}

// check verifies that the adapter is consistent: its modules sorted and
// targeted by its config, each with an F32 A [r, in] and B [out, r].
func (a *Adapter) check() error {
	if err := a.Config.validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if len(a.Modules) == 0 {
		return fmt.Errorf("no modules")
	}
	for i, m := range a.Modules {
		if i > 0 && a.Modules[i-1] >= m {
			return fmt.Errorf("modules are not sorted and unique: %q then %q", a.Modules[i-1], m)
		}
		if !a.Config.Matches(m) {
			return fmt.Errorf("module %s is not targeted by the config (target_modules %s)", m, a.Config.TargetModules)
		}
		A, B := a.A[m], a.B[m]
		if A == nil || B == nil {
			return fmt.Errorf("module %s: A or B is missing", m)
		}
		r := a.Config.Rank(m)
		if A.DType() != tensor.F32 || B.DType() != tensor.F32 {
			return fmt.Errorf("module %s: A is %s, B is %s, want F32", m, A, B)
		}
		if A.Rank() != 2 || B.Rank() != 2 || A.Dim(0) != r || B.Dim(1) != r || A.Dim(1) == 0 || B.Dim(0) == 0 {
			return fmt.Errorf("module %s: A is %s and B is %s, want [%d, in] and [out, %d]", m, A, B, r, r)
		}
	}
	if len(a.A) != len(a.Modules) || len(a.B) != len(a.Modules) {
		return fmt.Errorf("the maps A and B have %d and %d modules, Modules lists %d", len(a.A), len(a.B), len(a.Modules))
	}
	return nil
}

// Save writes the adapter to dir, creating it if needed, as PEFT's
// save_pretrained does: adapter_config.json and adapter_model.safetensors
// with metadata {"format": "pt"} and F32 tensors. Both files are written
// under temporary names and synced before either is renamed, the weights
// first: a crash never leaves a truncated file, and the new config appears
// only beside its new weights.
func (a *Adapter) Save(dir string) error {
	if err := a.check(); err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	config, err := a.Config.Encode()
	if err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	entries := make([]safetensors.Entry, 0, 2*len(a.Modules))
	for _, m := range a.Modules {
		nameA, nameB := TensorNames(m)
		entries = append(entries, safetensors.EntryFromTensor(nameA, a.A[m]), safetensors.EntryFromTensor(nameB, a.B[m]))
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	weights, err := atomicfile.Prepare(filepath.Join(dir, WeightsName), func(w io.Writer) error {
		return safetensors.Encode(w, entries, map[string]string{"format": "pt"})
	})
	if err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	defer weights.Discard() // does nothing once committed
	cfg, err := atomicfile.Prepare(filepath.Join(dir, ConfigName), func(w io.Writer) error {
		_, err := w.Write(config)
		return err
	})
	if err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	defer cfg.Discard()
	if err := weights.Commit(); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	if err := cfg.Commit(); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	return nil
}
