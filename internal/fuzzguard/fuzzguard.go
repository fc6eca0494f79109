// Package fuzzguard holds the check the fuzz targets share: an input must
// not make a reader allocate without bound or hang.
package fuzzguard

import (
	"flag"
	"runtime"
	"testing"
	"time"
)

// Start begins watching one fuzz input; defer the function it returns.
// That function fails the test when the input allocated more than
// maxBytes in all (a length field trusted before it is checked shows as
// gigabytes). While fuzzing (-fuzz given), an input running past 10
// seconds also panics, which ends the worker so that the fuzzer keeps
// the input; a plain `go test` run of the seeds is never timed.
func Start(t testing.TB, maxBytes uint64) (stop func()) {
	t.Helper()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var timer *time.Timer
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		timer = time.AfterFunc(10*time.Second, func() { panic("fuzz: an input took more than 10 s") })
	}
	return func() {
		t.Helper()
		if timer != nil {
			timer.Stop()
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > maxBytes {
			t.Fatalf("the input allocated %d MiB (at most %d allowed)", n>>20, maxBytes>>20)
		}
	}
}
