package engine

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/compassml/compass/model/tokenizer"
)

// An EvalTask is one benchmark `compass eval` can run. Tasks register
// themselves in an init function with RegisterEvalTask; the multiple-choice
// and MMLU-ProX tasks are in eval_tasks.go, the OneRuler ones (niah, cwe)
// in ruler*.go.
//
// A task only builds items: what the model is asked and how an answer is
// judged. Running them, the statistics and the report are the same for
// every task (evalrun.go).
type EvalTask struct {
	Name        string
	Description string
	// Generative tasks are run by greedy generation and judged by
	// EvalItem.Judge; the others are multiple choice, scored by
	// log-likelihood as lm-evaluation-harness does.
	Generative bool
	// Languages the task has (ISO 639-1 where there is one); nil: any.
	Languages []string
	// DefaultShots is the number of examples before each question when
	// the user gives none.
	DefaultShots int
	// Params names the task's --task-param keys; nil: it takes none.
	Params []string
	// Build returns the items of one language.
	Build func(src EvalSource) ([]EvalItem, EvalSkips, error)
}

// EvalSource is what a task's Build is given.
type EvalSource struct {
	Data  string // --data: a directory laid out as the hub lays it out, or a file
	Lang  string // one language of EvalTask.Languages
	Shots int    // examples before each question (the default already applied)
	Limit int    // at most this many items (the first ones); 0: all
	Seed  uint64 // for tasks that draw something at random
	// Tokenizer is the model's, for tasks that measure prompts in tokens.
	Tokenizer *tokenizer.Tokenizer
	// MaxLength is the model's context (max_position_embeddings).
	MaxLength int
	// Params are task-specific settings (--task-param key=value), e.g. a
	// long-context task's lengths; tasks reject keys they do not know.
	Params map[string]string
}

// EvalSkips counts the items a task left out, by reason.
type EvalSkips map[string]int

// Add counts one skipped item.
func (s EvalSkips) Add(reason string) { s[reason]++ }

// Total is the number of skipped items.
func (s EvalSkips) Total() int {
	n := 0
	for _, c := range s {
		n += c
	}
	return n
}

// EvalItem is one question, ready to run.
type EvalItem struct {
	ID       string `json:"id"`
	Lang     string `json:"lang"`
	Subject  string `json:"subject,omitempty"`
	Category string `json:"category,omitempty"`

	// Multiple choice: each choice is scored as the continuation
	// Delimiter+Choices[i] of Context; Gold indexes the right one.
	Context   string   `json:"context,omitempty"`
	Delimiter string   `json:"delimiter,omitempty"`
	Choices   []string `json:"choices,omitempty"`
	Gold      int      `json:"gold"`

	// Generative: the prompt is continued greedily until one of Stop or
	// MaxTokens; Judge says what was extracted from the text and whether
	// it is right.
	Prompt    string                                         `json:"prompt,omitempty"`
	Stop      []string                                       `json:"stop,omitempty"`
	MaxTokens int                                            `json:"max_tokens,omitempty"`
	Target    string                                         `json:"target,omitempty"`
	Judge     func(text string) (prediction string, ok bool) `json:"-"`
}

var evalTasks = map[string]EvalTask{}

// RegisterEvalTask adds a task; it panics when the name is taken or the
// task is incomplete, which is a programming error found at start-up.
func RegisterEvalTask(t EvalTask) {
	if t.Name == "" || t.Build == nil {
		panic("engine: RegisterEvalTask: a task needs a name and a Build function")
	}
	if _, ok := evalTasks[t.Name]; ok {
		panic("engine: RegisterEvalTask: task " + t.Name + " registered twice")
	}
	evalTasks[t.Name] = t
}

