package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// chatGolden is testdata/tokenizers/golden/chat.json: what @huggingface/jinja
// renders from each tokenizer_config.json, and the ids HF tokenizers gives
// the rendering.
type chatGolden struct {
	Templates map[string]struct {
		Tokenizer string `json:"tokenizer"`
		Renders   []struct {
			Conversation        int    `json:"conversation"`
			AddGenerationPrompt bool   `json:"add_generation_prompt"`
			Text                string `json:"text"`
			IDs                 []int  `json:"ids"`
		} `json:"renders"`
	} `json:"templates"`
}

// chatConfigs maps each golden template to its tokenizer_config.json.
func chatConfigs(t *testing.T) map[string]string {
	return map[string]string{
		"llama-3.1-8b-instruct": filepath.Join("..", "..", "testdata", "tokenizers", "chat", "llama-3.1-8b-instruct", "tokenizer_config.json"),
		"qwen2.5-7b-instruct":   filepath.Join("..", "..", "testdata", "tokenizers", "chat", "qwen2.5-7b-instruct", "tokenizer_config.json"),
		"phi-4-mini-instruct":   filepath.Join("..", "..", "testdata", "tokenizers", "chat", "phi-4-mini-instruct", "tokenizer_config.json"),
		"llama3_1":              filepath.Join(fixtureDir(t, "llama3_1"), "tokenizer_config.json"),
		"qwen3":                 filepath.Join(fixtureDir(t, "qwen3"), "tokenizer_config.json"),
	}
}

// withConfig loads a fixture tokenizer with the given tokenizer_config.json
// beside it.
func withConfig(t *testing.T, tokenizerName, configPath string) *Tokenizer {
	t.Helper()
	var src string
	if _, ok := fixturePackages[tokenizerName]; ok {
		src = fixtureDir(t, tokenizerName)
	} else {
		src = variantDir(t, tokenizerName)
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(mustAbs(t, src), "tokenizer.json"), filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func readConversations(t *testing.T) [][]Message {
	var convs [][]Message
	readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "chat", "conversations.json"), &convs)
	return convs
}

// TestChatTemplatesMatchJinja renders every conversation, with and without
// the generation prompt, with each real template, and compares the text with
// @huggingface/jinja's and the ids with HF tokenizers'.
func TestChatTemplatesMatchJinja(t *testing.T) {
	var g chatGolden
	readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "golden", "chat.json"), &g)
	convs := readConversations(t)
	wantFormat := map[string]string{
		"llama-3.1-8b-instruct": "llama-3.1", "llama3_1": "llama-3.1",
		"qwen2.5-7b-instruct": "qwen2.5", "qwen3": "qwen2.5",
		"phi-4-mini-instruct": "phi-4-mini",
	}
	configs := chatConfigs(t)
	if len(g.Templates) != len(configs) {
		t.Fatalf("golden has %d templates, want %d", len(g.Templates), len(configs))
	}
	for name, tg := range g.Templates {
		t.Run(name, func(t *testing.T) {
			tok := withConfig(t, tg.Tokenizer, configs[name])
			chat, err := tok.Chat("")
			if err != nil {
				t.Fatal(err)
			}
			if chat.Format() != wantFormat[name] {
				t.Errorf("format %s, want %s", chat.Format(), wantFormat[name])
			}
			if len(tg.Renders) != 2*len(convs) {
				t.Fatalf("%d renders for %d conversations", len(tg.Renders), len(convs))
			}
			for _, r := range tg.Renders {
				msgs := convs[r.Conversation]
				text, err := chat.Render(msgs, r.AddGenerationPrompt)
				if err != nil {
					t.Fatal(err)
				}
				if text != r.Text {
					t.Errorf("conversation %d, generation prompt %v:\n got %q\nwant %q", r.Conversation, r.AddGenerationPrompt, text, r.Text)
					continue
				}
				ids, mask, err := chat.Encode(msgs, r.AddGenerationPrompt)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids, r.IDs) {
					t.Errorf("conversation %d, generation prompt %v: ids\n got %v\nwant %v", r.Conversation, r.AddGenerationPrompt, ids, r.IDs)
				}
				if len(mask) != len(ids) {
					t.Fatalf("mask has %d entries for %d ids", len(mask), len(ids))
				}
			}
		})
	}
}

