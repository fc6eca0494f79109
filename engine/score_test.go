package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

func TestScoreMatchesForward(t *testing.T) {
	m, _ := tinyModel(t)
	input := "{\"ids\": [1, 5, 9, 2]}\n\n{\"ids\": [3, 3, 3, 3, 3, 39]}\n"
	var out strings.Builder
	n, err := Score(context.Background(), m, nil, strings.NewReader(input), &out)
	if err != nil || n != 2 {
		t.Fatalf("scored %d lines, err %v", n, err)
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for _, want := range []struct {
		line int
		ids  []int32
	}{{1, []int32{1, 5, 9, 2}}, {3, []int32{3, 3, 3, 3, 3, 39}}} {
		if !sc.Scan() {
			t.Fatal("missing output line")
		}
		var rec ScoreRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		T := len(want.ids)
		labels := make([]int32, T)
		for i := range labels {
			labels[i] = model.IgnoreIndex
			if i+1 < T {
				labels[i] = want.ids[i+1]
			}
		}
		idT, _ := tensor.FromI32(want.ids, 1, T)
		labT, _ := tensor.FromI32(labels, 1, T)
		ref, err := m.Forward(model.Batch{IDs: idT, Labels: labT})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Line != want.line || rec.Tokens != T || len(rec.LogProbs) != T-1 {
			t.Fatalf("record %+v", rec)
		}
		sum := 0.0
		for i, lp := range rec.LogProbs {
			if lp != ref.LogProbs.F32()[i] || lp >= 0 {
				t.Errorf("line %d token %d: logprob %v, forward %v", rec.Line, i+1, lp, ref.LogProbs.F32()[i])
			}
			sum += float64(lp)
		}
		if math.Abs(sum-rec.Sum) > 1e-9 || math.Abs(rec.Perplexity-math.Exp(-sum/float64(T-1))) > 1e-9 {
			t.Errorf("line %d: sum %v perplexity %v, want %v and %v", rec.Line, rec.Sum, rec.Perplexity, sum, math.Exp(-sum/float64(T-1)))
		}
	}
}

func TestScoreBadLines(t *testing.T) {
	m, _ := tinyModel(t)
	for input, want := range map[string]string{
		"{\"ids\": [1, 2]}\n{\"ids\": [1, 40]}\n": "line 2",
		"{\"ids\": [1]}\n":                        "at least 2 tokens",
		"not json\n":                              "line 1",
		"{\"text\": \"hello\"}\n":                 "tokenizer",
		"{\"ids\": [1, 2], \"text\": \"x\"}\n":    "not both",
		"{}\n":                                    "line 1: no \"ids\" or \"text\" field",
		// tinyLlama has 64 positions.
		"{\"ids\": [" + strings.Repeat("1, ", 64) + "1]}\n": "line 1: 65 tokens, beyond the model's 64 positions",
	} {
		_, err := Score(context.Background(), m, nil, strings.NewReader(input), &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("input %q: err = %v, want %q", input, err, want)
		}
	}
}

// A weight that is NaN makes the line's log-probabilities NaN: an error
// that says so, not JSON's "unsupported value".
func TestScoreNonFinite(t *testing.T) {
	dir := t.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(tinyLlama), tensor.F32, 1); err != nil {
		t.Fatal(err)
	}
	// Token 0's embedding row starts with a NaN.
	path := filepath.Join(dir, "model.safetensors")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil {
		t.Fatal(err)
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(f, header); err != nil {
		t.Fatal(err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(header, &entries); err != nil {
		t.Fatal(err)
	}
	var embed struct {
		Offsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(entries["model.embed_tokens.weight"], &embed); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(binary.LittleEndian.AppendUint32(nil, 0x7fc00000), 8+int64(n)+embed.Offsets[0]); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, &tensor.CPU{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = Score(context.Background(), m, nil, strings.NewReader("{\"ids\": [1, 2]}\n{\"ids\": [0, 1, 2]}\n"), &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "line 2: the log-probabilities are not finite") {
		t.Errorf("a NaN weight: %v", err)
	}
}
