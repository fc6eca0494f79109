package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/compassml/compass/dataset"
)

// Long-context tasks after OneRuler (Kim et al. 2025, "One ruler to measure
// them all"), built from any local text: needle-in-a-haystack (niah) in five
// variants and common-word extraction (cwe), easy and hard. The prompts,
// needle phrases, "none" words and nouns are OneRuler's (ruler_lang.go);
// what is ours is said where it is done.

// The niah variants and the cwe levels, as OneRuler's synthetic.yaml names them.
const (
	NIAHSingle     = "single"     // one key, one value, asked for it
	NIAHMultikey   = "multikey"   // four keys, one value each, asked for one
	NIAHMultivalue = "multivalue" // one key with four values, asked for all
	NIAHMultiquery = "multiquery" // two keys, one value each, asked for both
	NIAHNone       = "none"       // four keys, asked for a fifth: the answer is the "none" word
	CWEEasy        = "easy"       // 10 words 30 times, the others 3 times
	CWEHard        = "hard"       // 10 words 20 times, the others 10 times
)

// OneRuler's generation budgets (synthetic/constants.py).
const (
	niahMaxTokens = 30
	cweMaxTokens  = 50
)

// RulerPrompt is one language's wording of the tasks, with OneRuler's
// placeholders: {context} in Task and CWE, {key} and {value} in Needle,
// {query1} and {query2} in the questions. The built-in ones are OneRuler's;
// a language it lacks can be given as a JSON file of these fields.
type RulerPrompt struct {
	Task           string   `json:"task"`
	Needle         string   `json:"needle_numbers"`
	QuestionSingle string   `json:"question_single_numbers"`
	QuestionMulti  string   `json:"question_multi_numbers"`
	PleaseList     string   `json:"please_list"`
	IfNone         string   `json:"if_no_numbers"`
	AnswerPrefix   string   `json:"answer_prefix"`
	Answer         string   `json:"answer_numbers"`
	None           string   `json:"none"`       // the answer of the none variant
	NoneWords      []string `json:"none_words"` // what the scorer accepts as "none"; [None] when empty
	CWE            string   `json:"cwe"`
	Nouns          []string `json:"nouns"` // needle keys
}

