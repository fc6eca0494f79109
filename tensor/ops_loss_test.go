package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// refCrossEntropy computes, directly and in float64, the full logits h w^T,
// logprob = log softmax[label] (0 for ignored rows) and the analytic
// dh = gradScale (softmax - onehot(label)) w (0 for ignored rows).
func refCrossEntropy(h, w []float64, labels []int32, H int, gradScale float64) (logprob, dh []float64) {
	N, V := len(labels), len(w)/H
	logprob, dh = make([]float64, N), make([]float64, N*H)
	logits := make([]float64, V)
	for i, l := range labels {
		if l == IgnoreIndex {
			continue
		}
		m := math.Inf(-1)
		for j := range logits {
			logits[j] = opDot(h[i*H:(i+1)*H], w[j*H:(j+1)*H])
			m = max(m, logits[j])
		}
		sum := 0.0
		for _, x := range logits {
			sum += math.Exp(x - m)
		}
		lse := m + math.Log(sum)
		logprob[i] = logits[l] - lse
		for j, x := range logits {
			p := math.Exp(x - lse)
			if j == int(l) {
				p--
			}
			for k := 0; k < H; k++ {
				dh[i*H+k] += gradScale * p * w[j*H+k]
			}
		}
	}
	return logprob, dh
}

// poison fills a float tensor with NaN, to show that an op writes every
// element rather than adding into it.
func poison(t *Tensor) {
	v := make([]float32, t.NumElements())
	for i := range v {
		v[i] = float32(math.NaN())
	}
	writeF32(t, 0, v)
}

func TestCrossEntropy(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(17, 18))
	const N, H, V = 7, 5, 13
	labels, _ := FromI32([]int32{3, IgnoreIndex, 0, 12, 7, IgnoreIndex, 3}, N)
	const gradScale = 1.0 / 5 // the mean over the 5 counted rows
	for _, dts := range [][3]DType{{F32, F32, F32}, {BF16, BF16, BF16}, {BF16, F32, F32}, {F16, BF16, F32}} {
		hDT, wDT, dhDT := dts[0], dts[1], dts[2]
		dhTol := 1e-4
		if dhDT != F32 {
			dhTol = 1e-2
		}
		h, w := opRandom(rng, hDT, N, H), opRandom(rng, wDT, V, H)
		hs, ws := opF64(h), opF64(w)
		wantLP, wantDH := refCrossEntropy(hs, ws, labels.I32(), H, gradScale)
		// The analytic gradient of the reference is itself checked against
		// finite differences of its loss.
		numDH := opNumGrad(func() float64 {
			lp, _ := refCrossEntropy(hs, ws, labels.I32(), H, gradScale)
			s := 0.0
			for _, x := range lp {
				s -= gradScale * x
			}
			return s
		}, hs)
		if e := opRelErr(toF32(wantDH), numDH); e > 1e-6 {
			t.Fatalf("reference dh against finite differences: %.3g", e)
		}
		for _, chunk := range []int{1, 2, 5, 12, 13, 20, 0} {
			name := fmt.Sprintf("h %v w %v dh %v chunk %d", hDT, wDT, dhDT, chunk)
			logprob, dh := New(F32, N), New(dhDT, N, H)
			poison(logprob)
			poison(dh)
			if err := cpu.CrossEntropy(logprob, dh, h, w, labels, chunk, gradScale); err != nil {
				t.Fatal(err)
			}
			opCheck(t, name+" logprob", logprob, wantLP, 1e-5)
			opCheck(t, name+" dh", dh, wantDH, dhTol)

			// Without dh, the same logprob.
			lp2 := New(F32, N)
			poison(lp2)
			if err := cpu.CrossEntropy(lp2, nil, h, w, labels, chunk, gradScale); err != nil {
				t.Fatal(err)
			}
			if string(lp2.Bytes()) != string(logprob.Bytes()) {
				t.Fatalf("%s: logprob without dh differs", name)
			}
		}
	}
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// TestCrossEntropyLarger compares a larger vocabulary in chunks that do and
// do not divide it with the direct float64 computation, with every exp this
// CPU has.
func TestCrossEntropyLarger(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(19, 20))
	const N, H, V = 33, 40, 1000
	h, w := opRandom(rng, BF16, N, H), opRandom(rng, BF16, V, H)
	lv := make([]int32, N)
	for i := range lv {
		lv[i] = int32(rng.IntN(V))
	}
	lv[5], lv[17] = IgnoreIndex, IgnoreIndex
	labels, _ := FromI32(lv, N)
	wantLP, wantDH := refCrossEntropy(opF64(h), opF64(w), lv, H, 0.5)
	defer func(saved *expKernel) { expImpl = saved }(expImpl)
	for _, ek := range expKernels() {
		expImpl = ek
		for _, chunk := range []int{64, 300, 1000, 4096} {
			logprob, dh := New(F32, N), New(F32, N, H)
			poison(dh)
			if err := cpu.CrossEntropy(logprob, dh, h, w, labels, chunk, 0.5); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("exp %s chunk %d", ek.name, chunk)
			opCheck(t, name+" logprob", logprob, wantLP, 1e-5)
			opCheck(t, name+" dh", dh, wantDH, 1e-4)
		}
	}
}

