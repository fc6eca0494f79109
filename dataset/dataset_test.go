package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go"
)

const fixtures = "../testdata/datasets"

func fixture(name string) string { return filepath.Join(fixtures, name) }

func readAll(t *testing.T, path string, opts Options) []Record {
	t.Helper()
	recs, err := ReadAll(path, opts)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return recs
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func zstdBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// The Aya fixture in every format and compression gives the same records:
// JSON Lines written by hand, CSV and Parquet (ZSTD pages) by DuckDB, .zst
// by the zstd tool.
func TestAyaEveryFormat(t *testing.T) {
	wantLang := []string{"en", "ar", "sw", "zh", "fa", "ary", "en"}
	want := readAll(t, fixture("aya.jsonl"), Options{})
	if len(want) != len(wantLang) {
		t.Fatalf("aya.jsonl: %d records, want %d", len(want), len(wantLang))
	}
	for i, rec := range want {
		if rec.Language != wantLang[i] {
			t.Errorf("record %d: language %q, want %q", i, rec.Language, wantLang[i])
		}
		text := rec.Fields["inputs"] + "\n" + rec.Fields["targets"]
		if rec.Text != text {
			t.Errorf("record %d: text %q, want %q", i, rec.Text, text)
		}
	}
	if got := want[6].Text; got != "Write a haiku about \"rain\".\nKeep it short, please.\nSoft rain on the roof,\nthe garden drinks in silence,\nclouds move on, thank you." {
		t.Errorf("multi-line record: %q", got)
	}
	if want[0].ID != "aya.jsonl:1" || want[0].Source != fixture("aya.jsonl")+":1" {
		t.Errorf("record 0: ID %q Source %q", want[0].ID, want[0].Source)
	}
	for _, name := range []string{"aya.jsonl.zst", "aya.csv", "aya.csv.zst", "aya.parquet"} {
		got := readAll(t, fixture(name), Options{Schema: SchemaAya})
		if len(got) != len(want) {
			t.Fatalf("%s: %d records, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i].Text != want[i].Text || got[i].Language != want[i].Language || !reflect.DeepEqual(got[i].Fields, want[i].Fields) {
				t.Errorf("%s record %d:\n got %+v\nwant %+v", name, i, got[i], want[i])
			}
		}
	}
	// CSV counts the header as line 1.
	if got := readAll(t, fixture("aya.csv"), Options{}); got[1].ID != "aya.csv:3" {
		t.Errorf("aya.csv record 1: ID %q, want aya.csv:3", got[1].ID)
	}
}

func TestGlobalMMLU(t *testing.T) {
	for _, name := range []string{"global-mmlu-sw-dev.jsonl", "global-mmlu-sw-dev.csv", "global-mmlu-sw-dev.parquet"} {
		recs := readAll(t, fixture(name), Options{Language: "swa"})
		if len(recs) != 3 {
			t.Fatalf("%s: %d records, want 3", name, len(recs))
		}
		r := recs[0]
		// The question is trimmed as lm-eval's question.strip() does.
		want := "Mji mkuu wa Kenya ni upi?\nA. Mombasa\nB. Nairobi\nC. Kisumu\nD. Nakuru"
		if r.Text != want || r.ID != "high_school_geography/dev/0" || r.Language != "sw" {
			t.Errorf("%s: got %q id %q lang %q", name, r.Text, r.ID, r.Language)
		}
		if r.Fields["cultural_sensitivity_label"] != "CS" || r.Fields["is_annotated"] != "true" || r.Fields["answer"] != "B" {
			t.Errorf("%s: fields %v", name, r.Fields)
		}
	}
	// Without Options.Language, a folder named by a language code gives it,
	// as in the Hugging Face layout sw/dev-00000-of-00001.parquet.
	data, err := os.ReadFile(fixture("global-mmlu-sw-dev.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, filepath.Join(t.TempDir(), "sw", "dev-00000-of-00001.parquet"), data)
	if recs := readAll(t, path, Options{}); recs[2].Language != "sw" {
		t.Errorf("language from the folder: %q, want sw", recs[2].Language)
	}
	if recs := readAll(t, fixture("global-mmlu-sw-dev.parquet"), Options{}); recs[0].Language != "" {
		t.Errorf("no language anywhere: %q, want empty", recs[0].Language)
	}
}

func TestMMLUProX(t *testing.T) {
	for _, name := range []string{"mmlu-prox-sw-validation.jsonl", "mmlu-prox-sw-validation.jsonl.zst", "mmlu-prox-sw-validation.parquet"} {
		recs := readAll(t, fixture(name), Options{Language: "sw"})
		if len(recs) != 3 {
			t.Fatalf("%s: %d records, want 3", name, len(recs))
		}
		// Absent (null) options are skipped.
		if want := "Thamani ya 2^10 ni ipi?\nA. 1000\nB. 1024\nC. 2048\nD. 512"; recs[1].Text != want {
			t.Errorf("%s: text %q, want %q", name, recs[1].Text, want)
		}
		if !strings.HasSuffix(recs[0].Text, "\nI. Kaa\nJ. Konokono") || recs[0].ID != "70" {
			t.Errorf("%s: record 0: %q id %q", name, recs[0].Text, recs[0].ID)
		}
		if recs[2].Fields["answer_index"] != "0" || recs[2].Fields["question_id_src"] != "9120" {
			t.Errorf("%s: integer fields %v", name, recs[2].Fields)
		}
	}
}

func TestTextSchema(t *testing.T) {
	wantLang := []string{"en", "sw", "fr", "pt"}
	for _, name := range []string{"text.jsonl", "text.csv", "text.parquet"} {
		recs := readAll(t, fixture(name), Options{})
		if len(recs) != 4 {
			t.Fatalf("%s: %d records", name, len(recs))
		}
		for i, r := range recs {
			if r.Language != wantLang[i] || r.ID != r.Fields["id"] {
				t.Errorf("%s record %d: language %q id %q", name, i, r.Language, r.ID)
			}
		}
	}
}

func TestDetectSchema(t *testing.T) {
	for _, tc := range []struct {
		cols []string
		want Schema
		err  string
	}{
		{[]string{"inputs", "targets", "language"}, SchemaAya, ""},
		{[]string{"question", "option_a", "option_b", "option_c", "option_d", "answer"}, SchemaGlobalMMLU, ""},
		{[]string{"question", "option_0", "option_1"}, SchemaMMLUProX, ""},
		{[]string{"text"}, SchemaText, ""},
		{[]string{"messages", "id"}, SchemaChat, ""},
		{[]string{"messages", "text"}, "", "fit the schemas [chat text]"},
		{[]string{"inputs", "targets", "text"}, "", "fit the schemas [aya text]"},
		{[]string{"prompt", "completion"}, "", "no schema fits the columns completion, prompt"},
		{nil, "", "no schema fits the columns (none)"},
	} {
		got, err := DetectSchema(tc.cols)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.cols, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %v, %v; want %v", tc.cols, got, err, tc.want)
		}
	}
	dir := t.TempDir()
	// Ambiguous JSON Lines fail on the first record; an explicit schema reads them.
	path := writeFile(t, filepath.Join(dir, "both.jsonl"), []byte(`{"text": "a", "inputs": "b", "targets": "c"}`+"\n"))
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), "both.jsonl:1: the columns") {
		t.Errorf("ambiguous JSONL: %v", err)
	}
	if recs := readAll(t, path, Options{Schema: SchemaText}); recs[0].Text != "a" {
		t.Errorf("text schema: %q", recs[0].Text)
	}
	// A CSV lacking a required column fails at Open.
	path = writeFile(t, filepath.Join(dir, "x.csv"), []byte("inputs,language\nhi,en\n"))
	if _, err := Open(path, Options{Schema: SchemaAya}); err == nil || !strings.Contains(err.Error(), `schema aya needs a column "targets"`) {
		t.Errorf("missing column: %v", err)
	}
	if _, err := Open(path, Options{Schema: "alpaca"}); err == nil || !strings.Contains(err.Error(), `unknown schema "alpaca"`) {
		t.Errorf("unknown schema: %v", err)
	}
}

