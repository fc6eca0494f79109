package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/text/unicode/norm"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
)

// RulerResult is one item run: the model's answer and its score.
type RulerResult struct {
	RulerItem
	Output       string `json:"output"`
	OutputTokens int    `json:"output_tokens"`
	FinishReason string `json:"finish_reason"`
	Correct      bool   `json:"correct"`
}

// RunRuler builds the items of opts from text and runs them one at a time
// by greedy generation (one prompt at a time, so that memory is that of one
// sequence of opts.Length tokens), stopping at stopIDs (the checkpoint's end
// tokens, EndTokens). It returns each item's result and the accuracy.
func RunRuler(m *model.Model, tok *tokenizer.Tokenizer, text string, opts RulerOptions, stopIDs []int) ([]RulerResult, float64, error) {
	if m == nil || tok == nil {
		return nil, 0, errors.New("ruler: a model and its tokenizer are needed")
	}
	if maxPos := m.Config.MaxPositionEmbeddings; maxPos > 0 && opts.Length > maxPos {
		return nil, 0, fmt.Errorf("ruler: length %d is more than the model's %d positions (max_position_embeddings)", opts.Length, maxPos)
	}
	enc, err := NewPairEncoder(tok)
	if err != nil {
		return nil, 0, err
	}
	items, err := BuildRuler(enc, text, opts)
	if err != nil {
		return nil, 0, err
	}
	var results []RulerResult
	correct := 0
	for i := range items {
		it := &items[i]
		gen, err := Generate(m, tok, [][]int{it.IDs}, GenerateOptions{MaxTokens: it.MaxTokens, StopIDs: stopIDs}, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("ruler: %s item %d: %w", it.Task, it.Index, err)
		}
		r := RulerResult{RulerItem: *it, Output: gen[0].Text, OutputTokens: len(gen[0].IDs), FinishReason: gen[0].FinishReason}
		r.Correct = ScoreRuler(it, r.Output)
		if r.Correct {
			correct++
		}
		r.IDs = nil // a prompt's ids are long; Tokens says how many
		results = append(results, r)
	}
	return results, float64(correct) / float64(len(results)), nil
}

// The eval tasks niah and cwe (compass eval --task niah|cwe). --data is the
// haystack text (a file, or a directory of <lang>.txt or <lang>/*.txt);
// --task-param sets variant, length, depth, samples, max_tokens, prompt (a
// JSON file of RulerPrompt for a language without a built-in prompt) and,
// for cwe, words (a file of words, one a line). length and depth take
// comma-separated lists; each (length, depth) is a subject of the report.
func init() {
	RegisterEvalTask(EvalTask{
		Name: "niah",
		Description: "OneRuler needle-in-a-haystack over a local text, by greedy generation " +
			"(params: variant=single|multikey|multivalue|multiquery|none, length=N[,N...], depth=D[,D...] (percent; -1: random), samples=50)",
		Generative: true,
		Params:     rulerNIAHParams,
		Build:      func(src EvalSource) ([]EvalItem, EvalSkips, error) { return buildRulerEval(src, "niah") },
	})
	RegisterEvalTask(EvalTask{
		Name: "cwe",
		Description: "OneRuler common-word extraction over a local text's words, by greedy generation " +
			"(params: variant=easy|hard, length=N[,N...], samples=50, words=FILE)",
		Generative: true,
		Params:     rulerCWEParams,
		Build:      func(src EvalSource) ([]EvalItem, EvalSkips, error) { return buildRulerEval(src, "cwe") },
	})
}

// The --task-param keys of niah and cwe.
var (
	rulerNIAHParams = strings.Fields("variant length depth samples max_tokens prompt")
	rulerCWEParams  = strings.Fields("variant length samples max_tokens prompt words")
)

// rulerDefaultSamples is the number of items per task, length and depth,
// as in OneRuler's evaluation (indices 0 to 49).
const rulerDefaultSamples = 50