// RulerLanguages lists the languages with built-in prompts.
func RulerLanguages() []string {
	var out []string
	for l := range rulerPrompts {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// RulerOptions says which task to build and how long.
type RulerOptions struct {
	Task    string // "niah" or "cwe"
	Variant string // niah: single|multikey|multivalue|multiquery|none; cwe: easy|hard
	// Length is the sequence length in tokens of the model's tokenizer: the
	// prompt plus the MaxTokens to generate, as RULER counts it. The prompt
	// is never longer and at most 1% shorter.
	Length int
	// Depth is where the first needle of the asked key goes (the first
	// distractor for the none variant), in percent of the haystack's tokens;
	// the other needles go at random depths of OneRuler's 40-point grid.
	// Negative: every needle at a random grid depth, as OneRuler does.
	Depth float64
	// Lang is the language of the text, an ISO 639 code or a name
	// (dataset.NormalizeLanguage). It picks the prompt, the nouns used as
	// keys and the "none" word unless Prompt is given.
	Lang    string
	Prompt  *RulerPrompt // replaces the built-in prompt of Lang
	Samples int          // items to build; 0 means 1
	Seed    uint64
	// MaxTokens is the number of tokens to generate; 0 means OneRuler's
	// (30 for niah, 50 for cwe).
	MaxTokens int
	// Words are cwe's vocabulary; nil takes the distinct words of the text
	// (letters only, 3 to 24 characters, lowercased). A language written
	// without spaces needs them.
	Words []string
}

// RulerItem is one built prompt with its gold answer.
type RulerItem struct {
	Task   string `json:"task"` // niah_single, ..., cwe_easy (OneRuler's task names)
	Index  int    `json:"index"`
	Lang   string `json:"lang"`
	Length int    `json:"length"` // requested
	Tokens int    `json:"tokens"` // of the prompt
	// MaxTokens is the number of tokens to generate (Tokens+MaxTokens <= Length).
	MaxTokens int      `json:"max_tokens"`
	Prompt    string   `json:"-"`
	IDs       []int    `json:"-"`
	Queries   []string `json:"queries,omitempty"`
	Answers   []string `json:"answers"` // the numbers, the none word, or the ten words
	// Depths are the needles' depths in percent of the haystack's tokens,
	// in the order they appear.
	Depths    []float64 `json:"depths,omitempty"`
	NoneWords []string  `json:"-"`
}

// BuildRuler builds opts.Samples prompts of the task from text. enc counts
// tokens the way the model will see them (with BOS, or through the chat
// template). Item i depends only on the text, the options and i.
func BuildRuler(enc Encoder, text string, opts RulerOptions) ([]RulerItem, error) {
	b, err := newRulerBuilder(enc, text, opts)
	if err != nil {
		return nil, err
	}
	n := max(opts.Samples, 1)
	items := make([]RulerItem, 0, n)
	for i := range n {
		var it *RulerItem
		if b.opts.Task == "niah" {
			it, err = b.niah(i)
		} else {
			it, err = b.cwe(i)
		}
		if err != nil {
			return nil, fmt.Errorf("ruler: %s item %d: %w", b.taskName(), i, err)
		}
		items = append(items, *it)
	}
	return items, nil
}

// LoadRulerText reads the haystack text for lang from path: a text file, or a
// directory holding <lang>.txt or a folder <lang>/ of .txt files (OneRuler's
// books/<lang>/), read in name order and joined.
func LoadRulerText(path, lang string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("ruler: text: %w", err)
	}
	if !fi.IsDir() {
		return readRulerText(path)
	}
	code, _ := dataset.NormalizeLanguage(lang)
	if s, err := readRulerText(filepath.Join(path, code+".txt")); err == nil {
		return s, nil
	}
	files, _ := filepath.Glob(filepath.Join(path, code, "*.txt"))
	if len(files) == 0 {
		return "", fmt.Errorf("ruler: text: no %s.txt or %s/*.txt in %s", code, code, path)
	}
	slices.Sort(files)
	var sb strings.Builder
	for _, f := range files {
		s, err := readRulerText(f)
		if err != nil {
			return "", err
		}
		sb.WriteString(s)
		sb.WriteString("\n")
	}
	return sb.String(), nil
}

func readRulerText(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("ruler: text: %w", err)
	}
	if !utf8.Valid(data) {
		return "", fmt.Errorf("ruler: text %s: not UTF-8", path)
	}
	return string(data), nil
}

type rulerBuilder struct {
	enc     Encoder
	opts    RulerOptions
	lang    string
	prompt  RulerPrompt
	noSpace bool // written without spaces: units are characters, joined by ""
	budget  int  // prompt tokens allowed: Length - MaxTokens
	special int  // tokens the encoder adds to any text (BOS, chat frame)

	// niah: the haystack as units (words, or characters), one cycle of the
	// text; the haystack is its first n units, repeated as needed.
	units    []string
	unitToks []int  // estimated tokens of each unit after the joiner
	cum      []int  // cum[i] = sum of unitToks[:i]
	sentEnd  []bool // unit i ends a sentence
	words    []string
	variant  rulerVariant
}

type rulerVariant struct{ keys, values, queries int }

var niahVariants = map[string]rulerVariant{
	NIAHSingle:     {1, 1, 1},
	NIAHMultikey:   {4, 1, 1},
	NIAHMultivalue: {1, 4, 1},
	NIAHMultiquery: {2, 1, 2},
	NIAHNone:       {4, 1, 1},
}

// noSpaceLangs are written without spaces between words; OneRuler joins
// their sentences with "" (zh, ja) and we add the other such scripts.
var noSpaceLangs = map[string]bool{"zh": true, "ja": true, "th": true, "lo": true, "km": true, "my": true, "bo": true}