func TestBadRows(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		`{"inputs": "a", "targets": "b", "language_code": "eng"}`,
		``,
		`{"inputs": "c", "targets": "d"`,    // 3: cut short
		`{"inputs": "e"}`,                   // 4: no targets
		`{"inputs": ["f"], "targets": "g"}`, // 5: an array
		`["not", "an", "object"]`,           // 6
		`{"inputs": " ", "targets": ""}`,    // 7: nothing to embed
		`{"inputs": "h", "targets": null}`,  // 8: null
		`{"inputs": "i", "targets": "j", "language_code": "swa"} {}`, // 9: two objects
		`{"inputs": "k", "targets": "l", "language_code": "zho"}`,
	}
	wantErr := []string{
		":3: invalid JSON",
		`:4: "targets" is missing or null`,
		`:5: "inputs" is a JSON array or object, want text`,
		":6: not a JSON object",
		":7: empty text",
		`:8: "targets" is missing or null`,
		":9: invalid JSON: more data after the object",
	}
	content := []byte(strings.Join(lines, "\n"))
	for _, name := range []string{"bad.jsonl", "bad.jsonl.zst"} {
		data := content
		if strings.HasSuffix(name, ".zst") {
			data = zstdBytes(t, content)
		}
		path := writeFile(t, filepath.Join(dir, name), data)
		// Without SkipBad the first bad row stops the reader, naming its line.
		r, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for r.Next() {
			n++
		}
		var rowErr *RowError
		if n != 1 || !errors.As(r.Err(), &rowErr) || !strings.Contains(r.Err().Error(), name+wantErr[0]) {
			t.Errorf("%s: %d records, error %v; want 1 and %q", name, n, r.Err(), name+wantErr[0])
		}
		r.Close()

		// With SkipBad every bad row is counted and reading goes on.
		r, err = Open(path, Options{SkipBad: true})
		if err != nil {
			t.Fatal(err)
		}
		var langs []string
		for r.Next() {
			langs = append(langs, r.Record().Language)
		}
		skipped, first := r.Skipped()
		if r.Err() != nil || !reflect.DeepEqual(langs, []string{"en", "zh"}) || skipped != len(wantErr) || !strings.Contains(first.Error(), name+wantErr[0]) {
			t.Errorf("%s with SkipBad: languages %v, skipped %d (%v), err %v", name, langs, skipped, first, r.Err())
		}
		r.Close()
	}
	// Each bad line alone names itself.
	for i, want := range wantErr {
		path := writeFile(t, filepath.Join(dir, "bad.jsonl"), []byte(strings.Repeat("\n", 2+i)+lines[2+i]+"\n"))
		if _, err := ReadAll(path, Options{Schema: SchemaAya}); err == nil || !strings.Contains(err.Error(), "bad.jsonl"+want) {
			t.Errorf("line %d: error %v, want %q", 3+i, err, want)
		}
	}

	// CSV: a record with the wrong number of fields, and a bare quote.
	path := writeFile(t, filepath.Join(dir, "bad.csv"), []byte("text,language\nfine,en\ntoo,many,fields\nalso fine,sw\nbad \"quote,en\nlast,fr\n"))
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), "bad.csv:3: wrong number of fields") {
		t.Errorf("CSV field count: %v", err)
	}
	r, err := Open(path, Options{SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for r.Next() {
		texts = append(texts, r.Record().Text)
	}
	if skipped, _ := r.Skipped(); skipped != 2 || r.Err() != nil || !reflect.DeepEqual(texts, []string{"fine", "also fine", "last"}) {
		t.Errorf("CSV with SkipBad: %q, skipped %d, err %v", texts, skipped, r.Err())
	}
	r.Close()

	// Invalid UTF-8 in a CSV cell.
	path = writeFile(t, filepath.Join(dir, "latin1.csv"), []byte("text\ncaf\xe9\n"))
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), `latin1.csv:2: "text" is not valid UTF-8`) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	// And in a JSON Lines string, which the JSON decoder alone would read
	// as U+FFFD.
	path = writeFile(t, filepath.Join(dir, "latin1.jsonl"), []byte("{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n"))
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), `latin1.jsonl:2: not valid UTF-8`) {
		t.Errorf("invalid UTF-8 in JSON Lines: %v", err)
	}

	// Parquet: a null where text is needed names the row.
	type ayaRow struct {
		Inputs  string  `parquet:"inputs"`
		Targets *string `parquet:"targets,optional"`
	}
	s := "ok"
	path = filepath.Join(dir, "bad.parquet")
	writeParquet(t, path, []ayaRow{{"a", &s}, {"b", &s}, {"c", nil}, {"d", &s}})
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), `bad.parquet: row 3: "targets" is missing or null`) {
		t.Errorf("Parquet null: %v", err)
	}
}

