package engine

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// The schedules at chosen steps, against values worked out by hand.
func TestScheduleValues(t *testing.T) {
	cases := []struct {
		s    Schedule
		step int
		want float64
	}{
		{Schedule{Name: "constant", LR: 1, Warmup: 4, Total: 10}, 0, 0},
		{Schedule{Name: "constant", LR: 1, Warmup: 4, Total: 10}, 2, 0.5},
		{Schedule{Name: "constant", LR: 1, Warmup: 4, Total: 10}, 9, 1},
		{Schedule{Name: "linear", LR: 2, Warmup: 0, Total: 10}, 0, 2},
		{Schedule{Name: "linear", LR: 2, Warmup: 0, Total: 10}, 5, 1},
		{Schedule{Name: "linear", LR: 2, MinLR: 0.5, Warmup: 2, Total: 10}, 6, 0.5 + 1.5*0.5},
		{Schedule{Name: "linear", LR: 2, Warmup: 0, Total: 10}, 12, 0}, // past the end: stays at the floor
		{Schedule{Name: "cosine", LR: 1, Warmup: 0, Total: 10}, 5, 0.5},
		{Schedule{Name: "cosine", LR: 1, Warmup: 2, Total: 12}, 2, 1},
		{Schedule{Name: "cosine", LR: 1, MinLR: 0.1, Warmup: 0, Total: 10}, 10, 0.1},
		{Schedule{Name: "cosine", LR: 1, MinLR: 0.1, Warmup: 0, Total: 4}, 1, 0.1 + 0.9*0.5*(1+math.Sqrt2/2)},
	}
	for _, c := range cases {
		if got := c.s.At(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%+v at step %d: %v, want %v", c.s, c.step, got, c.want)
		}
	}
	if err := (Schedule{Name: "exponential", LR: 1}).Validate(); err == nil {
		t.Error("unknown schedule accepted")
	}
	if err := (Schedule{Name: "cosine", LR: 1, MinLR: 2}).Validate(); err == nil {
		t.Error("min lr above lr accepted")
	}
}

// Validate accepts the edges of each setting's range (a floor equal to the
// peak, no warmup) and rejects what lies just outside them.
func TestScheduleValidate(t *testing.T) {
	for _, s := range []Schedule{
		{Name: "cosine", LR: 1, MinLR: 1, Warmup: 0, Total: 10},
		{Name: "linear", LR: 1e-4, MinLR: 0, Warmup: 0, Total: 1},
		{Name: "constant", LR: 2, Warmup: 5, Total: 5},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v, want no error", s, err)
		}
	}
	for _, tc := range []struct {
		s   Schedule
		err string
	}{
		{Schedule{Name: "cosine", LR: 0}, "learning rate 0"},
		{Schedule{Name: "cosine", LR: -1}, "learning rate -1"},
		{Schedule{Name: "cosine", LR: math.NaN()}, "learning rate NaN"},
		{Schedule{Name: "cosine", LR: math.Inf(1)}, "learning rate +Inf"},
		{Schedule{Name: "linear", LR: 1, MinLR: -0.1}, "minimum learning rate -0.1"},
		{Schedule{Name: "linear", LR: 1, MinLR: 1.5}, "minimum learning rate 1.5"},
		{Schedule{Name: "cosine", LR: 1, MinLR: math.NaN()}, "minimum learning rate NaN"},
		{Schedule{Name: "linear", LR: 1, Warmup: -1}, "warmup -1 steps"},
	} {
		if err := tc.s.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want %q", tc.s, err, tc.err)
		}
	}
}

