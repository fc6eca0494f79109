package tokenizer

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ardanlabs/jinja"
)

// tokenizerConfig holds what this package reads from tokenizer_config.json
// (and chat_template.jinja beside it, which newer checkpoints ship and which
// takes precedence, as in HF transformers).
type tokenizerConfig struct {
	path         string
	bos, eos     string
	chatTemplate string
}

func parseConfig(data []byte) (*tokenizerConfig, error) {
	var raw struct {
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	c := &tokenizerConfig{}
	var err error
	if c.bos, err = tokenString(raw.BOS); err != nil {
		return nil, fmt.Errorf("bos_token: %w", err)
	}
	if c.eos, err = tokenString(raw.EOS); err != nil {
		return nil, fmt.Errorf("eos_token: %w", err)
	}
	if c.chatTemplate, err = defaultTemplate(raw.ChatTemplate); err != nil {
		return nil, fmt.Errorf("chat_template: %w", err)
	}
	return c, nil
}

// tokenString reads a special token written as a string, as null, or as an
// AddedToken object {"content": ...}.
func tokenString(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", err
	}
	return obj.Content, nil
}

// defaultTemplate reads chat_template as a string, or as a list of named
// templates of which "default" is the one used.
func defaultTemplate(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", err
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", fmt.Errorf("no template named \"default\" among %d", len(named))
}

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatFamily is what the assistant mask needs to know about a family's
// format: the text that opens an assistant turn and the one that ends it.
type chatFamily struct {
	name    string
	markers []string // all present in a template of this family
	header  string   // opens an assistant turn; its content follows
	end     string   // ends a turn; part of what the model learns to produce
	bos     string   // defaults when tokenizer_config.json gives none
	eos     string
}

// The three families. The built-in templates (templates/*.jinja) are the
// published ones of Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct and
// Phi-4-mini-instruct.
var chatFamilies = []chatFamily{
	{name: "llama-3.1", markers: []string{"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
		header: "<|start_header_id|>assistant<|end_header_id|>\n\n", end: "<|eot_id|>",
		bos: "<|begin_of_text|>", eos: "<|eot_id|>"},
	{name: "qwen2.5", markers: []string{"<|im_start|>", "<|im_end|>"},
		header: "<|im_start|>assistant\n", end: "<|im_end|>",
		eos: "<|im_end|>"},
	{name: "phi-4-mini", markers: []string{"<|assistant|>", "<|end|>"},
		header: "<|assistant|>", end: "<|end|>",
		bos: "<|endoftext|>", eos: "<|endoftext|>"},
}

//go:embed templates/*.jinja
var builtinTemplates embed.FS

// ChatFormats lists the names --chat-format accepts.
func ChatFormats() []string {
	var names []string
	for _, f := range chatFamilies {
		names = append(names, f.name)
	}
	sort.Strings(names)
	return names
}

// Chat renders conversations with a chat template and tokenizes them.
type Chat struct {
	tok    *Tokenizer
	tmpl   *jinja.Template
	family *chatFamily
	bos    string
	eos    string
	source string
}

// Chat returns the tokenizer's chat format. With format "", the template
// comes from chat_template.jinja or tokenizer_config.json beside
// tokenizer.json and must be recognisably one of the three families (its
// special markers decide which); otherwise format names a built-in template
// (see ChatFormats) that is used instead.
func (t *Tokenizer) Chat(format string) (*Chat, error) {
	c := &Chat{tok: t}
	if t.config != nil {
		c.bos, c.eos = t.config.bos, t.config.eos
	}
	var src string
	if format != "" {
		for i := range chatFamilies {
			if chatFamilies[i].name == format {
				c.family = &chatFamilies[i]
			}
		}
		if c.family == nil {
			return nil, fmt.Errorf("tokenizer: unknown chat format %q (known: %s)", format, strings.Join(ChatFormats(), ", "))
		}
		b, err := builtinTemplates.ReadFile("templates/" + format + ".jinja")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: chat format %s: %w", format, err)
		}
		src, c.source = string(b), "built-in "+format
		if t.config == nil {
			c.bos, c.eos = c.family.bos, c.family.eos
		}
	} else {
		var err error
		if src, c.source, err = t.chatTemplate(); err != nil {
			return nil, err
		}
		for i := range chatFamilies {
			if containsAll(src, chatFamilies[i].markers) {
				c.family = &chatFamilies[i]
				break
			}
		}
		if c.family == nil {
			return nil, fmt.Errorf("tokenizer: %s: chat template not recognised as Llama-3, Qwen (ChatML) or Phi-4-mini; pass --chat-format (%s)",
				c.source, strings.Join(ChatFormats(), ", "))
		}
	}
	tmpl, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: chat template: %w", c.source, err)
	}
	c.tmpl = tmpl
	return c, nil
}

