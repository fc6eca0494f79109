package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// tinyGenerateModel writes tinymodel's byte-level llama with random weights.
func tinyGenerateModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(tinymodel.Config), tensor.F32, 5); err != nil {
		t.Fatal(err)
	}
	if err := tinymodel.WriteTokenizer(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readRecords(t *testing.T, data string) []engine.GenerateRecord {
	t.Helper()
	var out []engine.GenerateRecord
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		var r engine.GenerateRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func TestGenerateCommand(t *testing.T) {
	dir := tinyGenerateModel(t)
	work := t.TempDir()
	in := filepath.Join(work, "in.jsonl")
	lines := `{"text": "All human beings"}` + "\n\n" + `{"ids": [72, 105]}` + "\n" +
		`{"messages": [{"role": "user", "content": "Habari"}]}` + "\n"
	if err := os.WriteFile(in, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	sampling := []string{"--temperature", "0.8", "--top-k", "50", "--top-p", "0.9", "--min-p", "0.02",
		"--repetition-penalty", "1.2", "--seed", "5", "--max-tokens", "10"}
	out := filepath.Join(work, "out.jsonl")
	args := append([]string{"generate", "--model", dir, "--input", in, "--output", out, "--chat-format", "qwen2.5"}, sampling...)
	if _, err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	recs := readRecords(t, string(data))
	if len(recs) != 3 || recs[0].Line != 1 || recs[1].Line != 3 || recs[2].Line != 4 {
		t.Fatalf("records %+v", recs)
	}

	// The same generation through the engine: the flags arrive as options.
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	chat, err := tok.Chat("qwen2.5")
	if err != nil {
		t.Fatal(err)
	}
	p := engine.Prompter{Tok: tok, Chat: chat}
	first, _ := p.Text("All human beings")
	third, _ := p.Messages([]tokenizer.Message{{Role: "user", Content: "Habari"}})
	want, err := engine.Generate(m, tok, [][]int{first, {72, 105}, third}, engine.GenerateOptions{
		MaxTokens: 10, Temperature: 0.8, TopK: 50, TopP: 0.9, MinP: 0.02, RepetitionPenalty: 1.2, Seed: 5,
		StopIDs: []int{tinymodel.EOS}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if !slices.Equal(r.IDs, want[i].IDs) || r.Text != want[i].Text || r.FinishReason != want[i].FinishReason {
			t.Errorf("line %d: %+v, want %+v", r.Line, r, want[i])
		}
		if (r.FinishReason == "length") != (len(r.IDs) == 10) {
			t.Errorf("line %d: %d tokens, finish reason %s", r.Line, len(r.IDs), r.FinishReason)
		}
	}

	// One prompt streams its text to standard output; greedy by default.
	stdout, err := run(t, "generate", "--model", dir, "--prompt", "Tous les", "--max-tokens", "12", "--stop", "\x00never")
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := tok.Encode("Tous les", true)
	greedy, err := engine.Generate(m, tok, [][]int{ids}, engine.GenerateOptions{MaxTokens: 12, StopIDs: []int{tinymodel.EOS}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != greedy[0].Text+"\n" {
		t.Errorf("streamed %q, want %q", stdout, greedy[0].Text+"\n")
	}

	// Bad input: a message line without a chat template, neither or both
	// of --prompt and --input, a bad option.
	if _, err := run(t, "generate", "--model", dir, "--input", in); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("messages without --chat: err = %v", err)
	}
	if _, err := run(t, "generate", "--model", dir); err == nil {
		t.Error("no prompt accepted")
	}
	if _, err := run(t, "generate", "--model", dir, "--input", in, "--prompt", "x"); err == nil {
		t.Error("--prompt and --input together accepted")
	}
	if _, err := run(t, "generate", "--model", dir, "--prompt", "x", "--top-p", "2"); err == nil {
		t.Error("--top-p 2 accepted")
	}
	// The tiny checkpoint has no chat template of its own.
	if _, err := run(t, "generate", "--model", dir, "--prompt", "x", "--chat"); err == nil || !strings.Contains(err.Error(), "chat") {
		t.Errorf("--chat without a template: err = %v", err)
	}
}