// A tiny model learns a small data set by heart: 60 steps on 8 lines
// bring the mean loss per target byte from above 5 (the random model's
// start; ln 260 = 5.6 would be a uniform guess) to below 0.5.
func TestTrainOverfitsSmallData(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	var lines []string
	for _, s := range []string{"abc abc abc abc", "Hi.", "Ok", "All human beings are born free",
		"Kila mtu amezaliwa huru", "Tous les etres humains", "Alle Menschen", "Todos los seres"} {
		b, _ := json.Marshal(map[string]string{"text": s})
		lines = append(lines, string(b))
	}
	data := filepath.Join(work, "small.jsonl")
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	o := DefaultTrainOptions()
	o.Model, o.Data, o.Output = modelDir, []string{data}, filepath.Join(work, "out")
	o.SeqLen, o.MicroBatch, o.GlobalBatch, o.Rank, o.Alpha = 64, 4, 4, 16, 32
	o.MaxSteps, o.LR, o.Schedule, o.WarmupRatio, o.EvalEvery, o.SaveEvery = 60, 2e-2, "constant", 0, 0, 0
	var progress strings.Builder
	res, err := Train(context.Background(), o, TrainEnv{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	// The progress lines: the tokenizing's, ended before the steps'.
	if p := progress.String(); !strings.Contains(p, "\rtrain: tokenizing --data: ") || !strings.Contains(p, "of 1 file\n") ||
		!strings.Contains(p, "\rstep 60/60") || strings.Index(p, "tokenizing") > strings.Index(p, "step ") {
		t.Errorf("progress lines %q: want the tokenizing's, then the steps'", p)
	}
	losses, _ := readTrainLosses(t, filepath.Join(o.Output, metricsName))
	t.Logf("loss %.3f at step 1, %.3f at step %d", losses[0], res.LastLoss, res.Steps)
	if losses[0] < 5 || res.LastLoss > 0.5 {
		t.Errorf("loss went from %.3f to %.3f in %d steps; want from about 5.6 to below 0.5", losses[0], res.LastLoss, res.Steps)
	}
	for _, f := range []string{lora.ConfigName, lora.WeightsName, "training_config.json", "loss.png", metricsName, "checkpoint-00000060/" + stateName} {
		if _, err := os.Stat(filepath.Join(o.Output, f)); err != nil {
			t.Errorf("output lacks %s", f)
		}
	}
}

// Held-out evaluation: an eval line per evaluation, the best adapter kept,
// and patience stopping a run whose eval loss stops improving.
func TestTrainEvalAndPatience(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 2)
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	// A learning rate far too high makes the eval loss worse after the
	// first evaluations, so patience 2 must stop the run early.
	o.Dropout, o.LR, o.WarmupSteps, o.Schedule, o.MaxSteps, o.EvalEvery, o.Patience = 0, 0.5, 0, "constant", 40, 1, 2
	res, err := Train(context.Background(), o, TrainEnv{})
	if err != nil {
		t.Fatal(err)
	}
	var evals []float64
	data2, _ := os.ReadFile(filepath.Join(o.Output, metricsName))
	for _, l := range strings.Split(strings.TrimSpace(string(data2)), "\n") {
		var rec struct {
			Type     string  `json:"type"`
			EvalLoss float64 `json:"eval_loss"`
			PPL      float64 `json:"perplexity"`
		}
		json.Unmarshal([]byte(l), &rec)
		if rec.Type == "eval" {
			evals = append(evals, rec.EvalLoss)
			if math.Abs(rec.PPL-math.Exp(rec.EvalLoss)) > 1e-9*rec.PPL {
				t.Errorf("perplexity %v is not exp(eval loss %v)", rec.PPL, rec.EvalLoss)
			}
		}
	}
	if len(evals) != res.Steps {
		t.Errorf("%d eval lines for %d steps with --eval-every 1", len(evals), res.Steps)
	}
	if !res.EarlyStopped || res.Steps >= 40 {
		t.Fatalf("early stopped %v after %d steps; eval losses %v", res.EarlyStopped, res.Steps, evals)
	}
	best := math.Inf(1)
	for _, e := range evals {
		best = min(best, e)
	}
	if res.BestEvalLoss != best || evals[res.BestStep-1] != best {
		t.Errorf("best eval loss %v at step %d; the evals were %v", res.BestEvalLoss, res.BestStep, evals)
	}
	// The kept adapter gives the best eval loss again.
	if got := evalLossWith(t, modelDir, filepath.Join(o.Output, "best"), o); math.Abs(got-best) > 1e-6*best {
		t.Errorf("best/ gives eval loss %v, the run recorded %v", got, best)
	}
}

// evalLossWith computes the held-out loss of the run's options with the
// adapter in dir, as the trainer does.
func evalLossWith(t *testing.T, modelDir, dir string, o TrainOptions) float64 {
	t.Helper()
	o.Output = t.TempDir()
	r := &trainRun{opts: o, env: TrainEnv{Log: io.Discard}}
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := lora.Load(dir, m.LinearModules())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter(a); err != nil {
		t.Fatal(err)
	}
	cfg, _ := model.LoadConfig(filepath.Join(modelDir, "config.json"))
	tok := loadTok(t, modelDir)
	if err := r.loadData(context.Background(), tok, cfg); err != nil {
		t.Fatal(err)
	}
	r.m = m
	r.state.BestEvalLoss = math.Inf(1)
	os.MkdirAll(o.Output, 0o755)
	if err := r.openMetrics(); err != nil {
		t.Fatal(err)
	}
	defer r.metrics.Close()
	r.adapter = a
	if _, err := r.evaluate(); err != nil {
		t.Fatal(err)
	}
	return r.state.BestEvalLoss
}

// A loss that turns infinite or NaN stops the run naming the step, and
// the checkpoint before it stays loadable.
func TestTrainStopsOnNaN(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 1)
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	o.Dropout, o.EvalEvery, o.SaveEvery, o.Keep, o.MaxSteps = 0, 0, 1, 0, 10
	o.LR, o.WarmupSteps, o.Schedule, o.MaxGradNorm, o.WeightDecay = 1e30, 0, "constant", 0, 0
	_, err := Train(context.Background(), o, TrainEnv{})
	if err == nil || !strings.Contains(err.Error(), "train: step ") || !strings.Contains(err.Error(), "is intact") {
		t.Fatalf("err = %v, want a non-finite loss or gradient naming its step and the intact checkpoint", err)
	}
	t.Log(err)
	have, _ := checkpoints(o.Output)
	if len(have) == 0 {
		t.Fatal("no checkpoint left")
	}
	if !strings.Contains(err.Error(), have[len(have)-1]) {
		t.Errorf("the error does not name the last checkpoint %s: %v", have[len(have)-1], err)
	}
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := lora.Load(have[len(have)-1], m.LinearModules()); err != nil {
		t.Errorf("the last checkpoint does not load: %v", err)
	}
}

