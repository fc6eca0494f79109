package cluster

import (
	"runtime"
	"testing"
	"time"
)

// FuzzParseKRange: a K range is refused or lists increasing Ks of at
// least 2, from LO to at most HI; never a hang or an absurd allocation.
func FuzzParseKRange(f *testing.F) {
	for _, s := range []string{"80:120:10", "2:8", "5:5:1", "2:3:0", "1:5", "9:3", "a:b", "2:10:-1", " 4 : 9 : 2 ", "2:3:4:5",
		"2:9223372036854775807:9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		timer := time.AfterFunc(10*time.Second, func() { panic("fuzz: an input took more than 10s") })
		ks, err := ParseKRange(s)
		timer.Stop()
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
			t.Fatalf("%q allocated %d MiB", s, n>>20)
		}
		if err != nil {
			return
		}
		if len(ks) == 0 || ks[0] < 2 {
			t.Fatalf("%q: %v", s, ks)
		}
		for i := 1; i < len(ks); i++ {
			if ks[i] <= ks[i-1] {
				t.Fatalf("%q: Ks %v do not increase", s, ks)
			}
		}
	})
}
