package safetensors

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// vmRSS returns the resident set size of this process from /proc.
func vmRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("cannot read the resident set size: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// Opening a 4 GiB file and looking at all of its tensors must not read
// the data: the file is sparse, and resident memory barely grows.
func TestOpenLargeFileStaysLazy(t *testing.T) {
	const (
		tensors     = 64
		tensorBytes = 64 << 20 // 64 tensors of 64 MiB: 4 GiB of data
	)
	var hdr strings.Builder
	hdr.WriteString("{")
	for i := range tensors {
		if i > 0 {
			hdr.WriteString(",")
		}
		fmt.Fprintf(&hdr, `"layer.%02d":{"dtype":"BF16","shape":[8192,4096],"data_offsets":[%d,%d]}`,
			i, i*tensorBytes, (i+1)*tensorBytes)
	}
	hdr.WriteString("}")
	contents := rawFile(hdr.String(), 0)
	path := filepath.Join(t.TempDir(), "large.safetensors")
	if err := os.WriteFile(path, contents, 0o644); err != nil {
		t.Fatal(err)
	}
	size := int64(len(contents)) + tensors*tensorBytes
	if err := os.Truncate(path, size); err != nil {
		t.Skipf("cannot extend the file to %d bytes: %v", size, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Blocks*512 > 64<<20 {
		t.Skip("the file system did not make a sparse file")
	}

	before := vmRSS(t)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		b, err := f.Bytes(name)
		if err != nil {
			t.Fatal(err)
		}
		total += info.End - info.Begin + int64(len(b))
	}
	after := vmRSS(t)
	if total != 2*tensors*tensorBytes {
		t.Fatalf("tensors cover %d bytes", total/2)
	}
	if grew := after - before; grew > 64<<20 {
		t.Errorf("resident memory grew by %d MiB opening a %d MiB file", grew>>20, size>>20)
	}
	t.Logf("VmRSS %d -> %d KiB", before>>10, after>>10)
}