func writeParquet[T any](t *testing.T, path string, rows []T, opts ...parquet.WriterOption) {
	t.Helper()
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[T](&buf, opts...)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.Bytes())
}

func TestEmptyInput(t *testing.T) {
	dir := t.TempDir()
	type textRow struct {
		Text string `parquet:"text"`
	}
	writeParquet(t, filepath.Join(dir, "empty.parquet"), []textRow{})
	files := map[string][]byte{
		"empty.jsonl":      nil,
		"blank.jsonl":      []byte("\n\n  \n"),
		"empty.jsonl.zst":  zstdBytes(t, nil),
		"empty.csv":        nil,
		"header-only.csv":  []byte("text,language\n"),
		"empty.csv.zst":    zstdBytes(t, nil),
		"empty.unknownext": nil,
	}
	for name, data := range files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, path := range names {
		for _, schema := range []Schema{SchemaAuto, SchemaText} {
			recs, err := ReadAll(path, Options{Schema: schema})
			if err != nil || len(recs) != 0 {
				t.Errorf("%s (%s): %d records, %v", filepath.Base(path), schema, len(recs), err)
			}
		}
	}
}

func TestCompressionDetection(t *testing.T) {
	dir := t.TempDir()
	content := []byte(`{"text": "hello", "language": "en"}` + "\n")
	// zstd content is recognised by its magic number whatever the name.
	for _, name := range []string{"a.jsonl", "a.data", "a.jsonl.ZST", "a.jsonl.zstd"} {
		path := writeFile(t, filepath.Join(dir, name), zstdBytes(t, content))
		if recs := readAll(t, path, Options{}); len(recs) != 1 || recs[0].Text != "hello" {
			t.Errorf("%s: %+v", name, recs)
		}
	}
	// Named .zst but not compressed.
	path := writeFile(t, filepath.Join(dir, "plain.jsonl.zst"), content)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "not zstd-compressed") {
		t.Errorf("plain .zst: %v", err)
	}
	// A damaged zstd stream is an error, even with SkipBad.
	z := zstdBytes(t, bytes.Repeat(content, 1000))
	z = z[:len(z)/2]
	path = writeFile(t, filepath.Join(dir, "cut.jsonl.zst"), z)
	if _, err := ReadAll(path, Options{SkipBad: true}); err == nil {
		t.Errorf("truncated zstd read without error")
	}
	// A name without a known extension: Parquet and JSON Lines are sniffed,
	// anything else must be named.
	path = writeFile(t, filepath.Join(dir, "x.txt"), []byte("text\nhello\n"))
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "cannot tell the format") {
		t.Errorf("unknown format: %v", err)
	}
	if recs := readAll(t, path, Options{Format: FormatCSV}); len(recs) != 1 {
		t.Errorf("Format option: %+v", recs)
	}
	data, err := os.ReadFile(fixture("text.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	path = writeFile(t, filepath.Join(dir, "noext"), data)
	if recs := readAll(t, path, Options{}); len(recs) != 4 {
		t.Errorf("sniffed Parquet: %d records", len(recs))
	}
	path = writeFile(t, filepath.Join(dir, "text.parquet.zst"), zstdBytes(t, data))
	if recs := readAll(t, path, Options{}); len(recs) != 4 || recs[3].Language != "pt" {
		t.Errorf("zstd Parquet: %+v", recs)
	}
}

// A Parquet file cut short (at the footer, in half, or to the magic number
// alone) has lost its footer, the schema and where the pages are: reading
// it must be an error naming the file. Bytes flipped at random must give
// an error naming the file or, inside a page's values (the fixtures' pages
// carry no checksum), go unnoticed; never a panic (parquet-go panics on
// some of these; the reader recovers).
func TestDamagedParquet(t *testing.T) {
	dir := t.TempDir()
	flipped, unnoticed := 0, 0
	try := func(name string, d []byte, vectors, mustFail bool) {
		t.Helper()
		path := writeFile(t, filepath.Join(dir, name), d)
		var err error
		if vectors {
			_, err = ReadParquetVectors(path, "embedding", []string{"id"})
		} else {
			_, err = ReadAll(path, Options{})
		}
		if err == nil {
			if mustFail {
				t.Errorf("%s: no error", name)
			} else {
				unnoticed++
			}
			return
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error does not name the file: %v", err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, fx := range []string{"aya.parquet", "mmlu-prox-sw-validation.parquet", "global-mmlu-sw-dev.parquet", "embeddings.parquet"} {
		data, err := os.ReadFile(fixture(fx))
		if err != nil {
			t.Fatal(err)
		}
		vectors := fx == "embeddings.parquet"
		try("cut-footer-"+fx, data[:len(data)-10], vectors, true)
		try("cut-half-"+fx, data[:len(data)/2], vectors, true)
		try("magic-only-"+fx, []byte("PAR1"), vectors, true)
		// A footer length (before the closing magic number) near 4 GiB:
		// parquet.OpenFile allocated it before finding the file too short
		// to hold it (found by FuzzReadAllParquet).
		huge := bytes.Clone(data)
		binary.LittleEndian.PutUint32(huge[len(huge)-8:], 0xfffffff0)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		try("huge-footer-"+fx, huge, vectors, true)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
			t.Errorf("huge-footer-%s: %d MiB allocated", fx, n>>20)
		}
		for range 200 {
			d := bytes.Clone(data)
			for range 1 + rng.IntN(4) {
				d[rng.IntN(len(d))] ^= byte(1 + rng.IntN(255))
			}
			try(fx, d, vectors, false)
			flipped++
		}
	}
	t.Logf("%d of %d files with flipped bytes read without an error", unnoticed, flipped)
}

// Files written by parquet-go itself, with several row groups and every
// codec, read back.
func TestParquetRoundTrip(t *testing.T) {
	type row struct {
		ID       int64   `parquet:"id"`
		Text     string  `parquet:"text"`
		Language *string `parquet:"language,optional"`
		Score    float32 `parquet:"score"`
		Tags     []string
	}
	sw := "swh"
	var rows []row
	for i := range 25 {
		rows = append(rows, row{ID: int64(1000 + i), Text: strings.Repeat("maji ", i+1), Language: &sw, Score: float32(i) / 4, Tags: []string{"a", "b"}})
	}
	rows[3].Language = nil
	for _, codec := range []parquet.WriterOption{parquet.Compression(&parquet.Zstd), parquet.Compression(&parquet.Snappy), parquet.Compression(&parquet.Gzip), parquet.Compression(&parquet.Uncompressed)} {
		path := filepath.Join(t.TempDir(), "rt.parquet")
		writeParquet(t, path, rows, codec, parquet.MaxRowsPerRowGroup(4), parquet.PageBufferSize(256))
		r, err := Open(path, Options{Language: "en"})
		if err != nil {
			t.Fatal(err)
		}
		var got []Record
		prev := 0.0
		for r.Next() {
			got = append(got, r.Record())
			if p := r.Progress(); p < prev || p > 1 {
				t.Errorf("progress went from %v to %v", prev, p)
			} else {
				prev = p
			}
		}
		if r.Err() != nil || len(got) != len(rows) || r.Progress() != 1 {
			t.Fatalf("%d records, progress %v, err %v", len(got), r.Progress(), r.Err())
		}
		r.Close()
		for i, rec := range got {
			lang := "sw"
			if i == 3 {
				lang = "en" // null: the fallback
			}
			if rec.Text != rows[i].Text || rec.Language != lang || rec.ID != strconv.FormatInt(rows[i].ID, 10) {
				t.Errorf("row %d: %+v", i, rec)
			}
			if _, ok := rec.Fields["Tags"]; ok {
				t.Errorf("row %d: a list column in Fields", i)
			}
		}
		if got[2].Fields["score"] != "0.5" {
			t.Errorf("float field %q", got[2].Fields["score"])
		}
	}
}

// Chat data: a messages column, nested in JSON Lines, a list of structs in
// Parquet (from DuckDB, and the layouts parquet-go writes), JSON text in a
// CSV cell or a Parquet string.
func TestChatSchema(t *testing.T) {
	want := readAll(t, fixture("chat.jsonl"), Options{})
	if len(want) != 4 {
		t.Fatalf("chat.jsonl: %d records, want 4", len(want))
	}
	first := []Message{{"system", "You are a helpful assistant."}, {"user", "What is the capital of Kenya?"}, {"assistant", "Nairobi."}}
	if r := want[0]; !reflect.DeepEqual(r.Messages, first) || r.Text != "You are a helpful assistant.\nWhat is the capital of Kenya?\nNairobi." || r.ID != "c1" || r.Language != "en" {
		t.Errorf("record 0: %+v", r)
	}
	if r := want[3]; r.Messages[0].Content != "Write \"rain\" in <b>bold</b>.\nThanks" || r.Messages[1].Role != "assistant" {
		t.Errorf("record 3: %+v", r.Messages)
	}
	dir := t.TempDir()
	data, err := os.ReadFile(fixture("chat.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "chat.jsonl.zst"), zstdBytes(t, data))
	// The messages as a JSON string column, as some exports write them.
	type stringRow struct {
		ID       string `parquet:"id"`
		Language string `parquet:"language"`
		Messages string `parquet:"messages"`
	}
	var strRows []stringRow
	for _, r := range want {
		strRows = append(strRows, stringRow{r.ID, r.Fields["language"], r.Fields["messages"]})
	}
	writeParquet(t, filepath.Join(dir, "chat-string.parquet"), strRows)
	// A bare repeated group of fields, as parquet-go writes a Go slice.
	type msg struct {
		Role    string `parquet:"role"`
		Content string `parquet:"content"`
	}
	type repeatedRow struct {
		ID       string `parquet:"id"`
		Language string `parquet:"language"`
		Messages []msg  `parquet:"messages"`
	}
	var repRows []repeatedRow
	for _, r := range want {
		var ms []msg
		for _, m := range r.Messages {
			ms = append(ms, msg(m))
		}
		repRows = append(repRows, repeatedRow{r.ID, r.Fields["language"], ms})
	}
	writeParquet(t, filepath.Join(dir, "chat-repeated.parquet"), repRows, parquet.MaxRowsPerRowGroup(3))

	paths := []string{fixture("chat.csv"), fixture("chat.parquet")}
	for _, name := range []string{"chat.jsonl.zst", "chat-string.parquet", "chat-repeated.parquet"} {
		paths = append(paths, filepath.Join(dir, name))
	}
	for _, path := range paths {
		got := readAll(t, path, Options{})
		if len(got) != len(want) {
			t.Fatalf("%s: %d records, want %d", path, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if !reflect.DeepEqual(g.Messages, w.Messages) || g.Text != w.Text || g.ID != w.ID || g.Language != w.Language {
				t.Errorf("%s record %d:\n got %+v\nwant %+v", filepath.Base(path), i, g, w)
			}
		}
	}
	// A Parquet list of structs is kept in Fields as JSON, as JSON Lines keep it.
	if got := readAll(t, fixture("chat.parquet"), Options{}); !reflect.DeepEqual(got[1].Fields, want[1].Fields) {
		t.Errorf("Parquet fields %v\nJSON Lines fields %v", got[1].Fields, want[1].Fields)
	}
}

func TestChatBadRows(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ line, err string }{
		{`{"messages": "hello"}`, `"messages": want a JSON array`},
		{`{"messages": []}`, `"messages": no messages`},
		{`{"messages": null}`, `"messages" is missing or null`},
		{`{"messages": [1, 2]}`, `"messages": want a JSON array`},
		{`{"messages": [null]}`, `"messages": message 0 is null`},
		{`{"messages": [{"role": "user"}]}`, `"messages": message 0: "content" is missing or not a string`},
		{`{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]}`, `"messages": message 1: "content" is missing or not a string`},
		{`{"messages": [{"role": "user", "content": 7}]}`, `"messages": message 0: "content" is missing or not a string`},
		{`{"messages": [{"role": " ", "content": "a"}]}`, `"messages": message 0: empty role`},
		{`{"messages": [{"role": "user", "content": ""}]}`, `empty text`},
	} {
		path := writeFile(t, filepath.Join(dir, "bad.jsonl"), []byte(`{"messages": [{"role": "user", "content": "fine", "name": "extra keys are ignored"}]}`+"\n"+tc.line+"\n"))
		recs, err := ReadAll(path, Options{})
		if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2: "+tc.err) || len(recs) != 1 {
			t.Errorf("%s: %d records, error %v; want %q", tc.line, len(recs), err, tc.err)
		}
	}
	path := writeFile(t, filepath.Join(dir, "bad.csv"), []byte("messages\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"caf\xe9\"\"}]\"\n"))
	if _, err := ReadAll(path, Options{}); err == nil || !strings.Contains(err.Error(), `bad.csv:2: "messages": not valid UTF-8`) {
		t.Errorf("invalid UTF-8 in CSV: %v", err)
	}

	// Parquet: the LIST layout with optional elements and fields, null and
	// empty lists.
	type msg struct {
		Role    *string `parquet:"role,optional"`
		Content *string `parquet:"content,optional"`
	}
	type listRow struct {
		Messages []*msg `parquet:"messages,list,optional"`
	}
	user, hi := "user", "hi"
	rows := []listRow{
		{[]*msg{{&user, &hi}}},
		{[]*msg{{&user, nil}}}, // a null field
		{[]*msg{}},             // an empty list
		{nil},                  // a null list
		{[]*msg{nil}},          // a null element
		{[]*msg{{&user, &hi}, {&user, &hi}}},
	}
	path = filepath.Join(dir, "list.parquet")
	writeParquet(t, path, rows)
	r, err := Open(path, Options{SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]Message
	for r.Next() {
		got = append(got, r.Record().Messages)
	}
	skipped, firstErr := r.Skipped()
	r.Close()
	wantMsgs := [][]Message{{{"user", "hi"}}, {{"user", "hi"}, {"user", "hi"}}}
	if r.Err() != nil || !reflect.DeepEqual(got, wantMsgs) || skipped != 4 || firstErr == nil || !strings.Contains(firstErr.Error(), `list.parquet: row 2: "messages": message 0: "content" is missing or not a string`) {
		t.Errorf("LIST layout: %v, skipped %d (%v), err %v", got, skipped, firstErr, r.Err())
	}
}
