package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/sampling/drift"
)

// Two ECDA updates of an adapter in a registry: the first (from a version
// without continual files) selects for the drifted usage and trains with
// neither replay nor EWC; the second replays the first's buffer and
// penalises distance from it with its Fisher. Each becomes the current
// version with its parent, trigger, selection hash, eval score, Fisher and
// a replay buffer at 5% of the history; a rollback serves the previous one.
func TestUpdateTwice(t *testing.T) {
	path, _ := adaptFixture(t)
	cfg := readAdapt(t, path)
	cfg.Train.WarmupRatio = 0 // the first step moves the adapter, so the second sees a penalty
	dir := filepath.Dir(path)

	// v1: an adapter trained by hand, registered without continual files.
	o := cfg.Train
	o.Model, o.Data, o.Output = cfg.path(cfg.Model), []string{filepath.Join(dir, "data.jsonl")}, filepath.Join(dir, "v1")
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	regDir := filepath.Join(dir, "registry")
	reg, err := OpenRegistry(regDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Add("sw", o.Output, VersionMeta{}, true); err != nil {
		t.Fatal(err)
	}
	// A drift record as compass monitor writes it.
	record := filepath.Join(regDir, "sw", "drift", "drift-1.json")
	if err := os.MkdirAll(filepath.Dir(record), 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, record, DriftRecord{Adapter: "sw", Time: time.Now(), Options: drift.DefaultOptions(),
		Window: drift.Window{Window: 4, JS: 0.2, PValue: 1e-5, Shifted: true, Recent: 2, Confirmed: true}})

	// compass adapt's report in the same work directory, which the
	// updates must leave alone.
	work := cfg.workDir()
	adaptReport := filepath.Join(work, "report", "report.md")
	if err := os.MkdirAll(filepath.Dir(adaptReport), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(adaptReport, []byte("adapt's report\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	req := UpdateRequest{Registry: regDir, Adapter: "sw", Usage: filepath.Join(dir, "usage.jsonl"), DriftRecord: record, FisherExamples: 4}
	r1, err := Update(context.Background(), cfg, req, AdaptEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(work, "update-reports", "sw-after-v1"); r1.Adapt.ReportDir != want {
		t.Errorf("the first update's report went to %s, want %s", r1.Adapt.ReportDir, want)
	}
	v2 := r1.Version
	if v2.Version != "v2" || v2.Parent != "v1" || v2.Trigger.Kind != TriggerDrift || v2.Trigger.JS != 0.2 || v2.DataSelectionHash == "" {
		t.Fatalf("v2: %+v", v2)
	}
	if _, ok := v2.Eval["global-mmlu"]; !ok {
		t.Errorf("v2 has no evaluation score: %v", v2.Eval)
	}
	if r1.Selected != cfg.Budget || r1.History != cfg.Budget || r1.Replay != 1 {
		t.Errorf("first update: %d selected, history %d, buffer %d; want %d, %d, ceil(0.05 x %d) = 1",
			r1.Selected, r1.History, r1.Replay, cfg.Budget, cfg.Budget, cfg.Budget)
	}
	v2Dir, _ := reg.Path("sw", "v2")
	for _, f := range []string{lora.WeightsName, FisherName, ReplayBufferName} {
		if _, err := os.Stat(filepath.Join(v2Dir, f)); err != nil {
			t.Errorf("v2 lacks %s", f)
		}
	}
	metrics := func(r *UpdateResult) string {
		for _, s := range r.Adapt.Steps {
			if s.Kind == "train" {
				b, _ := os.ReadFile(filepath.Join(s.Dir, metricsName))
				return string(b)
			}
		}
		t.Fatal("no train step")
		return ""
	}
	if m := metrics(r1); strings.Contains(m, `"penalty"`) {
		t.Errorf("the first update had no Fisher to use, but its metrics have a penalty:\n%s", m)
	}

	// v3: replay of v2's buffer and EWC with v2's Fisher; the registry
	// named relative to the working directory, not to the config. An
	// update killed while staging its version left its stage behind:
	// this one removes it.
	var killed string
	for _, s := range r1.Adapt.Steps {
		if s.Kind == "train" {
			killed = filepath.Join(filepath.Dir(s.Dir), ".update-1234567")
		}
	}
	if err := os.MkdirAll(killed, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(killed, lora.WeightsName), []byte("half copied"), 0o644); err != nil {
		t.Fatal(err)
	}
	req.DriftRecord, req.Note = "", "by hand"
	t.Chdir(filepath.Join(regDir, "sw"))
	req.Registry = ".."
	r2, err := Update(context.Background(), cfg, req, AdaptEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Version.Version != "v3" || r2.Version.Parent != "v2" || r2.Version.Trigger.Kind != TriggerManual {
		t.Fatalf("v3: %+v", r2.Version)
	}
	if _, err := os.Stat(killed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a killed update's stage is still there after the next update: %v", err)
	}
	for _, r := range []*UpdateResult{r1, r2} {
		if _, err := os.Stat(filepath.Join(r.Adapt.ReportDir, "report.md")); err != nil {
			t.Errorf("an update's report: %v", err)
		}
	}
	if b, err := os.ReadFile(adaptReport); err != nil || string(b) != "adapt's report\n" {
		t.Errorf("compass adapt's report after two updates: %q, %v", b, err)
	}
	var last map[string]any
	for _, line := range strings.Split(strings.TrimSpace(metrics(r2)), "\n") {
		if err := json.Unmarshal([]byte(line), &last); err != nil {
			t.Fatal(err)
		}
	}
	if !(last["penalty"].(float64) > 0) || !(last["replay_loss"].(float64) > 0) {
		t.Errorf("the second update's last step: penalty %v, replay loss %v", last["penalty"], last["replay_loss"])
	}
	if r2.History != 2*cfg.Budget || r2.Replay != 1 {
		t.Errorf("second update: history %d, buffer %d; want %d and 1", r2.History, r2.Replay, 2*cfg.Budget)
	}
	if back, err := reg.Rollback("sw"); err != nil || back.Version != "v2" {
		t.Fatalf("rollback: %v %v", back, err)
	}

	// A served version whose files differ from the manifest is refused,
	// before any work.
	weights := filepath.Join(v2Dir, lora.WeightsName)
	if err := os.WriteFile(weights, append(readFile(t, weights), 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Update(context.Background(), cfg, req, AdaptEnv{}); err == nil || !strings.Contains(err.Error(), "modified") {
		t.Errorf("an update from a modified version: %v, want an error saying so", err)
	}

	// A bad request fails before any work.
	req.Adapter = "nope"
	if _, err := Update(context.Background(), cfg, req, AdaptEnv{}); err == nil {
		t.Error("an adapter the registry lacks was accepted")
	}
}

// keptOverSeeds extends the replay buffer old (of oldHistory records) with
// fresh at share for seeds 0..seeds-1, checks each buffer's size, history
// and records added, and counts how often each record was kept.
func keptOverSeeds(t *testing.T, old string, oldHistory int, fresh string, share float64, seeds, wantSize, wantHistory, wantAdded int) map[string]int {
	t.Helper()
	kept := map[string]int{}
	buf := filepath.Join(t.TempDir(), "buf.jsonl")
	for seed := range uint64(seeds) {
		size, hist, added, err := extendReplayBuffer(buf, old, oldHistory, fresh, share, seed)
		if err != nil || size != wantSize || hist != wantHistory || added != wantAdded {
			t.Fatalf("seed %d: size %d history %d added %d, %v; want %d, %d, %d", seed, size, hist, added, err, wantSize, wantHistory, wantAdded)
		}
		data, err := os.ReadFile(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Fields(string(data)) {
			kept[l]++
		}
	}
	return kept
}

// The buffer is a uniform sample of the whole history: with room for one
// record of four, over many seeds each record is kept about a quarter of
// the time, the old buffer's record included.
func TestExtendReplayBufferUniform(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.jsonl")
	fresh := filepath.Join(dir, "fresh.jsonl")
	if err := os.WriteFile(old, []byte("{\"text\":\"r0\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fresh, []byte("{\"text\":\"r1\"}\n{\"text\":\"r2\"}\n{\"text\":\"r3\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const seeds = 200
	kept := keptOverSeeds(t, old, 1, fresh, 0.25, seeds, 1, 4, 3)
	for _, r := range []string{"r0", "r1", "r2", "r3"} {
		// A quarter of 200 is 50, with a standard deviation near 6.1.
		if n := kept[`{"text":"`+r+`"}`]; n < 30 || n > 70 {
			t.Errorf("record %s kept with %d of %d seeds, want about %d", r, n, seeds, seeds/4)
		}
	}
}

// The replay buffer stays at its share of a growing history, and keeps
// only records of it.
func TestExtendReplayBuffer(t *testing.T) {
	dir := t.TempDir()
	var first, second []string
	for i := range 40 {
		first = append(first, `{"text":"a`+strings.Repeat("x", i)+`"}`)
		second = append(second, `{"text":"b`+strings.Repeat("y", i)+`"}`)
	}
	writeLines := func(name string, lines []string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := writeLines("a.jsonl", first), writeLines("b.jsonl", second)
	buf1 := filepath.Join(dir, "buf1.jsonl")
	size, hist, added, err := extendReplayBuffer(buf1, "", 0, a, 0.1, 1)
	if err != nil || size != 4 || hist != 40 || added != 40 {
		t.Fatalf("first: size %d history %d added %d, %v", size, hist, added, err)
	}
	buf2 := filepath.Join(dir, "buf2.jsonl")
	size, hist, _, err = extendReplayBuffer(buf2, buf1, 40, b, 0.1, 2)
	if err != nil || size != 8 || hist != 80 {
		t.Fatalf("second: size %d history %d, %v", size, hist, err)
	}
	data, _ := os.ReadFile(buf2)
	all := strings.Join(first, "\n") + "\n" + strings.Join(second, "\n")
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.Contains(all, l) {
			t.Errorf("buffer record %s is from neither period", l)
		}
	}
}

// Every record of the history is kept with the same probability, new or
// old: the old buffer's 2 records stand for 8 earlier ones at a quarter,
// so with 8 new records at share 1/4 the buffer keeps both of them and 2
// of the 8 new, each new one a quarter of the time (the algorithm R
// extension before kept the first two new records 5/8 of the time). A
// share lowered to 0.05 shrinks a buffer of 20 to ceil(0.05 x 40) = 2.
func TestExtendReplayBufferShares(t *testing.T) {
	dir := t.TempDir()
	lines := func(prefix string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "{\"text\":\"%s%d\"}\n", prefix, i)
		}
		return b.String()
	}
	old, fresh := filepath.Join(dir, "old.jsonl"), filepath.Join(dir, "fresh.jsonl")
	if err := os.WriteFile(old, []byte(lines("o", 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fresh, []byte(lines("n", 8)), 0o644); err != nil {
		t.Fatal(err)
	}
	const seeds = 400
	kept := keptOverSeeds(t, old, 8, fresh, 0.25, seeds, 4, 16, 8)
	for i := range 2 {
		if n := kept[fmt.Sprintf(`{"text":"o%d"}`, i)]; n != seeds {
			t.Errorf("old record o%d kept with %d of %d seeds, want all", i, n, seeds)
		}
	}
	for i := range 8 {
		// A quarter of 400 is 100, with a standard deviation near 8.7.
		if n := kept[fmt.Sprintf(`{"text":"n%d"}`, i)]; n < 70 || n > 130 {
			t.Errorf("new record n%d kept with %d of %d seeds, want about %d", i, n, seeds, seeds/4)
		}
	}

	if err := os.WriteFile(old, []byte(lines("o", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fresh, []byte(lines("n", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := filepath.Join(dir, "buf.jsonl")
	if size, hist, _, err := extendReplayBuffer(buf, old, 20, fresh, 0.05, 1); err != nil || size != 2 || hist != 40 {
		t.Errorf("share lowered to 0.05: size %d history %d, %v; want 2, 40", size, hist, err)
	}
}
