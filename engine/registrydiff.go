package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/tensor/safetensors"
)

// AdapterDiff compares two adapters: their configs key by key and their
// weights tensor by tensor.
type AdapterDiff struct {
	A       string       `json:"a"` // the versions (or directories) compared
	B       string       `json:"b"`
	Config  []ConfigDiff `json:"config"`
	Tensors []TensorDiff `json:"tensors"` // the tensors both have, by name
	OnlyA   []string     `json:"only_a"`  // tensors only A has
	OnlyB   []string     `json:"only_b"`
}

// ConfigDiff is one key of adapter_config.json whose values differ; a
// value is its compact JSON, "" where the key is absent.
type ConfigDiff struct {
	Key string `json:"key"`
	A   string `json:"a"`
	B   string `json:"b"`
}

// TensorDiff compares one tensor of two adapters. The differences are
// computed (in float64) only when the shapes are equal.
type TensorDiff struct {
	Name   string `json:"name"`
	ShapeA []int  `json:"shape_a"`
	ShapeB []int  `json:"shape_b"`
	DTypeA string `json:"dtype_a"`
	DTypeB string `json:"dtype_b"`
	// MaxAbsDiff is max |b - a| over the elements.
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// RelL2 is ||b - a|| / max(||a||, ||b||): relative to the larger norm so
	// that it is defined when one side is zero, as LoRA's B is at
	// initialisation; 0 when both are zero.
	RelL2 float64 `json:"rel_l2"`
	NormA float64 `json:"norm_a"`
	NormB float64 `json:"norm_b"`
}

// SameShape reports whether the differences were computed.
func (d *TensorDiff) SameShape() bool { return slices.Equal(d.ShapeA, d.ShapeB) }

// Diff compares two versions of adapter name ("" is the current version).
func (r *Registry) Diff(name, a, b string) (*AdapterDiff, error) {
	dirA, err := r.Path(name, a)
	if err != nil {
		return nil, err
	}
	dirB, err := r.Path(name, b)
	if err != nil {
		return nil, err
	}
	d, err := DiffAdapterDirs(dirA, dirB)
	if err != nil {
		return nil, err
	}
	d.A, d.B = filepath.Base(dirA), filepath.Base(dirB)
	return d, nil
}

// DiffAdapterDirs compares the adapters (PEFT format) in two directories.
func DiffAdapterDirs(dirA, dirB string) (*AdapterDiff, error) {
	d := &AdapterDiff{A: dirA, B: dirB}
	var err error
	if d.Config, err = diffConfigs(filepath.Join(dirA, lora.ConfigName), filepath.Join(dirB, lora.ConfigName)); err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	fa, err := safetensors.Open(filepath.Join(dirA, lora.WeightsName))
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	defer fa.Close()
	fb, err := safetensors.Open(filepath.Join(dirB, lora.WeightsName))
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	defer fb.Close()
	for _, name := range fa.Names() {
		ib, ok := fb.Info(name)
		if !ok {
			d.OnlyA = append(d.OnlyA, name)
			continue
		}
		ia, _ := fa.Info(name)
		td := TensorDiff{Name: name, ShapeA: ia.Shape, ShapeB: ib.Shape, DTypeA: ia.DType.String(), DTypeB: ib.DType.String()}
		if td.SameShape() {
			if err := compareTensors(&td, fa, fb); err != nil {
				return nil, fmt.Errorf("diff: tensor %s: %w", name, err)
			}
		}
		d.Tensors = append(d.Tensors, td)
	}
	for _, name := range fb.Names() {
		if _, ok := fa.Info(name); !ok {
			d.OnlyB = append(d.OnlyB, name)
		}
	}
	return d, nil
}

// compareTensors fills td's differences; the tensors have the same shape.
func compareTensors(td *TensorDiff, fa, fb *safetensors.File) error {
	ta, err := fa.Tensor(td.Name)
	if err != nil {
		return err
	}
	tb, err := fb.Tensor(td.Name)
	if err != nil {
		return err
	}
	a, b := ta.ToF32(), tb.ToF32()
	var diff2, a2, b2 float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		td.MaxAbsDiff = max(td.MaxAbsDiff, math.Abs(y-x))
		diff2 += (y - x) * (y - x)
		a2 += x * x
		b2 += y * y
	}
	td.NormA, td.NormB = math.Sqrt(a2), math.Sqrt(b2)
	if den := max(td.NormA, td.NormB); den > 0 {
		td.RelL2 = math.Sqrt(diff2) / den
	}
	return nil
}

// diffConfigs compares two adapter_config.json files key by key.
func diffConfigs(pathA, pathB string) ([]ConfigDiff, error) {
	a, err := readConfigKeys(pathA)
	if err != nil {
		return nil, err
	}
	b, err := readConfigKeys(pathB)
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var diffs []ConfigDiff
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if a[k] != b[k] {
			diffs = append(diffs, ConfigDiff{Key: k, A: a[k], B: b[k]})
		}
	}
	return diffs, nil
}

// readConfigKeys reads a JSON object as its keys' values in compact JSON,
// with object keys sorted, so that equal values compare equal as strings.
func readConfigKeys(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // 16 and 16.0 differ in the file; keep them apart
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	keys := make(map[string]string, len(obj))
	for k, v := range obj {
		enc, err := json.Marshal(v) // map keys come out sorted
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, k, err)
		}
		keys[k] = string(enc)
	}
	return keys, nil
}
