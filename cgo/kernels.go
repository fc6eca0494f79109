package cgo

import (
	"errors"
	"fmt"
	"sync"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// kernelSet is the kernels of package kernels loaded into a device: one
// module per source file, JIT-compiled by the driver from the PTX for the
// device's architecture (sm90 on Hopper, sm80 on Ampere and Ada).
type kernelSet struct {
	d       *Device
	target  string // the PTX architecture, e.g. "sm90"
	modules []*Module
	funcs   map[string]*Function // by kernel name

	mu        sync.Mutex
	sharedSet map[string]int // the dynamic shared memory each kernel was opted in to
}

// loadKernels loads every source's PTX. A source without PTX for the
// target leaves its kernels unavailable (their operations say so); PTX the
// driver cannot compile is an error.
func loadKernels(d *Device) (*kernelSet, error) {
	target, err := kernels.ArchFor(d.major, d.minor)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoDevice, d.name, err)
	}
	ks := &kernelSet{d: d, target: target, funcs: map[string]*Function{}, sharedSet: map[string]int{}}
	for _, src := range kernels.Sources {
		ptx, err := kernels.PTX(src, target)
		if err != nil {
			continue
		}
		m, err := d.LoadModule(ptx)
		if err != nil {
			ks.unload()
			return nil, fmt.Errorf("cuda: load kernels %s (%s): %w", src, target, err)
		}
		ks.modules = append(ks.modules, m)
		for i := range kernels.Table {
			k := &kernels.Table[i]
			if k.Source != src {
				continue
			}
			f, err := m.Function(k.Name)
			if err != nil {
				ks.unload()
				return nil, fmt.Errorf("cuda: kernels %s (%s): %w", src, target, err)
			}
			ks.funcs[k.Name] = f
		}
	}
	return ks, nil
}

func (ks *kernelSet) unload() error {
	var errs []error
	for _, m := range ks.modules {
		errs = append(errs, m.Unload())
	}
	ks.modules, ks.funcs = nil, map[string]*Function{}
	return errors.Join(errs...)
}

// errKernelMissing is wrapped by the error of an operation whose kernel the
// kernels package does not have (yet).
var errKernelMissing = errors.New("kernel not available")

// launch runs kernel name for operation op with the launch shape the
// kernels table computes from s.
func (ks *kernelSet) launch(op, name string, s kernels.Sizes, args *Args) error {
	spec, err := kernels.Lookup(name)
	f := ks.funcs[name]
	if err != nil || f == nil {
		return fmt.Errorf("cuda: %s: %w (%s)", op, errKernelMissing, name)
	}
	l := spec.Launch(s)
	if l.Shared > 48<<10 {
		if err := ks.optInShared(f, l.Shared); err != nil {
			return fmt.Errorf("cuda: %s: %w", op, err)
		}
	}
	grid := Dim3{l.Grid[0], l.Grid[1], l.Grid[2]}
	block := Dim3{l.Block[0], l.Block[1], l.Block[2]}
	if err := f.Launch(grid, block, l.Shared, args); err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	return nil
}

// optInShared raises f's dynamic shared memory limit to bytes (needed
// above 48 KiB), once per size.
func (ks *kernelSet) optInShared(f *Function, bytes int) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.sharedSet[f.name] >= bytes {
		return nil
	}
	if bytes > ks.d.sharedOptIn {
		return fmt.Errorf("kernel %s needs %d bytes of shared memory, the device allows %d", f.name, bytes, ks.d.sharedOptIn)
	}
	if err := f.SetMaxDynamicShared(bytes); err != nil {
		return err
	}
	ks.sharedSet[f.name] = bytes
	return nil
}

// dtCode is the dtype code the kernels take next to each float tensor.
func dtCode(dt tensor.DType) int {
	switch dt {
	case tensor.F32:
		return kernels.F32
	case tensor.BF16:
		return kernels.BF16
	case tensor.F16:
		return kernels.F16
	}
	panic(fmt.Sprintf("cgo: no kernel dtype code for %s", dt))
}
