package bench

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/compassml/compass/tensor/safetensors"
)

// runSafetensors compares reading every tensor of a checkpoint through
// safetensors.Open (mmap, zero copy) with a plain sequential read of the
// same file, both from the page cache and both touching every byte; and it
// times opening a 16 GiB (sparse) checkpoint and the memory that adds.
func runSafetensors(w io.Writer, o Options) ([]Result, error) {
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	size := 1 << 30
	if o.Quick {
		size = 64 << 20
	}
	path := filepath.Join(dir, "model.safetensors")
	fmt.Fprintf(o.Log, "safetensors: writing a %d MiB checkpoint\n", size>>20)
	if err := writeBenchCheckpoint(path, size); err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	gbps := func(d time.Duration) float64 { return float64(info.Size()) / d.Seconds() / 1e9 }

	var sink uint64
	plain, err := measure(o.MinTime, func() error {
		s, err := plainRead(path)
		sink += s
		return err
	})
	if err != nil {
		return nil, err
	}
	mapped, err := measure(o.MinTime, func() error {
		f, err := safetensors.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, name := range f.Names() {
			b, err := f.Bytes(name)
			if err != nil {
				return err
			}
			sink += sumWords(b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	openTime, rss, err := openSparse(dir, 16<<30)
	if err != nil {
		return nil, err
	}
	ours, theirs := gbps(mapped), gbps(plain)
	case1 := fmt.Sprintf("open + read all tensors, %d MiB, page cache warm", size>>20)
	results := []Result{
		{Suite: "safetensors", Case: case1, Impl: "compass", Value: ours, Unit: "GB/s"},
		{Suite: "safetensors", Case: case1, Impl: "read(2) 1 MiB buffer", Value: theirs, Unit: "GB/s"},
		{Suite: "safetensors", Case: "open 16 GiB sparse checkpoint", Impl: "compass", Value: 1 / openTime.Seconds(), Unit: "opens/s",
			Note: fmt.Sprintf("%.3f ms per open, resident memory +%.1f MiB", openTime.Seconds()*1e3, float64(rss)/(1<<20))},
	}
	table(w, fmt.Sprintf("safetensors read throughput (checksum %x)", sink&0xff),
		[]string{"case", "compass (mmap)", "plain read", "ratio"},
		[][]string{
			{case1, fmt.Sprintf("%.2f GB/s", ours), fmt.Sprintf("%.2f GB/s", theirs), ratio(ours, theirs)},
			{"open 16 GiB checkpoint (header only)", fmt.Sprintf("%.3f ms, +%.1f MiB RSS", openTime.Seconds()*1e3, float64(rss)/(1<<20)), "-", "-"},
		})
	return results, nil
}

// writeBenchCheckpoint writes about size bytes of BF16 tensors shaped like a
// decoder's weights (a few large, many small).
func writeBenchCheckpoint(path string, size int) error {
	rng := rand.New(rand.NewPCG(1, 2))
	var entries []safetensors.Entry
	for i, left := 0, size; left > 0; i++ {
		n := min(left, 32<<20) // up to 32 MiB per tensor
		if i%4 == 3 {
			n = min(left, 8<<10) // norm-sized tensors in between
		}
		data := make([]byte, n)
		for j := 0; j+8 <= n; j += 8 {
			binary.LittleEndian.PutUint64(data[j:], rng.Uint64())
		}
		entries = append(entries, safetensors.Entry{Name: fmt.Sprintf("model.layers.%d.weight", i),
			DType: safetensors.BF16, Shape: []int{n / 2}, Data: data})
		left -= n
	}
	return safetensors.Write(path, entries, map[string]string{"format": "pt"})
}

func plainRead(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var s uint64
	for {
		n, err := io.ReadFull(f, buf)
		s += sumWords(buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return s, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// sumWords touches every byte, 8 at a time, so that neither side can skip
// the read.
func sumWords(b []byte) uint64 {
	var s uint64
	n := len(b) / 8
	if n > 0 {
		for _, v := range unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), n) {
			s += v
		}
	}
	for _, c := range b[n*8:] {
		s += uint64(c)
	}
	return s
}

// openSparse writes the header of a checkpoint of total bytes of tensors,
// extends the file sparsely, and measures Open plus Info of every tensor
// and the resident memory that adds.
func openSparse(dir string, total int64) (time.Duration, int64, error) {
	path := filepath.Join(dir, "sparse.safetensors")
	const tensorBytes = 64 << 20
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	for i := int64(0); i*tensorBytes < total; i++ {
		hdr[fmt.Sprintf("t%04d", i)] = map[string]any{"dtype": "BF16", "shape": []int64{tensorBytes / 2},
			"data_offsets": []int64{i * tensorBytes, (i + 1) * tensorBytes}}
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return 0, 0, err
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
	_, err1 := f.Write(n[:])
	_, err2 := f.Write(js)
	err3 := f.Truncate(8 + int64(len(js)) + total)
	if err := f.Close(); err1 != nil || err2 != nil || err3 != nil || err != nil {
		return 0, 0, fmt.Errorf("write %s: %v %v %v %v", path, err1, err2, err3, err)
	}
	before := residentBytes()
	start := time.Now()
	st, err := safetensors.Open(path)
	if err != nil {
		return 0, 0, err
	}
	for _, name := range st.Names() {
		st.Info(name)
	}
	d := time.Since(start)
	grew := residentBytes() - before
	return d, grew, st.Close()
}

// residentBytes reads VmRSS from /proc/self/status (0 where there is none).
func residentBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