func newRulerBuilder(enc Encoder, text string, opts RulerOptions) (*rulerBuilder, error) {
	b := &rulerBuilder{enc: enc, opts: opts}
	switch opts.Task {
	case "niah":
		v, ok := niahVariants[opts.Variant]
		if !ok {
			return nil, fmt.Errorf("ruler: niah variant %q: want single, multikey, multivalue, multiquery or none", opts.Variant)
		}
		b.variant = v
		if opts.MaxTokens == 0 {
			b.opts.MaxTokens = niahMaxTokens
		}
		if opts.Depth > 100 || math.IsNaN(opts.Depth) {
			return nil, fmt.Errorf("ruler: depth %g: want 0 to 100 (percent), or negative for random depths", opts.Depth)
		}
	case "cwe":
		if opts.Variant != CWEEasy && opts.Variant != CWEHard {
			return nil, fmt.Errorf("ruler: cwe variant %q: want easy or hard", opts.Variant)
		}
		if opts.MaxTokens == 0 {
			b.opts.MaxTokens = cweMaxTokens
		}
	default:
		return nil, fmt.Errorf("ruler: task %q: want niah or cwe", opts.Task)
	}
	if enc == nil {
		return nil, errors.New("ruler: a tokenizer is needed to count tokens")
	}
	if opts.Samples < 0 || opts.MaxTokens < 0 {
		return nil, fmt.Errorf("ruler: samples %d and max tokens %d must not be negative", opts.Samples, opts.MaxTokens)
	}
	b.budget = opts.Length - b.opts.MaxTokens
	if opts.Length <= 0 || b.budget <= 0 {
		return nil, fmt.Errorf("ruler: length %d leaves no room for a prompt after %d tokens to generate", opts.Length, b.opts.MaxTokens)
	}
	code, _ := dataset.NormalizeLanguage(opts.Lang)
	if code == "" {
		return nil, errors.New("ruler: the text's language is needed (its prompt, nouns and none word)")
	}
	b.lang = code
	b.noSpace = noSpaceLangs[code]
	if opts.Prompt != nil {
		b.prompt = *opts.Prompt
	} else if p, ok := rulerPrompts[code]; ok {
		b.prompt = p
	} else {
		return nil, fmt.Errorf("ruler: no built-in prompt for %q (built in: %s); give one as a file", code, strings.Join(RulerLanguages(), ", "))
	}
	if len(b.prompt.NoneWords) == 0 && b.prompt.None != "" {
		b.prompt.NoneWords = []string{b.prompt.None}
	}
	if err := b.checkPrompt(); err != nil {
		return nil, err
	}
	empty, err := enc.Encode("")
	if err != nil {
		return nil, fmt.Errorf("ruler: tokenizer: %w", err)
	}
	b.special = len(empty)
	if opts.Task == "niah" {
		return b, b.splitHaystack(text)
	}
	return b, b.cweWords(text)
}

func (b *rulerBuilder) checkPrompt() error {
	p := &b.prompt
	need := func(field, s string, holes ...string) error {
		if s == "" {
			return fmt.Errorf("ruler: prompt for %s: %s is empty", b.lang, field)
		}
		for _, h := range holes {
			if !strings.Contains(s, h) {
				return fmt.Errorf("ruler: prompt for %s: %s lacks %s", b.lang, field, h)
			}
		}
		return nil
	}
	if b.opts.Task == "cwe" {
		return need("cwe", p.CWE, "{context}")
	}
	for _, err := range []error{
		need("task", p.Task, "{context}"),
		need("needle_numbers", p.Needle, "{key}", "{value}"),
		need("question_single_numbers", p.QuestionSingle, "{query1}"),
		need("question_multi_numbers", p.QuestionMulti, "{query1}", "{query2}"),
		need("none", p.None),
	} {
		if err != nil {
			return err
		}
	}
	if len(dedupe(p.Nouns)) < 5 {
		return fmt.Errorf("ruler: prompt for %s: nouns: need at least 5 distinct keys, have %d", b.lang, len(dedupe(p.Nouns)))
	}
	return nil
}

func (b *rulerBuilder) taskName() string {
	if b.opts.Task == "niah" {
		return "niah_" + b.opts.Variant
	}
	if b.opts.Variant == CWEEasy {
		return "cwe_easy"
	}
	return "cwe" // OneRuler's name for the hard one
}

