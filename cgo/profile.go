package cgo

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// ProfileLine is the device time of one kind of work between StartProfile
// and StopProfile: a kernel (by name), a cuBLAS product (by its dtypes
// and shape), a memset or a device-to-device copy.
type ProfileLine struct {
	Name    string
	Calls   int
	Seconds float64 // summed over the calls, from CUDA events around each
}

// profiler is a queue that records a pair of CUDA events around every
// launch, product, memset and copy of the queue it wraps. The events add
// a few microseconds of host time per call and serialise nothing the
// stream did not already serialise: the times are each call's own.
type profiler struct {
	queue
	d     *Device
	marks []profileMark
	spare []*Event
}

type profileMark struct {
	name       string
	start, end *Event
}

// StartProfile makes the backend time each piece of device work it issues
// until StopProfile. It does nothing useful on the tests' recording queue.
func (b *Backend) StartProfile() error {
	if b.dev == nil {
		return errors.New("cuda: profile: no device")
	}
	if _, ok := b.q.(*profiler); ok {
		return errors.New("cuda: profile: already started")
	}
	b.q = &profiler{queue: b.q, d: b.dev}
	return nil
}

// StopProfile waits for the device and returns the time of each kind of
// work since StartProfile, the longest first.
func (b *Backend) StopProfile() ([]ProfileLine, error) {
	p, ok := b.q.(*profiler)
	if !ok {
		return nil, errors.New("cuda: profile: not started")
	}
	b.q = p.queue
	err := b.q.synchronize()
	byName := map[string]*ProfileLine{}
	for _, m := range p.marks {
		if err == nil {
			var ms float32
			if ms, err = m.end.Since(m.start); err == nil {
				l := byName[m.name]
				if l == nil {
					l = &ProfileLine{Name: m.name}
					byName[m.name] = l
				}
				l.Calls++
				l.Seconds += float64(ms) / 1e3
			}
		}
		err = errors.Join(err, m.start.Destroy(), m.end.Destroy())
	}
	for _, e := range p.spare {
		err = errors.Join(err, e.Destroy())
	}
	if err != nil {
		return nil, err
	}
	lines := make([]ProfileLine, 0, len(byName))
	for _, l := range byName {
		lines = append(lines, *l)
	}
	slices.SortFunc(lines, func(a, b ProfileLine) int {
		return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), cmp.Compare(a.Name, b.Name))
	})
	return lines, nil
}

// timed runs issue between two recorded events.
func (p *profiler) timed(name string, issue func() error) error {
	start, err := p.d.NewEvent()
	if err != nil {
		return err
	}
	end, err := p.d.NewEvent()
	if err != nil {
		return errors.Join(err, start.Destroy())
	}
	if err := start.Record(); err != nil {
		p.spare = append(p.spare, start, end)
		return err
	}
	err = issue()
	if err == nil {
		err = end.Record()
	}
	if err != nil {
		p.spare = append(p.spare, start, end)
		return err
	}
	p.marks = append(p.marks, profileMark{name: name, start: start, end: end})
	return nil
}

func (p *profiler) launch(op, kernel string, s kernels.Sizes, args *Args) error {
	return p.timed(kernel, func() error { return p.queue.launch(op, kernel, s, args) })
}

// gemm's name keeps the shape as the caller sees it (C [M, N] = A [M, K]
// B [K, N]): the model's products are few shapes, each worth its own line.
func (p *profiler) gemm(g gemmPlan, c, a, b uintptr, in, out tensor.DType, alpha, beta float32) error {
	name := fmt.Sprintf("cublas %sx%s->%s M%d K%d N%d", in, in, out, g.n, g.k, g.m)
	if beta != 0 {
		name += " +=C"
	}
	return p.timed(name, func() error { return p.queue.gemm(g, c, a, b, in, out, alpha, beta) })
}

func (p *profiler) memsetD8(ptr uintptr, v byte, n int) error {
	return p.timed("memset", func() error { return p.queue.memsetD8(ptr, v, n) })
}

func (p *profiler) memsetD32(ptr uintptr, v uint32, n int) error {
	return p.timed("memset", func() error { return p.queue.memsetD32(ptr, v, n) })
}

func (p *profiler) copyDtoD(dst, src uintptr, n int) error {
	return p.timed("copy device to device", func() error { return p.queue.copyDtoD(dst, src, n) })
}
