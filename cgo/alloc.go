package cgo

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/compassml/compass/tensor"
)

// rawMemory is where the caching allocator gets its blocks: the device's
// cuMemAlloc and cuMemFree (a fake one in tests).
type rawMemory interface {
	malloc(bytes int) (uintptr, error)
	free(p uintptr) error
}

// allocator is a caching device allocator. cuMemAlloc and cuMemFree are
// slow and synchronise the device, and a training step allocates and frees
// the same shapes every step, so freed blocks are kept by size class and
// handed out again. All work runs on one stream, so a block freed after
// the launches that use it and reused by later launches is ordered
// correctly without events.
type allocator struct {
	raw rawMemory

	mu     sync.Mutex
	cache  map[int][]uintptr     // free blocks by class size
	live   map[uintptr]liveBlock // the blocks handed out
	inUse  int64                 // bytes of the blocks handed out
	peak   int64                 // the most inUse has been
	cached int64                 // bytes of the free blocks kept
}

// liveBlock is a block handed out: its class size and the bytes asked for.
type liveBlock struct{ class, bytes int }

func newAllocator(raw rawMemory) *allocator {
	return &allocator{raw: raw, cache: map[int][]uintptr{}, live: map[uintptr]liveBlock{}}
}

// minBlock is the smallest block: cuMemAlloc aligns to 256 bytes or more
// anyway, and tiny tensors are many.
const minBlock = 512

// sizeClass rounds n up to a block size: eight classes per power of two
// above minBlock, so that at most an eighth of a block is wasted while
// shapes that differ a little still share blocks.
func sizeClass(n int) int {
	if n <= minBlock {
		return minBlock
	}
	step := 1 << (bits.Len(uint(n-1)) - 4) // an eighth of the power of two below n
	return (n + step - 1) / step * step
}

// alloc returns a block of at least n bytes (n > 0): a cached one of n's
// class, or a new one. When the device is out of memory it frees the
// cached blocks and tries once more.
func (a *allocator) alloc(n int) (uintptr, error) {
	if n <= 0 {
		return 0, fmt.Errorf("cuda: allocate %d bytes", n)
	}
	class := sizeClass(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	if free := a.cache[class]; len(free) > 0 {
		p := free[len(free)-1]
		a.cache[class] = free[:len(free)-1]
		a.cached -= int64(class)
		a.handOut(p, class, n)
		return p, nil
	}
	p, err := a.raw.malloc(class)
	if errors.Is(err, tensor.ErrOutOfMemory) && a.cached > 0 {
		if terr := a.trimLocked(); terr != nil {
			return 0, errors.Join(err, terr)
		}
		p, err = a.raw.malloc(class)
	}
	if err != nil {
		return 0, fmt.Errorf("%w (allocator: %d bytes in use, %d cached)", err, a.inUse, a.cached)
	}
	a.handOut(p, class, n)
	return p, nil
}

func (a *allocator) handOut(p uintptr, class, n int) {
	a.live[p] = liveBlock{class: class, bytes: n}
	a.inUse += int64(class)
	a.peak = max(a.peak, a.inUse)
}

// release puts the block of n bytes at p back in the cache. It reports
// false, and does nothing, when that is not a block handed out: a view
// (which starts elsewhere or is shorter), or a block already released.
func (a *allocator) release(p uintptr, n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.live[p]
	if !ok || b.bytes != n {
		return false
	}
	class := b.class
	delete(a.live, p)
	a.inUse -= int64(class)
	a.cache[class] = append(a.cache[class], p)
	a.cached += int64(class)
	return true
}

// trim gives every cached block back to the device.
func (a *allocator) trim() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.trimLocked()
}

func (a *allocator) trimLocked() error {
	var errs []error
	for class, free := range a.cache {
		for _, p := range free {
			errs = append(errs, a.raw.free(p))
		}
		a.cached -= int64(class) * int64(len(free))
		delete(a.cache, class)
	}
	return errors.Join(errs...)
}

// close frees every block, cached or live.
func (a *allocator) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.trimLocked()
	for p, b := range a.live {
		err = errors.Join(err, a.raw.free(p))
		a.inUse -= int64(b.class)
		delete(a.live, p)
	}
	return err
}

// stats returns the bytes in use, their peak and the bytes cached.
func (a *allocator) stats() (inUse, peak, cached int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inUse, a.peak, a.cached
}

// resetPeak starts peak tracking again from the bytes in use now.
func (a *allocator) resetPeak() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.peak = a.inUse
}
