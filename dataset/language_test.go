package dataset

import "testing"

func TestNormalizeLanguage(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"en", "en", true},
		{"EN", "en", true},
		{" sw ", "sw", true},
		{"pt-BR", "pt", true},
		{"zh_Hant", "zh", true},
		{"eng", "en", true},
		{"ger", "de", true}, // ISO 639-2/B
		{"deu", "de", true},
		{"swa", "sw", true},
		{"swh", "sw", true}, // standard varieties of macrolanguages
		{"arb", "ar", true},
		{"cmn", "zh", true},
		{"pes", "fa", true},
		{"zsm", "ms", true},
		{"npi", "ne", true},
		{"ary", "ary", true}, // dialects keep their own code
		{"arz", "arz", true},
		{"fil", "fil", true}, // no ISO 639-1 code
		{"yue", "yue", true},
		{"iw", "he", true},
		{"English", "en", true},
		{"Standard Arabic", "ar", true},
		{"Moroccan Arabic", "ary", true},
		{"swahili", "sw", true},
		{"Malay", "ms", true},
		{"Iranian Persian", "fa", true},
		{"Filipino", "fil", true},
		{"", "", false},
		{"xx", "xx", false},
		{"Klingonish", "klingonish", false},
	} {
		got, ok := NormalizeLanguage(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NormalizeLanguage(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// Every language of the Aya Dataset and of Global-MMLU is known, and the
// languages both have get the same code.
func TestBenchmarkLanguages(t *testing.T) {
	aya := []string{"amh", "arb", "ary", "ars", "acq", "arz", "apc", "ben", "ceb", "dan", "deu", "ell", "eng", "eus", "fil", "fin", "fra", "gle", "guj", "hat", "hau", "hin", "hun", "ibo", "ind", "ita", "jav", "jpn", "kan", "kir", "kor", "kur", "lit", "mal", "mar", "mlg", "msa", "mya", "nep", "nld", "nso", "nya", "pan", "pes", "pol", "por", "pus", "rus", "sin", "sna", "snd", "som", "spa", "sqi", "srp", "sun", "swa", "swe", "tam", "tel", "tha", "tur", "ukr", "urd", "vie", "wol", "xho", "yor", "zho", "zul"}
	globalMMLU := []string{"am", "ar", "bn", "cs", "de", "el", "en", "es", "fa", "fil", "fr", "ha", "he", "hi", "id", "ig", "it", "ja", "ko", "ky", "lt", "mg", "ms", "ne", "nl", "ny", "pl", "pt", "ro", "ru", "si", "sn", "so", "sr", "sv", "sw", "te", "tr", "uk", "vi", "yo", "zh"}
	ayaCodes := map[string]bool{}
	for _, c := range aya {
		code, ok := NormalizeLanguage(c)
		if !ok {
			t.Errorf("Aya language %q unknown", c)
		}
		ayaCodes[code] = true
	}
	shared := 0
	for _, c := range globalMMLU {
		code, ok := NormalizeLanguage(c)
		if !ok || code != c {
			t.Errorf("Global-MMLU language %q: %q, %v", c, code, ok)
		}
		if ayaCodes[code] {
			shared++
		}
	}
	// Global-MMLU languages without Aya data: cs, he, ro (and others the Aya
	// Dataset lacks); all the rest must meet.
	if shared < 35 {
		t.Errorf("only %d Global-MMLU languages found Aya data", shared)
	}
}
