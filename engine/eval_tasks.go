package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/compassml/compass/dataset"
)

// The benchmark tasks of lm-evaluation-harness that compass runs the
// harness's way, and mmlu-prox-mc, which is ours.

// Global-MMLU's languages: the harness's global_mmlu_full (42) and
// global_mmlu (Lite, 15) task folders.
var (
	globalMMLULanguages = strings.Fields("am ar bn cs de el en es fa fil fr ha he hi id ig it ja ko ky lt mg ms ne nl ny pl pt ro ru si sn so sr sv sw te tr uk vi yo zh")
	globalMMLULiteLangs = strings.Fields("ar bn de en es fr hi id it ja ko pt sw yo zh")
)

// fewshotSeed is the harness's default fewshot_random_seed.
const fewshotSeed = 1234

func init() {
	RegisterEvalTask(EvalTask{
		Name:        "global-mmlu",
		Description: "Global-MMLU (CohereForAI/Global-MMLU), multiple choice A-D by log-likelihood; shots: the first K dev questions of the subject",
		Languages:   globalMMLULanguages,
		Build:       func(src EvalSource) ([]EvalItem, EvalSkips, error) { return buildGlobalMMLU(src, false) },
	})
	RegisterEvalTask(EvalTask{
		Name:        "global-mmlu-lite",
		Description: "Global-MMLU-Lite (CohereForAI/Global-MMLU-Lite), multiple choice A-D; shots: K dev questions of the subject category drawn as the harness draws them (seed 1234)",
		Languages:   globalMMLULiteLangs,
		Build:       func(src EvalSource) ([]EvalItem, EvalSkips, error) { return buildGlobalMMLU(src, true) },
	})
	proxNames := make([]string, 0, len(proxLangs))
	for l := range proxLangs {
		proxNames = append(proxNames, l)
	}
	sort.Strings(proxNames)
	for _, name := range []string{"mmlu-prox", "mmlu-prox-lite"} {
		RegisterEvalTask(EvalTask{
			Name:         name,
			Description:  "MMLU-ProX (li-lab/" + map[string]string{"mmlu-prox": "MMLU-ProX", "mmlu-prox-lite": "MMLU-ProX-Lite"}[name] + "), generative 5-shot chain of thought, the harness's prompts, answer regex and exact match",
			Generative:   true,
			Languages:    proxNames,
			DefaultShots: 5,
			Build:        buildProX,
		})
	}
	RegisterEvalTask(EvalTask{
		Name:        "mmlu-prox-mc",
		Description: "MMLU-ProX by log-likelihood over its options A-J (compass's own variant, not a harness task)",
		Languages:   proxNames,
		Build:       buildProXMC,
	})
}

// benchmarkFiles returns the files of one split of one language: under
// data/<lang>/ (the hub's layout) or data/ itself, those named
// <split>-*.ext or <split>.ext; or, when data is a file, data itself for
// the test split and the <split> files next to it for the others.
func benchmarkFiles(data, lang, split string) ([]string, error) {
	st, err := os.Stat(data)
	if err != nil {
		return nil, fmt.Errorf("eval: data: %w", err)
	}
	dir := data
	if !st.IsDir() {
		if split == "test" {
			return []string{data}, nil
		}
		dir = filepath.Dir(data)
	} else if sub := filepath.Join(data, lang); isDir(sub) {
		dir = sub
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("eval: data: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasPrefix(name, split+"-") || strings.HasPrefix(name, split+".")) {
			continue
		}
		files = append(files, filepath.Join(dir, name))
	}
	sort.Strings(files)
	return files, nil
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// readSplit reads every record of one split. Rows that do not fit the
// schema (a null option, invalid UTF-8) are counted in skips; a file
// without a required column is an error.
func readSplit(src EvalSource, split string, schema dataset.Schema, required bool, skips EvalSkips) ([]dataset.Record, error) {
	files, err := benchmarkFiles(src.Data, src.Lang, split)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if required {
			return nil, fmt.Errorf("eval: no %s files for language %s in %s (want %s/%s/%s-*.parquet or .jsonl)", split, src.Lang, src.Data, src.Data, src.Lang, split)
		}
		return nil, nil
	}
	var recs []dataset.Record
	for _, f := range files {
		r, err := dataset.Open(f, dataset.Options{Schema: schema, Language: src.Lang, SkipBad: true})
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		n := 0
		for r.Next() {
			recs = append(recs, r.Record())
			n++
		}
		skipped, first := r.Skipped()
		err = r.Err()
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if skipped > 0 && n == 0 {
			return nil, fmt.Errorf("eval: every row of %s is bad; the first: %w", f, first)
		}
		if skipped > 0 && skips != nil {
			skips.Add(fmt.Sprintf("unreadable row (e.g. %v)", first))
		}
	}
	return recs, nil
}