// EvalTaskNames lists the registered tasks, sorted.
func EvalTaskNames() []string {
	names := make([]string, 0, len(evalTasks))
	for n := range evalTasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupEvalTask returns the task named name.
func LookupEvalTask(name string) (EvalTask, error) {
	t, ok := evalTasks[name]
	if !ok {
		return t, fmt.Errorf("eval: unknown task %q (want one of %s)", name, strings.Join(EvalTaskNames(), ", "))
	}
	return t, nil
}

// evalParamTaken reports whether some task takes the --task-param key k.
func evalParamTaken(k string) bool {
	for _, t := range evalTasks {
		if slices.Contains(t.Params, k) {
			return true
		}
	}
	return false
}

// evalParamsHelp names each task's --task-param keys.
func evalParamsHelp() string {
	var parts []string
	for _, name := range EvalTaskNames() {
		if t := evalTasks[name]; len(t.Params) > 0 {
			parts = append(parts, name+" takes "+strings.Join(t.Params, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// checkLanguage fails when the task does not have lang.
func (t EvalTask) checkLanguage(lang string) error {
	if t.Languages == nil || slices.Contains(t.Languages, lang) {
		return nil
	}
	return fmt.Errorf("eval: task %s has no language %q (it has %s)", t.Name, lang, strings.Join(t.Languages, ", "))
}

// PairEncoder tokenizes (context, continuation) requests as
// lm-evaluation-harness's HF model does for a causal LM (v0.4.x,
// add_bos_token left at its default None):
//
//   - trailing whitespace of the context is moved onto the continuation;
//   - context+continuation is encoded whole, the context alone, and the
//     continuation's tokens are those of the whole after as many tokens as
//     the context alone has (even when the two disagree at the seam);
//   - encoding uses the tokenizer's own default for special tokens
//     (add_special_tokens=True: Llama-3's BOS, nothing for Qwen), except
//     that a text already starting with the BOS text gets none added.
type PairEncoder struct {
	tok *tokenizer.Tokenizer
	bos string // the text of the token the tokenizer prepends; "" when none
}

// NewPairEncoder returns the harness's request encoder for tok.
func NewPairEncoder(tok *tokenizer.Tokenizer) (*PairEncoder, error) {
	if tok == nil {
		return nil, errors.New("eval: scoring text needs the model's tokenizer (tokenizer.json)")
	}
	e := &PairEncoder{tok: tok}
	prefix, err := tok.Encode("", true)
	if err != nil {
		return nil, fmt.Errorf("eval: tokenizer: %w", err)
	}
	if len(prefix) == 1 {
		if e.bos, err = tok.Decode(prefix, false); err != nil {
			return nil, fmt.Errorf("eval: tokenizer: %w", err)
		}
	}
	return e, nil
}

// Encode is the harness's tok_encode.
func (e *PairEncoder) Encode(s string) ([]int, error) {
	addSpecial := e.bos == "" || !strings.HasPrefix(s, e.bos)
	return e.tok.Encode(s, addSpecial)
}

// isPySpace is Python's str.isspace for one character: Unicode White_Space
// and the separators U+001C..U+001F, which rstrip also removes.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// SplitTrailingSpace moves the trailing whitespace of context onto the
// continuation, as the harness's _encode_pair does.
func SplitTrailingSpace(context, continuation string) (string, string) {
	trimmed := strings.TrimRightFunc(context, isPySpace)
	return trimmed, context[len(trimmed):] + continuation
}

// EncodePair returns the context's and the continuation's token ids for a
// (context, continuation) request (see PairEncoder).
func (e *PairEncoder) EncodePair(context, continuation string) (ctx, cont []int, err error) {
	if context == "" {
		return nil, nil, errors.New("eval: empty context") // our tasks never have one
	}
	if !utf8.ValidString(context) || !utf8.ValidString(continuation) {
		return nil, nil, errors.New("eval: request is not valid UTF-8")
	}
	context, continuation = SplitTrailingSpace(context, continuation)
	whole, err := e.Encode(context + continuation)
	if err != nil {
		return nil, nil, fmt.Errorf("eval: tokenize: %w", err)
	}
	if ctx, err = e.Encode(context); err != nil {
		return nil, nil, fmt.Errorf("eval: tokenize: %w", err)
	}
	if len(ctx) >= len(whole) {
		return nil, nil, fmt.Errorf("eval: continuation %q adds no token to its context", continuation)
	}
	return ctx, whole[len(ctx):], nil
}

// choiceChars is len(choice) in Python: the characters (code points) that
// acc_norm divides the log-likelihood by.
func choiceChars(s string) int { return utf8.RuneCountInString(s) }
