package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/compassml/compass/model/tokenizer"
	"github.com/urfave/cli/v3"
)

// tokenizeBlock is how many input lines are encoded at once, in parallel.
const tokenizeBlock = 4096

func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:  "tokenize",
		Usage: "encode text (or chat conversations) to token ids, decode ids, or count tokens",
		Description: "Reads one input per line on stdin and writes one output per line on stdout:\n" +
			"  text line            -> JSON array of ids                  (default)\n" +
			"  chat JSON line       -> {\"ids\": [...], \"assistant_mask\": [0/1...]}  (--chat)\n" +
			"  JSON array of ids    -> JSON string of the text           (--decode)\n" +
			"With --count, only a summary {\"lines\", \"tokens\", \"bytes\"} is written.\n" +
			"A chat line is a JSON array of {\"role\", \"content\"} messages, or an object with\n" +
			"\"messages\". --tokenizer is a checkpoint directory or its tokenizer.json; the chat\n" +
			"template comes from tokenizer_config.json beside it unless --chat-format is given.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tokenizer", Required: true, Usage: "checkpoint directory or tokenizer.json"},
			&cli.BoolFlag{Name: "special", Usage: "add the post-processor's special tokens (Llama-3's BOS) when encoding text"},
			&cli.BoolFlag{Name: "jsonl", Usage: "text input lines are JSON: a string, or an object with a \"text\" field"},
			&cli.BoolFlag{Name: "chat", Usage: "input lines are chat conversations, rendered with the chat template"},
			&cli.StringFlag{Name: "chat-format", Usage: "use a built-in chat template: " + strings.Join(tokenizer.ChatFormats(), ", ")},
			&cli.BoolFlag{Name: "generation-prompt", Usage: "with --chat, end with the opening of an assistant turn"},
			&cli.BoolFlag{Name: "decode", Usage: "input lines are JSON arrays of ids; write the text as JSON strings"},
			&cli.BoolFlag{Name: "skip-special", Usage: "with --decode, leave special tokens out of the text"},
			&cli.BoolFlag{Name: "count", Usage: "write only the number of lines, tokens and bytes"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("tokenize: unexpected arguments %v (input is read from stdin)", cmd.Args().Slice())
			}
			if cmd.Bool("decode") && (cmd.Bool("chat") || cmd.Bool("count")) {
				return fmt.Errorf("tokenize: --decode cannot be combined with --chat or --count")
			}
			// A flag of another mode would be ignored: name it instead.
			for _, f := range []struct{ flag, mode string }{
				{"chat-format", "chat"}, {"generation-prompt", "chat"}, {"skip-special", "decode"},
			} {
				if cmd.IsSet(f.flag) && !cmd.Bool(f.mode) {
					return fmt.Errorf("tokenize: --%s goes with --%s", f.flag, f.mode)
				}
			}
			for _, f := range []string{"special", "jsonl"} {
				if cmd.IsSet(f) && (cmd.Bool("chat") || cmd.Bool("decode")) {
					return fmt.Errorf("tokenize: --%s is for text lines, not with --chat or --decode", f)
				}
			}
			tok, err := tokenizer.Load(cmd.String("tokenizer"))
			if err != nil {
				return err
			}
			in := bufio.NewReaderSize(cmd.Root().Reader, 1<<20)
			out := bufio.NewWriterSize(cmd.Root().Writer, 1<<20)
			switch {
			case cmd.Bool("decode"):
				err = decodeLines(tok, in, out, cmd.Bool("skip-special"))
			case cmd.Bool("chat"):
				var chat *tokenizer.Chat
				if chat, err = tok.Chat(cmd.String("chat-format")); err == nil {
					err = chatLines(chat, in, out, cmd.Bool("generation-prompt"), cmd.Bool("count"))
				}
			default:
				err = encodeLines(tok, in, out, cmd.Bool("special"), cmd.Bool("jsonl"), cmd.Bool("count"))
			}
			if err != nil {
				out.Flush() // the outputs of the blocks before the bad line: a stream filter's
				return fmt.Errorf("tokenize: %w", err)
			}
			return out.Flush()
		},
	}
}