// needColumn fails when the records lack a column the task needs.
func needColumn(recs []dataset.Record, col string) error {
	for _, r := range recs {
		if _, ok := r.Fields[col]; !ok {
			return fmt.Errorf("eval: %s has no %q column (or it is null)", r.Source, col)
		}
	}
	return nil
}

// Global-MMLU ----------------------------------------------------------

// globalMMLUText is the harness's doc_to_text.
func globalMMLUText(f map[string]string) string {
	return fmt.Sprintf("%s\nA. %s\nB. %s\nC. %s\nD. %s\nAnswer:", strings.TrimFunc(f["question"], isPySpace),
		f["option_a"], f["option_b"], f["option_c"], f["option_d"])
}

// letterIndex returns the index of an answer letter among the first n.
func letterIndex(answer string, n int) (int, bool) {
	if len(answer) != 1 || answer[0] < 'A' || int(answer[0]-'A') >= n {
		return 0, false
	}
	return int(answer[0] - 'A'), true
}

// globalMMLUCheck returns why a record cannot be an item, or "".
func globalMMLUCheck(f map[string]string) string {
	for _, c := range "abcd" {
		if strings.TrimFunc(f["option_"+string(c)], isPySpace) == "" {
			return "empty option"
		}
	}
	if _, ok := letterIndex(f["answer"], 4); !ok {
		return "answer outside A-D"
	}
	return ""
}

func buildGlobalMMLU(src EvalSource, lite bool) ([]EvalItem, EvalSkips, error) {
	skips := EvalSkips{}
	test, err := readSplit(src, "test", dataset.SchemaGlobalMMLU, true, skips)
	if err != nil {
		return nil, nil, err
	}
	if err := needColumn(test, "answer"); err != nil {
		return nil, nil, err
	}
	// Full Global-MMLU's harness tasks are per subject, Lite's per subject
	// category; shots come from the same group of the dev split.
	groupCol := "subject"
	if lite {
		groupCol = "subject_category"
	}
	shots := map[string][]dataset.Record{}
	if src.Shots > 0 {
		dev, err := readSplit(src, "dev", dataset.SchemaGlobalMMLU, true, nil)
		if err != nil {
			return nil, nil, err
		}
		if err := needColumn(dev, "answer"); err != nil {
			return nil, nil, err
		}
		for _, r := range dev {
			shots[r.Fields[groupCol]] = append(shots[r.Fields[groupCol]], r)
		}
	}
	rngs := map[string]*pyRandom{} // one per harness task, as each task is seeded
	var items []EvalItem
	for _, r := range test {
		if src.Limit > 0 && len(items) >= src.Limit {
			break
		}
		f := r.Fields
		group := f[groupCol]
		var b strings.Builder
		if src.Shots > 0 {
			pool := shots[group]
			if len(pool) < src.Shots {
				return nil, nil, fmt.Errorf("eval: %s %q has %d dev questions, fewer than %d shots", groupCol, group, len(pool), src.Shots)
			}
			idx := make([]int, src.Shots)
			for i := range idx {
				idx[i] = i // first_n
			}
			if lite {
				if rngs[group] == nil {
					rngs[group] = newPyRandom(fewshotSeed)
				}
				if idx, err = rngs[group].sample(len(pool), src.Shots); err != nil {
					return nil, nil, err
				}
			}
			for _, i := range idx {
				b.WriteString(globalMMLUText(pool[i].Fields) + " " + pool[i].Fields["answer"] + "\n\n")
			}
		}
		if why := globalMMLUCheck(f); why != "" {
			skips.Add(why)
			continue
		}
		gold, _ := letterIndex(f["answer"], 4)
		b.WriteString(globalMMLUText(f))
		items = append(items, EvalItem{
			ID: r.ID, Lang: src.Lang, Subject: f["subject"], Category: f["subject_category"],
			Context: b.String(), Delimiter: " ", Choices: []string{"A", "B", "C", "D"}, Gold: gold,
		})
	}
	return items, skips, nil
}

