package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The demo's ECDA half on the tiny model: v1 registered, the monitor's
// reference built from a mix of two kinds of text, a stationary window of
// the same mix, then windows of one kind only: the drift is confirmed and
// the update registers v2, triggered by the drift record.
func TestECDADemoDetectsAndUpdates(t *testing.T) {
	path, _ := adaptFixture(t)
	cfg := readAdapt(t, path)
	dir := filepath.Dir(path)
	o := cfg.Train
	o.Model, o.Data, o.Output = cfg.path(cfg.Model), []string{filepath.Join(dir, "data.jsonl")}, filepath.Join(dir, "v1")
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	lines := func(name string, kinds ...string) string {
		var b strings.Builder
		for i := range 20 {
			for _, k := range kinds {
				fmt.Fprintf(&b, `{"text":"%s %d"}`+"\n", k, i)
			}
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := "aaaa bbbb aaaa bbbb aaaa", "1234 5678 9012 3456"
	reference := lines("reference.jsonl", a, b)
	stationary := lines("stationary.jsonl", a, b) // one window of 40
	shifted := lines("shifted.jsonl", a, a, a, a) // 80 texts of one kind: windows 1 and 2

	var out bytes.Buffer
	res, err := ECDADemo(context.Background(), ECDADemoOptions{
		Update: cfg, AdapterV1: o.Output, Name: "sw", Reference: reference, K: 2,
		Stream: []string{stationary, shifted}, Window: 40, WorkDir: filepath.Join(dir, "ecda"), Out: &out,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(res.Updates) != 1 {
		t.Fatalf("%d updates, want 1:\n%s", len(res.Updates), out.String())
	}
	for _, want := range []string{"window 0:", "DRIFT confirmed", "update: sw v2 now serves (parent v1)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(strings.SplitN(out.String(), "\n", 2)[0], "shifted 0 of") {
		t.Errorf("the stationary window shifted:\n%s", out.String())
	}
	reg, err := OpenRegistry(res.Registry)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := reg.Show("sw", "")
	if err != nil {
		t.Fatal(err)
	}
	if cur.Version != "v2" || cur.Trigger.Kind != TriggerDrift {
		t.Errorf("current version %s, trigger %+v; want v2 triggered by drift", cur.Version, cur.Trigger)
	}
}
