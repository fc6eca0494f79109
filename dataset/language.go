package dataset

//go:generate go run gen_iso639.go

import (
	_ "embed"
	"strings"
	"sync"
)

// iso639Table is ISO 639-3 with the 639-1 and 639-2/B codes of each
// language and its reference name, from Debian's iso-codes (see
// gen_iso639.go).
//
//go:embed iso639-3.tsv
var iso639Table string

// standardVariety maps an individual language to the ISO 639-1 code of the
// macrolanguage it is the standard variety of. Data sets tag these either
// way (the Aya Dataset writes arb and pes, Global-MMLU ar and fa), and a
// target language must find its own data under one code.
var standardVariety = map[string]string{
	"arb": "ar", // Standard Arabic
	"cmn": "zh", // Mandarin Chinese
	"zsm": "ms", // Standard Malay
	"pes": "fa", // Iranian Persian
	"swh": "sw", // Swahili (individual language)
	"npi": "ne", // Nepali (individual language)
	"plt": "mg", // Plateau Malagasy
	"ekk": "et", // Standard Estonian
	"lvs": "lv", // Standard Latvian
	"azj": "az", // North Azerbaijani
	"uzn": "uz", // Northern Uzbek
	"khk": "mn", // Halh Mongolian
	"gaz": "om", // West Central Oromo
	"ydd": "yi", // Eastern Yiddish
	"als": "sq", // Tosk Albanian
	"pbt": "ps", // Southern Pashto
	"ory": "or", // Odia (individual language)
}

// deprecated639_1 are ISO 639-1 codes withdrawn in favour of others.
var deprecated639_1 = map[string]string{"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}

type languageTables struct {
	alpha2 map[string]bool   // every ISO 639-1 code
	codes  map[string]string // 639-3 and 639-2/B code -> 639-1 code, or itself where it has none
	names  map[string]string // lowercased reference name -> code as in codes
}

var languages = sync.OnceValue(func() *languageTables {
	t := &languageTables{alpha2: map[string]bool{}, codes: map[string]string{}, names: map[string]string{}}
	for line := range strings.Lines(iso639Table) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if len(f) != 4 {
			continue // the table is generated; a malformed line cannot occur
		}
		alpha3, alpha2, biblio, name := f[0], f[1], f[2], f[3]
		code := alpha3
		if alpha2 != "" {
			code = alpha2
			t.alpha2[alpha2] = true
		} else if std, ok := standardVariety[alpha3]; ok {
			code = std
		}
		t.codes[alpha3] = code
		if biblio != "" {
			t.codes[biblio] = code
		}
		// "Swahili (macrolanguage)" and "Swahili (individual language)" are
		// both "Swahili" in data; the macrolanguage, which has the 639-1
		// code, wins.
		key := strings.ToLower(name)
		for _, q := range []string{" (macrolanguage)", " (individual language)"} {
			key = strings.TrimSuffix(key, q)
		}
		if prev, ok := t.names[key]; !ok || (alpha2 != "" && !t.alpha2[prev]) {
			t.names[key] = code
		}
	}
	return t
})

// NormalizeLanguage returns the code compass uses for a language tag, code
// or name found in data, and whether it knew it:
//
//   - a tag is cut to its primary subtag and lowercased (pt-BR, zh_Hant and
//     "EN" give pt, zh and en): region and script are dropped;
//   - an ISO 639-1 code stays as it is (withdrawn ones become their
//     successors: iw -> he);
//   - an ISO 639-3 or 639-2/B code becomes the 639-1 code of the same
//     language where there is one (eng -> en, ger -> de, swa -> sw);
//   - an individual language that is the standard variety of a
//     macrolanguage with a 639-1 code becomes that code (arb -> ar,
//     cmn -> zh, pes -> fa, swh -> sw, zsm -> ms: see standardVariety);
//   - any other 639-3 code stays as it is: dialects and languages without
//     a 639-1 code keep their own (ary Moroccan Arabic, fil Filipino, yue);
//   - an ISO 639-3 reference name, in any case, becomes its code, normalised
//     the same way ("Standard Arabic" -> ar, "Moroccan Arabic" -> ary).
//
// For anything else ok is false and code is s trimmed and lowercased.
func NormalizeLanguage(s string) (code string, ok bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", false
	}
	t := languages()
	primary := s
	if i := strings.IndexAny(s, "-_"); i > 0 {
		primary = s[:i]
	}
	switch len(primary) {
	case 2:
		if c, ok := deprecated639_1[primary]; ok {
			return c, true
		}
		if t.alpha2[primary] {
			return primary, true
		}
	case 3:
		if c, ok := t.codes[primary]; ok {
			return c, true
		}
	}
	// Names last: some are also codes of other languages ("En" is enc).
	if c, ok := t.names[s]; ok {
		return c, true
	}
	return s, false
}