// readLine returns the next line without its newline; io.EOF after the
// last one.
func readLine(in *bufio.Reader) (string, error) {
	line, err := in.ReadString('\n')
	if err == io.EOF && line != "" {
		return line, nil
	}
	return strings.TrimSuffix(line, "\n"), err
}

// tokenCount is what --count writes.
type tokenCount struct {
	Lines  int `json:"lines"`
	Tokens int `json:"tokens"`
	Bytes  int `json:"bytes"`
}

func encodeLines(tok *tokenizer.Tokenizer, in *bufio.Reader, out *bufio.Writer, special, jsonl, count bool) error {
	var total tokenCount
	var buf []byte
	for eof := false; !eof; {
		var texts []string
		for len(texts) < tokenizeBlock {
			line, err := readLine(in)
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				return err
			}
			// Checked here to name the line (the batch's error names a
			// range), and before JSON, which would read bad bytes as U+FFFD.
			if !utf8.ValidString(line) {
				return fmt.Errorf("line %d: not valid UTF-8", total.Lines+len(texts)+1)
			}
			if jsonl {
				if line, err = jsonText(line); err != nil {
					return fmt.Errorf("line %d: %w", total.Lines+len(texts)+1, err)
				}
			}
			texts = append(texts, line)
		}
		batch, err := tok.EncodeBatch(texts, special)
		if err != nil {
			return fmt.Errorf("lines %d-%d: %w", total.Lines+1, total.Lines+len(texts), err)
		}
		for i, ids := range batch {
			total.Lines++
			total.Tokens += len(ids)
			total.Bytes += len(texts[i])
			if !count {
				buf = appendIDs(buf[:0], ids)
				if _, err := out.Write(buf); err != nil {
					return err
				}
			}
		}
	}
	if count {
		return writeJSON(out, total)
	}
	return nil
}

// jsonText reads a --jsonl line: a JSON string or an object with "text".
func jsonText(line string) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case map[string]any:
		if s, ok := v["text"].(string); ok {
			return s, nil
		}
	}
	return "", errors.New(`want a JSON string or an object with a "text" string`)
}

func appendIDs(buf []byte, ids []int) []byte {
	buf = append(buf, '[')
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, int64(id), 10)
	}
	return append(buf, ']', '\n')
}

func writeJSON(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}

func chatLines(chat *tokenizer.Chat, in *bufio.Reader, out *bufio.Writer, generationPrompt, count bool) error {
	var total tokenCount
	for n := 1; ; n++ {
		line, err := readLine(in)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		msgs, err := parseConversation(line)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		ids, mask, err := chat.Encode(msgs, generationPrompt)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		total.Lines++
		total.Tokens += len(ids)
		total.Bytes += len(line)
		if count {
			continue
		}
		m := make([]int, len(mask))
		for i, b := range mask {
			if b {
				m[i] = 1
			}
		}
		if err := writeJSON(out, struct {
			IDs  []int `json:"ids"`
			Mask []int `json:"assistant_mask"`
		}{ids, m}); err != nil {
			return err
		}
	}
	if count {
		return writeJSON(out, total)
	}
	return nil
}

// parseConversation reads a chat line: [{"role", "content"}, ...] or
// {"messages": [...]}.
func parseConversation(line string) ([]tokenizer.Message, error) {
	var msgs []tokenizer.Message
	if strings.HasPrefix(strings.TrimSpace(line), "{") {
		var obj struct {
			Messages []tokenizer.Message `json:"messages"`
		}
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			return nil, err
		}
		msgs = obj.Messages
	} else if err := json.Unmarshal([]byte(line), &msgs); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, errors.New("no messages")
	}
	for i, m := range msgs {
		if m.Role == "" {
			return nil, fmt.Errorf("message %d has no role", i+1)
		}
	}
	return msgs, nil
}

func decodeLines(tok *tokenizer.Tokenizer, in *bufio.Reader, out *bufio.Writer, skipSpecial bool) error {
	for n := 1; ; n++ {
		line, err := readLine(in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var ids []int
		if err := json.Unmarshal([]byte(line), &ids); err != nil {
			return fmt.Errorf("line %d: want a JSON array of ids: %w", n, err)
		}
		text, err := tok.Decode(ids, skipSpecial)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(text); err != nil {
			return err
		}
		if _, err := out.Write(b.Bytes()); err != nil {
			return err
		}
	}
}