func (b *rulerBuilder) join() string {
	if b.noSpace {
		return ""
	}
	return " "
}

// count returns the tokens of s alone, without what the encoder adds.
func (b *rulerBuilder) count(s string) (int, error) {
	ids, err := b.enc.Encode(s)
	if err != nil {
		return 0, err
	}
	return len(ids) - b.special, nil
}

// isSentenceEnd says whether a unit closes a sentence: it ends with a
// terminal mark, perhaps followed by closing quotes or brackets. OneRuler
// splits with stanza, or this rule where stanza has no model (ours: no
// stanza here, and the rule works for any language).
func isSentenceEnd(u string) bool {
	u = strings.TrimRightFunc(u, func(r rune) bool { return strings.ContainsRune("\"'”’»)]」』）", r) })
	r, _ := utf8.DecodeLastRuneInString(u)
	return strings.ContainsRune(".!?…。！？।॥؟۔", r)
}

// splitHaystack cuts the text into units and estimates their tokens. Words
// for languages with spaces (whitespace collapsed, as OneRuler does), single
// characters for the others, so that the haystack can end anywhere and hit
// the length.
func (b *rulerBuilder) splitHaystack(text string) error {
	if b.noSpace {
		for _, r := range strings.Join(strings.Fields(text), " ") {
			b.units = append(b.units, string(r))
		}
	} else {
		b.units = strings.Fields(text)
	}
	if len(b.units) == 0 {
		return errors.New("ruler: the haystack text is empty")
	}
	known := map[string]int{}
	b.cum = make([]int, len(b.units)+1)
	for i, u := range b.units {
		n, ok := known[u]
		if !ok {
			var err error
			if n, err = b.count(b.join() + u); err != nil {
				return fmt.Errorf("ruler: tokenizing the text: %w", err)
			}
			known[u] = n
		}
		b.unitToks = append(b.unitToks, n)
		b.cum[i+1] = b.cum[i] + n
		b.sentEnd = append(b.sentEnd, isSentenceEnd(u))
	}
	if b.cum[len(b.units)] == 0 {
		return errors.New("ruler: the haystack text has no tokens")
	}
	return nil
}

// hayTokens estimates the tokens of the first n units of the repeated text.
func (b *rulerBuilder) hayTokens(n int) int {
	c := len(b.units)
	return n/c*b.cum[c] + b.cum[n%c]
}

// oneRulerDepths is np.round(np.linspace(0, 100, 40)): where OneRuler puts needles.
func oneRulerDepths() []float64 {
	d := make([]float64, 40)
	for i := range d {
		d[i] = math.Round(float64(i) * 100 / 39)
	}
	return d
}

type needle struct {
	text  string
	depth float64
}

// itemRand is the random source of item i: the same seed and index give the
// same item whatever else is built.
func (b *rulerBuilder) itemRand(i int) *rand.Rand {
	return rand.New(rand.NewPCG(b.opts.Seed, uint64(i)+0x9e3779b97f4a7c15))
}