// chatTemplate finds the checkpoint's own template.
func (t *Tokenizer) chatTemplate() (src, source string, err error) {
	dir := filepath.Dir(t.path)
	jinjaPath := filepath.Join(dir, "chat_template.jinja")
	if b, err := os.ReadFile(jinjaPath); err == nil {
		return string(b), jinjaPath, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("tokenizer: %w", err)
	}
	if t.config == nil {
		return "", "", fmt.Errorf("tokenizer: %s: no tokenizer_config.json or chat_template.jinja beside it, so no chat template; pass --chat-format (%s)",
			t.path, strings.Join(ChatFormats(), ", "))
	}
	if t.config.chatTemplate == "" {
		return "", "", fmt.Errorf("tokenizer: %s: no chat_template; pass --chat-format (%s)",
			t.config.path, strings.Join(ChatFormats(), ", "))
	}
	return t.config.chatTemplate, t.config.path, nil
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// Format is the family of the chat template: llama-3.1, qwen2.5 or
// phi-4-mini.
func (c *Chat) Format() string { return c.family.name }

// Source says where the template came from.
func (c *Chat) Source() string { return c.source }

// Render returns the text the template makes of msgs. addGenerationPrompt
// appends the opening of an assistant turn, for generation.
func (c *Chat) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("tokenizer: chat: no messages")
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	out, err := c.tmpl.Render(map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             c.bos,
		"eos_token":             c.eos,
	})
	if err != nil {
		return "", fmt.Errorf("tokenizer: %s: render chat template: %w", c.source, err)
	}
	return out, nil
}

// Encode renders msgs and tokenizes the text as HF's apply_chat_template
// does (without adding special tokens: the template writes them). mask[i]
// is true for the tokens of assistant turns: each turn's content and the
// token that ends it, which is what a model is trained to produce; a token
// that straddles the start or end of such a span counts as inside, as with
// HF's return_assistant_tokens_mask.
func (c *Chat) Encode(msgs []Message, addGenerationPrompt bool) (ids []int, mask []bool, err error) {
	text, err := c.Render(msgs, addGenerationPrompt)
	if err != nil {
		return nil, nil, err
	}
	ids, spans, err := c.tok.EncodeOffsets(text, false)
	if err != nil {
		return nil, nil, err
	}
	mask = make([]bool, len(ids))
	for _, a := range c.assistantSpans(text) {
		for i, s := range spans {
			if s.Start < a.End && s.End > a.Start {
				mask[i] = true
			}
		}
	}
	return ids, mask, nil
}

// assistantSpans finds the assistant turns in rendered text: from the end
// of each assistant header through the end marker that follows (or the end
// of the text).
func (c *Chat) assistantSpans(text string) []Span {
	var spans []Span
	f := c.family
	for i := 0; ; {
		k := strings.Index(text[i:], f.header)
		if k < 0 {
			return spans
		}
		start := i + k + len(f.header)
		end := len(text)
		if e := strings.Index(text[start:], f.end); e >= 0 {
			end = start + e + len(f.end)
		}
		if start < end {
			spans = append(spans, Span{start, end})
		}
		i = end
	}
}
