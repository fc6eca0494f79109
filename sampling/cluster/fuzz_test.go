package cluster

import (
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
)

// FuzzParseKRange: a K range is refused or lists increasing Ks of at
// least 2, from LO to at most HI; never a hang or an absurd allocation.
func FuzzParseKRange(f *testing.F) {
	for _, s := range []string{"80:120:10", "2:8", "5:5:1", "2:3:0", "1:5", "9:3", "a:b", "2:10:-1", " 4 : 9 : 2 ", "2:3:4:5",
		"2:9223372036854775807:9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		done := fuzzguard.Start(t, 64<<20)
		ks, err := ParseKRange(s)
		done()
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
