package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/compassml/compass/internal/fuzzguard"
)

// fuzzReadAll reads data as a file of the given name, with each schema
// and with bad rows skipped: an error or records, never a panic.
func fuzzReadAll(t *testing.T, name string, data []byte) {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	defer fuzzguard.Start(t, 256<<20)()
	for _, opts := range []Options{{}, {SkipBad: true, Language: "sw"}, {Schema: SchemaChat, SkipBad: true}} {
		recs, err := ReadAll(path, opts)
		if err != nil {
			continue
		}
		for _, r := range recs {
			if r.ID == "" || r.Source == "" {
				t.Fatalf("record without an ID or source: %+v", r)
			}
			if opts.Schema == SchemaChat && len(r.Messages) == 0 {
				t.Fatalf("chat record without messages: %+v", r)
			}
		}
	}
}

// FuzzReadAllParquet reads a Parquet file of any content: the decoder's
// panics on damaged files must come back as errors naming the file.
func FuzzReadAllParquet(f *testing.F) {
	addFixtureSeeds(f, "parquet")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReadAll(t, "d.parquet", data)
		// Also as vectors: ReadParquetVectors has its own decoding.
		path := filepath.Join(t.TempDir(), "v.parquet")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer fuzzguard.Start(t, 256<<20)()
		v, err := ReadParquetVectors(path, "text", []string{"id", "language"})
		if err != nil {
			return
		}
		if len(v.Data) != v.Rows*v.Dim {
			t.Fatalf("%d values for %d rows of %d", len(v.Data), v.Rows, v.Dim)
		}
	})
}

// FuzzReadAllJSONL reads a JSON Lines file of any content.
func FuzzReadAllJSONL(f *testing.F) {
	addFixtureSeeds(f, "jsonl")
	f.Add([]byte("\xef\xbb\xbf{\"text\": \"x\", \"language\": \"swa\"}\r\n\n{\"text\": [1, {\"a\": null}]}\n"))
	f.Add([]byte(`{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "name": "x"}], "id": 7}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReadAll(t, "d.jsonl", data)
	})
}

// FuzzReadAllCSV reads a CSV file of any content.
func FuzzReadAllCSV(f *testing.F) {
	addFixtureSeeds(f, "csv")
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReadAll(t, "d.csv", data)
	})
}

// FuzzParseMessages: a conversation is refused or has messages with a
// role, and valid UTF-8 throughout.
func FuzzParseMessages(f *testing.F) {
	for _, s := range []string{
		`[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]`,
		`[{"role": "user", "content": "hi", "name": "n"}] `,
		`[]`, `[null]`, `[{"role": " ", "content": ""}]`, `[{"role": "u", "content": 1}]`,
		`[{"role": "u", "content": "\ud800"}]`, `[{"role": "u", "content": "x"}] [1]`, "\"\xff\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		msgs, err := ParseMessages(s)
		if err != nil {
			return
		}
		if len(msgs) == 0 {
			t.Fatal("no messages, no error")
		}
		for _, m := range msgs {
			if strings.TrimSpace(m.Role) == "" || !utf8.ValidString(m.Role) || !utf8.ValidString(m.Content) {
				t.Fatalf("message %+v", m)
			}
		}
	})
}

// addFixtureSeeds seeds f with the text, chat and aya fixtures of one
// format (ext: parquet, jsonl or csv).
func addFixtureSeeds(f *testing.F, ext string) {
	for _, name := range []string{"text.", "chat.", "aya."} {
		b, err := os.ReadFile(filepath.Join(fixtures, name+ext))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
