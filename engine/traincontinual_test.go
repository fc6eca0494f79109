package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/tensor/safetensors"
)

// writeLines writes one {"text"} record per line.
func writeLines(t *testing.T, path string, texts []string) string {
	t.Helper()
	var b strings.Builder
	for _, s := range texts {
		line, _ := json.Marshal(map[string]string{"text": s})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// adapterDistance is the 2-norm of the difference of two adapters' weights.
func adapterDistance(t *testing.T, a, b string) float64 {
	t.Helper()
	fa, err := safetensors.Open(filepath.Join(a, lora.WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := safetensors.Open(filepath.Join(b, lora.WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sum := 0.0
	for _, name := range fa.Names() {
		x, err := fa.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		y, err := fb.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range x.ToF32() {
			d := float64(v) - float64(y.ToF32()[i])
			sum += d * d
		}
	}
	return math.Sqrt(sum)
}

// Two rounds of ECDA-style training through `compass train`'s options: the
// first writes the Fisher of its adapter; the second continues that
// adapter on new data with replay of the first's data and the EWC penalty,
// and its metrics add up. A strong penalty keeps the adapter nearer the
// first round's than no penalty does.
func TestTrainContinualRounds(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	first := writeTextData(t, work, 2)
	second := writeLines(t, filepath.Join(work, "second.jsonl"), []string{
		"ships sail across the grey northern sea at dawn",
		"the harbour master counts the boats returning home",
		"nets and ropes lie drying on the stones of the quay",
		"a lighthouse keeper climbs the stairs at dusk",
	})
	o := resumeOptions(modelDir, first, filepath.Join(work, "round1"))
	o.EvalSplit, o.EvalEvery, o.SaveEvery, o.Dropout, o.FisherExamples = 0, 0, 0, 0, 6
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	fisherPath := filepath.Join(o.Output, FisherName)
	f, err := safetensors.Open(fisherPath)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := safetensors.Open(filepath.Join(o.Output, lora.WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.Names(), ",") != strings.Join(ad.Names(), ",") {
		t.Fatalf("the Fisher's tensors %v are not the adapter's %v", f.Names(), ad.Names())
	}
	positive := 0
	for _, name := range f.Names() {
		x, _ := f.Tensor(name)
		for _, v := range x.ToF32() {
			if v < 0 || math.IsNaN(float64(v)) {
				t.Fatalf("%s: Fisher value %v", name, v)
			}
			if v > 0 {
				positive++
			}
		}
	}
	if positive == 0 || f.Metadata()["examples"] != "6" {
		t.Fatalf("Fisher: %d positive values, metadata %v", positive, f.Metadata())
	}
	f.Close()
	ad.Close()

	round2 := func(name string, lambda float64, replay bool) (string, []map[string]float64) {
		o2 := o
		o2.Data, o2.Output, o2.InitAdapter, o2.FisherExamples = []string{second}, filepath.Join(work, name), o.Output, 0
		o2.LR, o2.Schedule, o2.WarmupSteps, o2.WarmupRatio, o2.MaxSteps = 2e-2, "constant", 0, 0, 8
		if lambda > 0 {
			o2.EWCFisher, o2.EWCLambda = fisherPath, lambda
		}
		if replay {
			o2.ReplayData = []string{first}
		}
		if _, err := Train(context.Background(), o2, TrainEnv{}); err != nil {
			t.Fatal(err)
		}
		var recs []map[string]float64
		data, _ := os.ReadFile(filepath.Join(o2.Output, metricsName))
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
			if rec["type"] != "train" {
				continue
			}
			nums := map[string]float64{}
			for k, v := range rec {
				if x, ok := v.(float64); ok {
					nums[k] = x
				}
			}
			recs = append(recs, nums)
		}
		return o2.Output, recs
	}
	both, recs := round2("ecda", DefaultEWCLambda, true)
	for i, rec := range recs {
		want := rec["loss"] + DefaultReplayWeight*rec["replay_loss"] + rec["penalty"]
		if !(rec["replay_loss"] > 0) || math.Abs(rec["objective"]-want) > 1e-9*want {
			t.Fatalf("step %d: %v", i+1, rec)
		}
		if i > 0 && !(rec["penalty"] > 0) {
			t.Fatalf("step %d: the adapter moved but the penalty is %v", i+1, rec["penalty"])
		}
	}
	if recs[0]["penalty"] != 0 {
		t.Fatalf("step 1 starts at the anchor: penalty %v", recs[0]["penalty"])
	}
	naive, _ := round2("naive", 0, false)
	strong, _ := round2("strong", 1e5, false)
	dNaive, dStrong, dBoth := adapterDistance(t, naive, o.Output), adapterDistance(t, strong, o.Output), adapterDistance(t, both, o.Output)
	t.Logf("distance from round 1's adapter: naive %.4g, EWC lambda 1e5 %.4g, replay + EWC lambda 2 %.4g", dNaive, dStrong, dBoth)
	if !(dStrong < dNaive) {
		t.Fatalf("a strong EWC penalty left the adapter %.4g from round 1's, no penalty %.4g", dStrong, dNaive)
	}
}

// Bad continued-training options name the flag.
func TestTrainContinualBadOptions(t *testing.T) {
	o := DefaultTrainOptions()
	o.Model, o.Data, o.Output = "m", []string{"d"}, "o"
	for flag, edit := range map[string]func(*TrainOptions){
		"--ewc-fisher":      func(o *TrainOptions) { o.EWCFisher = "fisher.safetensors" },
		"--ewc-lambda":      func(o *TrainOptions) { o.EWCLambda = -1 },
		"--replay-weight":   func(o *TrainOptions) { o.ReplayWeight = -0.1 },
		"--fisher-examples": func(o *TrainOptions) { o.FisherExamples = -3 },
	} {
		c := o
		edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: %v", flag, err)
		}
	}
}

// replayMicro walks the replay rows a pass at a time, ReplayBatches
// micro-batches a step: each pass has every row once, in micro-batches of
// 2, 2 and 1 rows, and the next pass comes in another order.
func TestReplayMicroPasses(t *testing.T) {
	var rows []dataset.Row
	for i := range 5 {
		rows = append(rows, dataset.Row{IDs: []int32{int32(i)}, Labels: []int32{int32(i)}, Tokens: 1})
	}
	o := DefaultTrainOptions()
	o.MicroBatch, o.ReplayBatches, o.Seed = 2, 2, 1
	r := &trainRun{opts: o, replayRows: rows}
	var micro [][]int32 // the rows of each micro-batch, steps 0, 1 and 2
	for step := range 3 {
		batches := r.replayMicro(step)
		if len(batches) != 2 {
			t.Fatalf("step %d: %d replay micro-batches, want 2", step, len(batches))
		}
		for _, b := range batches {
			micro = append(micro, slices.Clone(b.IDs.I32()))
		}
	}
	// Three micro-batches (2 + 2 + 1 rows) make a pass.
	for pass := range 2 {
		var seen []int32
		for _, m := range micro[3*pass : 3*pass+3] {
			seen = append(seen, m...)
		}
		slices.Sort(seen)
		if !slices.Equal(seen, []int32{0, 1, 2, 3, 4}) {
			t.Errorf("pass %d: rows %v, want each of 0..4 once (micro-batches %v)", pass, seen, micro)
		}
	}
	if fmt.Sprint(micro[:3]) == fmt.Sprint(micro[3:]) {
		t.Errorf("passes 0 and 1 in the same order: %v", micro)
	}
}

// The replay loss's weight: the option, its default when it is 0, and
// nothing without replay data.
func TestReplayWeight(t *testing.T) {
	rows := []dataset.Row{{IDs: []int32{1}, Labels: []int32{1}, Tokens: 1}}
	for _, c := range []struct {
		option float64
		rows   []dataset.Row
		want   float64
	}{{0.3, rows, 0.3}, {0, rows, DefaultReplayWeight}, {0.3, nil, 0}} {
		r := &trainRun{replayRows: c.rows}
		r.opts.ReplayWeight = c.option
		if got := r.replayWeight(); got != c.want {
			t.Errorf("option %v with %d replay rows: weight %v, want %v", c.option, len(c.rows), got, c.want)
		}
	}
}
