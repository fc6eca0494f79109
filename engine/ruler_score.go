package engine

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// The scoring rules of OneRuler's eval/evaluate.py, rule for rule. Python's
// re and str semantics are kept where they matter: \d is any decimal digit
// (Unicode Nd), \b and \w are Unicode-aware, int() reads any decimal digits.

// ScoreRuler says whether output answers item, by the rule of its task.
func ScoreRuler(item *RulerItem, output string) bool {
	switch {
	case item.Task == "niah_none":
		return ScoreNIAHNone(output, item.NoneWords)
	case strings.HasPrefix(item.Task, "cwe"):
		return ScoreCWE(output, item.Answers)
	}
	return ScoreNIAH(output, item.Answers, item.NoneWords)
}

// ScoreNIAH is OneRuler's compare_numbers: the answer (NFKC) fails if it
// holds a "none" word; otherwise its numbers of two digits or more, without
// repeats, must be as many as the gold numbers and equal them as a set.
func ScoreNIAH(output string, gold, noneWords []string) bool {
	if output == "" {
		return false
	}
	s := norm.NFKC.String(output)
	for _, w := range noneWords {
		if strings.Contains(s, w) || strings.Contains(s, rulerClean(w)) {
			return false
		}
	}
	var found []string
	seen := map[string]bool{}
	for _, num := range digitRuns(s) {
		if len([]rune(num)) > 1 && !seen[num] { // single digits are not answers
			seen[num] = true
			found = append(found, num)
		}
	}
	if len(found) == 0 || len(found) != len(gold) {
		return false
	}
	want := map[string]bool{}
	for _, g := range gold {
		v, ok := decimalValue(strings.TrimSpace(g))
		if !ok {
			return false // int() of the gold fails: OneRuler returns False
		}
		want[v] = true
	}
	got := map[string]bool{}
	for _, f := range found {
		v, _ := decimalValue(f)
		got[v] = true
	}
	if len(got) != len(want) {
		return false
	}
	for v := range got {
		if !want[v] {
			return false
		}
	}
	return true
}

// ScoreNIAHNone is OneRuler's compare_none: after NFKC, trimming,
// lowercasing and removing spaces and zero-width non-joiners, and removing
// lone single digits, the answer must contain one of the language's "none"
// words (cleaned the same way).
func ScoreNIAHNone(output string, noneWords []string) bool {
	s := removeLoneDigits(rulerClean(norm.NFKC.String(output)))
	for _, w := range noneWords {
		if strings.Contains(s, rulerClean(w)) {
			return true
		}
	}
	return false
}

// ScoreCWE is OneRuler's is_correct_order (despite its name, order does not
// count): every gold word, trimmed and lowercased, is a substring of the
// trimmed, lowercased answer.
func ScoreCWE(output string, gold []string) bool {
	s := strings.ToLower(strings.TrimSpace(output))
	for _, g := range gold {
		if !strings.Contains(s, strings.ToLower(strings.TrimSpace(g))) {
			return false
		}
	}
	return true
}

// rulerClean is OneRuler's clean_text: strip, lower, drop U+200C and ' '.
func rulerClean(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer("\u200c", "", " ", "").Replace(s)
}

// digitRuns returns the maximal runs of decimal digits, as re.findall(r'\d+').
func digitRuns(s string) []string {
	var out []string
	start := -1
	for i, r := range s {
		if unicode.IsDigit(r) {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			out = append(out, s[start:i])
			start = -1
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// decimalValue reads a run of decimal digits of any script as int() does,
// and returns it in ASCII without leading zeros, so values compare as strings.
func decimalValue(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	var b strings.Builder
	for _, r := range s {
		d, ok := digitValue(r)
		if !ok {
			return "", false
		}
		if b.Len() == 0 && d == 0 {
			continue
		}
		b.WriteByte(byte('0' + d))
	}
	if b.Len() == 0 {
		return "0", true
	}
	return b.String(), true
}

// digitValue is the value of a decimal digit. Unicode lays the Nd digits out
// in runs of whole 0-9 sets, so the offset from the run's start, mod 10, is
// the value.
func digitValue(r rune) (int, bool) {
	if !unicode.IsDigit(r) {
		return 0, false
	}
	start := r
	for unicode.IsDigit(start - 1) {
		start--
	}
	return int(r-start) % 10, true
}

// isWordRune is Python's \w for str: letters, numbers and the underscore.
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_'
}

// removeLoneDigits is Python's re.sub(r'\b\d\b', "", s): a digit with no word
// character on either side goes.
func removeLoneDigits(s string) string {
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsDigit(r) && (i == 0 || !isWordRune(rs[i-1])) && (i == len(rs)-1 || !isWordRune(rs[i+1])) {
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
