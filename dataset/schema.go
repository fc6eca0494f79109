package dataset

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Schema names the layout of a data set (see the package doc).
type Schema string

const (
	SchemaAuto       Schema = "auto"
	SchemaAya        Schema = "aya"
	SchemaChat       Schema = "chat"
	SchemaGlobalMMLU Schema = "global-mmlu"
	SchemaMMLUProX   Schema = "mmlu-prox"
	SchemaText       Schema = "text"
)

// Schemas lists the schemas a file can be read with, SchemaAuto first.
func Schemas() []Schema {
	return []Schema{SchemaAuto, SchemaAya, SchemaChat, SchemaGlobalMMLU, SchemaMMLUProX, SchemaText}
}

// ParseSchema returns the schema named s.
func ParseSchema(s string) (Schema, error) {
	for _, sc := range Schemas() {
		if string(sc) == s {
			return sc, nil
		}
	}
	names := make([]string, 0, len(Schemas()))
	for _, sc := range Schemas() {
		names = append(names, string(sc))
	}
	return "", fmt.Errorf("unknown schema %q (want %s)", s, strings.Join(names, ", "))
}

// required returns the columns a schema cannot do without; they are also
// what DetectSchema looks for.
func (s Schema) required() []string {
	switch s {
	case SchemaAya:
		return []string{"inputs", "targets"}
	case SchemaChat:
		return []string{"messages"}
	case SchemaGlobalMMLU:
		return []string{"question", "option_a", "option_b", "option_c", "option_d"}
	case SchemaMMLUProX:
		return []string{"question", "option_0"}
	case SchemaText:
		return []string{"text"}
	}
	return nil
}

// DetectSchema returns the one schema whose required columns are all
// among columns, or an error when there is none or more than one.
func DetectSchema(columns []string) (Schema, error) {
	var found []Schema
	for _, s := range Schemas()[1:] {
		ok := true
		for _, c := range s.required() {
			ok = ok && slices.Contains(columns, c)
		}
		if ok {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no schema fits the columns %s: aya needs inputs and targets, chat messages, global-mmlu question and option_a..option_d, mmlu-prox question and option_0.., text a text column", describeColumns(columns))
	default:
		return "", fmt.Errorf("the columns %s fit the schemas %v: name one with the schema option", describeColumns(columns), found)
	}
}

func describeColumns(columns []string) string {
	if len(columns) == 0 {
		return "(none)"
	}
	c := slices.Clone(columns)
	slices.Sort(c)
	return strings.Join(c, ", ")
}

// build makes a record of a row; fallback is the language of rows whose
// data names none. It sets Text, Language and the data's own ID.
func (s Schema) build(rw row, fallback string) (Record, error) {
	var rec Record
	var b strings.Builder
	switch s {
	case SchemaAya:
		inputs, err := textField(rw, "inputs")
		if err != nil {
			return rec, err
		}
		targets, err := textField(rw, "targets")
		if err != nil {
			return rec, err
		}
		b.WriteString(inputs)
		b.WriteString("\n")
		b.WriteString(targets)
		rec.ID = rw.values["id"]
	case SchemaChat:
		msgs, err := messagesField(rw, "messages")
		if err != nil {
			return rec, err
		}
		for i, m := range msgs {
			if i > 0 {
				b.WriteString("\n")
			}
			b.WriteString(m.Content)
		}
		rec.Messages = msgs
		rec.ID = rw.values["id"]
	case SchemaGlobalMMLU:
		q, err := textField(rw, "question")
		if err != nil {
			return rec, err
		}
		b.WriteString(strings.TrimSpace(q)) // lm-eval renders question.strip()
		for i, letter := range "ABCD" {
			opt, err := textField(rw, "option_"+string(rune('a'+i)))
			if err != nil {
				return rec, err
			}
			fmt.Fprintf(&b, "\n%c. %s", letter, opt)
		}
		rec.ID = rw.values["sample_id"]
	case SchemaMMLUProX:
		q, err := textField(rw, "question")
		if err != nil {
			return rec, err
		}
		b.WriteString(q)
		for i := range 10 {
			name := fmt.Sprintf("option_%d", i)
			if _, ok := rw.values[name]; !ok && !rw.nested[name] {
				continue // questions with fewer than ten options have nulls
			}
			opt, err := textField(rw, name)
			if err != nil {
				return rec, err
			}
			if opt == "" {
				continue // a null written out as an empty CSV cell
			}
			fmt.Fprintf(&b, "\n%c. %s", 'A'+i, opt)
		}
		rec.ID = rw.values["question_id"]
	case SchemaText:
		t, err := textField(rw, "text")
		if err != nil {
			return rec, err
		}
		b.WriteString(t)
		rec.ID = rw.values["id"]
	default:
		return rec, fmt.Errorf("schema %q cannot build records", s)
	}
	rec.Text = b.String()
	if strings.TrimSpace(rec.Text) == "" {
		return rec, fmt.Errorf("empty text")
	}
	lang, err := rowLanguage(rw, s)
	if err != nil {
		return rec, err
	}
	if lang == "" {
		lang = fallback
	}
	rec.Language = lang
	return rec, nil
}

// textField returns a column that must hold text.
func textField(rw row, name string) (string, error) {
	if rw.nested[name] {
		return "", fmt.Errorf("%q is a JSON array or object, want text", name)
	}
	v, ok := rw.values[name]
	if !ok {
		return "", fmt.Errorf("%q is missing or null", name)
	}
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("%q is not valid UTF-8", name)
	}
	return v, nil
}