// MMLU-ProX --------------------------------------------------------------

// proxLang is one language of the harness's mmlu_prox tasks.
type proxLang struct {
	Question, Options, Answer string // lang_libs.py's first three strings
	CoTAnswer                 string // what cot_content starts with, replaced by Answer in shots
	Regex                     string // the answer filter's pattern
	Until                     []string
	Descriptions              map[string]string // by category
}

// proxOptions returns the options of a record by index (absent: ""), and
// how many there are up to the last present one.
func proxOptions(f map[string]string) (opts [10]string, n int) {
	for i := range 10 {
		if v, ok := f[fmt.Sprintf("option_%d", i)]; ok && v != "" {
			opts[i], n = v, i+1
		}
	}
	return opts, n
}

// proxText is the harness's format_cot_example: options that are null are
// left out, the others keep their letter.
func proxText(l proxLang, f map[string]string, withAnswer bool) string {
	var b strings.Builder
	b.WriteString(l.Question + "\n" + f["question"] + "\n" + l.Options + "\n")
	opts, _ := proxOptions(f)
	for i, o := range opts {
		if o != "" {
			fmt.Fprintf(&b, "%c. %s\n", 'A'+i, o)
		}
	}
	if withAnswer {
		b.WriteString(strings.ReplaceAll(f["cot_content"], l.CoTAnswer, l.Answer) + "\n\n")
	} else {
		b.WriteString(l.Answer)
	}
	return b.String()
}

// proxCategory maps the data's category to the harness's subject key.
func proxCategory(f map[string]string) string { return strings.TrimSpace(f["category"]) }

// proxCheck returns why a record cannot be an item, or "", and the gold.
func proxCheck(f map[string]string) (string, int) {
	opts, n := proxOptions(f)
	if n < 2 {
		return "fewer than two options", 0
	}
	for i := range n {
		if strings.TrimFunc(opts[i], isPySpace) == "" {
			return "empty option between options", 0
		}
	}
	gold, ok := letterIndex(f["answer"], n)
	if !ok {
		return "answer outside the options", 0
	}
	return "", gold
}

// proxShots returns the first k validation records of each category.
func proxShots(src EvalSource, k int, cot bool) (map[string][]dataset.Record, error) {
	out := map[string][]dataset.Record{}
	if k == 0 {
		return out, nil
	}
	val, err := readSplit(src, "validation", dataset.SchemaMMLUProX, true, nil)
	if err != nil {
		return nil, err
	}
	cols := []string{"answer", "category"}
	if cot {
		cols = append(cols, "cot_content")
	}
	for _, c := range cols {
		if err := needColumn(val, c); err != nil {
			return nil, err
		}
	}
	for _, r := range val {
		c := proxCategory(r.Fields)
		if len(out[c]) < k {
			out[c] = append(out[c], r)
		}
	}
	return out, nil
}

func buildProX(src EvalSource) ([]EvalItem, EvalSkips, error) {
	l, ok := proxLangs[src.Lang]
	if !ok {
		return nil, nil, fmt.Errorf("eval: mmlu-prox has no language %q", src.Lang)
	}
	re, err := regexp.Compile(l.Regex)
	if err != nil {
		return nil, nil, fmt.Errorf("eval: mmlu-prox %s: answer pattern: %w", src.Lang, err)
	}
	skips := EvalSkips{}
	test, err := readSplit(src, "test", dataset.SchemaMMLUProX, true, skips)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range []string{"option_0", "answer", "category"} {
		if err := needColumn(test, c); err != nil {
			return nil, nil, err
		}
	}
	shots, err := proxShots(src, src.Shots, true)
	if err != nil {
		return nil, nil, err
	}
	judge := func(gold string) func(string) (string, bool) {
		return func(text string) (string, bool) {
			pred := "[invalid]"
			if m := re.FindStringSubmatch(text); m != nil {
				pred = strings.TrimSpace(m[len(m)-1])
			}
			return pred, normalizeExact(pred) == normalizeExact(gold)
		}
	}
	var items []EvalItem
	for _, r := range test {
		if src.Limit > 0 && len(items) >= src.Limit {
			break
		}
		f := r.Fields
		cat := proxCategory(f)
		desc, ok := l.Descriptions[cat]
		if !ok {
			skips.Add("unknown category")
			continue
		}
		if why, _ := proxCheck(f); why != "" {
			skips.Add(why)
			continue
		}
		if len(shots[cat]) < src.Shots {
			return nil, nil, fmt.Errorf("eval: category %q has %d validation questions, fewer than %d shots", cat, len(shots[cat]), src.Shots)
		}
		var b strings.Builder
		b.WriteString(desc)
		for _, s := range shots[cat] {
			b.WriteString(proxText(l, s.Fields, true))
		}
		b.WriteString(proxText(l, f, false))
		items = append(items, EvalItem{
			ID: r.ID, Lang: src.Lang, Subject: cat, Category: cat,
			Prompt: b.String(), Stop: l.Until, MaxTokens: 2048, Target: f["answer"], Judge: judge(f["answer"]),
		})
	}
	return items, skips, nil
}

