package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compassml/compass/lora"
)

// writeRegistryAdapter saves a random adapter (A and B both random) of
// rank r on the q_proj and v_proj of one layer of width dim, in dir.
func writeRegistryAdapter(t testing.TB, dir string, seed uint64, dim, r int) *lora.Adapter {
	t.Helper()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha = r, float64(2*r)
	cfg.InitLoraWeights = false
	cfg.TargetModules = lora.TargetNames("q_proj", "v_proj")
	modules := []lora.Module{
		{Name: "model.layers.0.self_attn.q_proj", In: dim, Out: dim},
		{Name: "model.layers.0.self_attn.v_proj", In: dim, Out: dim / 2},
	}
	a, err := lora.New(cfg, modules, seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	return a
}

// dirSums returns the SHA-256 of every file in dir, by name.
func dirSums(t testing.TB, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, e := range entries {
		if sums[e.Name()], err = FileSHA256(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return sums
}

func sameSums(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkRegistryClean asserts that the versions directory holds exactly the
// manifest's versions, each with its files intact, that the current link
// points at the current version, and that no temporary file is left.
func checkRegistryClean(t *testing.T, reg *Registry, name string) *RegistryManifest {
	t.Helper()
	m, err := reg.List(name)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, v := range m.Versions {
		want = append(want, v.Version)
		if err := reg.Verify(name, v.Version); err != nil {
			t.Error(err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(reg.Dir(), name, "versions"))
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, e := range entries {
		have = append(have, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("versions directory holds %v, the manifest lists %v", have, want)
	}
	if link, err := os.Readlink(filepath.Join(reg.Dir(), name, "current")); err != nil || link != filepath.Join("versions", m.Current) {
		t.Errorf("current link %q (%v), current version %s", link, err, m.Current)
	}
	if tmps, _ := filepath.Glob(filepath.Join(reg.Dir(), name, ".*tmp*")); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	return m
}

// Add, list, show, promote, and rollback restoring earlier versions byte
// for byte (SHA-256 of every file).
func TestRegistryVersionsAndRollback(t *testing.T) {
	work := t.TempDir()
	reg, err := OpenRegistry(filepath.Join(work, "reg"))
	if err != nil {
		t.Fatal(err)
	}
	var srcs []string
	var sums []map[string]string
	for i := range 3 {
		src := filepath.Join(work, fmt.Sprint("run", i))
		writeRegistryAdapter(t, src, uint64(i+1), 32, 4)
		srcs = append(srcs, src)
		sums = append(sums, dirSums(t, src))
	}
	if _, err := reg.List("sw"); err == nil || !strings.Contains(err.Error(), "compass registry add") {
		t.Errorf("listing an empty registry: %v", err)
	}

	meta := VersionMeta{CompassVersion: "test", DataSelectionHash: "abc", Eval: map[string]float64{"acc": 0.5}, Note: "first"}
	v1, err := reg.Add("sw", srcs[0], meta, true)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != "v1" || v1.Parent != "" || v1.Trigger.Kind != TriggerInitial || !sameSums(v1.Files, sums[0]) || v1.Created.IsZero() {
		t.Errorf("first version %+v", v1)
	}
	v2, err := reg.Add("sw", srcs[1], VersionMeta{Trigger: Trigger{Kind: TriggerDrift, JS: 0.2, PValue: 1e-9, Window: 7}}, true)
	if err != nil {
		t.Fatal(err)
	}
	v3, err := reg.Add("sw", srcs[2], VersionMeta{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version != "v2" || v2.Parent != "v1" || v3.Version != "v3" || v3.Parent != "v2" || v3.Trigger.Kind != TriggerManual {
		t.Errorf("v2 %+v\nv3 %+v", v2, v3)
	}
	m := checkRegistryClean(t, reg, "sw")
	if m.Current != "v3" || len(m.Versions) != 3 || m.Versions[0].Eval["acc"] != 0.5 || m.Versions[0].Note != "first" ||
		m.Versions[1].Trigger != (Trigger{Kind: TriggerDrift, JS: 0.2, PValue: 1e-9, Window: 7}) {
		t.Errorf("manifest %+v", m)
	}
	if names, err := reg.Names(); err != nil || !slices.Equal(names, []string{"sw"}) {
		t.Errorf("names %v, %v", names, err)
	}

	// current: the link, Path and Export all give the current version's bytes.
	current := func() map[string]string { return dirSums(t, filepath.Join(reg.Dir(), "sw", "current")) }
	for i, want := range []string{"v2", "v1"} {
		to, err := reg.Rollback("sw")
		if err != nil {
			t.Fatal(err)
		}
		if to.Version != want {
			t.Fatalf("rollback %d went to %s, want %s", i, to.Version, want)
		}
		src := sums[1-i]
		if !sameSums(current(), src) {
			t.Errorf("after rolling back to %s the current files are not the ones added", want)
		}
		out := filepath.Join(work, "export-"+want)
		if err := reg.Export("sw", "", out); err != nil {
			t.Fatal(err)
		}
		if !sameSums(dirSums(t, out), src) {
			t.Errorf("export of %s differs from the adapter added", want)
		}
		if p, _ := reg.Path("sw", ""); filepath.Base(p) != want {
			t.Errorf("path of the current version %s", p)
		}
	}
	if _, err := reg.Rollback("sw"); err == nil || !strings.Contains(err.Error(), "no parent") {
		t.Errorf("rolling back the first version: %v", err)
	}
	if err := reg.Promote("sw", "v3"); err != nil {
		t.Fatal(err)
	}
	if !sameSums(current(), sums[2]) {
		t.Error("after promoting v3 the current files are not v3's")
	}
	if err := reg.Promote("sw", "v9"); err == nil || !strings.Contains(err.Error(), `no version "v9" (it has v1, v2, v3)`) {
		t.Errorf("promoting a missing version: %v", err)
	}
	// Added without promotion: listed, not current; its parent is current.
	v4, err := reg.Add("sw", srcs[0], VersionMeta{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if m := checkRegistryClean(t, reg, "sw"); m.Current != "v3" || v4.Parent != "v3" || v4.Version != "v4" {
		t.Errorf("add without promotion: current %s, added %+v", m.Current, v4)
	}
	if v, err := reg.Show("sw", ""); err != nil || v.Version != "v3" {
		t.Errorf("show current: %v %v", v, err)
	}
	// The first version is current all the same: there is no other.
	if _, err := reg.Add("fr", srcs[0], VersionMeta{}, false); err != nil {
		t.Fatal(err)
	}
	if v, err := reg.Show("fr", ""); err != nil || v.Version != "v1" {
		t.Errorf("current after a first add without promotion: %v, %v; want v1", v, err)
	}

	// A modified file is found by Verify and refused by Export.
	p, _ := reg.Path("sw", "v1")
	if err := os.WriteFile(filepath.Join(p, lora.ConfigName), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := reg.Verify("sw", "v1"); err == nil || !strings.Contains(err.Error(), "was modified") {
		t.Errorf("verify of a modified version: %v", err)
	}
	if err := reg.Export("sw", "v1", filepath.Join(work, "bad")); err == nil {
		t.Error("export of a modified version: no error")
	}
	if _, err := os.Stat(filepath.Join(work, "bad")); err == nil {
		t.Error("a failed export left its directory")
	}
	// Nor is a modified version served: promote refuses it and the
	// current version stays.
	if err := reg.Promote("sw", "v1"); err == nil || !strings.Contains(err.Error(), "was modified") {
		t.Errorf("promote of a modified version: %v", err)
	}
	if v, err := reg.Show("sw", ""); err != nil || v.Version != "v3" {
		t.Errorf("current after the refused promotion: %v %v", v, err)
	}
	// Nor is it rolled back to: v3's parent v2, modified, is refused.
	p, _ = reg.Path("sw", "v2")
	if err := os.WriteFile(filepath.Join(p, lora.ConfigName), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Rollback("sw"); err == nil || !strings.Contains(err.Error(), "was modified") {
		t.Errorf("rollback to a modified parent: %v, want an error saying it was modified", err)
	}
	if v, err := reg.Show("sw", ""); err != nil || v.Version != "v3" {
		t.Errorf("current after the refused rollback: %v %v; want v3", v, err)
	}
	// A file added to a version's directory is found by Verify.
	p, _ = reg.Path("sw", "v4")
	if err := os.WriteFile(filepath.Join(p, "extra.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := reg.Verify("sw", "v4"); err == nil || !strings.Contains(err.Error(), "holds 3 files, the manifest lists 2") {
		t.Errorf("verify of a version with an extra file: %v, want an error counting the files", err)
	}
}

func TestRegistryBadInput(t *testing.T) {
	work := t.TempDir()
	reg, err := OpenRegistry(filepath.Join(work, "reg"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(work, "run")
	writeRegistryAdapter(t, src, 1, 16, 2)
	notAdapter := filepath.Join(work, "empty")
	os.Mkdir(notAdapter, 0o755)
	for _, tc := range []struct {
		name, dir string
		meta      VersionMeta
		want      string
	}{
		{"../x", src, VersionMeta{}, "not a plain name"},
		{".lock", src, VersionMeta{}, "not a plain name"},
		{"sw", notAdapter, VersionMeta{}, "adapter_config.json"},
		{"sw", src, VersionMeta{Trigger: Trigger{Kind: "whim"}}, `trigger "whim"`},
		{"sw", src, VersionMeta{Eval: map[string]float64{"acc": math.NaN()}}, "eval score acc"},
		{"sw", src, VersionMeta{Eval: map[string]float64{"f1": math.Inf(-1)}}, "eval score f1"},
		{"sw", src, VersionMeta{Fisher: "../fisher.safetensors"}, "not a file name"},
		{"sw", src, VersionMeta{Fisher: "fisher.safetensors"}, "no such file"},
	} {
		if _, err := reg.Add(tc.name, tc.dir, tc.meta, true); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("add %q %s %+v: %v, want an error with %q", tc.name, tc.dir, tc.meta, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "reg", "sw", RegistryManifestName)); err == nil {
		t.Error("refused adds wrote a manifest")
	}
	if err := reg.Promote("nope", "v1"); err == nil || !strings.Contains(err.Error(), "no versions of adapter \"nope\"") {
		t.Errorf("promote in a missing adapter: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "reg", "nope")); err == nil {
		t.Error("promote in a missing adapter created its directory")
	}
	if err := os.WriteFile(filepath.Join(work, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRegistry(filepath.Join(work, "file")); err == nil {
		t.Error("a file as the registry: no error")
	}

	// Files of the continual update are copied with the adapter.
	if err := os.WriteFile(filepath.Join(src, "fisher.safetensors"), []byte("fisher"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := reg.Add("sw", src, VersionMeta{Fisher: "fisher.safetensors"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Fisher != "fisher.safetensors" || len(v.Files) != 3 {
		t.Errorf("version with a Fisher file: %+v", v)
	}
	checkRegistryClean(t, reg, "sw")

	// A corrupt manifest is an error naming it, not a panic or an empty list.
	path := filepath.Join(work, "reg", "sw", RegistryManifestName)
	for _, bad := range []string{`{"adapter": "sw", "current": "v2", "versions": [`, `{"adapter": "fr", "current": "", "versions": []}`,
		`{"adapter": "sw", "current": "v2", "versions": [{"version": "v1", "files": {"a": "0"}}]}`,
		`{"adapter": "sw", "current": "v1", "versions": [{"version": "v1", "parent": "v0", "files": {"a": "0"}}]}`,
		`{"adapter": "sw", "current": "x", "versions": [{"version": "x", "files": {"a": "0"}}]}`,
		`{"adapter": "sw", "current": "v9223372036854775807", "versions": [{"version": "v9223372036854775807", "files": {"a": "0"}}]}`,
		`{"adapter": "sw", "current": "v1", "versions": [{"version": "v1", "files": {"../a": "0"}}]}`,
		`{"adapter": "sw", "current": "v01", "versions": [{"version": "v01", "files": {"a": "0"}}]}`} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.List("sw"); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("manifest %s: %v", bad, err)
		}
		if _, err := reg.Add("sw", src, VersionMeta{}, true); err == nil {
			t.Errorf("add over manifest %s: no error", bad)
		}
	}
}

// The registry lives beside the monitor's files, and a drift record becomes
// a version's trigger.
func TestRegistryBesideMonitor(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "reg")
	// What compass monitor writes: the reference, and a drift record as
	// Monitor writes it (DriftRecord's JSON).
	refPath := DriftReferencePath(dir, "sw")
	if err := os.MkdirAll(filepath.Join(dir, "sw", "drift"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(refPath, []byte(`{"reference": "kept as is"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "sw", "drift", "drift-20261204T024142Z-w000005.json")
	if err := writeJSONFile(record, map[string]any{
		"adapter": "sw", "time": "2026-12-04T02:41:42Z", "compass_version": "test",
		"window": map[string]any{"window": 5, "rows": 200, "js": 0.137, "p_value": 5.95e-41, "shifted": true, "recent": 2, "confirmed": true},
		"source": "stdin", "reference": refPath,
	}); err != nil {
		t.Fatal(err)
	}
	// A record of this struct's own marshalling reads back the same way.
	var rec DriftRecord
	rec.Window.Window, rec.Window.JS, rec.Window.PValue, rec.Window.Confirmed = 9, 0.3, 1e-5, true
	own := filepath.Join(work, "own.json")
	if err := writeJSONFile(own, rec); err != nil {
		t.Fatal(err)
	}
	if tr, err := DriftTrigger(own); err != nil || tr != (Trigger{Kind: TriggerDrift, JS: 0.3, PValue: 1e-5, Window: 9, Record: own}) {
		t.Errorf("trigger from a DriftRecord: %+v, %v", tr, err)
	}

	reg, err := OpenRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		src := filepath.Join(work, fmt.Sprint("run", i))
		writeRegistryAdapter(t, src, uint64(i), 16, 2)
		var meta VersionMeta
		if i == 1 {
			if meta.Trigger, err = DriftTrigger(record); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := reg.Add("sw", src, meta, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Rollback("sw"); err != nil {
		t.Fatal(err)
	}
	m := checkRegistryClean(t, reg, "sw")
	want := Trigger{Kind: TriggerDrift, JS: 0.137, PValue: 5.95e-41, Window: 5, Record: record}
	if m.Versions[1].Trigger != want {
		t.Errorf("trigger %+v, want %+v", m.Versions[1].Trigger, want)
	}
	if got, err := os.ReadFile(refPath); err != nil || string(got) != `{"reference": "kept as is"}` {
		t.Errorf("the drift reference after registry writes: %q, %v", got, err)
	}
	if _, err := os.Stat(record); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(own, []byte(`{"window": {"confirmed": false}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := DriftTrigger(own); err == nil || !strings.Contains(err.Error(), "not a confirmed drift") {
		t.Errorf("trigger from an unconfirmed window: %v", err)
	}
}

func TestRegistryDiff(t *testing.T) {
	work := t.TempDir()
	reg, _ := OpenRegistry(filepath.Join(work, "reg"))
	a := writeRegistryAdapter(t, filepath.Join(work, "a"), 1, 32, 4)
	// b: one element of q_proj's B moved, alpha changed, a dropout added.
	const q = "model.layers.0.self_attn.q_proj"
	bq := a.B[q].F32()
	old := slices.Clone(bq)
	bq[5] += 0.25
	bq[17] -= 0.125
	a.Config.LoraAlpha = 16
	a.Config.LoraDropout = 0.05
	if err := a.Save(filepath.Join(work, "b")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b"} {
		if _, err := reg.Add("sw", filepath.Join(work, d), VersionMeta{}, true); err != nil {
			t.Fatal(err)
		}
	}
	d, err := reg.Diff("sw", "v1", "")
	if err != nil {
		t.Fatal(err)
	}
	wantConfig := []ConfigDiff{{"lora_alpha", "8", "16"}, {"lora_dropout", "0.0", "0.05"}}
	if !slices.Equal(d.Config, wantConfig) {
		t.Errorf("config differences %+v, want %+v", d.Config, wantConfig)
	}
	if d.A != "v1" || d.B != "v2" || len(d.Tensors) != 4 || len(d.OnlyA)+len(d.OnlyB) != 0 {
		t.Fatalf("diff %+v", d)
	}
	// Expected from the weights in memory: only q_proj's B differs.
	var na2, nb2 float64
	for i := range old {
		na2 += float64(old[i]) * float64(old[i])
		nb2 += float64(bq[i]) * float64(bq[i])
	}
	wantRel := math.Sqrt(0.25*0.25+0.125*0.125) / math.Sqrt(max(na2, nb2))
	_, nameB := lora.TensorNames(q)
	for _, td := range d.Tensors {
		if !td.SameShape() {
			t.Errorf("%s: shapes %v %v", td.Name, td.ShapeA, td.ShapeB)
		}
		switch {
		case td.Name == nameB:
			if math.Abs(td.MaxAbsDiff-0.25) > 1e-6 || math.Abs(td.RelL2-wantRel) > 1e-6*wantRel {
				t.Errorf("%s: max |b-a| %g (want 0.25), rel L2 %g (want %g)", td.Name, td.MaxAbsDiff, td.RelL2, wantRel)
			}
		case td.MaxAbsDiff != 0 || td.RelL2 != 0 || td.NormA == 0 || td.NormA != td.NormB:
			t.Errorf("%s: an unchanged tensor: %+v", td.Name, td)
		}
	}

	// Another rank and another module: shapes differ, tensors on one side only.
	cfg := lora.DefaultConfig()
	cfg.R = 2
	cfg.TargetModules = lora.TargetNames("q_proj", "k_proj")
	c, err := lora.New(cfg, []lora.Module{{Name: q, In: 32, Out: 32}, {Name: "model.layers.0.self_attn.k_proj", In: 32, Out: 16}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Save(filepath.Join(work, "c")); err != nil {
		t.Fatal(err)
	}
	d, err = DiffAdapterDirs(filepath.Join(work, "a"), filepath.Join(work, "c"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Tensors) != 2 || d.Tensors[0].SameShape() || d.Tensors[1].SameShape() || len(d.OnlyA) != 2 || len(d.OnlyB) != 2 ||
		!strings.Contains(d.OnlyB[0], "k_proj") {
		t.Errorf("diff against another rank and module: %+v", d)
	}
	var text strings.Builder
	if err := d.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "[4 32] -> [2 32]") || !strings.Contains(text.String(), "target_modules") {
		t.Errorf("text:\n%s", text.String())
	}
	// Backwards, the largest change is the decrease of 0.25.
	if d, err = reg.Diff("sw", "v2", "v1"); err != nil {
		t.Fatal(err)
	}
	for _, td := range d.Tensors {
		if td.Name == nameB && math.Abs(td.MaxAbsDiff-0.25) > 1e-6 {
			t.Errorf("%s, v2 to v1: max |b-a| %g, want 0.25", td.Name, td.MaxAbsDiff)
		}
	}
	if _, err := reg.Diff("sw", "v1", "v7"); err == nil {
		t.Error("diff with a missing version: no error")
	}
}

// A writer that cannot get the lock gives up after the timeout with an
// error naming the lock file and its holder; one that can wait, waits.
func TestRegistryLockTimeout(t *testing.T) {
	work := t.TempDir()
	reg, _ := OpenRegistry(filepath.Join(work, "reg"))
	src := filepath.Join(work, "run")
	writeRegistryAdapter(t, src, 1, 16, 2)
	if _, err := reg.Add("sw", src, VersionMeta{}, true); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(work, "reg", "sw", ".lock")
	// Another open file description: flock excludes it as it would another
	// process.
	unlock, err := lockFile(lock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	reg.LockTimeout = 100 * time.Millisecond
	_, err = reg.Add("sw", src, VersionMeta{}, true)
	if !errors.Is(err, ErrRegistryLocked) || !strings.Contains(err.Error(), "another compass process (pid "+strconv.Itoa(os.Getpid())+") holds "+lock) ||
		!strings.Contains(err.Error(), "waiting 100ms") {
		t.Errorf("add while locked: %v", err)
	}
	if err := reg.Promote("sw", "v1"); !errors.Is(err, ErrRegistryLocked) {
		t.Errorf("promote while locked: %v", err)
	}
	if m, _ := reg.List("sw"); len(m.Versions) != 1 {
		t.Errorf("a refused writer changed the manifest: %+v", m)
	}
	// Reading needs no lock.
	if _, err := reg.Show("sw", "v1"); err != nil {
		t.Error(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		unlock()
	}()
	reg.LockTimeout = time.Minute
	if v, err := reg.Add("sw", src, VersionMeta{}, true); err != nil || v.Version != "v2" {
		t.Errorf("add waiting for the lock: %v %v", v, err)
	}
}

// The child process of the kill and concurrency tests: adds the adapter
// COMPASS_REGISTRY_SRC to COMPASS_REGISTRY_DIR COMPASS_REGISTRY_N times,
// and with COMPASS_REGISTRY_KILL="step:n" kills itself with SIGKILL at the
// n-th time Add reaches step.
func TestRegistryChild(t *testing.T) {
	dir := os.Getenv("COMPASS_REGISTRY_DIR")
	if dir == "" {
		t.Skip("run by TestRegistrySurvivesKill and TestRegistryConcurrentWriters as their child process")
	}
	if kill := os.Getenv("COMPASS_REGISTRY_KILL"); kill != "" {
		step, nth, _ := strings.Cut(kill, ":")
		n, _ := strconv.Atoi(nth)
		registryHook = func(s string) {
			if s == step {
				if n--; n == 0 {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}
	}
	reg, err := OpenRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg.LockTimeout = 2 * time.Minute
	times, _ := strconv.Atoi(os.Getenv("COMPASS_REGISTRY_N"))
	for range max(times, 1) {
		if _, err := reg.Add("sw", os.Getenv("COMPASS_REGISTRY_SRC"), VersionMeta{Note: os.Getenv("COMPASS_REGISTRY_SRC")}, true); err != nil {
			t.Fatal(err)
		}
	}
}

func registryChild(dir, src, kill string, times int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRegistryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COMPASS_REGISTRY_DIR="+dir, "COMPASS_REGISTRY_SRC="+src,
		"COMPASS_REGISTRY_KILL="+kill, fmt.Sprint("COMPASS_REGISTRY_N=", times))
	return cmd
}

// kill -9 of a writer at any step of adding a large adapter (after half
// its files, after the version directory's rename, after the manifest, or
// from outside while it copies): the registry still opens, lists the
// versions it had (or the new one whole), and the next Add succeeds and
// removes what the killed writer left.
func TestRegistrySurvivesKill(t *testing.T) {
	work := t.TempDir()
	small := filepath.Join(work, "small")
	writeRegistryAdapter(t, small, 1, 16, 2)
	large := filepath.Join(work, "large")
	writeRegistryAdapter(t, large, 2, 2048, 512) // 14 MiB of weights
	largeSums := dirSums(t, large)

	for _, kill := range []string{"file copied:1", "file copied:2", "version renamed:1", "manifest written:1", "from outside"} {
		t.Run(kill, func(t *testing.T) {
			dir := filepath.Join(work, strings.NewReplacer(" ", "-", ":", "-").Replace(kill))
			reg, _ := OpenRegistry(dir)
			reg.LockTimeout = 10 * time.Second // the dead writer's lock is gone at once
			if _, err := reg.Add("sw", small, VersionMeta{}, true); err != nil {
				t.Fatal(err)
			}
			cmd := registryChild(dir, large, kill, 1)
			if kill == "from outside" {
				cmd = registryChild(dir, large, "", 1)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// Kill as soon as the version's temporary directory appears:
				// the weights are being copied.
				for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
					if tmps, _ := filepath.Glob(filepath.Join(dir, "sw", "versions", ".tmp-*")); len(tmps) > 0 {
						break
					}
					time.Sleep(time.Millisecond)
				}
				cmd.Process.Kill()
				if cmd.Wait() == nil {
					t.Log("the writer finished before it was killed")
				}
			} else if out, err := cmd.CombinedOutput(); err == nil {
				t.Fatalf("the writer was not killed:\n%s", out)
			}

			link := filepath.Join(dir, "sw", "current")
			linkBefore, _ := os.Readlink(link)
			m, err := reg.List("sw")
			if err != nil {
				t.Fatal(err)
			}
			// The link agrees with the manifest once a reader has looked:
			// what serves from it does not wait for the next writer.
			if got, _ := os.Readlink(link); got != filepath.Join("versions", m.Current) {
				t.Errorf("the current link %s (before the read: %s), the manifest's current %s", got, linkBefore, m.Current)
			}
			switch {
			case kill == "manifest written:1":
				if m.Current != "v2" || len(m.Versions) != 2 {
					t.Errorf("killed after the manifest: current %s of %d versions", m.Current, len(m.Versions))
				}
				if linkBefore != filepath.Join("versions", "v1") {
					t.Errorf("killed after the manifest, before the link: the link was %s", linkBefore)
				}
			case kill != "from outside":
				if m.Current != "v1" || len(m.Versions) != 1 {
					t.Errorf("killed before the manifest: current %s of %d versions", m.Current, len(m.Versions))
				}
			}
			for _, v := range m.Versions {
				if err := reg.Verify("sw", v.Version); err != nil {
					t.Error(err)
				}
			}
			if v, err := reg.Show("sw", ""); err != nil || v.Version != "v1" && !sameSums(v.Files, largeSums) {
				t.Errorf("current after the kill: %+v, %v", v, err)
			}
			if strings.HasPrefix(kill, "file copied") || kill == "version renamed:1" {
				left, _ := os.ReadDir(filepath.Join(dir, "sw", "versions"))
				if len(left) != 2 {
					t.Errorf("the killed writer left %v, expected one leftover beside v1", left)
				}
			}

			next, err := reg.Add("sw", large, VersionMeta{}, true)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprint("v", len(m.Versions)+1); next.Version != want || !sameSums(next.Files, largeSums) {
				t.Errorf("the next add made %s, want %s with the adapter's bytes", next.Version, want)
			}
			if !sameSums(dirSums(t, filepath.Join(dir, "sw", "current")), largeSums) {
				t.Error("the current link does not give the added adapter")
			}
			checkRegistryClean(t, reg, "sw")
		})
	}
}

// Writers in several processes at once: every version lands, with distinct
// names, each parent the version before it, each with its writer's bytes.
func TestRegistryConcurrentWriters(t *testing.T) {
	const writers, times = 4, 3
	work := t.TempDir()
	dir := filepath.Join(work, "reg")
	bySums := map[string]int{} // a writer's adapter -> versions that hold it
	var cmds []*exec.Cmd
	for i := range writers {
		src := filepath.Join(work, fmt.Sprint("run", i))
		writeRegistryAdapter(t, src, uint64(10+i), 64, 4)
		bySums[fmt.Sprint(dirSums(t, src))] = 0
		cmd := registryChild(dir, src, "", times)
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	reg, _ := OpenRegistry(dir)
	m := checkRegistryClean(t, reg, "sw")
	if len(m.Versions) != writers*times || m.Current != fmt.Sprint("v", writers*times) {
		t.Fatalf("%d versions, current %s; want %d", len(m.Versions), m.Current, writers*times)
	}
	for i, v := range m.Versions {
		want := ""
		if i > 0 {
			want = m.Versions[i-1].Version
		}
		if v.Version != fmt.Sprint("v", i+1) || v.Parent != want {
			t.Errorf("version %d is %s with parent %q", i, v.Version, v.Parent)
		}
		key := fmt.Sprint(v.Files)
		if _, ok := bySums[key]; !ok {
			t.Errorf("%s holds no writer's adapter", v.Version)
		}
		bySums[key]++
	}
	for key, n := range bySums {
		if n != times {
			t.Errorf("a writer's adapter is in %d versions, want %d (%s)", n, times, key)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "sw", RegistryManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Error("the manifest is not valid JSON")
	}
}

// A version built on one that is no longer current (two updates of one
// adapter at once: each trained from v1) is refused, and nothing is added.
func TestRegistryBuiltOn(t *testing.T) {
	work := t.TempDir()
	ad := filepath.Join(work, "ad")
	writeRegistryAdapter(t, ad, 1, 16, 2)
	reg, _ := OpenRegistry(filepath.Join(work, "reg"))
	for range 2 {
		if _, err := reg.Add("sw", ad, VersionMeta{}, true); err != nil {
			t.Fatal(err)
		}
	}
	_, err := reg.Add("sw", ad, VersionMeta{BuiltOn: "v1"}, true)
	if !errors.Is(err, ErrRegistryChanged) || !strings.Contains(err.Error(), "built on v1, but v2 became current") {
		t.Errorf("a version built on v1 with v2 current: %v", err)
	}
	if m, _ := reg.List("sw"); len(m.Versions) != 2 || m.Current != "v2" {
		t.Errorf("after the refusal: current %s of %d versions", m.Current, len(m.Versions))
	}
	if v, err := reg.Add("sw", ad, VersionMeta{BuiltOn: "v2"}, true); err != nil || v.Parent != "v2" {
		t.Errorf("a version built on the current one: %+v, %v", v, err)
	}
	checkRegistryClean(t, reg, "sw")
}