// Message is one turn of a conversation (the chat schema).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// messagesField returns a column that must hold a conversation: a JSON
// array of {"role", "content"} objects, nested (JSON Lines, a Parquet list
// of structs) or written out as text (a CSV cell, a Parquet string).
func messagesField(rw row, name string) ([]Message, error) {
	v, ok := rw.values[name]
	if !ok {
		return nil, fmt.Errorf("%q is missing or null", name)
	}
	msgs, err := ParseMessages(v)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	return msgs, nil
}

// ParseMessages decodes a conversation: a non-empty JSON array of objects
// with a non-empty "role" and a "content", both strings. Other keys of a
// message (such as "name") are ignored.
func ParseMessages(s string) ([]Message, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("not valid UTF-8") // the JSON decoder would silently replace it
	}
	dec := json.NewDecoder(strings.NewReader(s))
	var raw []map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("want a JSON array of {\"role\", \"content\"} objects: %w", err)
	}
	if dec.More() {
		return nil, errors.New("more data after the JSON array")
	}
	if len(raw) == 0 {
		return nil, errors.New("no messages")
	}
	msgs := make([]Message, len(raw))
	for i, m := range raw {
		if m == nil {
			return nil, fmt.Errorf("message %d is null", i)
		}
		for _, key := range []string{"role", "content"} {
			var v *string
			if err := json.Unmarshal(m[key], &v); err != nil || v == nil {
				return nil, fmt.Errorf("message %d: %q is missing or not a string", i, key)
			}
			if key == "role" {
				msgs[i].Role = *v
			} else {
				msgs[i].Content = *v
			}
		}
		if strings.TrimSpace(msgs[i].Role) == "" {
			return nil, fmt.Errorf("message %d: empty role", i)
		}
	}
	return msgs, nil
}

// rowLanguage returns the normalised language a row names, or "" when it
// names none.
func rowLanguage(rw row, s Schema) (string, error) {
	cols := []string{"language"}
	if s == SchemaAya {
		cols = []string{"language_code", "language"} // the code is exact, the name is prose
	}
	for _, c := range cols {
		if rw.nested[c] {
			return "", fmt.Errorf("%q is a JSON array or object, want a language", c)
		}
		if v := strings.TrimSpace(rw.values[c]); v != "" {
			code, _ := NormalizeLanguage(v)
			return code, nil
		}
	}
	return "", nil
}
