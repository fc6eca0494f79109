package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
	"github.com/urfave/cli/v3"
)

// runEmbed runs `compass embed --device cpu args...` and returns what it
// printed. On the CPU, vectors do not depend on how texts are batched.
func runEmbed(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.Command{Name: "compass", Commands: []*cli.Command{embedCommand()}}
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(context.Background(), append([]string{"compass", "embed", "--device", "cpu"}, args...))
	return out.String(), err
}

// byteLevelTokenizer is a tokenizer.json with the 256 byte tokens of
// GPT-2's byte-level alphabet and no merges: one token per byte.
func byteLevelTokenizer() []byte {
	vocab := map[string]int{}
	n := 0
	for b := range 256 {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xa1 && b <= 0xac || b >= 0xae && b <= 0xff) {
			r = rune(256 + n)
			n++
		}
		vocab[string(r)] = b
	}
	doc := map[string]any{
		"model":         map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}},
		"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"decoder":       map[string]any{"type": "ByteLevel"},
	}
	data, _ := json.Marshal(doc)
	return data
}

const embedTinyLlama = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":16,"intermediate_size":24,
	"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":256,"torch_dtype":"float32"}`

// writeEmbedModel writes the tiny random Llama of embedTinyLlama, with the
// byte-level tokenizer, into dir/model.
func writeEmbedModel(t *testing.T, dir string) string {
	t.Helper()
	modelDir := filepath.Join(dir, "model")
	if _, err := model.WriteRandomCheckpoint(modelDir, []byte(embedTinyLlama), tensor.F32, 3); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(modelDir, "tokenizer.json"), byteLevelTokenizer(), 0o644); err != nil {
		t.Fatal(err)
	}
	return modelDir
}

func TestEmbedCommand(t *testing.T) {
	dir := t.TempDir()
	modelDir := writeEmbedModel(t, dir)
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "aya.safetensors")
	input := "../../testdata/datasets/aya.parquet"
	msg, err := runEmbed(t, "--model", modelDir, "--input", input, "--output", out, "--cache", cache)
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if !strings.Contains(msg, "embedded 7 records (schema aya)") || !strings.Contains(msg, "7 by the model, 0 from the cache") {
		t.Errorf("first run printed %q", msg)
	}
	first, err := embed.Load(out, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first.Vectors.Shape(), []int{7, 16}) || len(first.Rows) != 7 || first.Rows[4].Language != "fa" || first.Rows[4].ID != "aya.parquet:5" {
		t.Errorf("output %v, rows %+v", first.Vectors, first.Rows)
	}
	for i := range 7 {
		var norm float64
		for _, x := range first.Vectors.F32()[16*i : 16*(i+1)] {
			norm += float64(x) * float64(x)
		}
		if math.Abs(norm-1) > 1e-5 {
			t.Errorf("row %d: squared norm %v", i, norm)
		}
	}
	if !strings.HasPrefix(first.Embedder, "model:") || !strings.HasSuffix(first.Embedder, ";pool=mean;maxlen=512") {
		t.Errorf("embedder %q", first.Embedder)
	}

	// The same texts in another format: all from the cache, same vectors.
	out2 := filepath.Join(dir, "aya.npy")
	msg, err = runEmbed(t, "--model", modelDir, "--input", "../../testdata/datasets/aya.csv.zst", "--output", out2, "--cache", cache)
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if !strings.Contains(msg, "0 by the model, 7 from the cache") {
		t.Errorf("second run printed %q", msg)
	}
	second, err := embed.Load(out2, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(second.Vectors.F32(), first.Vectors.F32()) {
		t.Errorf("cached vectors differ")
	}
	// Without the cache the model gives the same vectors.
	out3 := filepath.Join(dir, "nocache.npy")
	if msg, err := runEmbed(t, "--model", modelDir, "--input", input, "--output", out3, "--no-cache", "--batch-tokens", "8"); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	third, err := embed.Load(out3, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range third.Vectors.F32() {
		if math.Abs(float64(x-first.Vectors.F32()[i])) > 1e-6 {
			t.Fatalf("value %d: %v without the cache, %v with", i, x, first.Vectors.F32()[i])
		}
	}

	// Global-MMLU has no language column: --language names it.
	out4 := filepath.Join(dir, "gm.safetensors")
	if msg, err := runEmbed(t, "--model", modelDir, "--input", "../../testdata/datasets/global-mmlu-sw-dev.parquet", "--language", "sw", "--output", out4, "--cache", cache); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	gm, err := embed.Load(out4, embed.LoadOptions{})
	if err != nil || len(gm.Rows) != 3 || gm.Rows[0].Language != "sw" || gm.Rows[0].ID != "high_school_geography/dev/0" {
		t.Errorf("global-mmlu rows %+v, %v", gm, err)
	}

	// Bad rows: an error naming the line, or with --skip-bad a count.
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"text\": \"sawa\", \"language\": \"sw\"}\n{\"text\": 5\n{\"text\": \"ndiyo\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runEmbed(t, "--model", modelDir, "--input", bad, "--output", filepath.Join(dir, "bad.npy"), "--no-cache"); err == nil || !strings.Contains(err.Error(), "bad.jsonl:2: invalid JSON") {
		t.Errorf("bad row: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.npy")); !os.IsNotExist(err) {
		t.Errorf("a failed run left an output file (%v)", err)
	}
	msg, err = runEmbed(t, "--model", modelDir, "--input", bad, "--output", filepath.Join(dir, "bad.npy"), "--no-cache", "--skip-bad")
	if err != nil || !strings.Contains(msg, "embedded 2 records") || !strings.Contains(msg, "skipped 1 bad rows; the first: dataset: "+bad+":2: invalid JSON") {
		t.Errorf("--skip-bad: %v\n%s", err, msg)
	}

	// No records: an error, not an empty matrix that cluster or select
	// would trip on later; with --skip-bad, saying that every row was bad.
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	allBad := filepath.Join(dir, "allbad.jsonl")
	if err := os.WriteFile(allBad, []byte("{\"text\": 5\nnot json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out5 := filepath.Join(dir, "empty.safetensors")
	for _, c := range []struct {
		input string
		skip  bool
		want  string
	}{
		{empty, false, "embed: " + empty + ": no records"},
		{allBad, true, "no records: all 2 rows were bad (--skip-bad); the first: dataset: " + allBad + ":1"},
	} {
		args := []string{"--model", modelDir, "--input", c.input, "--output", out5, "--no-cache"}
		if c.skip {
			args = append(args, "--skip-bad")
		}
		if msg, err := runEmbed(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q\n%s", c.input, err, c.want, msg)
		}
		if _, err := os.Stat(out5); !os.IsNotExist(err) {
			t.Errorf("%s: an output was written (%v)", c.input, err)
		}
	}
}

func TestEmbedCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--input", "x.jsonl"}, "give one of --model and --encoder"},
		{[]string{"--model", "m", "--encoder", "e", "--input", "x.jsonl"}, "give one of --model and --encoder"},
		{[]string{"--model", "m", "--prefix", "query: ", "--input", "x.jsonl"}, "go with --encoder"},
		{[]string{"--model", "m", "--input", "x.jsonl", "--schema", "alpaca"}, `unknown schema "alpaca"`},
		{[]string{"--model", "m", "--input", "x.jsonl", "--output", "e.csv"}, "want a .safetensors or .npy file"},
		{[]string{"--model", "m", "--input", "no/such.jsonl"}, "no such file"},
		{[]string{"--model", "m", "--input", "x.jsonl", "--language", "zz"}, `--language "zz": not an ISO 639 code`},
		{[]string{"--model", "m", "--input", "x.jsonl", "--batch-tokens", "0"}, "embed: --batch-tokens 0: want 1 or more"},
		{[]string{"--model", "m", "--input", "x.jsonl", "--max-len", "0"}, "embed: --max-len 0: want 1 or more"},
		{[]string{"--model", "no/such/model", "--input", "../../testdata/datasets/text.jsonl"}, "no such file"},
	} {
		if _, err := runEmbed(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// A SIGINT stops embed between chunks of records: exit status 130, and
// neither the output nor the scratch files beside it are left (the
// process's default end would leave the scratch files).
func TestEmbedCommandInterrupt(t *testing.T) {
	dir := t.TempDir()
	modelDir := writeEmbedModel(t, dir)
	var lines strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&lines, "{\"text\": \"record %d\"}\n", i)
	}
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "e.npy")
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if scratch, _ := filepath.Glob(filepath.Join(dir, "out", ".e.npy.vectors*")); len(scratch) > 0 {
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				return
			}
		}
	}()
	msg, err := runEmbed(t, "--model", modelDir, "--input", in, "--output", out, "--no-cache")
	var es *exitStatus
	if !errors.As(err, &es) || es.status != 130 || !strings.Contains(msg, "embed: interrupted") {
		t.Fatalf("interrupted embed: %v, want exit status 130\n%s", err, msg)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "out")); len(left) != 0 {
		t.Errorf("the interrupted embed left %v", left)
	}
}