// normalizeExact is the harness's exact_match with ignore_case and
// ignore_punctuation: ASCII punctuation removed, lowercased.
func normalizeExact(s string) string {
	return strings.ToLower(strings.Map(func(r rune) rune {
		if r < 128 && unicode.IsPunct(r) || r < 128 && unicode.IsSymbol(r) {
			return -1
		}
		return r
	}, s))
}

// proxAnswerWord is the localised "Answer:" of the harness's answer line,
// up to and including its colon ("Answer: Let's think..." -> "Answer:").
func proxAnswerWord(l proxLang) string {
	if i := strings.IndexAny(l.Answer, ":："); i >= 0 {
		_, size := utf8.DecodeRuneInString(l.Answer[i:])
		return l.Answer[:i+size]
	}
	return l.Answer
}

// proxMCText is mmlu-prox-mc's question: the harness's localised
// "Question:" and "Options:" headers, the options lettered A.., and the
// localised "Answer:" without the chain-of-thought invitation.
func proxMCText(l proxLang, f map[string]string) string {
	var b strings.Builder
	b.WriteString(l.Question + "\n" + f["question"] + "\n" + l.Options + "\n")
	opts, n := proxOptions(f)
	for i := range n {
		fmt.Fprintf(&b, "%c. %s\n", 'A'+i, opts[i])
	}
	b.WriteString(proxAnswerWord(l))
	return b.String()
}

func buildProXMC(src EvalSource) ([]EvalItem, EvalSkips, error) {
	l, ok := proxLangs[src.Lang]
	if !ok {
		return nil, nil, fmt.Errorf("eval: mmlu-prox-mc has no language %q", src.Lang)
	}
	skips := EvalSkips{}
	test, err := readSplit(src, "test", dataset.SchemaMMLUProX, true, skips)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range []string{"option_0", "answer"} {
		if err := needColumn(test, c); err != nil {
			return nil, nil, err
		}
	}
	shots, err := proxShots(src, src.Shots, false)
	if err != nil {
		return nil, nil, err
	}
	var items []EvalItem
	for _, r := range test {
		if src.Limit > 0 && len(items) >= src.Limit {
			break
		}
		f := r.Fields
		why, gold := proxCheck(f)
		if why != "" {
			skips.Add(why)
			continue
		}
		cat := proxCategory(f)
		var b strings.Builder
		if src.Shots > 0 {
			if len(shots[cat]) < src.Shots {
				return nil, nil, fmt.Errorf("eval: category %q has %d validation questions, fewer than %d shots", cat, len(shots[cat]), src.Shots)
			}
			for _, s := range shots[cat] {
				if w, _ := proxCheck(s.Fields); w != "" {
					return nil, nil, fmt.Errorf("eval: shot %s: %s", s.Source, w)
				}
				b.WriteString(proxMCText(l, s.Fields) + " " + s.Fields["answer"] + "\n\n")
			}
		}
		b.WriteString(proxMCText(l, f))
		_, n := proxOptions(f)
		choices := make([]string, n)
		for i := range choices {
			choices[i] = string(rune('A' + i))
		}
		items = append(items, EvalItem{
			ID: r.ID, Lang: src.Lang, Subject: cat, Category: cat,
			Context: b.String(), Delimiter: " ", Choices: choices, Gold: gold,
		})
	}
	return items, skips, nil
}
