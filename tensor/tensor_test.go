package tensor

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestViewsShareStorage(t *testing.T) {
	x := New(F32, 4, 3)
	for i := range x.F32() {
		x.F32()[i] = float32(i)
	}
	r, err := x.Reshape(2, -1)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Shape(); got[0] != 2 || got[1] != 6 {
		t.Fatalf("reshape(2,-1) shape %v", got)
	}
	s, err := x.Slice(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dim(0) != 2 || s.F32()[0] != 3 {
		t.Fatalf("slice [1:3]: shape %v first %v", s.Shape(), s.F32()[0])
	}
	s.F32()[0] = 100 // writes through to x and r
	if x.F32()[3] != 100 || r.F32()[3] != 100 {
		t.Fatal("slice is not a view of its tensor's storage")
	}
	for _, bad := range [][]int{{5, -1}, {-1, -1}, {13}, {-2, 6}} {
		if _, err := x.Reshape(bad...); err == nil {
			t.Errorf("reshape %v of [4 3]: no error", bad)
		}
	}
	for _, bad := range [][2]int{{-1, 2}, {3, 2}, {0, 5}} {
		if _, err := x.Slice(bad[0], bad[1]); err == nil {
			t.Errorf("slice %v of [4 3]: no error", bad)
		}
	}
}

func TestConstructorsCheckSizes(t *testing.T) {
	if _, err := FromF32(make([]float32, 5), 2, 3); err == nil {
		t.Error("FromF32 with 5 values for [2 3]: no error")
	}
	if _, err := FromBytes(BF16, []int{2, 2}, make([]byte, 6)); err == nil {
		t.Error("FromBytes with 6 bytes for BF16[2 2]: no error")
	}
	buf := New(F32, 4).Bytes() // 8-byte aligned storage
	if _, err := FromBytes(F32, []int{2}, buf[1:9]); err == nil {
		t.Error("FromBytes with misaligned F32 data: no error")
	}
	if _, err := FromBytes(F32, []int{2}, buf[4:12]); err != nil {
		t.Errorf("FromBytes with aligned data: %v", err)
	}
	if _, err := FromF32(nil, -1); err == nil {
		t.Error("negative dimension: no error")
	}
	if _, err := ParseDType("F64"); err == nil {
		t.Error("ParseDType(F64): no error")
	}
	for _, d := range []DType{F32, BF16, F16, I32} {
		if p, err := ParseDType(d.String()); err != nil || p != d {
			t.Errorf("ParseDType(%s) = %v, %v", d, p, err)
		}
	}
}

func TestElementwiseOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	cpu := NewCPU()
	for _, dt := range []DType{F32, BF16, F16} {
		// Large enough to run on several goroutines and over chunk edges.
		a := randomTensor(rng, dt, 70, 1031)
		b := randomTensor(rng, dt, 70, 1031)
		row := randomTensor(rng, F32, 1031)
		av, bv, rv := a.ToF32(), b.ToF32(), row.ToF32()
		tol := 1e-6
		if dt != F32 {
			tol = 1e-2
		}
		check := func(name string, out *Tensor, want func(i int) float64) {
			t.Helper()
			for i, g := range out.ToF32() {
				w := want(i)
				if math.Abs(float64(g)-w) > tol*(1+math.Abs(w)) {
					t.Fatalf("%s %s: element %d = %v, want %v", name, dt, i, g, w)
				}
			}
		}
		out := New(dt, 70, 1031)
		if err := cpu.Add(out, a, b); err != nil {
			t.Fatal(err)
		}
		check("add", out, func(i int) float64 { return float64(av[i]) + float64(bv[i]) })
		if err := cpu.Mul(out, a, row); err != nil {
			t.Fatal(err)
		}
		check("mul broadcast", out, func(i int) float64 { return float64(av[i]) * float64(rv[i%1031]) })
		if err := cpu.Add(out, a, row); err != nil {
			t.Fatal(err)
		}
		check("add broadcast", out, func(i int) float64 { return float64(av[i]) + float64(rv[i%1031]) })
		if err := cpu.Scale(out, a, -0.25); err != nil {
			t.Fatal(err)
		}
		check("scale", out, func(i int) float64 { return -0.25 * float64(av[i]) })
		f := New(F32, 70, 1031)
		if err := cpu.Copy(f, a); err != nil {
			t.Fatal(err)
		}
		check("copy to f32", f, func(i int) float64 { return float64(av[i]) })

		sum, mean := New(F32, 1), New(F32, 1)
		if err := cpu.Sum(sum, a); err != nil {
			t.Fatal(err)
		}
		if err := cpu.Mean(mean, a); err != nil {
			t.Fatal(err)
		}
		want := 0.0
		for _, v := range av {
			want += float64(v)
		}
		if math.Abs(float64(sum.F32()[0])-want) > 1e-6*(1+math.Abs(want)) {
			t.Fatalf("sum %s = %v, want %v", dt, sum.F32()[0], want)
		}
		if m := want / float64(len(av)); math.Abs(float64(mean.F32()[0])-m) > 1e-6 {
			t.Fatalf("mean %s = %v, want %v", dt, mean.F32()[0], m)
		}
	}
	a := New(F32, 2, 3)
	for _, bad := range []error{
		cpu.Add(New(F32, 2, 3), a, New(F32, 2)),
		cpu.Mul(New(F32, 3, 2), a, a),
		cpu.Add(a, a, New(F32, 4, 2, 3)),
		cpu.Scale(New(F32, 6), a, 1),
		cpu.Sum(New(F32, 2), a),
		cpu.Copy(New(F32, 5), a),
		cpu.Copy(New(I32, 2, 3), a),
		cpu.Add(a, a, New(I32, 3)),
		cpu.MatMul(New(F32, 2, 2), New(I32, 2, 2), New(F32, 2, 2), false, false, 1, 0),
	} {
		if bad == nil {
			t.Error("mismatched shapes: no error")
		}
	}
}