// A second run into an --output that a run is writing into fails at once,
// and leaves that run's files alone; once the first ends, the directory is
// free again.
func TestTrainOutputTakenByAnotherRun(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 1)
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	o.MaxSteps, o.SaveEvery, o.EvalEvery = 1, 1, 0
	if err := os.MkdirAll(o.Output, 0o755); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(o.Output, ".tmp-"+checkpointPrefix+"00000007")
	if err := os.Mkdir(leftover, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDir(o.Output) // the other run, in this process: flock locks are per open file
	if err != nil {
		t.Fatal(err)
	}
	_, err = Train(context.Background(), o, TrainEnv{})
	if err == nil || !strings.Contains(err.Error(), "another run"+lockHolder()+" is writing into it") {
		t.Errorf("err = %v, want the other run named", err)
	}
	if _, serr := os.Stat(leftover); serr != nil {
		t.Errorf("the other run's checkpoint in progress was removed: %v", serr)
	}
	unlock()
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Errorf("after the other run ended: %v", err)
	}
}

// Bad input is an error before any step, naming the file or flag, and
// writes nothing.
func TestTrainBadInput(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 1)
	empty := filepath.Join(work, "empty.jsonl")
	os.WriteFile(empty, []byte("{\"text\": \"\"}\n{\"text\": \"\"}\n"), 0o644)
	cases := []struct {
		name string
		edit func(o *TrainOptions)
		want string
	}{
		{"bad row", func(o *TrainOptions) { o.Data = []string{empty} }, "empty.jsonl:1"},
		{"no usable example", func(o *TrainOptions) { o.Data, o.SkipBad = []string{empty}, true }, "empty.jsonl"},
		{"missing file", func(o *TrainOptions) { o.Data = []string{filepath.Join(work, "nope.jsonl")} }, "nope.jsonl"},
		{"seq-len", func(o *TrainOptions) { o.SeqLen = 4096 }, "--seq-len 4096"},
		{"rank", func(o *TrainOptions) { o.Rank = 0 }, "--rank"},
		{"rank past the hidden size", func(o *TrainOptions) { o.Rank = 20000 }, "--rank 20000 is above the model's hidden size"},
		{"targets", func(o *TrainOptions) { o.Targets = "q_proj,nonsense_proj" }, "nonsense_proj"},
		{"lr", func(o *TrainOptions) { o.LR = 0 }, "learning rate"},
		{"global batch", func(o *TrainOptions) { o.GlobalBatch = 5 }, "--global-batch"},
		{"resume nothing", func(o *TrainOptions) { o.Resume = "latest" }, "no checkpoint"},
		{"model", func(o *TrainOptions) { o.Model = work }, "--model"},
		// NaN fails every range test written as a comparison that is true
		// for a bad value: each must be written to be false for NaN too.
		{"dropout NaN", func(o *TrainOptions) { o.Dropout = math.NaN() }, "--dropout"},
		{"warmup-ratio NaN", func(o *TrainOptions) { o.WarmupRatio = math.NaN() }, "--warmup-ratio"},
		{"weight-decay NaN", func(o *TrainOptions) { o.WeightDecay = math.NaN() }, "--weight-decay"},
		{"beta1 NaN", func(o *TrainOptions) { o.Beta1 = math.NaN() }, "--beta1"},
		{"beta2 NaN", func(o *TrainOptions) { o.Beta2 = math.NaN() }, "--beta2"},
		{"max-grad-norm NaN", func(o *TrainOptions) { o.MaxGradNorm = math.NaN() }, "--max-grad-norm"},
		{"eval-split NaN", func(o *TrainOptions) { o.EvalSplit = math.NaN() }, "--eval-split"},
		{"replay-weight NaN", func(o *TrainOptions) { o.ReplayWeight = math.NaN() }, "--replay-weight"},
		{"min-lr NaN", func(o *TrainOptions) { o.MinLR = math.NaN() }, "--min-lr"},
		// Each step count is named as itself.
		{"save-every", func(o *TrainOptions) { o.SaveEvery = -1 }, "--save-every"},
		{"keep", func(o *TrainOptions) { o.Keep = -1 }, "--keep"},
		{"patience", func(o *TrainOptions) { o.Patience = -1 }, "--patience"},
		{"epochs", func(o *TrainOptions) { o.Epochs = -1 }, "--epochs: -1"},
	}
	for _, c := range cases {
		o := resumeOptions(modelDir, data, filepath.Join(work, "out-"+strings.ReplaceAll(c.name, " ", "-")))
		c.edit(&o)
		_, err := Train(context.Background(), o, TrainEnv{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
		t.Logf("%s: %v", c.name, err)
		if _, err := os.Stat(filepath.Join(o.Output, lora.WeightsName)); err == nil {
			t.Errorf("%s: an adapter was written", c.name)
		}
	}
}

// --skip-bad says what it left out.
func TestTrainSkipBadCounts(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 1)
	f, err := os.OpenFile(data, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n{\"text\": [\"a\"]}\n{\"body\": \"x\"}\n"); err != nil { // after a last line that may lack its newline
		t.Fatal(err)
	}
	f.Close()
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	o.SkipBad, o.MaxSteps = true, 1
	var log strings.Builder
	if _, err := Train(context.Background(), o, TrainEnv{Log: &log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "left out: 2 bad rows (--skip-bad)") {
		t.Errorf("the log does not count the skipped rows:\n%s", log.String())
	}
}

// The adapter that compass train writes loads in the PyTorch reference's
// PEFT loader and gives there the logits compass computes with it.
func TestTrainedAdapterInReference(t *testing.T) {
	py := referencePython(t)
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 1)
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	o.MaxSteps, o.EvalEvery = 6, 0
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := lora.Load(o.Output, m.LinearModules())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter(a); err != nil {
		t.Fatal(err)
	}
	ids := []int32{257, 72, 105, 32, 116, 104, 101, 114, 101, 46, 256}
	idT, _ := tensor.FromI32(ids, 1, len(ids))
	logits, err := m.Logits(idT)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(work, "in.json")
	writeJSON(t, in, map[string]any{"input_ids": [][]int32{ids}})
	out := filepath.Join(work, "ref.safetensors")
	cmd := exec.Command(py, filepath.Join("..", "tools", "reference", "reference.py"), "forward",
		"--model", modelDir, "--adapter", o.Output, "--input", in, "--output", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference forward: %v\n%s", err, msg)
	}
	f, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := f.Tensor("logits")
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, v := range ref.F32() {
		worst = max(worst, math.Abs(float64(v-logits.F32()[i])))
	}
	t.Logf("largest logit difference: %.2g", worst)
	if worst > 1e-4 {
		t.Errorf("logits with the trained adapter differ from the reference's by %.3g (> 1e-4)", worst)
	}
	// And the adapter is not PEFT's zero-B initialisation: it changes the logits.
	base, _ := model.Load(modelDir, nil)
	defer base.Close()
	plain, _ := base.Logits(idT)
	moved := 0.0
	for i, v := range plain.F32() {
		moved = max(moved, math.Abs(float64(v-logits.F32()[i])))
	}
	if moved < 1e-3 {
		t.Errorf("the trained adapter moves the logits by only %.2g", moved)
	}
}

// --config files: JSON and YAML give the same options; unknown keys fail.
func TestReadTrainConfig(t *testing.T) {
	dir := t.TempDir()
	js := filepath.Join(dir, "c.json")
	os.WriteFile(js, []byte(`{"model": "m", "data": ["a.jsonl", "b.jsonl"], "rank": 8, "lr": 0.001, "packing": false}`), 0o644)
	ym := filepath.Join(dir, "c.yaml")
	os.WriteFile(ym, []byte("model: m\ndata:\n  - a.jsonl\n  - b.jsonl\nrank: 8\nlr: 0.001\npacking: false\n"), 0o644)
	a, err := ReadTrainConfig(js, DefaultTrainOptions())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadTrainConfig(ym, DefaultTrainOptions())
	if err != nil {
		t.Fatal(err)
	}
	if a.Rank != 8 || a.LR != 0.001 || a.Packing || len(a.Data) != 2 || a.SeqLen != DefaultTrainOptions().SeqLen {
		t.Errorf("json config: %+v", a)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("yaml and json differ:\n%s\n%s", ja, jb)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("rnak: 8\n"), 0o644)
	if _, err := ReadTrainConfig(bad, DefaultTrainOptions()); err == nil || !strings.Contains(err.Error(), "rnak") {
		t.Errorf("unknown key: %v", err)
	}
}