func buildRulerEval(src EvalSource, task string) ([]EvalItem, EvalSkips, error) {
	opts := RulerOptions{Task: task, Lang: src.Lang, Seed: src.Seed, Samples: rulerDefaultSamples}
	lengths := []int{8192}
	if src.MaxLength > 0 {
		lengths[0] = min(lengths[0], src.MaxLength)
	}
	depths := []float64{-1}
	if task == "niah" {
		opts.Variant = NIAHSingle
	} else {
		opts.Variant = CWEEasy
		depths = []float64{0} // unused by cwe
	}
	takes := rulerNIAHParams
	if task == "cwe" {
		takes = rulerCWEParams
	}
	for k, v := range src.Params {
		if !slices.Contains(takes, k) {
			if evalParamTaken(k) {
				continue // another task's (niah's depth when cwe runs beside it)
			}
			return nil, nil, fmt.Errorf("eval: %s: unknown parameter %q (want %s)", task, k, strings.Join(takes, ", "))
		}
		var err error
		switch k {
		case "variant":
			opts.Variant = v
		case "length":
			lengths, err = parseList(v, strconv.Atoi)
		case "depth":
			depths, err = parseList(v, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
		case "samples":
			opts.Samples, err = strconv.Atoi(v)
			if err == nil && opts.Samples <= 0 {
				err = errors.New("want a positive number")
			}
		case "max_tokens":
			opts.MaxTokens, err = strconv.Atoi(v)
		case "prompt":
			opts.Prompt, err = readRulerPrompt(v)
		case "words":
			var data []byte
			if data, err = os.ReadFile(v); err == nil {
				opts.Words = strings.Fields(string(data))
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("eval: %s: parameter %s=%q: %w", task, k, v, err)
		}
	}
	if src.Limit > 0 {
		opts.Samples = min(opts.Samples, src.Limit)
	}
	if src.Tokenizer == nil {
		return nil, nil, fmt.Errorf("eval: %s counts tokens with the model's tokenizer (tokenizer.json)", task)
	}
	enc, err := NewPairEncoder(src.Tokenizer)
	if err != nil {
		return nil, nil, err
	}
	text, err := LoadRulerText(src.Data, src.Lang)
	if err != nil {
		return nil, nil, err
	}
	var items []EvalItem
	for _, length := range lengths {
		if src.MaxLength > 0 && length > src.MaxLength {
			return nil, nil, fmt.Errorf("eval: %s: length %d is more than the model's %d positions", task, length, src.MaxLength)
		}
		for _, depth := range depths {
			o := opts
			o.Length, o.Depth = length, depth
			built, err := BuildRuler(enc, text, o)
			if err != nil {
				return nil, nil, err
			}
			subject := fmt.Sprintf("%s/%d", built[0].Task, length)
			if task == "niah" && depth >= 0 {
				subject += fmt.Sprintf("/depth%g", depth)
			}
			for _, it := range built {
				items = append(items, EvalItem{
					ID: fmt.Sprintf("%s/%d", subject, it.Index), Lang: it.Lang, Subject: subject, Category: it.Task,
					Prompt: it.Prompt, MaxTokens: it.MaxTokens, Target: strings.Join(it.Answers, ", "),
					Judge: rulerJudge(it),
				})
			}
		}
	}
	return items, EvalSkips{}, nil
}

// rulerJudge scores by OneRuler's rules; the prediction shown is what the
// rule looked at: the numbers found, or the answer itself.
func rulerJudge(it RulerItem) func(string) (string, bool) {
	return func(text string) (string, bool) {
		ok := ScoreRuler(&it, text)
		if it.Task == "niah_none" || strings.HasPrefix(it.Task, "cwe") {
			return strings.TrimSpace(text), ok
		}
		return strings.Join(digitRuns(norm.NFKC.String(text)), ", "), ok
	}
}

func parseList[T any](s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		v, err := parse(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// readRulerPrompt reads a language's prompt: a JSON object with
// RulerPrompt's fields (OneRuler's niah.txt keys, plus cwe and nouns).
func readRulerPrompt(path string) (*RulerPrompt, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p RulerPrompt
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}
