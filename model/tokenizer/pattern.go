package tokenizer

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// A pattern is the regular expression of a Split pre-tokenizer, compiled for
// a small backtracking matcher. Go's regexp cannot express the lookahead in
// `\s+(?!\S)`, and Hugging Face tokenizers runs these patterns with
// Oniguruma, whose semantics are leftmost-first: at each position the
// alternatives are tried in order and quantifiers are greedy with
// backtracking. This matcher implements exactly that for the subset of the
// syntax that byte-level BPE tokenizers use; anything else is a parse error
// naming the construct, never a silent approximation.
//
// Supported syntax: top-level alternation; character classes `[...]` and
// `[^...]` made of literal characters, `\r \n \t \f \v` and escaped
// punctuation, `\s`, `\p{X}`; the atoms `\s`, `\S`, `\p{X}`, `\P{X}` and
// literal characters; quantifiers `? * + {n} {n,} {n,m}`; groups `(?:...)` and
// `(?i:...)` whose alternatives are literal strings (optionally followed by
// `?`); and the negative lookahead `(?!atom)`. Properties X: L Lu Ll Lt Lm Lo
// M N.
type pattern struct {
	source string
	alts   [][]item
}

type itemKind uint8

const (
	itemClass    itemKind = iota // a character class repeated min..max times, greedily
	itemLiterals                 // one of several literal strings; skipped when min == 0
	itemNotAhead                 // zero-width: the next character is not in class (or the text ends)
)

type item struct {
	kind     itemKind
	class    *charClass
	min, max int // max < 0: unbounded
	lits     [][]rune
	fold     bool // literals match case-insensitively (Unicode simple case folding)
}

// Property bits of a rune, as Oniguruma defines them for UTF-8 text.
const (
	propLu    uint16 = 1 << iota // uppercase letter
	propLl                       // lowercase letter
	propLt                       // titlecase letter
	propLm                       // modifier letter
	propLo                       // other letter
	propM                        // mark: Mn, Mc, Me
	propN                        // number: Nd, Nl, No
	propSpace                    // \s: White_Space
	propL     = propLu | propLl | propLt | propLm | propLo
)

var propertyBits = map[string]uint16{
	"L": propL, "Lu": propLu, "Ll": propLl, "Lt": propLt, "Lm": propLm, "Lo": propLo,
	"M": propM, "N": propN,
}

// bmpProps holds the property bits of every rune of the Basic Multilingual
// Plane: class tests in the hot loop become one table load.
var bmpProps = sync.OnceValue(func() []uint16 {
	t := make([]uint16, 0x10000)
	for r := range t {
		t[r] = computeProps(rune(r))
	}
	return t
})

func computeProps(r rune) uint16 {
	var p uint16
	switch {
	case unicode.Is(unicode.Lu, r):
		p |= propLu
	case unicode.Is(unicode.Ll, r):
		p |= propLl
	case unicode.Is(unicode.Lt, r):
		p |= propLt
	case unicode.Is(unicode.Lm, r):
		p |= propLm
	case unicode.Is(unicode.Lo, r):
		p |= propLo
	case unicode.Is(unicode.M, r):
		p |= propM
	case unicode.Is(unicode.N, r):
		p |= propN
	}
	if unicode.IsSpace(r) {
		p |= propSpace
	}
	return p
}

// A charClass is a set of runes: those with any of props, plus runes,
// complemented when negated. ascii caches membership of runes below 128.
type charClass struct {
	negated bool
	props   uint16
	runes   []rune
	ascii   [2]uint64
	table   []uint16
}

func newClass(negated bool, props uint16, runes []rune) *charClass {
	c := &charClass{negated: negated, props: props, runes: runes, table: bmpProps()}
	for r := rune(0); r < 128; r++ {
		if c.slowHas(r) {
			c.ascii[r>>6] |= 1 << (r & 63)
		}
	}
	return c
}

func (c *charClass) slowHas(r rune) bool {
	var p uint16
	if r < 0x10000 {
		p = c.table[r]
	} else {
		p = computeProps(r)
	}
	in := p&c.props != 0
	for _, x := range c.runes {
		if x == r {
			in = true
		}
	}
	return in != c.negated
}

