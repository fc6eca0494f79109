package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// continualDomains are three periods' worth of text, each its own topic.
var continualDomains = [][]string{
	{"ships sail across the grey northern sea at dawn", "the harbour master counts the boats returning home",
		"nets and ropes lie drying on the stones of the quay", "a lighthouse keeper climbs the stairs at dusk",
		"waves break white against the harbour wall", "the fishing fleet waits for the tide to turn"},
	{"simmer the onions slowly in butter until golden", "add a pinch of salt and the chopped garlic",
		"knead the dough for ten minutes on a floured table", "bake the bread until the crust sounds hollow",
		"stir the soup and taste it before serving", "slice the tomatoes thinly for the salad"},
	{"the climbers reached the snowy summit before noon", "a narrow ridge leads from the pass to the peak",
		"thin air makes every step up the slope slow", "the glacier cracks and groans in the summer heat",
		"ropes and ice axes hang in the mountain hut", "clouds gather around the highest peaks at night"},
}

// writeContinualStream writes a 3-period stream and its config.
func writeContinualStream(t *testing.T, work string) string {
	t.Helper()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	var periods []string
	for i, texts := range continualDomains {
		var train []string
		for k := range 4 {
			for _, s := range texts[:4] {
				train = append(train, fmt.Sprintf("%s %d", s, k))
			}
		}
		data := writeLines(t, filepath.Join(work, fmt.Sprintf("p%d.jsonl", i+1)), train)
		eval := writeLines(t, filepath.Join(work, fmt.Sprintf("p%d-eval.jsonl", i+1)), texts[4:])
		periods = append(periods, fmt.Sprintf(`{"name": "p%d", "data": [%q], "eval": %q}`, i+1, filepath.Base(data), filepath.Base(eval)))
	}
	cfg := fmt.Sprintf(`{"model": %q, "work_dir": "work", "periods": [%s], "fisher_examples": 8, "seed": 3,
		"train": {"seq_len": 48, "micro_batch": 4, "global_batch": 4, "max_steps": 6, "lr": 0.01, "rank": 4, "alpha": 8,
		"schedule": "constant", "warmup_ratio": 0}}`, modelDir, strings.Join(periods, ", "))
	path := filepath.Join(work, "continual.json")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The whole experiment on a tiny stream: every strategy's score matrix,
// the shared first period, the report's files, and a re-run that reuses
// every step and writes the same report.
func TestContinual(t *testing.T) {
	work := t.TempDir()
	cfg, err := ReadContinualConfig(writeContinualStream(t, work))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	rep, err := Continual(context.Background(), cfg, ContinualEnv{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Strategies) != len(ContinualStrategies) || len(rep.Base) != 3 {
		t.Fatalf("%d strategies, %d base scores", len(rep.Strategies), len(rep.Base))
	}
	for _, s := range rep.Strategies {
		if len(s.After) != 3 || len(s.Final) != 3 {
			t.Fatalf("%s: %d rows", s.Strategy, len(s.After))
		}
		for i, row := range s.After {
			for j, v := range row {
				if !(v > 0) || math.IsInf(v, 0) {
					t.Fatalf("%s: after %d on %d: NLL %v", s.Strategy, i, j, v)
				}
			}
		}
		// Period 1 is shared; each strategy learns the newest period
		// (its NLL falls below the base model's).
		if fmt.Sprint(s.After[0]) != fmt.Sprint(rep.Strategies[0].After[0]) {
			t.Errorf("%s: period 1 scores %v differ from %v", s.Strategy, s.After[0], rep.Strategies[0].After[0])
		}
		if !(s.Newest < rep.Base[2]) {
			t.Errorf("%s: NLL on the newest period %v, base model %v", s.Strategy, s.Newest, rep.Base[2])
		}
		want := (s.Final[0] - s.After[0][0] + s.Final[1] - s.After[1][1]) / 2
		if math.Abs(s.Forgetting-want) > 1e-12 {
			t.Errorf("%s: forgetting %v, want %v", s.Strategy, s.Forgetting, want)
		}
	}
	t.Logf("\n%s", log.String())

	// What each strategy's runs of periods 2 and 3 trained on, as their
	// training_config.json records it: the period's data (retrain: all
	// periods so far, from scratch), from the previous period's adapter,
	// with the replay buffer (replay, ecda) and the previous adapter's
	// Fisher (ewc, ecda).
	type runInputs struct {
		Data        []string `json:"data"`
		InitAdapter string   `json:"init_adapter"`
		ReplayData  []string `json:"replay_data"`
		EWCFisher   string   `json:"ewc_fisher"`
	}
	workDir := filepath.Join(work, "work")
	for _, s := range ContinualStrategies {
		prev := filepath.Join(workDir, "period-1")
		for p := 2; p <= 3; p++ {
			dir := filepath.Join(workDir, s, fmt.Sprintf("period-%d", p))
			var got struct {
				Options runInputs `json:"options"`
			}
			if err := readJSONFile(filepath.Join(dir, "training_config.json"), &got); err != nil {
				t.Fatal(err)
			}
			want := runInputs{Data: []string{filepath.Join(work, fmt.Sprintf("p%d.jsonl", p))}, InitAdapter: prev}
			if s == StrategyRetrain {
				want.Data, want.InitAdapter = nil, ""
				for q := 1; q <= p; q++ {
					want.Data = append(want.Data, filepath.Join(work, fmt.Sprintf("p%d.jsonl", q)))
				}
			}
			if s == StrategyReplay || s == StrategyECDA {
				want.ReplayData = []string{filepath.Join(workDir, "replay", fmt.Sprintf("before-period-%d.jsonl", p))}
			}
			if s == StrategyEWC || s == StrategyECDA {
				want.EWCFisher = filepath.Join(prev, FisherName)
			}
			if !reflect.DeepEqual(got.Options, want) {
				t.Errorf("%s, period %d: trained on %+v, want %+v", s, p, got.Options, want)
			}
			prev = dir
		}
	}

	report := filepath.Join(work, "work", "report")
	for _, f := range []string{"report.json", "report.md", "continual.png"} {
		if _, err := os.Stat(filepath.Join(report, f)); err != nil {
			t.Errorf("report lacks %s", f)
		}
	}
	md1, _ := os.ReadFile(filepath.Join(report, "report.md"))
	t.Logf("\n%s", md1)

	// The replay buffer before period 3: 5% of the 32 earlier records,
	// rounded up, each one of them.
	buf, err := os.ReadFile(filepath.Join(work, "work", "replay", "before-period-3.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	history, _ := os.ReadFile(filepath.Join(work, "p1.jsonl"))
	history2, _ := os.ReadFile(filepath.Join(work, "p2.jsonl"))
	if len(lines) != 2 {
		t.Errorf("replay buffer has %d records, want ceil(0.05 x 32) = 2", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(string(history)+string(history2), l) {
			t.Errorf("replay record %s is not from the earlier periods", l)
		}
	}

	log.Reset()
	if _, err := Continual(context.Background(), cfg, ContinualEnv{Log: &log}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), ": training") {
		t.Errorf("the re-run trained again:\n%s", log.String())
	}
	md2, _ := os.ReadFile(filepath.Join(report, "report.md"))
	if !bytes.Equal(md1, md2) {
		t.Errorf("the re-run's report differs")
	}

	// Another learning rate: period 1 and, from its new adapter, the later
	// periods are trained again, not reused.
	cfg.Strategies, cfg.Train["lr"] = []string{StrategyNaive}, 0.02
	log.Reset()
	again, err := Continual(context.Background(), cfg, ContinualEnv{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	for _, what := range []string{"period 1 (p1): training", "naive, period 2 (p2): training", "naive, period 3 (p3): training"} {
		if !strings.Contains(log.String(), what) {
			t.Errorf("with another lr, the log lacks %q:\n%s", what, log.String())
		}
	}
	// An evaluation file rewritten in place: scored again.
	writeLines(t, filepath.Join(work, "p3-eval.jsonl"), continualDomains[0][4:])
	rescored, err := Continual(context.Background(), cfg, ContinualEnv{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if rescored.Base[2] == again.Base[2] || rescored.Base[0] != again.Base[0] {
		t.Errorf("base NLL %v, then %v with period 3's evaluation file rewritten: want the third alone to change", again.Base, rescored.Base)
	}

	// Stopped (Ctrl-C cancels the context) in a training run: an error
	// that says so, which the command turns into the signal's status.
	cfg.Train["lr"] = 0.03
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Continual(ctx, cfg, ContinualEnv{Log: &log}); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context: %v, want context.Canceled", err)
	}
}

// summarise on a score matrix worked by hand: the final row, the newest
// period's score, the mean rise over the earlier periods and the mean.
func TestSummarise(t *testing.T) {
	r := ContinualStrategyR{After: [][]float64{{1, 5, 6}, {2, 3, 6}, {4, 3.5, 2.5}}}
	summarise(&r)
	if !slices.Equal(r.Final, []float64{4, 3.5, 2.5}) {
		t.Errorf("final %v, want [4 3.5 2.5]", r.Final)
	}
	if r.Newest != 2.5 {
		t.Errorf("newest %v, want 2.5", r.Newest)
	}
	if want := ((4 - 1) + (3.5 - 3)) / 2.0; r.Forgetting != want {
		t.Errorf("forgetting %v, want %v", r.Forgetting, want)
	}
	if want := 10 / 3.0; math.Abs(r.MeanFinal-want) > 1e-12 {
		t.Errorf("mean final %v, want %v", r.MeanFinal, want)
	}
}

// The replay buffer holds ceil(share x records) of the earlier periods'
// records, at least one, each once and in stream order.
func TestWriteReplayBuffer(t *testing.T) {
	dir := t.TempDir()
	var records []string // the records' lines, in stream order
	var periods []ContinualPeriod
	for p := range 2 {
		var texts []string
		for i := range 10 {
			texts = append(texts, fmt.Sprintf("period %d record %d", p, i))
			records = append(records, fmt.Sprintf(`{"text":"period %d record %d"}`, p, i))
		}
		periods = append(periods, ContinualPeriod{Data: []string{writeLines(t, filepath.Join(dir, fmt.Sprintf("p%d.jsonl", p)), texts)}})
	}
	for _, c := range []struct {
		share float64
		want  int
	}{{0.01, 1}, {0.1, 2}, {0.11, 3}, {0.5, 10}, {1, 20}} {
		path := filepath.Join(dir, fmt.Sprintf("buffer-%v.jsonl", c.share))
		if err := writeReplayBuffer(path, periods, c.share, 7); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != c.want {
			t.Errorf("share %v of 20 records: %d in the buffer, want %d", c.share, len(lines), c.want)
		}
		last := -1
		for _, l := range lines {
			i := slices.Index(records, l)
			if i <= last {
				t.Errorf("share %v: record %s is not an earlier record after record %d", c.share, l, last)
			}
			last = i
		}
	}
}

// Bad configs are errors naming the key, before any work.
func TestContinualBadConfig(t *testing.T) {
	work := t.TempDir()
	good := writeContinualStream(t, work)
	data, _ := os.ReadFile(good)
	for name, c := range map[string]struct{ from, to, want string }{
		"unknown key":      {`"seed": 3`, `"seed": 3, "sede": 1`, "sede"},
		"unknown strategy": {`"seed": 3`, `"seed": 3, "strategies": ["naive", "magic"]`, `"magic"`},
		"missing eval":     {`p2-eval.jsonl`, `nope.jsonl`, "nope.jsonl"},
		"train sets data":  {`"max_steps": 6`, `"max_steps": 6, "data": ["x"]`, "data is set by compass continual"},
		"bad train key":    {`"max_steps": 6`, `"max_stepz": 6`, "max_stepz"},
		"twice":            {`"seed": 3`, `"seed": 3, "strategies": ["replay", "ecda", "replay"]`, "replay appears twice"},
		"share above 1":    {`"seed": 3`, `"seed": 3, "replay_share": 1.5`, "replay_share must be in (0, 1]"},
		"negative lambda":  {`"seed": 3`, `"seed": 3, "ewc_lambda": -1`, "ewc_lambda and fisher_examples must be positive"},
	} {
		path := filepath.Join(work, "bad.json")
		bad := strings.Replace(string(data), c.from, c.to, 1)
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadContinualConfig(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The ends of the ranges are valid: replay everything, no EWC penalty.
	for _, edit := range []string{`"replay_share": 1`, `"ewc_lambda": 0`} {
		path := filepath.Join(work, "edge.json")
		if err := os.WriteFile(path, []byte(strings.Replace(string(data), `"seed": 3`, `"seed": 3, `+edit, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadContinualConfig(path); err != nil {
			t.Errorf("%s: %v", edit, err)
		}
	}
}

// A period's score is the mean NLL of its texts: a file with a text twice
// scores as the text alone.
func TestCachedScoresAreMeans(t *testing.T) {
	dir := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	text := continualDomains[0][0]
	once := writeLines(t, filepath.Join(dir, "once.jsonl"), []string{text})
	twice := writeLines(t, filepath.Join(dir, "twice.jsonl"), []string{text, text})
	scores, err := cachedScores(filepath.Join(dir, "scores.json"), modelDir, "", []string{once, twice}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 2 || !(scores[0] > 0) || math.Abs(scores[1]-scores[0]) > 1e-9*scores[0] {
		t.Errorf("scores of a text once and twice: %v, want two equal positive values", scores)
	}
}