// Copy between dtypes rounds exactly as the scalar conversions do.
func TestCopyCastsLikeScalarConversion(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	src := randomTensor(rng, F32, 5000)
	for _, dt := range []DType{BF16, F16} {
		dst := New(dt, 5000)
		if err := NewCPU().Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		for i, h := range dst.U16() {
			want := F32ToBF16(src.F32()[i])
			if dt == F16 {
				want = F32ToF16(src.F32()[i])
			}
			if h != want {
				t.Fatalf("%s element %d: %#04x, want %#04x", dt, i, h, want)
			}
		}
	}
}

// Device tensors carry an address and a length; views offset them, and the
// CPU backend refuses them with an error instead of touching the address.
func TestDeviceTensors(t *testing.T) {
	d, err := NewOnDevice(BF16, []int{4, 3}, DeviceMem{Ptr: 0x1000, Bytes: 24})
	if err != nil {
		t.Fatal(err)
	}
	if d.OnHost() {
		t.Fatal("device tensor reports host storage")
	}
	s, err := d.Slice(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if mem, ok := s.Device(); !ok || mem.Ptr != 0x1006 || mem.Bytes != 12 {
		t.Errorf("slice [1:3] of a device tensor: %+v", mem)
	}
	r, _ := d.Reshape(12)
	if mem, _ := r.Device(); mem.Ptr != 0x1000 || r.NumElements() != 12 {
		t.Errorf("reshape: %+v, %d elements", mem, r.NumElements())
	}
	if _, err := NewOnDevice(F32, []int{4, 3}, DeviceMem{Ptr: 0x1000, Bytes: 24}); err == nil {
		t.Error("F32[4 3] in 24 bytes: no error")
	}
	cpu := NewCPU()
	h := New(BF16, 4, 3)
	for name, err := range map[string]error{
		"add":    cpu.Add(h, h, d),
		"copy":   cpu.Copy(h, d),
		"matmul": cpu.MatMul(New(F32, 4, 4), d, h, false, true, 1, 0),
	} {
		if err == nil || !strings.Contains(err.Error(), "device memory") {
			t.Errorf("%s with a device tensor: err = %v", name, err)
		}
	}
	if _, err := cpu.ToDevice(d); err == nil {
		t.Error("CPU ToDevice of a device tensor: no error")
	}
	if got, err := cpu.ToDevice(h); err != nil || got != h {
		t.Errorf("CPU ToDevice of a host tensor: %v, %v", got, err)
	}
}

// The CPU's Empty is zeroed memory, and NaN in every float dtype with
// PoisonEmpty.
func TestCPUPoisonEmpty(t *testing.T) {
	for _, dt := range []DType{F32, BF16, F16} {
		for _, poison := range []bool{false, true} {
			e, err := (&CPU{PoisonEmpty: poison}).Empty(dt, 3, 5)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range e.ToF32() {
				if poison != math.IsNaN(float64(v)) || (!poison && v != 0) {
					t.Fatalf("%s, PoisonEmpty %v: element %d is %v", dt, poison, i, v)
				}
			}
		}
	}
}
