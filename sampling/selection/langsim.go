package selection

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Language is one row of the language table (testdata/languages/languages.tsv;
// see its README for the sources and licences).
type Language struct {
	ISO3       string   // ISO 639-3 code, the table's key (the code the Aya Dataset uses)
	ISO1       string   // ISO 639-1 code, or "" where there is none
	Aliases    []string // other codes that name this row: macrolanguage, individual or ISO 639-2/B codes
	Name       string
	Family     string // WALS family ("other" for creoles and pidgins)
	Genus      string // WALS genus
	Script     string // ISO 15924 code of the usual script (CLDR likely subtags)
	Latitude   float64
	Longitude  float64
	Glottocode string
	WALS       string // WALS language code, "-" where WALS has none
}

// Code is how compass writes the language everywhere a person reads it:
// the ISO 639-1 code where there is one, else the ISO 639-3 code, the form
// dataset.NormalizeLanguage gives data rows ("sw", "yo", but "ary").
func (l Language) Code() string {
	if l.ISO1 != "" {
		return l.ISO1
	}
	return l.ISO3
}

// LanguageTable looks languages up by any of their codes or their name.
type LanguageTable struct {
	langs []Language
	index map[string]int // lower-cased code, alias or name -> row
}

var (
	defaultLanguages     *LanguageTable
	defaultLanguagesErr  error
	defaultLanguagesOnce sync.Once
)

// DefaultLanguages returns the language table compiled into the package (a
// copy of testdata/languages/languages.tsv, which a test keeps identical).
func DefaultLanguages() (*LanguageTable, error) {
	defaultLanguagesOnce.Do(func() {
		defaultLanguages, defaultLanguagesErr = ReadLanguages(strings.NewReader(languagesTSV))
	})
	return defaultLanguages, defaultLanguagesErr
}

// languageColumns are the columns of the table, in order.
var languageColumns = []string{"iso639_3", "iso639_1", "aliases", "name", "family", "genus", "script",
	"latitude", "longitude", "glottocode", "wals"}

// ReadLanguages reads a language table: a tab-separated header line with
// the columns iso639_3, iso639_1, aliases (comma-separated), name, family,
// genus, script, latitude, longitude, glottocode, wals, then one language a
// line; "-" marks an empty field. A code or name that names two rows is an
// error.
func ReadLanguages(r io.Reader) (*LanguageTable, error) {
	sc := bufio.NewScanner(r)
	t := &LanguageTable{index: map[string]int{}}
	line := 0
	for sc.Scan() {
		line++
		f := strings.Split(sc.Text(), "\t")
		if line == 1 {
			if !slices.Equal(f, languageColumns) {
				return nil, fmt.Errorf("selection: language table: header %q, want %q", f, languageColumns)
			}
			continue
		}
		if len(f) != len(languageColumns) {
			return nil, fmt.Errorf("selection: language table line %d: %d fields, want %d", line, len(f), len(languageColumns))
		}
		for i := range f {
			if f[i] == "-" {
				f[i] = ""
			}
		}
		lat, err1 := strconv.ParseFloat(f[7], 64)
		lon, err2 := strconv.ParseFloat(f[8], 64)
		if err1 != nil || err2 != nil || math.Abs(lat) > 90 || math.Abs(lon) > 180 {
			return nil, fmt.Errorf("selection: language table line %d: bad coordinates %q, %q", line, f[7], f[8])
		}
		l := Language{ISO3: f[0], ISO1: f[1], Name: f[3], Family: f[4], Genus: f[5], Script: f[6],
			Latitude: lat, Longitude: lon, Glottocode: f[9], WALS: f[10]}
		if f[2] != "" {
			l.Aliases = strings.Split(f[2], ",")
		}
		if l.ISO3 == "" || l.Name == "" || l.Family == "" || l.Genus == "" || l.Script == "" {
			return nil, fmt.Errorf("selection: language table line %d: code, name, family, genus and script are required", line)
		}
		row := len(t.langs)
		for _, key := range append([]string{l.ISO3, l.ISO1, l.Name}, l.Aliases...) {
			key = strings.ToLower(key)
			if key == "" {
				continue
			}
			if other, ok := t.index[key]; ok && other != row {
				return nil, fmt.Errorf("selection: language table line %d: %q also names %s", line, key, t.langs[other].ISO3)
			}
			t.index[key] = row
		}
		t.langs = append(t.langs, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("selection: language table: %w", err)
	}
	if len(t.langs) == 0 {
		return nil, fmt.Errorf("selection: language table: no languages")
	}
	return t, nil
}

// Len is the number of languages.
func (t *LanguageTable) Len() int { return len(t.langs) }

// Lookup finds a language by ISO 639-3 or 639-1 code, alias or English name
// (case-insensitive). A BCP 47 tag with a script or region ("zh-Hans",
// "pt_BR") is looked up by its language part. An unknown language is an
// error.
func (t *LanguageTable) Lookup(code string) (Language, error) {
	key := strings.ToLower(strings.TrimSpace(code))
	if i, ok := t.index[key]; ok {
		return t.langs[i], nil
	}
	if base, _, ok := strings.Cut(strings.ReplaceAll(key, "_", "-"), "-"); ok {
		if i, ok := t.index[base]; ok {
			return t.langs[i], nil
		}
	}
	return Language{}, fmt.Errorf("selection: unknown language %q: not among the %d languages of the table (ISO 639-1 or 639-3 codes, or English names)", code, len(t.langs))
}

// LanguageDistance is the linguistic distance LangSim ranks by, in [0, 1.5]:
//
//	genealogy: 0 for the same WALS genus, 0.5 for the same family but another
//	           genus, 1 for different families ("other", WALS's bin for
//	           creoles and pidgins, never counts as shared)
//	+ 0.25 if the usual scripts differ
//	+ 0.25 * great-circle distance / half the Earth's circumference
//
// Genealogy dominates; script and geography break ties within a family and
// order unrelated languages by contact (shared script, nearness).
func LanguageDistance(a, b Language) float64 {
	var g float64
	switch {
	case a.Family != b.Family || a.Family == "other":
		g = 1
	case a.Genus != b.Genus:
		g = 0.5
	}
	if a.Script != b.Script {
		g += 0.25
	}
	return g + 0.25*greatCircle(a, b)/math.Pi
}

// greatCircle is the central angle between two languages' coordinates, in
// radians (haversine).
func greatCircle(a, b Language) float64 {
	rad := math.Pi / 180
	p1, p2 := a.Latitude*rad, b.Latitude*rad
	dp, dl := p2-p1, (b.Longitude-a.Longitude)*rad
	h := math.Sin(dp/2)*math.Sin(dp/2) + math.Cos(p1)*math.Cos(p2)*math.Sin(dl/2)*math.Sin(dl/2)
	return 2 * math.Asin(math.Min(1, math.Sqrt(h)))
}

// RankedLanguage is a candidate language with its distance to the target.
type RankedLanguage struct {
	Language string  `json:"language"` // as given by the caller
	ISO3     string  `json:"iso639_3"`
	Name     string  `json:"name"`
	Distance float64 `json:"distance"`
}

// RankLanguages orders candidate languages by LanguageDistance to target,
// nearest first (ties by ISO 639-3 code). Every language must be in the
// table; the error names all unknown ones. Candidates that are the target
// language itself are left out.
func (t *LanguageTable) RankLanguages(target string, candidates []string) ([]RankedLanguage, error) {
	tl, err := t.Lookup(target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	var unknown []string
	var ranked []RankedLanguage
	for _, c := range candidates {
		l, err := t.Lookup(c)
		if err != nil {
			unknown = append(unknown, strconv.Quote(c))
			continue
		}
		if l.ISO3 == tl.ISO3 {
			continue
		}
		ranked = append(ranked, RankedLanguage{Language: c, ISO3: l.ISO3, Name: l.Name, Distance: LanguageDistance(tl, l)})
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("selection: unknown languages %s: not in the language table", strings.Join(unknown, ", "))
	}
	slices.SortStableFunc(ranked, func(a, b RankedLanguage) int {
		if a.Distance != b.Distance {
			if a.Distance < b.Distance {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ISO3, b.ISO3)
	})
	return ranked, nil
}