func (b *rulerBuilder) niah(index int) (*RulerItem, error) {
	rng := b.itemRand(index)
	v := b.variant
	nouns := dedupe(b.prompt.Nouns) // OneRuler's lists repeat a few (Czech měsíc)
	perm := rng.Perm(len(nouns))
	keys := make([]string, v.keys)
	for i := range keys {
		keys[i] = nouns[perm[i]]
	}
	// Seven-digit values, distinct so that a set of answers has their count.
	seen := map[string]bool{}
	values := make([][]string, v.keys)
	for k := range values {
		for range v.values {
			var s string
			for s == "" || seen[s] {
				s = strconv.Itoa(1_000_000 + rng.IntN(9_000_000))
			}
			seen[s] = true
			values[k] = append(values[k], s)
		}
	}
	var queries, answers []string
	if b.opts.Variant == NIAHNone {
		queries = []string{nouns[perm[v.keys]]} // a noun no needle has
		answers = []string{b.prompt.None}
	} else {
		for _, k := range rng.Perm(v.keys)[:v.queries] {
			queries = append(queries, keys[k])
			answers = append(answers, values[k]...)
		}
	}
	// The needles: the asked key's first value at Depth, the rest at
	// distinct random points of OneRuler's grid.
	grid := oneRulerDepths()
	gridPerm := rng.Perm(len(grid))
	var needles []needle
	first := -1
	for k, key := range keys {
		for _, val := range values[k] {
			text := strings.NewReplacer("{key}", key, "{value}", val).Replace(b.prompt.Needle)
			needles = append(needles, needle{text: b.addPeriod(text), depth: grid[gridPerm[len(needles)]]})
			if first < 0 && (b.opts.Variant == NIAHNone || key == queries[0]) {
				first = len(needles) - 1
			}
		}
	}
	if b.opts.Depth >= 0 {
		needles[first].depth = b.opts.Depth
	}
	slices.SortStableFunc(needles, func(a, b needle) int { return compareFloat(a.depth, b.depth) })

	template := b.niahTemplate(len(queries))
	fill := func(context string) string {
		r := []string{"{context}", context, "{query1}", queries[0]}
		if len(queries) > 1 {
			r = append(r, "{query2}", queries[1])
		}
		return strings.NewReplacer(r...).Replace(template)
	}
	// The tokens of everything but the haystack, to start the search.
	var needleText []string
	for _, nd := range needles {
		needleText = append(needleText, nd.text)
	}
	fixed, err := b.count(fill(strings.Join(needleText, b.join())))
	if err != nil {
		return nil, err
	}
	fixed += b.special
	if fixed >= b.budget {
		return nil, fmt.Errorf("length %d is too short: the prompt without a haystack already has %d tokens", b.opts.Length, fixed)
	}
	// The most units whose estimate fits: the search's first guess.
	c := len(b.units)
	guess := 0
	for lo, hi := 0, (b.budget+1)*c/max(b.cum[c], 1)+c+1; lo <= hi; {
		mid := (lo + hi) / 2
		if fixed+b.hayTokens(mid) <= b.budget {
			guess, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	build := func(n int) (string, []int, error) {
		context, _ := b.haystack(n, needles)
		p := fill(context)
		ids, err := b.enc.Encode(p)
		if err != nil {
			return "", nil, fmt.Errorf("tokenizing the prompt: %w", err)
		}
		return p, ids, nil
	}
	f, err := b.fit(build, guess, fixed, math.MaxInt32)
	if err != nil {
		return nil, err
	}
	if b.short(len(f.ids)) {
		return nil, fmt.Errorf("the prompt has %d tokens, more than 1%% short of the %d wanted", len(f.ids), b.budget)
	}
	_, depths := b.haystack(f.n, needles)
	return &RulerItem{Task: b.taskName(), Index: index, Lang: b.lang, Length: b.opts.Length, Tokens: len(f.ids), MaxTokens: b.opts.MaxTokens,
		Prompt: f.prompt, IDs: f.ids, Queries: queries, Answers: answers, Depths: depths, NoneWords: b.prompt.NoneWords}, nil
}

// niahTemplate assembles OneRuler's prompt: task, question, "please list",
// "if none", answer format; parts joined by a space except in zh and ja.
func (b *rulerBuilder) niahTemplate(queries int) string {
	p := b.prompt
	q := p.QuestionSingle
	if queries > 1 {
		q = p.QuestionMulti
	}
	sep := " "
	if b.lang == "zh" || b.lang == "ja" {
		sep = ""
	}
	return p.Task + q + sep + p.PleaseList + sep + p.IfNone + p.AnswerPrefix + sep + p.Answer
}

// addPeriod ends a needle as OneRuler's add_period does.
func (b *rulerBuilder) addPeriod(s string) string {
	s = strings.TrimRightFunc(s, unicode.IsSpace)
	switch b.lang {
	case "zh", "ja":
		return s + "。"
	case "fa":
		return s + "۔"
	}
	return s + "."
}

// haystack joins the first n units with the needles inserted, each at the
// sentence end nearest to its depth in estimated tokens (OneRuler counts
// sentences, not tokens: ours, so that depth means the same for short and
// long sentences). Where no sentence ends within 2% of the haystack of it,
// the nearest unit boundary is used. It returns the needles' depths.
func (b *rulerBuilder) haystack(n int, needles []needle) (string, []float64) {
	total := float64(b.hayTokens(n))
	c := len(b.units)
	at := make([]int, len(needles))
	depths := make([]float64, len(needles))
	for j, nd := range needles {
		want := nd.depth / 100 * total
		sent, unit := 0, 0 // the nearest sentence end and unit boundary
		sentDist, unitDist := math.Inf(1), math.Inf(1)
		tok := 0
		for i := 0; i <= n; i++ {
			if i > 0 {
				tok += b.unitToks[(i-1)%c]
			}
			d := math.Abs(float64(tok) - want)
			if d < unitDist {
				unit, unitDist = i, d
			}
			if (i == 0 || i == n || b.sentEnd[(i-1)%c]) && d < sentDist {
				sent, sentDist = i, d
			}
		}
		at[j] = sent
		if sentDist > 0.02*total {
			at[j] = unit
		}
		if total > 0 {
			depths[j] = 100 * float64(b.hayTokens(at[j])) / total
		}
	}
	var sb strings.Builder
	put := func(s string) {
		if sb.Len() > 0 {
			sb.WriteString(b.join())
		}
		sb.WriteString(s)
	}
	j := 0
	for i := 0; i <= n; i++ {
		for j < len(needles) && at[j] == i {
			put(needles[j].text)
			j++
		}
		if i < n {
			put(b.units[i%c])
		}
	}
	return sb.String(), depths
}

type fitted struct {
	prompt string
	ids    []int
	n      int
}

// fit finds the unit count n in [0, maxN] whose prompt has the most tokens
// within the budget: secant steps on the real token counts, starting from
// guess and from base (the tokens at n = 0), kept inside the bracket of the
// longest count that fits and the shortest that does not, which closes by
// halving. It stops within 0.5% of the budget.
func (b *rulerBuilder) fit(build func(n int) (string, []int, error), guess, base, maxN int) (fitted, error) {
	tol := max(b.opts.Length/200, 1)
	best := fitted{n: -1}
	lo, hi := -1, maxN+1 // lo fits (-1: none seen yet), hi does not
	loTok, hiTok := 0, 0
	n := min(max(guess, 0), maxN)
	for range 64 {
		prompt, ids, err := build(n)
		if err != nil {
			return best, err
		}
		got := len(ids)
		if got <= b.budget {
			if best.n < 0 || got > len(best.ids) {
				best = fitted{prompt, ids, n}
			}
			if n > lo {
				lo, loTok = n, got
			}
			if b.budget-got <= tol {
				break
			}
		} else if n < hi {
			hi, hiTok = n, got
		}
		if hi-lo <= 1 {
			break
		}
		var next int
		if lo >= 0 && hi <= maxN {
			slope := float64(hiTok-loTok) / float64(hi-lo)
			next = lo + int(float64(b.budget-loTok)/max(slope, 1e-9))
		} else {
			perUnit := max(float64(got-base)/float64(max(n, 1)), 1e-3)
			next = n + int(math.Round(float64(b.budget-got)/perUnit))
		}
		if next <= lo || next >= hi || next == n {
			next = lo + (hi-lo)/2
		}
		n = next
	}
	if best.n < 0 {
		return best, fmt.Errorf("length %d is too short for this task's prompt", b.opts.Length)
	}
	return best, nil
}

// short says whether a prompt of got tokens misses the length by more than 1%.
func (b *rulerBuilder) short(got int) bool {
	return float64(b.budget-got) > 0.01*float64(b.opts.Length)
}

// cweWords sets the vocabulary of cwe: the given words, or the text's
// (OneRuler draws from per-language dictionaries of nouns, adjectives and
// verbs; ours takes any text's words). Sorted, then shuffled with the seed,
// as OneRuler does.
func (b *rulerBuilder) cweWords(text string) error {
	words := b.opts.Words
	if words == nil {
		for _, w := range strings.FieldsFunc(text, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsMark(r) }) {
			if n := utf8.RuneCountInString(w); n >= 3 && n <= 24 {
				words = append(words, strings.ToLower(w))
			}
		}
	}
	var clean []string
	for _, w := range words {
		if w = strings.TrimSpace(w); w != "" && !strings.ContainsFunc(w, unicode.IsDigit) {
			clean = append(clean, w)
		}
	}
	clean = dedupe(clean)
	slices.Sort(clean)
	if len(clean) < 11 {
		return fmt.Errorf("ruler: cwe needs more than 10 distinct words, the text has %d", len(clean))
	}
	rand.New(rand.NewPCG(b.opts.Seed, 0)).Shuffle(len(clean), func(i, j int) { clean[i], clean[j] = clean[j], clean[i] })
	b.words = clean
	return nil
}

// cweFreq returns how often the 10 common and the other words appear:
// OneRuler's 30/3 (easy) and 20/10 (hard), 10/1 and 10/5 up to 8000 tokens.
func (b *rulerBuilder) cweFreq() (common, uncommon int) {
	short := b.opts.Length <= 8000
	switch {
	case b.opts.Variant == CWEEasy && short:
		return 10, 1
	case b.opts.Variant == CWEEasy:
		return 30, 3
	case short:
		return 10, 5
	}
	return 20, 10
}

const cweCommon = 10

func (b *rulerBuilder) cwe(index int) (*RulerItem, error) {
	rng := b.itemRand(index)
	fc, fu := b.cweFreq()
	pick := rng.Perm(len(b.words))
	common := make([]string, cweCommon)
	for i := range common {
		common[i] = b.words[pick[i]]
	}
	shuffleSeed := rng.Uint64()
	maxN := cweCommon*fc + (len(b.words)-cweCommon)*fu
	// build lays out n entries: the common words fc times each, then the
	// others fu times each, the last perhaps fewer (ours: so that the length
	// can be met to the entry; it stays rarer than the common ones).
	build := func(n int) (string, []int, error) {
		n = max(n, cweCommon*fc)
		list := make([]string, 0, n)
		for range fc {
			list = append(list, common...)
		}
		for k := cweCommon; len(list) < n; k++ {
			for r := 0; r < fu && len(list) < n; r++ {
				list = append(list, b.words[pick[k]])
			}
		}
		rand.New(rand.NewPCG(shuffleSeed, uint64(n))).Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
		var sb strings.Builder
		for i, w := range list {
			if i > 0 {
				sb.WriteString(" ")
			}
			sb.WriteString(strconv.Itoa(i + 1))
			sb.WriteString(". ")
			sb.WriteString(w)
		}
		p := strings.Replace(b.prompt.CWE, "{context}", sb.String(), 1)
		ids, err := b.enc.Encode(p)
		if err != nil {
			return "", nil, fmt.Errorf("tokenizing the prompt: %w", err)
		}
		return p, ids, nil
	}
	base, err := b.count(strings.Replace(b.prompt.CWE, "{context}", "", 1))
	if err != nil {
		return nil, fmt.Errorf("tokenizing the prompt: %w", err)
	}
	f, err := b.fit(build, cweCommon*fc, base+b.special, maxN)
	if err != nil {
		return nil, err
	}
	if b.short(len(f.ids)) {
		if f.n >= maxN {
			return nil, fmt.Errorf("the text has %d distinct words, too few for length %d (give a longer text or a word list)", len(b.words), b.opts.Length)
		}
		return nil, fmt.Errorf("the prompt has %d tokens, more than 1%% short of the %d wanted", len(f.ids), b.budget)
	}
	return &RulerItem{Task: b.taskName(), Index: index, Lang: b.lang, Length: b.opts.Length, Tokens: len(f.ids), MaxTokens: b.opts.MaxTokens,
		Prompt: f.prompt, IDs: f.ids, Answers: common}, nil
}

func dedupe(words []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range words {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
