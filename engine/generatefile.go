package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
)

// GenerateRecord is one output line of GenerateJSONL.
type GenerateRecord struct {
	Line         int    `json:"line"` // the input line (1-based)
	IDs          []int  `json:"ids"`
	Text         string `json:"text"`
	FinishReason string `json:"finish_reason"`
}

// Prompter turns what a generate input line holds into prompt token ids.
type Prompter struct {
	Tok *tokenizer.Tokenizer
	// Chat, when not nil, renders text prompts as one user turn, and every
	// prompt with the generation prompt (the opening of the assistant's
	// turn). Message lines always need it.
	Chat *tokenizer.Chat
}

// Text encodes a text prompt: as a user turn of the chat template with
// Chat, else with the tokenizer's special tokens (Llama-3's BOS), as HF's
// tokenizer(text) does.
func (p Prompter) Text(text string) ([]int, error) {
	if p.Chat != nil {
		return p.Messages([]tokenizer.Message{{Role: "user", Content: text}})
	}
	if p.Tok == nil {
		return nil, fmt.Errorf("text needs a tokenizer (tokenizer.json in the model directory)")
	}
	return p.Tok.Encode(text, true)
}

// Messages renders a conversation with the chat template and the
// generation prompt, and encodes it as apply_chat_template does.
func (p Prompter) Messages(msgs []tokenizer.Message) ([]int, error) {
	if p.Chat == nil {
		return nil, fmt.Errorf("messages need a chat template (--chat)")
	}
	ids, _, err := p.Chat.Encode(msgs, true)
	return ids, err
}

// ReadPrompts reads JSONL lines, each {"text": ...}, {"ids": [...]} or
// {"messages": [{"role", "content"}, ...]}, and returns their prompt ids
// and line numbers (blank lines are skipped). A bad line is an error
// naming it.
func ReadPrompts(r io.Reader, p Prompter) (prompts [][]int, lines []int, err error) {
	rd := dataset.NewJSONLines(r, "")
	for rd.Next() {
		line := rd.Line()
		var in struct {
			Text     *string             `json:"text"`
			IDs      []int               `json:"ids"`
			Messages []tokenizer.Message `json:"messages"`
		}
		if err := rd.Decode(&in); err != nil {
			return nil, nil, fmt.Errorf("generate: %w", err)
		}
		given := 0
		for _, ok := range []bool{in.Text != nil, in.IDs != nil, in.Messages != nil} {
			if ok {
				given++
			}
		}
		if given != 1 {
			return nil, nil, fmt.Errorf("generate: line %d: give exactly one of text, ids and messages", line)
		}
		var ids []int
		switch {
		case in.Text != nil:
			ids, err = p.Text(*in.Text)
		case in.Messages != nil:
			ids, err = p.Messages(in.Messages)
		default:
			ids = in.IDs
		}
		if err != nil {
			return nil, nil, fmt.Errorf("generate: line %d: %w", line, err)
		}
		if len(ids) == 0 {
			return nil, nil, fmt.Errorf("generate: line %d: the prompt has no tokens", line)
		}
		prompts, lines = append(prompts, ids), append(lines, line)
	}
	if err := rd.Err(); err != nil {
		return nil, nil, fmt.Errorf("generate: %w", err)
	}
	return prompts, lines, nil
}

// GenerateJSONL continues the prompts batch prompts at a time (batch <= 0:
// all at once) and writes one GenerateRecord per prompt, in order, to w.
// lines are the prompts' input line numbers (nil: 1, 2, ...). It returns
// how many records it wrote. A cancelled ctx stops it before the next
// batch, with ctx's error.
func GenerateJSONL(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, prompts [][]int, lines []int, opts GenerateOptions, batch int, w io.Writer) (int, error) {
	if batch <= 0 {
		batch = len(prompts)
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	for lo := 0; lo < len(prompts); lo += batch {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		hi := min(lo+batch, len(prompts))
		res, err := Generate(m, tok, prompts[lo:hi], opts, nil)
		if err != nil {
			return n, err
		}
		for i, r := range res {
			rec := GenerateRecord{Line: lo + i + 1, IDs: r.IDs, Text: r.Text, FinishReason: r.FinishReason}
			if lines != nil {
				rec.Line = lines[lo+i]
			}
			if err := enc.Encode(rec); err != nil {
				return n, err
			}
			n++
		}
		if err := bw.Flush(); err != nil {
			return n, err
		}
	}
	return n, bw.Flush()
}
