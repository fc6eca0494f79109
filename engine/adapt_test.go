package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/sampling/selection"
)

// adaptFixture writes a tiny pipeline into a new directory: the tiny byte
// model, a pool of three languages over three topics, Swahili usage about
// the sky (the Global-MMLU fixture's astronomy questions) and Swahili data
// about other things, and a config over them. It returns the config's
// path and the config as a map, to be changed and rewritten by tests.
func adaptFixture(t *testing.T) (string, map[string]any) {
	t.Helper()
	dir := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 1)
	topics := map[string][]string{
		"sky":    {"the sun is a star", "the moon goes round the earth", "mars is a red planet", "stars shine at night"},
		"food":   {"rice with beans", "bread and butter", "a bowl of soup", "fresh mango juice"},
		"market": {"the price of cloth", "selling goats", "buying shoes", "a busy market day"},
	}
	var pool []string
	for _, lang := range []string{"en", "fr", "yo"} {
		for _, topic := range []string{"sky", "food", "market"} {
			for i, s := range topics[topic] {
				pool = append(pool, fmt.Sprintf(`{"id":"%s-%s-%d","text":"%s (%s)","language":"%s"}`, lang, topic, i, s, lang, lang))
			}
		}
	}
	write := func(name string, lines []string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	write("pool.jsonl", pool)
	write("usage.jsonl", []string{`{"text":"jua ni nyota"}`, `{"text":"mwezi huzunguka dunia"}`, `{"text":"sayari ya mars"}`, `{"text":"nyota usiku"}`})
	write("heldout.jsonl", []string{`{"text":"jua huwaka mchana"}`, `{"text":"nyota nyingi angani"}`, `{"text":"mwezi mpevu"}`})
	write("data.jsonl", []string{`{"text":"wali na maharagwe"}`, `{"text":"bei ya nguo sokoni"}`, `{"text":"mkate na siagi"}`, `{"text":"kununua viatu"}`})
	evalData, err := filepath.Abs(filepath.Join(evalFixtures, "global-mmlu"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"model":    modelDir,
		"work_dir": "work",
		"pool":     map[string]any{"file": "pool.jsonl"},
		"targets":  []any{map[string]any{"language": "sw", "usage": map[string]any{"file": "usage.jsonl"}, "data": []any{map[string]any{"file": "data.jsonl"}}, "heldout": "heldout.jsonl"}},
		"budget":   6,
		"k_range":  "2:3",
		"methods":  []any{"compass", "random"},
		"seeds":    []any{1, 2},
		"train": map[string]any{"seq_len": 32, "micro_batch": 2, "global_batch": 2, "max_steps": 2, "rank": 2, "alpha": 4,
			"eval_every": 0, "save_every": 1, "keep": 1, "lr": 1e-2},
		"eval":         map[string]any{"tasks": []any{"global-mmlu"}, "data": evalData, "shots": 0},
		"bootstrap":    200,
		"permutations": 200,
	}
	path := filepath.Join(dir, "adapt.json")
	writeJSON(t, path, cfg)
	return path, cfg
}

func readAdapt(t *testing.T, path string) *AdaptConfig {
	t.Helper()
	c, err := ReadAdaptConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func stepFinished(t *testing.T, dir string) string {
	t.Helper()
	rec, err := readStepRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Finished.String()
}

// The pipeline end to end with two methods and two seeds; a second run
// reuses every step; --force select redoes the select steps alone.
func TestAdaptEndToEnd(t *testing.T) {
	path, cfg := adaptFixture(t)
	res, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// 3 embeddings; per seed a clustering and, per method, select, train, eval.
	if len(res.Steps) != 3+2*(1+2*3) {
		t.Fatalf("%d steps, want 17", len(res.Steps))
	}
	finished := map[string]string{}
	for _, s := range res.Steps {
		if s.Reused {
			t.Errorf("first run reused %s %s", s.Kind, s.Name)
		}
		finished[s.Key] = stepFinished(t, s.Dir)
	}
	if kept, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "work", "pool-check", "*.json")); len(kept) != 1 {
		t.Errorf("the pool's count kept for later runs: %v, want one file", kept)
	}
	rep := res.Report
	if len(rep.Languages) != 1 || rep.Languages[0].Language != "sw" || len(rep.Languages[0].Tasks) != 2 {
		t.Fatalf("report languages %+v", rep.Languages)
	}
	// The held-out NLL: finite, positive, and moved by training away from
	// the base model's, differently for each seed.
	nll := rep.Languages[0].Tasks[1]
	if nll.Task != HeldoutTask || len(nll.Scores) != 2 {
		t.Fatalf("held-out task %+v", nll)
	}
	base, _, err := heldoutNLL(cfg["model"].(string), "", filepath.Join(filepath.Dir(path), "heldout.jsonl"), nil)
	if err != nil || len(base) != 3 {
		t.Fatalf("base model's held-out NLL: %v, %v", base, err)
	}
	baseMean := (base[0].Acc + base[1].Acc + base[2].Acc) / 3
	for _, s := range nll.Scores {
		if s.Items != 3 || !(s.Mean > 0 && s.Mean < 100) || s.PerSeed[0] == s.PerSeed[1] || s.PerSeed[0] == baseMean {
			t.Errorf("held-out NLL %+v; the base model's %.4f", s, baseMean)
		}
	}
	task := rep.Languages[0].Tasks[0]
	if task.Task != "global-mmlu" || len(task.Scores) != 2 || len(task.Paired) != 1 {
		t.Fatalf("task %+v", task)
	}
	for _, s := range task.Scores {
		if s.Items == 0 || len(s.PerSeed) != 2 || s.Mean < 0 || s.Mean > 1 {
			t.Errorf("score %+v", s)
		}
	}
	if p := task.Paired[0]; p.A != "compass" || p.B != "random" || p.Seeds != 2 || p.P <= 0 || p.P > 1 || p.Low > p.Diff || p.Diff > p.High {
		t.Errorf("paired %+v", p)
	}
	sels := rep.Languages[0].Selections
	if len(sels) != 4 {
		t.Fatalf("%d selections, want 4", len(sels))
	}
	for _, s := range sels {
		if s.Selected != 6 || s.ByLanguage["sw"] != 0 {
			t.Errorf("selection %+v", s)
		}
		if s.Method == "compass" && (s.K < 2 || s.K > 3 || len(s.ByCluster) == 0) {
			t.Errorf("compass selection %+v", s)
		}
	}
	if len(rep.Languages[0].Gaps) == 0 {
		t.Error("no cluster gap table")
	}
	for _, name := range []string{"report.md", "report.json", "scores-sw.png"} {
		if st, err := os.Stat(filepath.Join(res.ReportDir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(res.ReportDir, "report.md"))
	for _, want := range []string{"compass test", rep.Model, "| compass | random |", "seeds 1, 2", "## Steps", "### heldout-nll"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// Training read D_t and the selection: 2 steps of 2 rows of 32 tokens.
	for _, s := range res.Steps {
		if s.Kind == "train" && s.Cost.Tokens != 2*2*32 {
			t.Errorf("train %s: %d tokens", s.Name, s.Cost.Tokens)
		}
	}

	// The second run: nothing is computed again.
	res2, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range res2.Steps {
		if !s.Reused || s.Key != res.Steps[i].Key || stepFinished(t, s.Dir) != finished[s.Key] {
			t.Errorf("second run: %s %s reused %v", s.Kind, s.Name, s.Reused)
		}
	}

	// --force select: the select steps again, nothing else.
	res3, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{Version: "test", Force: []string{"select"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res3.Steps {
		redone := stepFinished(t, s.Dir) != finished[s.Key]
		if s.Reused == (s.Kind == "select") || redone != (s.Kind == "select") {
			t.Errorf("--force select: %s %s reused %v, redone %v", s.Kind, s.Name, s.Reused, redone)
		}
	}
	if _, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{Force: []string{"selection"}}); err == nil || !strings.Contains(err.Error(), "selection") {
		t.Errorf("--force selection: err = %v", err)
	}
}

// A run stopped during training resumes: the steps before are reused and
// the interrupted training continues from its checkpoint.
func TestAdaptResume(t *testing.T) {
	path, cfg := adaptFixture(t)
	cfg["methods"], cfg["seeds"] = []any{"random", "none"}, []any{3}
	cfg["train"].(map[string]any)["max_steps"] = 3
	writeJSON(t, path, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := AdaptEnv{onTrainStep: func(step int) {
		if step == 2 {
			cancel() // Train finishes step 2, saves and returns
		}
	}}
	res, err := Adapt(ctx, readAdapt(t, path), env)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the cancellation", err)
	}
	done := len(res.Steps) // the embeddings and the selection
	if done != 4 {
		t.Fatalf("%d steps done before the interruption, want 4", done)
	}
	partial, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "work", "train", "*.partial", "checkpoint-*"))
	if len(partial) == 0 {
		t.Fatal("the interrupted training left no checkpoint")
	}

	var steps []int
	env = AdaptEnv{onTrainStep: func(step int) { steps = append(steps, step) }}
	res, err = Adapt(context.Background(), readAdapt(t, path), env)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range res.Steps {
		if s.Reused != (i < done) {
			t.Errorf("resumed run: %s %s reused %v", s.Kind, s.Name, s.Reused)
		}
	}
	if fmt.Sprint(steps) != "[3]" {
		t.Errorf("the resumed training ran steps %v, want [3]", steps)
	}
	var state struct {
		Step int `json:"step"`
	}
	for _, s := range res.Steps {
		if s.Kind == "train" {
			ck, _ := filepath.Glob(filepath.Join(s.Dir, "checkpoint-*", "trainer_state.json"))
			if len(ck) == 0 {
				t.Fatal("no checkpoint in the finished training")
			}
			data, _ := os.ReadFile(ck[len(ck)-1])
			if json.Unmarshal(data, &state); state.Step != 3 {
				t.Errorf("trainer_state step %d, want 3", state.Step)
			}
		}
	}
}

// The kill test's child process: runs the config COMPASS_ADAPT_CONFIG and
// kills itself with SIGKILL before training step 3.
func TestAdaptKillChild(t *testing.T) {
	path := os.Getenv("COMPASS_ADAPT_CONFIG")
	if path == "" {
		t.Skip("run by TestAdaptSurvivesKill as its child process")
	}
	env := AdaptEnv{onTrainStep: func(step int) {
		if step == 3 {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}}
	if _, err := Adapt(context.Background(), readAdapt(t, path), env); err != nil {
		t.Fatal(err)
	}
}

// kill -9 during training: the next run reuses the finished steps, resumes
// the training from its last checkpoint and ends with the adapter an
// uninterrupted run trains, bit for bit.
func TestAdaptSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path, cfg := adaptFixture(t)
	cfg["methods"], cfg["seeds"] = []any{"random"}, []any{5}
	cfg["train"].(map[string]any)["max_steps"] = 4
	writeJSON(t, path, cfg)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestAdaptKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COMPASS_ADAPT_CONFIG="+path)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("the child was not killed:\n%s", out)
	}
	var steps []int
	res, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{onTrainStep: func(step int) { steps = append(steps, step) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Steps {
		if s.Reused != (s.Kind == "embed" || s.Kind == "select") {
			t.Errorf("after the kill: %s %s reused %v", s.Kind, s.Name, s.Reused)
		}
	}
	if fmt.Sprint(steps) != "[3 4]" {
		t.Errorf("the resumed training ran steps %v, want [3 4]", steps)
	}
	// The same config in a fresh work directory, uninterrupted.
	cfg["work_dir"] = "whole"
	writeJSON(t, path, cfg)
	whole, err := Adapt(context.Background(), readAdapt(t, path), AdaptEnv{})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range res.Steps {
		if s.Kind != "train" {
			continue
		}
		a, b := readFile(t, filepath.Join(s.Dir, lora.WeightsName)), readFile(t, filepath.Join(whole.Steps[i].Dir, lora.WeightsName))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Error("the adapter after kill and resume differs from the uninterrupted run's")
		}
	}
}

// A setting changes the addresses of its step and those downstream only.
func TestAdaptKeys(t *testing.T) {
	path, cfg := adaptFixture(t)
	keys := func() map[string][]string {
		t.Helper()
		c := readAdapt(t, path)
		r, err := planAdapt(context.Background(), c, AdaptEnv{})
		if err != nil {
			t.Fatal(err)
		}
		k := map[string][]string{}
		for _, s := range r.steps {
			k[s.kind] = append(k[s.kind], s.key)
		}
		return k
	}
	base := keys()
	check := func(what string, changed ...string) {
		t.Helper()
		now := keys()
		for _, kind := range AdaptStepKinds {
			differs := fmt.Sprint(now[kind]) != fmt.Sprint(base[kind])
			want := strings.Contains(strings.Join(changed, ","), kind)
			if differs != want {
				t.Errorf("%s: %s keys changed %v, want %v", what, kind, differs, want)
			}
		}
	}
	cfg["train"].(map[string]any)["lr"] = 2e-2
	writeJSON(t, path, cfg)
	check("train.lr", "train", "eval")
	cfg["budget"] = 5
	writeJSON(t, path, cfg)
	check("budget", "select", "train", "eval")
	cfg["train"].(map[string]any)["lr"], cfg["budget"] = 1e-2, 6
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "usage.jsonl"), []byte(`{"text":"jua"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, path, cfg)
	check("usage file", "embed", "cluster", "select", "train", "eval")
}

// Steps are keyed on what they compute from, by content: the base model
// of a train step even where the embeddings come from an encoder, the
// initial adapter and replay data by their bytes (update passes registry
// versions rebuilt at the same paths), and not on settings without
// effect: the all-data baseline's budget, the embedding batch size.
func TestAdaptKeysByContent(t *testing.T) {
	path, cfg := adaptFixture(t)
	dir := filepath.Dir(path)
	cfg["methods"], cfg["seeds"] = []any{"all"}, []any{1}
	writeJSON(t, path, cfg)
	keys := func() map[string]string {
		t.Helper()
		r, err := planAdapt(context.Background(), readAdapt(t, path), AdaptEnv{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		k := map[string]string{}
		for _, s := range r.steps {
			k[s.kind+" "+s.name] = s.key
		}
		return k
	}
	check := func(what string, before map[string]string, changed ...string) map[string]string {
		t.Helper()
		now := keys()
		for name, key := range now {
			differs := before[name] != key
			want := slices.Contains(changed, strings.Fields(name)[0])
			if differs != want {
				t.Errorf("%s: %s's key changed %v, want %v", what, name, differs, want)
			}
		}
		return now
	}
	base := keys()

	cfg["budget"] = 5
	writeJSON(t, path, cfg)
	base = check("budget of the all-data baseline", base)
	cfg["embed"] = map[string]any{"batch_tokens": 64}
	writeJSON(t, path, cfg)
	base = check("embed.batch_tokens", base)

	// Files named relative to the config, changed in place.
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("init/"+lora.ConfigName, "{}")
	write("init/"+lora.WeightsName, "first")
	write("replay.jsonl", `{"text":"one"}`+"\n")
	train := cfg["train"].(map[string]any)
	train["init_adapter"], train["replay_data"] = "init", []any{"replay.jsonl"}
	writeJSON(t, path, cfg)
	base = check("init_adapter and replay_data set", base, "train", "eval")
	write("init/"+lora.WeightsName, "second")
	base = check("the initial adapter's weights rewritten", base, "train", "eval")
	write("replay.jsonl", `{"text":"two"}`+"\n")
	base = check("the replay data rewritten", base, "train", "eval")

	// With an encoder, other weights of the same shapes for the model.
	writeTinyEncoder(t, filepath.Join(dir, "e5"))
	cfg["embed"] = map[string]any{"encoder": "e5"}
	writeJSON(t, path, cfg)
	base = check("embed.encoder", base, "embed", "cluster", "select", "train", "eval")
	cfg["model"] = writeTinyByteModel(t, tinyByteLlama, 2)
	writeJSON(t, path, cfg)
	check("the model's weights, embedded by an encoder", base, "train", "eval")
}

// A work directory another run holds (its lock; an flock is per open
// file, so this process's own second open is refused as another's would
// be) is an error naming that, before any step; continual's the same.
func TestWorkDirTaken(t *testing.T) {
	path, _ := adaptFixture(t)
	cfg := readAdapt(t, path)
	work := cfg.workDir()
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDir(work)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Adapt(context.Background(), cfg, AdaptEnv{})
	if err == nil || !strings.Contains(err.Error(), "another compass run"+lockHolder()+" is working in it") {
		t.Errorf("adapt into a taken work dir: %v", err)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("adapt wrote %d entries into a taken work dir", len(entries))
	}
	unlock()

	ccfg, err := ReadContinualConfig(writeContinualStream(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ccfg.WorkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if unlock, err = lockDir(ccfg.WorkDir); err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := Continual(context.Background(), ccfg, ContinualEnv{}); err == nil || !strings.Contains(err.Error(), "another compass run"+lockHolder()+" is working in it") {
		t.Errorf("continual into a taken work dir: %v", err)
	}
}

// lockHolder is how a refusal names this process as the lock's holder:
// by its pid where /proc/locks tells it (Linux).
func lockHolder() string {
	if runtime.GOOS != "linux" {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", os.Getpid())
}

// Bad configs fail before any work, naming the key or the file.
func TestAdaptBadConfig(t *testing.T) {
	path, cfg := adaptFixture(t)
	dir := filepath.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "nolang.jsonl"), []byte(`{"id":"a","text":"x"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(c map[string]any)
		want string
	}{
		{"unknown key", func(c map[string]any) { c["budjet"] = 3 }, `unknown field "budjet"`},
		{"unknown method", func(c map[string]any) { c["methods"] = []any{"compass", "oracle"} }, `unknown method "oracle"`},
		{"budget over pool", func(c map[string]any) { c["budget"] = 37 }, "37 is larger than the pool"},
		{"missing pool", func(c map[string]any) { c["pool"] = map[string]any{"file": "nope.jsonl"} }, "pool.file: " + filepath.Join(dir, "nope.jsonl") + " does not exist"},
		{"pool is a directory", func(c map[string]any) { c["pool"] = map[string]any{"file": "."} }, "pool.file: read " + dir + ": is a directory"},
		{"pool without language", func(c map[string]any) { c["pool"] = map[string]any{"file": "nolang.jsonl"} }, "needs a language column"},
		{"no usage set", func(c map[string]any) {
			c["targets"] = []any{map[string]any{"language": "sw", "data": []any{map[string]any{"file": "data.jsonl"}}}}
		}, "targets[0].usage: target sw has no usage set"},
		{"missing data", func(c map[string]any) {
			c["targets"] = []any{map[string]any{"language": "sw", "usage": map[string]any{"file": "usage.jsonl"}, "data": []any{map[string]any{"file": "gone.jsonl"}}}}
		}, "targets[0].data[0].file"},
		{"unknown train key", func(c map[string]any) { c["train"] = map[string]any{"learning_rate": 1} }, `unknown field "learning_rate"`},
		{"train data", func(c map[string]any) { c["train"] = map[string]any{"data": []any{"x"}} }, "set by adapt"},
		{"bad gap", func(c map[string]any) { c["compass"] = map[string]any{"gap": "log"} }, "compass.gap"},
		{"unknown task", func(c map[string]any) { c["eval"] = map[string]any{"tasks": []any{"mmlu-9"}, "data": "usage.jsonl"} }, "eval.tasks"},
		{"no seeds", func(c map[string]any) { c["seeds"] = []any{} }, "config key seeds"},
		{"bad k range", func(c map[string]any) { c["k_range"] = "1:x" }, `config key k_range "1:x": "x" is not a number`},
		// Found before any step: they failed after the embeddings and clusters.
		{"unknown target language", func(c map[string]any) {
			c["targets"] = []any{map[string]any{"language": "zz", "usage": map[string]any{"file": "usage.jsonl"}}}
		}, `targets[0].language: selection: unknown language "zz"`},
		{"seq_len past the model", func(c map[string]any) { c["train"] = map[string]any{"seq_len": 100000} }, "train.seq_len: 100000 is beyond the model's"},
	}
	for _, tc := range cases {
		c := map[string]any{}
		for k, v := range cfg {
			c[k] = v
		}
		tc.edit(c)
		p := filepath.Join(dir, "bad.json")
		writeJSON(t, p, c)
		ac, err := ReadAdaptConfig(p)
		if err == nil {
			_, err = Adapt(context.Background(), ac, AdaptEnv{})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); !os.IsNotExist(err) {
		t.Errorf("a bad config left a work directory (%v)", err)
	}
	// YAML reads the same keys.
	y := filepath.Join(dir, "adapt.yaml")
	if err := os.WriteFile(y, []byte("model: m\nbudjet: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAdaptConfig(y); err == nil || !strings.Contains(err.Error(), "budjet") {
		t.Errorf("yaml: err = %v", err)
	}
}

// Validate reads the pool once: Adapt keeps its count under the pool's
// content hash, a later Validate over the same bytes takes it from there,
// and a pool whose bytes changed is read again.
func TestAdaptPoolCheckKept(t *testing.T) {
	path, cfg := adaptFixture(t)
	dir := filepath.Dir(path)
	c := readAdapt(t, path)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); !os.IsNotExist(err) {
		t.Fatalf("Validate made the work directory (%v)", err)
	}
	if err := c.savePoolCheck(); err != nil { // what Adapt does under its lock
		t.Fatal(err)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "work", "pool-check", "*.json"))
	if len(kept) != 1 {
		t.Fatalf("kept pool checks: %v", kept)
	}
	var rec struct{ Records int }
	if data, err := os.ReadFile(kept[0]); err != nil || json.Unmarshal(data, &rec) != nil || rec.Records != 36 {
		t.Fatalf("kept %+v (%v), want 36 records", rec, err)
	}
	// The kept count is what a second Validate sees: made larger, it lets
	// a budget past the real pool through, which proves the pool unread.
	if err := os.WriteFile(kept[0], []byte(`{"records": 1000}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg["budget"] = 500
	writeJSON(t, path, cfg)
	if err := readAdapt(t, path).Validate(); err != nil {
		t.Fatalf("budget 500 with a kept count of 1000: %v", err)
	}
	// Other bytes, another hash: the pool is read again, and a record
	// without a language is found.
	f, err := os.OpenFile(filepath.Join(dir, "pool.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `{"id":"x","text":"no language"}`)
	f.Close()
	if err := readAdapt(t, path).Validate(); err == nil || !strings.Contains(err.Error(), "needs a language column") {
		t.Fatalf("changed pool: err = %v, want its record without a language", err)
	}
}

func TestComparePairedSeeds(t *testing.T) {
	ones, zeros := map[string]float64{}, map[string]float64{}
	for i := range 20 {
		id := fmt.Sprint(i)
		ones[id], zeros[id] = 1, 0
	}
	p := comparePairedSeeds([]map[string]float64{zeros, zeros}, []map[string]float64{ones, ones}, 500, 500, 1)
	if p.Diff != 1 || p.Low != 1 || p.High != 1 || p.P > 0.01 || p.Items != 20 || p.Seeds != 2 {
		t.Errorf("always better: %+v", p)
	}
	p = comparePairedSeeds([]map[string]float64{ones}, []map[string]float64{ones, ones}, 500, 500, 1)
	if p.Diff != 0 || p.P != 1 || p.Seeds != 2 {
		t.Errorf("the same: %+v", p)
	}
	// Half the items better, half worse: no evidence either way.
	mixed := map[string]float64{}
	for i := range 20 {
		mixed[fmt.Sprint(i)] = float64(i % 2)
	}
	p = comparePairedSeeds([]map[string]float64{mixed}, []map[string]float64{ones}, 500, 500, 1)
	if p.Diff != 0.5 || p.P > 0.01 {
		t.Errorf("better on half: %+v", p)
	}
	half := map[string]float64{}
	for i := range 20 {
		half[fmt.Sprint(i)] = float64((i + 1) % 2)
	}
	p = comparePairedSeeds([]map[string]float64{mixed}, []map[string]float64{half}, 500, 500, 1)
	if p.Diff != 0 || p.P < 0.5 || p.Low >= 0 || p.High <= 0 {
		t.Errorf("swapped halves: %+v", p)
	}
}

// scoreOf averages over the items every seed scored, then over seeds; the
// standard error is over items of their seed-averaged scores.
func TestReportScore(t *testing.T) {
	for _, tc := range []struct {
		name    string
		seeds   []map[string]float64
		items   int
		mean    float64
		stderr  float64
		perSeed []float64
	}{
		// Item averages 1, 0.5, 0.5: mean 2/3; squared deviations sum to
		// 1/6, so the stderr is sqrt(1/6 / 2 / 3) = 1/6. Item d, scored by
		// one seed only, does not count.
		{"three items", []map[string]float64{{"a": 1, "b": 0, "c": 0, "d": 1}, {"a": 1, "b": 1, "c": 1}}, 3, 2.0 / 3, 1.0 / 6, []float64{1.0 / 3, 1}},
		// Two items: sqrt(((0.5)^2 + (0.5)^2) / 1 / 2) = 0.5.
		{"two items", []map[string]float64{{"a": 0, "b": 1}}, 2, 0.5, 0.5, []float64{0.5}},
		{"one item", []map[string]float64{{"a": 0.25}, {"a": 0.75}}, 1, 0.5, 0, []float64{0.25, 0.75}},
		{"no common item", []map[string]float64{{"a": 1}, {"b": 1}}, 0, 0, 0, nil},
	} {
		s := scoreOf("m", tc.seeds)
		if s.Method != "m" || s.Items != tc.items || math.Abs(s.Mean-tc.mean) > 1e-12 || math.Abs(s.Stderr-tc.stderr) > 1e-12 {
			t.Errorf("%s: got items %d, mean %g, stderr %g; want %d, %g, %g", tc.name, s.Items, s.Mean, s.Stderr, tc.items, tc.mean, tc.stderr)
		}
		if len(s.PerSeed) != len(tc.perSeed) {
			t.Errorf("%s: per seed %v, want %v", tc.name, s.PerSeed, tc.perSeed)
			continue
		}
		for i := range s.PerSeed {
			if math.Abs(s.PerSeed[i]-tc.perSeed[i]) > 1e-12 {
				t.Errorf("%s: per seed %v, want %v", tc.name, s.PerSeed, tc.perSeed)
				break
			}
		}
	}
}

// comparePairedSeeds pairs each seed of b with the same seed of a, and its
// interval and p-value match their exact values on small cases: the
// permutation distribution enumerated by hand, the bootstrap distribution
// of the mean of three items.
func TestReportPairedValues(t *testing.T) {
	a := []map[string]float64{{"i0": 0, "i1": 0, "i2": 1}, {"i0": 0, "i1": 0, "i2": 0}}
	b := []map[string]float64{{"i0": 1, "i1": 1, "i2": 0}, {"i0": 1, "i1": 0, "i2": 1}}
	// Differences by seed: 1, 1, -1 and 1, 0, 1. Their mean is 3/6. The
	// items' seed-averaged differences are 1, 0.5 and 0: the test flips
	// the two nonzero ones, and 2 of the 4 sign flips have a sum of 1.5 or
	// more in absolute value: p = 0.5. (Flipping the five nonzero (seed,
	// item) differences on their own would give 12 of 32, 0.375.)
	p := comparePairedSeeds(a, b, 20000, 20000, 1)
	if p.Diff != 0.5 || p.Items != 3 || p.Seeds != 2 || math.Abs(p.P-0.5) > 0.01 {
		t.Errorf("two seeds: got diff %g, items %d, seeds %d, p %g; want 0.5, 3, 2, about 0.5", p.Diff, p.Items, p.Seeds, p.P)
	}
	// The items' seed-averaged differences are 1, 0.5 and 0: the mean of
	// three resampled is 0 with probability 1/27 = 0.037 > 0.025, and 1
	// likewise, so the 95% interval is [0, 1] (a 90% one would be
	// [1/6, 5/6]).
	if p.Low != 0 || p.High != 1 {
		t.Errorf("two seeds: interval [%g, %g], want [0, 1]", p.Low, p.High)
	}

	// One score set of b, the base model's, is paired with each seed of
	// a: differences 1 and 0 over two seeds.
	p = comparePairedSeeds([]map[string]float64{{"x": 0}, {"x": 1}}, []map[string]float64{{"x": 1}}, 100, 100, 1)
	if p.Diff != 0.5 || p.Items != 1 || p.Seeds != 2 {
		t.Errorf("one score set of b: got diff %g, items %d, seeds %d; want 0.5, 1, 2", p.Diff, p.Items, p.Seeds)
	}
	// One item that ten seeds of b all got right and the base model a got
	// wrong is one item, whatever the seeds: both sign flips reach the
	// observed sum, p = 1 (flipping the ten pairs on their own gave 2/1024).
	var tenSeeds []map[string]float64
	for range 10 {
		tenSeeds = append(tenSeeds, map[string]float64{"x": 1})
	}
	if p = comparePairedSeeds([]map[string]float64{{"x": 0}}, tenSeeds, 0, 10000, 1); p.P != 1 {
		t.Errorf("one item, the base model against ten seeds: p %g, want 1", p.P)
	}

	// 80 items: 64 differences alternate between 1 and -1, the last 16
	// are 1. p = P(|2 Binomial(80, 1/2) - 80| >= 16) = 0.0929: every
	// difference flips, not only the first 64.
	a, b = []map[string]float64{{}}, []map[string]float64{{}}
	for i := range 80 {
		id := fmt.Sprintf("%02d", i)
		a[0][id], b[0][id] = 0, 1
		if i < 64 && i%2 == 1 {
			a[0][id], b[0][id] = 1, 0
		}
	}
	p = comparePairedSeeds(a, b, 0, 20000, 1)
	if p.Diff != 0.2 || math.Abs(p.P-0.0929) > 0.01 {
		t.Errorf("80 items: got diff %g, p %g; want 0.2, about 0.0929", p.Diff, p.P)
	}

	// When no sign flip reaches the observed sum, p is 1/(permutations+1),
	// never 0.
	a, b = []map[string]float64{{}}, []map[string]float64{{}}
	for i := range 30 {
		id := fmt.Sprint(i)
		a[0][id], b[0][id] = 0, 1
	}
	if p = comparePairedSeeds(a, b, 0, 999, 1); p.P != 0.001 {
		t.Errorf("always better: got p %g, want 1/1000", p.P)
	}

	// Nothing to compare: p is 1.
	for _, tc := range []struct {
		name string
		a, b []map[string]float64
	}{
		{"no common item", []map[string]float64{{"x": 0}}, []map[string]float64{{"y": 1}}},
		{"no score of a", nil, []map[string]float64{{"y": 1}}},
	} {
		if p := comparePairedSeeds(tc.a, tc.b, 100, 100, 1); p.P != 1 || p.Items != 0 || p.Diff != 0 {
			t.Errorf("%s: got p %g, items %d, diff %g; want 1, 0, 0", tc.name, p.P, p.Items, p.Diff)
		}
	}
}

// The selected rows are the pool's picked rows, in the pool's order, with
// every column, whatever order the picks come in.
func TestWriteSelectedRows(t *testing.T) {
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool.jsonl")
	var b strings.Builder
	for i := range 6 {
		fmt.Fprintf(&b, `{"id": "r%d", "text": "text %d", "language": "fr", "source": "book %d"}`+"\n", i, i, i)
	}
	if err := os.WriteFile(pool, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "selected.jsonl")
	if err := writeSelectedRows(pool, AdaptData{File: pool}, []selection.Pick{{Row: 4}, {Row: 1}}, out); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(readFile(t, out))), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != 2 || got[0]["id"] != "r1" || got[1]["id"] != "r4" || got[1]["source"] != "book 4" || got[1]["text"] != "text 4" {
		t.Errorf("selected rows %v, want r1 and r4 with all their columns", got)
	}
	// No picks: an empty file.
	if err := writeSelectedRows(pool, AdaptData{File: pool}, nil, out); err != nil {
		t.Fatal(err)
	}
	if s := readFile(t, out); len(s) != 0 {
		t.Errorf("no picks gave %q", s)
	}
}