func (c *charClass) has(r rune) bool {
	if r < 128 {
		return c.ascii[r>>6]&(1<<(r&63)) != 0
	}
	return c.slowHas(r)
}

// compilePattern parses a Split pattern. Every alternative must consume at
// least one character, so that scanning always advances.
func compilePattern(src string) (*pattern, error) {
	p := &pattern{source: src}
	ps := &patternParser{src: []rune(src)}
	for {
		alt, err := ps.sequence(false)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", src, err)
		}
		if minLength(alt) == 0 {
			return nil, fmt.Errorf("pattern %q: alternative %d can match the empty string", src, len(p.alts)+1)
		}
		p.alts = append(p.alts, alt)
		if ps.eof() {
			return p, nil
		}
		if ps.peek() != '|' {
			return nil, fmt.Errorf("pattern %q: unexpected %q at offset %d", src, ps.peek(), ps.pos)
		}
		ps.pos++
	}
}

func minLength(items []item) int {
	n := 0
	for _, it := range items {
		switch it.kind {
		case itemClass:
			n += it.min
		case itemLiterals:
			if it.min > 0 {
				shortest := -1
				for _, l := range it.lits {
					if shortest < 0 || len(l) < shortest {
						shortest = len(l)
					}
				}
				n += shortest
			}
		}
	}
	return n
}

type patternParser struct {
	src []rune
	pos int
}

func (ps *patternParser) eof() bool  { return ps.pos >= len(ps.src) }
func (ps *patternParser) peek() rune { return ps.src[ps.pos] }