func TestCrossEntropyAllIgnored(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	h, w := opRandom(rng, BF16, 4, 6), opRandom(rng, BF16, 9, 6)
	labels, _ := FromI32([]int32{IgnoreIndex, IgnoreIndex, IgnoreIndex, IgnoreIndex}, 4)
	for _, dhDT := range []DType{F32, BF16} {
		logprob, dh := New(F32, 4), New(dhDT, 4, 6)
		poison(logprob)
		poison(dh)
		if err := NewCPU().CrossEntropy(logprob, dh, h, w, labels, 4, 1); err != nil {
			t.Fatal(err)
		}
		for i, v := range append(logprob.ToF32(), dh.ToF32()...) {
			if v != 0 {
				t.Fatalf("%v: element %d is %v, want 0", dhDT, i, v)
			}
		}
	}
}

// TestCrossEntropyThreadsAgree checks bit-identical results at GOMAXPROCS 1
// and 4 (the GEMMs are large enough to run on several threads).
func TestCrossEntropyThreadsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const N, H, V = 64, 48, 1000
	h, w := opRandom(rng, BF16, N, H), opRandom(rng, BF16, V, H)
	lv := make([]int32, N)
	for i := range lv {
		lv[i] = int32(rng.IntN(V))
	}
	lv[0] = IgnoreIndex
	labels, _ := FromI32(lv, N)
	run := func(procs int) []byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		logprob, dh := New(F32, N), New(F32, N, H)
		if err := NewCPU().CrossEntropy(logprob, dh, h, w, labels, 300, 1.0/63); err != nil {
			t.Fatal(err)
		}
		return append(logprob.Bytes(), dh.Bytes()...)
	}
	if string(run(1)) != string(run(4)) {
		t.Fatal("results differ between 1 and 4 threads")
	}
}

func TestCrossEntropyErrors(t *testing.T) {
	cpu := NewCPU()
	h, w, logprob, dh := New(F32, 3, 4), New(BF16, 10, 4), New(F32, 3), New(F32, 3, 4)
	labels := func(v ...int32) *Tensor {
		t, _ := FromI32(v, len(v))
		return t
	}
	ok := labels(1, IgnoreIndex, 9)
	opWantErr(t, "label V", cpu.CrossEntropy(logprob, dh, h, w, labels(1, 10, 2), 0, 1), "label 10 at position 1")
	opWantErr(t, "label -1", cpu.CrossEntropy(logprob, dh, h, w, labels(1, 2, -1), 0, 1), "label -1 at position 2")
	opWantErr(t, "labels F32", cpu.CrossEntropy(logprob, dh, h, w, New(F32, 3), 0, 1), "I32")
	opWantErr(t, "labels count", cpu.CrossEntropy(logprob, dh, h, w, labels(1, 2), 0, 1), "labels")
	opWantErr(t, "logprob dtype", cpu.CrossEntropy(New(BF16, 3), dh, h, w, ok, 0, 1), "logprob")
	opWantErr(t, "dh shape", cpu.CrossEntropy(logprob, New(F32, 3, 5), h, w, ok, 0, 1), "dh")
	opWantErr(t, "dh I32", cpu.CrossEntropy(logprob, New(I32, 3, 4), h, w, ok, 0, 1), "floating-point")
	opWantErr(t, "w H", cpu.CrossEntropy(logprob, dh, h, New(BF16, 10, 5), ok, 0, 1), "[V, H]")
	opWantErr(t, "h I32", cpu.CrossEntropy(logprob, dh, New(I32, 3, 4), w, ok, 0, 1), "floating-point")
	opWantErr(t, "h rank", cpu.CrossEntropy(logprob, dh, New(F32, 4), w, ok, 0, 1), "[N, H]")
}
