package selection

import (
	"bytes"
	"strings"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
)

// FuzzReadLanguages reads a language table of any content: refused, or a
// table whose every language is found by its code and name.
func FuzzReadLanguages(f *testing.F) {
	header := strings.Join(languageColumns, "\t") + "\n"
	lines := strings.SplitAfter(languagesTSV, "\n")
	f.Add([]byte(strings.Join(lines[:min(len(lines), 6)], "")))
	f.Add([]byte(header + "swa\tsw\tkiswahili,swahili-language\tSwahili\tNiger-Congo\tBantoid\tLatn\t-6.5\t35.0\tswah1253\tswa\n"))
	f.Add([]byte(header + "xxx\t-\t-\tX\tF\tG\tLatn\t91\t0\t-\t-\n"))
	f.Add([]byte(header))
	f.Add([]byte("iso639_3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		done := fuzzguard.Start(t, 256<<20)
		tab, err := ReadLanguages(bytes.NewReader(data))
		done()
		if err != nil {
			return
		}
		for _, l := range tab.langs {
			for _, key := range []string{l.ISO3, l.Name} {
				got, err := tab.Lookup(key)
				if err != nil || got.ISO3 != l.ISO3 {
					t.Fatalf("lookup %q: %v, %v", key, got.ISO3, err)
				}
			}
		}
	})
}