// sequence parses items up to '|', ')' or the end.
func (ps *patternParser) sequence(inGroup bool) ([]item, error) {
	var items []item
	for !ps.eof() {
		c := ps.peek()
		if c == '|' || c == ')' {
			if c == ')' && !inGroup {
				return nil, fmt.Errorf("unbalanced ')' at offset %d", ps.pos)
			}
			return items, nil
		}
		it, err := ps.item()
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

func (ps *patternParser) item() (item, error) {
	start := ps.pos
	if ps.peek() == '(' {
		return ps.group()
	}
	class, err := ps.atom()
	if err != nil {
		return item{}, err
	}
	it := item{kind: itemClass, class: class, min: 1, max: 1}
	if err := ps.quantifier(&it); err != nil {
		return item{}, fmt.Errorf("offset %d: %w", start, err)
	}
	return it, nil
}

// atom parses one character class, escape or literal character.
func (ps *patternParser) atom() (*charClass, error) {
	c := ps.peek()
	switch c {
	case '[':
		return ps.bracket()
	case '\\':
		ps.pos++
		if ps.eof() {
			return nil, fmt.Errorf("pattern ends in a backslash")
		}
		e := ps.peek()
		ps.pos++
		switch e {
		case 's':
			return newClass(false, propSpace, nil), nil
		case 'S':
			return newClass(true, propSpace, nil), nil
		case 'p', 'P':
			bits, err := ps.property()
			if err != nil {
				return nil, err
			}
			return newClass(e == 'P', bits, nil), nil
		}
		r, err := escapedRune(e)
		if err != nil {
			return nil, err
		}
		return newClass(false, 0, []rune{r}), nil
	case '.', '^', '$', '*', '+', '?', '{', '}':
		return nil, fmt.Errorf("unsupported construct %q at offset %d", c, ps.pos)
	}
	ps.pos++
	return newClass(false, 0, []rune{c}), nil
}

// property parses the `{X}` after \p or \P.
func (ps *patternParser) property() (uint16, error) {
	if ps.eof() || ps.peek() != '{' {
		return 0, fmt.Errorf("\\p without {...} at offset %d", ps.pos)
	}
	end := ps.pos
	for end < len(ps.src) && ps.src[end] != '}' {
		end++
	}
	if end == len(ps.src) {
		return 0, fmt.Errorf("unterminated \\p{ at offset %d", ps.pos)
	}
	name := string(ps.src[ps.pos+1 : end])
	bits, ok := propertyBits[name]
	if !ok {
		return 0, fmt.Errorf("unsupported Unicode property \\p{%s}", name)
	}
	ps.pos = end + 1
	return bits, nil
}

// escapedRune is the character an escape other than a class stands for.
func escapedRune(e rune) (rune, error) {
	switch e {
	case 'r':
		return '\r', nil
	case 'n':
		return '\n', nil
	case 't':
		return '\t', nil
	case 'f':
		return '\f', nil
	case 'v':
		return '\v', nil
	}
	if e < 128 && !unicode.IsLetter(e) && !unicode.IsDigit(e) {
		return e, nil // escaped punctuation stands for itself
	}
	return 0, fmt.Errorf("unsupported escape \\%c", e)
}

func (ps *patternParser) bracket() (*charClass, error) {
	start := ps.pos
	ps.pos++ // '['
	negated := false
	if !ps.eof() && ps.peek() == '^' {
		negated = true
		ps.pos++
	}
	var props uint16
	var runes []rune
	for {
		if ps.eof() {
			return nil, fmt.Errorf("unterminated class at offset %d", start)
		}
		c := ps.peek()
		ps.pos++
		switch c {
		case ']':
			return newClass(negated, props, runes), nil
		case '[':
			return nil, fmt.Errorf("nested class at offset %d", ps.pos-1)
		case '\\':
			if ps.eof() {
				return nil, fmt.Errorf("unterminated class at offset %d", start)
			}
			e := ps.peek()
			ps.pos++
			switch e {
			case 's':
				props |= propSpace
			case 'p':
				bits, err := ps.property()
				if err != nil {
					return nil, err
				}
				props |= bits
			default:
				r, err := escapedRune(e)
				if err != nil {
					return nil, err
				}
				runes = append(runes, r)
			}
			continue
		}
		if !ps.eof() && ps.peek() == '-' && ps.pos+1 < len(ps.src) && ps.src[ps.pos+1] != ']' {
			return nil, fmt.Errorf("unsupported range in class at offset %d", ps.pos-1)
		}
		runes = append(runes, c)
	}
}

// quantifier parses an optional ?, *, +, {n}, {n,} or {n,m} into it.
func (ps *patternParser) quantifier(it *item) error {
	if ps.eof() {
		return nil
	}
	switch ps.peek() {
	case '?':
		it.min, it.max = 0, 1
	case '*':
		it.min, it.max = 0, -1
	case '+':
		it.min, it.max = 1, -1
	case '{':
		end := ps.pos
		for end < len(ps.src) && ps.src[end] != '}' {
			end++
		}
		if end == len(ps.src) {
			return fmt.Errorf("unterminated {")
		}
		body := string(ps.src[ps.pos+1 : end])
		lo, hi, comma := strings.Cut(body, ",")
		n, err := strconv.Atoi(lo)
		if err != nil || n < 0 {
			return fmt.Errorf("bad repetition {%s}", body)
		}
		m := n
		if comma {
			m = -1
			if hi != "" {
				if m, err = strconv.Atoi(hi); err != nil || m < n {
					return fmt.Errorf("bad repetition {%s}", body)
				}
			}
		}
		it.min, it.max = n, m
		ps.pos = end
	default:
		return nil
	}
	ps.pos++
	if !ps.eof() && (ps.peek() == '?' || ps.peek() == '+') {
		return fmt.Errorf("lazy and possessive quantifiers are not supported")
	}
	return nil
}

// group parses (?:lits), (?i:lits) or (?!atom).
func (ps *patternParser) group() (item, error) {
	start := ps.pos
	rest := string(ps.src[ps.pos:])
	switch {
	case strings.HasPrefix(rest, "(?!"):
		ps.pos += 3
		class, err := ps.atom()
		if err != nil {
			return item{}, err
		}
		if ps.eof() || ps.peek() != ')' {
			return item{}, fmt.Errorf("lookahead at offset %d: only one character class is supported", start)
		}
		ps.pos++
		return item{kind: itemNotAhead, class: class}, nil
	case strings.HasPrefix(rest, "(?:"), strings.HasPrefix(rest, "(?i:"):
		it := item{kind: itemLiterals, min: 1, max: 1, fold: strings.HasPrefix(rest, "(?i:")}
		ps.pos += 3
		if it.fold {
			ps.pos++
		}
		var lit []rune
		for {
			if ps.eof() {
				return item{}, fmt.Errorf("unterminated group at offset %d", start)
			}
			c := ps.peek()
			ps.pos++
			switch c {
			case '|', ')':
				if len(lit) == 0 {
					return item{}, fmt.Errorf("empty alternative in group at offset %d", start)
				}
				it.lits = append(it.lits, lit)
				lit = nil
				if c == ')' {
					if !ps.eof() && ps.peek() == '?' {
						it.min = 0
						ps.pos++
					}
					if !ps.eof() && strings.ContainsRune("*+{?", ps.peek()) {
						return item{}, fmt.Errorf("group at offset %d: only ? may follow a group", start)
					}
					return it, nil
				}
			case '\\':
				if ps.eof() {
					return item{}, fmt.Errorf("unterminated group at offset %d", start)
				}
				r, err := escapedRune(ps.peek())
				if err != nil {
					return item{}, fmt.Errorf("group at offset %d: %w", start, err)
				}
				ps.pos++
				lit = append(lit, r)
			case '(', '[', '.', '*', '+', '?', '{':
				return item{}, fmt.Errorf("group at offset %d: only alternatives of literal strings are supported", start)
			default:
				lit = append(lit, c)
			}
		}
	}
	return item{}, fmt.Errorf("unsupported group at offset %d", start)
}

// matchAt returns the end of the pattern's match starting at pos, or -1.
func (p *pattern) matchAt(s string, pos int) int {
	for _, alt := range p.alts {
		if end := matchSeq(alt, s, pos); end >= 0 {
			return end
		}
	}
	return -1
}

func decodeRune(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// matchSeq matches items at s[pos:] with backtracking and returns the end of
// the first (in Oniguruma's priority order) successful match, or -1.
func matchSeq(items []item, s string, pos int) int {
	if len(items) == 0 {
		return pos
	}
	it := &items[0]
	switch it.kind {
	case itemNotAhead:
		if pos < len(s) {
			if r, _ := decodeRune(s, pos); it.class.has(r) {
				return -1
			}
		}
		return matchSeq(items[1:], s, pos)
	case itemLiterals:
		for _, lit := range it.lits {
			if end := matchLiteral(s, pos, lit, it.fold); end >= 0 {
				if e := matchSeq(items[1:], s, end); e >= 0 {
					return e
				}
			}
		}
		if it.min == 0 {
			return matchSeq(items[1:], s, pos)
		}
		return -1
	}
	end, n := pos, 0
	for (it.max < 0 || n < it.max) && end < len(s) {
		r, size := decodeRune(s, end)
		if !it.class.has(r) {
			break
		}
		end += size
		n++
	}
	if len(items) == 1 {
		if n >= it.min {
			return end
		}
		return -1
	}
	for ; n >= it.min; n-- {
		if e := matchSeq(items[1:], s, end); e >= 0 {
			return e
		}
		_, size := utf8.DecodeLastRuneInString(s[pos:end])
		end -= size
	}
	return -1
}

func matchLiteral(s string, pos int, lit []rune, fold bool) int {
	for _, want := range lit {
		if pos >= len(s) {
			return -1
		}
		r, size := decodeRune(s, pos)
		if r != want && !(fold && sameFold(r, want)) {
			return -1
		}
		pos += size
	}
	return pos
}

// sameFold reports whether a and b are equal under simple case folding, as
// Oniguruma's (?i) compares single characters ('s' matches 'S' and 'ſ').
func sameFold(a, b rune) bool {
	for f := unicode.SimpleFold(b); f != b; f = unicode.SimpleFold(f) {
		if f == a {
			return true
		}
	}
	return false
}
