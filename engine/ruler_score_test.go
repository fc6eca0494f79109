package engine

import (
	"testing"
)

// Hand-made answers judged by OneRuler's rules (eval/evaluate.py); the
// comments say which rule decides.
func TestScoreNIAH(t *testing.T) {
	en := rulerPrompts["en"].NoneWords
	sw := rulerPrompts["sw"].NoneWords
	de := rulerPrompts["de"].NoneWords
	for _, tc := range []struct {
		answer string
		gold   []string
		none   []string
		want   bool
	}{
		{"<Answer> 4827361 </Answer>", []string{"4827361"}, en, true},
		{"The special magic number for \"apple\" is 4827361.", []string{"4827361"}, en, true},
		{"4827361, 4827361", []string{"4827361"}, en, true},                              // repeats count once
		{"1. 4827361", []string{"4827361"}, en, true},                                    // single digits are dropped
		{"4827362", []string{"4827361"}, en, false},                                      // wrong
		{"", []string{"4827361"}, en, false},                                             // empty
		{"4827361 and 1234567", []string{"4827361"}, en, false},                          // a number too many
		{"9912345, 4827361", []string{"4827361", "9912345"}, en, true},                   // a set: order free
		{"4827361", []string{"4827361", "9912345"}, en, false},                           // partly right
		{"4827361 9912345 5555555", []string{"4827361", "9912345", "5555555"}, en, true}, // multivalue
		{"none, but maybe 4827361", []string{"4827361"}, en, false},                      // "none" fails it
		{"None of them: 4827361", []string{"4827361"}, en, true},                         // ...case-sensitively, as OneRuler
		{"４８２７３６１", []string{"4827361"}, en, true},                                       // NFKC: full-width digits
		{"४८२७३६१", []string{"4827361"}, en, true},                                       // Devanagari digits, as int() reads them
		{"04827361", []string{"4827361"}, en, true},                                      // int("04827361")
		{"Jibu: 4827361", []string{"4827361"}, sw, true},
		{"hakuna 4827361", []string{"4827361"}, sw, false},
		{"4827361", []string{"x"}, en, false},                           // gold that int() cannot read
		{"4827361", []string{" 4827361\n"}, en, true},                   // gold trimmed, as int() does
		{"482761", []string{"4827061"}, en, false},                      // a zero inside a number counts
		{"١. 4827361", []string{"4827361"}, en, true},                   // a single Arabic-Indic digit is dropped too
		{"04827361 4827361", []string{"4827361", "9912345"}, en, false}, // two spellings of one number
		{"keinevorhanden 4827361", []string{"4827361"}, de, false},      // a none word without its space
		{"I do not know.", []string{}, en, false},                       // no numbers is no answer, even to no gold
	} {
		if got := ScoreNIAH(tc.answer, tc.gold, tc.none); got != tc.want {
			t.Errorf("ScoreNIAH(%q, %v) = %v, want %v", tc.answer, tc.gold, got, tc.want)
		}
	}
}

func TestScoreNIAHNone(t *testing.T) {
	for _, tc := range []struct {
		answer string
		lang   string
		want   bool
	}{
		{"<Answer> none </Answer>", "en", true},
		{"None", "en", true}, // lowercased here
		{"NONE.", "en", true},
		{"4827361", "en", false},
		{"", "en", false},
		{"I could not find one.", "en", false},
		{"hakuna", "sw", true},
		{"Jibu: Hakuna nambari", "sw", true},
		{"Keine vorhanden", "de", true},
		{"keinevorhanden", "de", true}, // spaces removed on both sides
		{"Keine", "de", false},
		{"žádná čísla", "cs", true}, // either of Czech's two words
		{"数字はありません", "ja", true},
		{"n1one", "en", false}, // a digit inside a word stays
		{"(1) none", "en", true},
		{"n 1 one", "en", false},      // spaces go first: "n1one" keeps its digit
		{"ＮＯＮＥ", "en", true},          // NFKC: full-width letters
		{"هیچ\u200cکدام", "fa", true}, // a zero-width non-joiner for the space
		{"को5ईनहीं", "hi", false},     // 5 follows a vowel sign (not \w) but precedes a letter: not lone, as Python's \b\d\b
	} {
		if got := ScoreNIAHNone(tc.answer, rulerPrompts[tc.lang].NoneWords); got != tc.want {
			t.Errorf("ScoreNIAHNone(%q, %s) = %v, want %v", tc.answer, tc.lang, got, tc.want)
		}
	}
}

func TestScoreCWE(t *testing.T) {
	gold := []string{"apple", "river", "Lamp", "stone", "cloud", "paper", "horse", "glass", "music", "tiger"}
	for _, tc := range []struct {
		answer string
		want   bool
	}{
		{"<Answer> apple river lamp stone cloud paper horse glass music tiger </Answer>", true},
		{"TIGER, MUSIC, GLASS, HORSE, PAPER, CLOUD, STONE, LAMP, RIVER, APPLE", true},                                   // order and case free
		{"1. apples 2. rivers 3. lamps 4. stones 5. clouds 6. papers 7. horses 8. glasses 9. musical 10. tigers", true}, // substrings
		{"apple river lamp stone cloud paper horse glass music", false},                                                 // nine of ten
		{"apple river lamp stone cloud paper horse glass music lion", false},                                            // one wrong
		{"", false},
		{"none", false},
	} {
		if got := ScoreCWE(tc.answer, gold); got != tc.want {
			t.Errorf("ScoreCWE(%q) = %v, want %v", tc.answer, got, tc.want)
		}
	}
	if untrimmed := []string{" apple\n", "river "}; !ScoreCWE("apple river", untrimmed) {
		t.Errorf("ScoreCWE(%q, %q) = false, want true (gold words trimmed)", "apple river", untrimmed)
	}
}

func TestScoreRulerDispatch(t *testing.T) {
	none := rulerPrompts["en"].NoneWords
	for _, tc := range []struct {
		item   RulerItem
		answer string
		want   bool
	}{
		{RulerItem{Task: "niah_single", Answers: []string{"1234567"}, NoneWords: none}, "1234567", true},
		{RulerItem{Task: "niah_none", Answers: []string{"none"}, NoneWords: none}, "none", true},
		{RulerItem{Task: "niah_none", Answers: []string{"none"}, NoneWords: none}, "1234567", false},
		{RulerItem{Task: "cwe_easy", Answers: []string{"a1", "b2"}}, "b2 a1", true},
		{RulerItem{Task: "cwe", Answers: []string{"a1", "b2"}}, "a1", false},
	} {
		if got := ScoreRuler(&tc.item, tc.answer); got != tc.want {
			t.Errorf("%s: ScoreRuler(%q) = %v, want %v", tc.item.Task, tc.answer, got, tc.want)
		}
	}
}

func TestDecimalValue(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "000": "0", "0012": "12", "٤٥": "45", "๑๒๓": "123", "𝟕": "7", "105": "105", "𝟡𝟘": "90"} {
		if got, ok := decimalValue(in); !ok || got != want {
			t.Errorf("decimalValue(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "1a", "½"} {
		if _, ok := decimalValue(bad); ok {
			t.Errorf("decimalValue(%q) read a number", bad)
		}
	}
}
