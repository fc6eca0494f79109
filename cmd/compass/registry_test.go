package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/lora"
)

// writeTinyAdapter saves a random rank-2 adapter on one q_proj of width 8.
func writeTinyAdapter(t *testing.T, dir string, seed uint64, alpha float64) {
	t.Helper()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha, cfg.InitLoraWeights = 2, alpha, false
	cfg.TargetModules = lora.TargetNames("q_proj")
	a, err := lora.New(cfg, []lora.Module{{Name: "model.layers.0.self_attn.q_proj", In: 8, Out: 8}}, seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryCommand(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	for i, alpha := range []float64{4, 8} {
		writeTinyAdapter(t, filepath.Join(dir, fmt.Sprint("run", i)), uint64(i+1), alpha)
	}
	selection := filepath.Join(dir, "selection.jsonl")
	if err := os.WriteFile(selection, []byte(`{"row": 0, "id": "a"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "drift.json")
	if err := os.WriteFile(record, []byte(`{"adapter": "sw", "window": {"window": 5, "js": 0.137, "p_value": 5.95e-41, "confirmed": true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	registry := func(args ...string) string {
		t.Helper()
		args = append([]string{"registry", args[0], "--registry", reg}, args[1:]...)
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}

	out := registry("add", "--adapter", "sw", "--eval", "acc=0.41,bleu=12.5", "--note", "first", "--selection", selection, filepath.Join(dir, "run0"))
	if out != "added sw v1 (parent none, trigger initial); current v1\n" {
		t.Errorf("add: %q", out)
	}
	out = registry("add", "--adapter", "sw", "--drift-record", record, filepath.Join(dir, "run1"))
	if out != "added sw v2 (parent v1, trigger drift js=0.1370 p=5.95e-41 window=5); current v2\n" {
		t.Errorf("add after drift: %q", out)
	}
	out = registry("list", "--adapter", "sw")
	t.Logf("list:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "adapter sw: 2 versions, current v2" || !strings.HasPrefix(lines[2], "   v1       -") ||
		!strings.HasSuffix(lines[2], "acc=0.41 bleu=12.5  first") || !strings.HasPrefix(lines[3], "*  v2       v1") || !strings.HasSuffix(lines[3], "window=5  -") {
		t.Errorf("list:\n%s", out)
	}
	var m engine.RegistryManifest
	if err := json.Unmarshal([]byte(registry("list", "--adapter", "sw", "--json")), &m); err != nil || m.Current != "v2" || len(m.Versions) != 2 {
		t.Errorf("list --json: %+v, %v", m, err)
	}
	if out := registry("list"); out != "sw\n" {
		t.Errorf("list of adapters: %q", out)
	}

	sum, _ := engine.FileSHA256(selection)
	out = registry("show", "--adapter", "sw", "v1")
	t.Logf("show:\n%s", out)
	for _, want := range []string{"version          v1\n", "data selection   " + sum, "eval             acc=0.41 bleu=12.5", "files match"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out = registry("diff", "--adapter", "sw", "v1", "v2")
	t.Logf("diff:\n%s", out)
	if !strings.Contains(out, "config: 1 keys differ\n  lora_alpha  4 -> 8") || !strings.Contains(out, "tensors: 2 in both (2 differ)") {
		t.Errorf("diff:\n%s", out)
	}
	var d engine.AdapterDiff
	if err := json.Unmarshal([]byte(registry("diff", "--adapter", "sw", "--json", "v1", "v2")), &d); err != nil || len(d.Tensors) != 2 || d.Tensors[0].RelL2 == 0 {
		t.Errorf("diff --json: %+v, %v", d, err)
	}

	if out := registry("rollback", "--adapter", "sw"); out != "sw: rolled back to v1\n" {
		t.Errorf("rollback: %q", out)
	}
	if out := registry("show", "--adapter", "sw"); !strings.Contains(out, "v1 (current)") {
		t.Errorf("show after rollback:\n%s", out)
	}
	for _, f := range []string{lora.ConfigName, lora.WeightsName} {
		a, _ := os.ReadFile(filepath.Join(dir, "run0", f))
		b, err := os.ReadFile(filepath.Join(reg, "sw", "current", f))
		if err != nil || string(a) != string(b) {
			t.Errorf("%s after rollback differs from the one added (%v)", f, err)
		}
	}
	if out := registry("promote", "--adapter", "sw", "v2"); out != "sw: current v2\n" {
		t.Errorf("promote: %q", out)
	}

	// Bad input: an error that says what is wrong, and the registry unchanged.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "--adapter", "sw", "--eval", "acc"}, "want ADAPTER_DIR"},
		{[]string{"add", "--adapter", "sw", "--eval", "acc=high", filepath.Join(dir, "run0")}, "--eval \"acc=high\""},
		{[]string{"add", "--adapter", "sw", filepath.Join(dir, "nothing")}, "no such file"},
		{[]string{"add", "--adapter", "sw", "--drift-record", selection, filepath.Join(dir, "run0")}, "drift record"},
		{[]string{"promote", "--adapter", "sw", "v3"}, `no version "v3"`},
		{[]string{"show", "--adapter", "fr"}, "no versions of adapter \"fr\""},
		{[]string{"diff", "--adapter", "sw", "v1"}, "want VERSION_A VERSION_B"},
		{[]string{"rollback", "--adapter", "sw", "v1"}, `registry rollback: takes no arguments (flags only), got ["v1"]`},
		{[]string{"add", "--adapter", "sw", "--eval", "acc=0.1", "--eval", "acc=0.5", filepath.Join(dir, "run0")}, "--eval acc is given twice"},
		{[]string{"promote", "--adapter", "sw", "--lock-timeout", "0s", "v1"}, "--lock-timeout 0s: want a positive duration"},
	} {
		args := append([]string{"registry", tc.args[0], "--registry", reg}, tc.args[1:]...)
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}

	// Another process holds the lock: the writer gives up after --lock-timeout.
	lock := filepath.Join(reg, "sw", ".lock")
	f, err := os.OpenFile(lock, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = run(t, "registry", "rollback", "--registry", reg, "--adapter", "sw", "--lock-timeout", "50ms")
	if err == nil || !strings.Contains(err.Error(), "another compass process") || !strings.Contains(err.Error(), lock) {
		t.Errorf("rollback while locked: %v", err)
	}
	if err := json.Unmarshal([]byte(registry("list", "--adapter", "sw", "--json")), &m); err != nil || m.Current != "v2" || len(m.Versions) != 2 {
		t.Errorf("after the refused writes: %+v, %v", m, err)
	}
}
