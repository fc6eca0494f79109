package cgo

import (
	"encoding/binary"
	"math"
)

// Args packs kernel arguments in the order of the kernel's parameters, each
// as the bytes of its C type at its natural alignment. cuLaunchKernel reads
// each parameter's value through a pointer; the packed values are copied
// into C memory for the launch (cc_launch), so no Go pointer reaches C
// beyond the call.
type Args struct {
	buf     []byte
	offsets []int32
	kinds   []byte // per argument: 'p' pointer, 'u' 64-bit integer, 'i' int, 'f' float
}

// Reset empties the list, keeping its storage.
func (a *Args) Reset() *Args {
	a.buf, a.offsets, a.kinds = a.buf[:0], a.offsets[:0], a.kinds[:0]
	return a
}

func (a *Args) put(kind byte, size int) []byte {
	a.kinds = append(a.kinds, kind)
	off := (len(a.buf) + size - 1) / size * size // natural alignment
	for len(a.buf) < off+size {
		a.buf = append(a.buf, 0)
	}
	a.offsets = append(a.offsets, int32(off))
	return a.buf[off : off+size]
}

// Ptr adds a device pointer (T*, void*).
func (a *Args) Ptr(p uintptr) *Args {
	binary.LittleEndian.PutUint64(a.put('p', 8), uint64(p))
	return a
}

// I32 adds an int.
func (a *Args) I32(v int) *Args {
	binary.LittleEndian.PutUint32(a.put('i', 4), uint32(int32(v)))
	return a
}

// U64 adds a size_t (or long long).
func (a *Args) U64(v int) *Args {
	binary.LittleEndian.PutUint64(a.put('u', 8), uint64(v))
	return a
}

// F32 adds a float.
func (a *Args) F32(v float32) *Args {
	binary.LittleEndian.PutUint32(a.put('f', 4), math.Float32bits(v))
	return a
}

// Len is the number of arguments.
func (a *Args) Len() int { return len(a.offsets) }