// TestBuiltinTemplatesArePublished checks that the templates --chat-format
// uses are the ones in the published tokenizer_config.json files.
func TestBuiltinTemplatesArePublished(t *testing.T) {
	for format, model := range map[string]string{
		"llama-3.1": "llama-3.1-8b-instruct", "qwen2.5": "qwen2.5-7b-instruct", "phi-4-mini": "phi-4-mini-instruct",
	} {
		b, err := builtinTemplates.ReadFile("templates/" + format + ".jinja")
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizers", "chat", model, "tokenizer_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := parseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != cfg.chatTemplate {
			t.Errorf("templates/%s.jinja differs from the chat_template of %s", format, model)
		}
	}
	if got := ChatFormats(); !slices.Equal(got, []string{"llama-3.1", "phi-4-mini", "qwen2.5"}) {
		t.Errorf("ChatFormats() = %v", got)
	}
}

// TestAssistantMask checks that exactly the assistant turns, with their end
// token, are masked, for each family.
func TestAssistantMask(t *testing.T) {
	msgs := []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Capital of France?"},
		{Role: "assistant", Content: "Paris."},
		{Role: "user", Content: "And of Peru?"},
		{Role: "assistant", Content: "Lima, since 1535."},
	}
	for _, tc := range []struct {
		tokenizer, format, want string
	}{
		{"llama3_1", "llama-3.1", "Paris.<|eot_id|>Lima, since 1535.<|eot_id|>"},
		{"qwen3", "qwen2.5", "Paris.<|im_end|>Lima, since 1535.<|im_end|>"},
		{"gpt4o-extra", "phi-4-mini", "Paris.<|end|>Lima, since 1535.<|end|>"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			tok := fixture(t, tc.tokenizer)
			chat, err := tok.Chat(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			for _, gen := range []bool{false, true} {
				ids, mask, err := chat.Encode(msgs, gen)
				if err != nil {
					t.Fatal(err)
				}
				var masked []int
				n := 0
				for i, m := range mask {
					if m {
						masked = append(masked, ids[i])
						n++
					}
				}
				got, err := tok.Decode(masked, false)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("generation prompt %v: masked tokens decode to %q, want %q", gen, got, tc.want)
				}
				if n == 0 || n == len(ids) {
					t.Errorf("mask covers %d of %d tokens", n, len(ids))
				}
			}
		})
	}
}

func TestChatErrors(t *testing.T) {
	tok := fixture(t, "gpt4o")
	// The GPT-4o fixture's tokenizer_config.json has no chat template.
	if _, err := tok.Chat(""); err == nil || !strings.Contains(err.Error(), "tokenizer_config.json") || !strings.Contains(err.Error(), "--chat-format") {
		t.Errorf("no template: err = %v", err)
	}
	if _, err := tok.Chat("vicuna"); err == nil || !strings.Contains(err.Error(), "unknown chat format") {
		t.Errorf("unknown format: err = %v", err)
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(mustAbs(t, fixtureDir(t, "gpt4o")), "tokenizer.json"), filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	cfg := `{"chat_template": "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}"}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Chat(""); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "tokenizer_config.json")) || !strings.Contains(err.Error(), "not recognised") {
		t.Errorf("unrecognised template: err = %v", err)
	}
	chat, err := other.Chat("phi-4-mini")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Render(nil, true); err == nil {
		t.Error("no messages: no error")
	}
	text, err := chat.Render([]Message{{Role: "user", Content: "hi"}}, true)
	if err != nil || text != "<|user|>hi<|end|><|assistant|>" {
		t.Errorf("--chat-format phi-4-mini: %q, %v", text, err)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseConfigForms(t *testing.T) {
	cfg, err := parseConfig([]byte(`{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": null,
		"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`))
	if err != nil || cfg.bos != "<s>" || cfg.eos != "" || cfg.chatTemplate != "D" {
		t.Errorf("parseConfig = %+v, %v", cfg, err)
	}
	if _, err := parseConfig([]byte(`{"chat_template": [{"name": "tool_use", "template": "T"}]}`)); err == nil {
		t.Error("no default template: no error")
	}
	if _, err := parseConfig([]byte(`{"chat_template": 3}`)); err == nil {
		t.Error("numeric template: no error")
	}
}
