package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/drift"
	"github.com/compassml/compass/tensor"
)

// topicEmbedder maps "topic J ..." to 4*e_J plus unit noise seeded by the
// text, so a stream's cluster histogram is its mix of topics.
type topicEmbedder struct{ k int }

func (e topicEmbedder) Name() string { return "topics" }

func (e topicEmbedder) Embed(texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, s := range texts {
		var j int
		if _, err := fmt.Sscanf(s, "topic %d", &j); err != nil || j < 0 || j >= e.k {
			return nil, fmt.Errorf("text %d: %q has no topic", i, s)
		}
		h := fnv.New64a()
		h.Write([]byte(s))
		rng := rand.New(rand.NewPCG(h.Sum64(), 1))
		v := make([]float32, e.k)
		for c := range v {
			v[c] = float32(rng.NormFloat64())
		}
		v[j] += 4
		out[i] = v
	}
	return out, nil
}

// topicStream writes n JSONL texts whose topic is 0 with probability p0 and
// uniform over the others otherwise.
func topicStream(rng *rand.Rand, k, n int, p0 float64, tag string) string {
	var b strings.Builder
	for i := range n {
		j := 1 + rng.IntN(k-1)
		if rng.Float64() < p0 {
			j = 0
		}
		line, _ := json.Marshal(map[string]string{"text": fmt.Sprintf("topic %d %s-%d", j, tag, i)})
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func monitorRegistry(t *testing.T, k int, rng *rand.Rand) string {
	t.Helper()
	dir := t.TempDir()
	e := topicEmbedder{k: k}
	var texts []string
	for _, l := range strings.Split(strings.TrimSpace(topicStream(rng, k, 2000, 1/float64(k), "ref")), "\n") {
		var r struct{ Text string }
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, r.Text)
	}
	vecs, err := e.Embed(texts)
	if err != nil {
		t.Fatal(err)
	}
	x, err := matrixOf(vecs)
	if err != nil {
		t.Fatal(err)
	}
	cent := tensor.New(tensor.F32, k, k)
	for j := 0; j < k; j++ {
		cent.F32()[j*k+j] = 4
	}
	ref, err := drift.NewReference(x, cent, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveDriftReference(DriftReferencePath(dir, "sw"), ref); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Four stationary windows then four where topic 0 takes half the traffic:
// no record before the shift, exactly one once two shifted windows are in.
func TestMonitorStdinConfirmsDrift(t *testing.T) {
	const k, window = 8, 200
	rng := rand.New(rand.NewPCG(11, 12))
	reg := monitorRegistry(t, k, rng)
	input := topicStream(rng, k, 4*window, 1/float64(k), "a") + topicStream(rng, k, 4*window+50, 0.5, "b")
	var out bytes.Buffer
	res, err := Monitor(context.Background(), MonitorOptions{
		Registry: reg, Adapter: "sw", Window: window, Embedder: topicEmbedder{k: k},
		Input: strings.NewReader(input), Out: &out, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("monitor output:\n%s", out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if res.Windows != 8 || len(lines) != 8 || res.Leftover != 50 {
		t.Fatalf("%d windows, %d lines, %d left over; want 8, 8, 50", res.Windows, len(lines), res.Leftover)
	}
	for i, l := range lines[:5] {
		if strings.Contains(l, "DRIFT") {
			t.Errorf("line %d: drift before two shifted windows: %s", i, l)
		}
	}
	if !strings.Contains(lines[5], "DRIFT confirmed") {
		t.Errorf("line 5 (second shifted window): no confirmation: %s", lines[5])
	}
	// After a confirmation the rule starts afresh: window 6 alone cannot
	// confirm, window 7 (the second after the reset) does.
	if len(res.Records) != 2 {
		t.Fatalf("%d drift records, want 2 (windows 5 and 7): %v", len(res.Records), res.Records)
	}
	var rec DriftRecord
	if err := readJSONFile(res.Records[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Adapter != "sw" || rec.Window.Window != 5 || !rec.Window.Confirmed || rec.Window.JS <= rec.Options.Threshold || rec.Version != "test" {
		t.Errorf("record %+v", rec)
	}
}

// A watched directory's files are read in name order, windows spanning files.
func TestMonitorWatchDirectory(t *testing.T) {
	const k, window = 8, 100
	rng := rand.New(rand.NewPCG(13, 14))
	reg := monitorRegistry(t, k, rng)
	watch := t.TempDir()
	for i, p0 := range []float64{0.125, 0.125, 0.6, 0.6} {
		name := filepath.Join(watch, fmt.Sprintf("batch-%02d.jsonl", i))
		if err := os.WriteFile(name, []byte(topicStream(rng, k, 150, p0, fmt.Sprint(i))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(watch, "notes.txt"), []byte("not jsonl"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := Monitor(context.Background(), MonitorOptions{
		Registry: reg, Adapter: "sw", Window: window, Embedder: topicEmbedder{k: k},
		Watch: watch, Once: true, Out: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("monitor output:\n%s", out.String())
	if res.Windows != 6 || res.Leftover != 0 {
		t.Errorf("%d windows, %d left over; want 6 and 0", res.Windows, res.Leftover)
	}
	if len(res.Records) != 1 {
		t.Fatalf("%d drift records, want 1", len(res.Records))
	}
	// The record names the file its window ended in: window w (from 0)
	// ends with text (w+1) x 100 of the stream, 150 texts a file.
	var rec DriftRecord
	if err := readJSONFile(res.Records[0], &rec); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(watch, fmt.Sprintf("batch-%02d.jsonl", ((rec.Window.Window+1)*window-1)/150))
	if rec.Source != want {
		t.Errorf("window %d: source %s, want %s", rec.Window.Window, rec.Source, want)
	}
}

func TestMonitorBadInput(t *testing.T) {
	const k = 8
	reg := monitorRegistry(t, k, rand.New(rand.NewPCG(15, 16)))
	base := MonitorOptions{Registry: reg, Adapter: "sw", Window: 10, Embedder: topicEmbedder{k: k}}
	cases := map[string]func(o *MonitorOptions){
		"unknown adapter": func(o *MonitorOptions) { o.Adapter = "yo"; o.Input = strings.NewReader("") },
		"path as adapter": func(o *MonitorOptions) { o.Adapter = "../sw"; o.Input = strings.NewReader("") },
		"no input":        func(o *MonitorOptions) {},
		"bad json":        func(o *MonitorOptions) { o.Input = strings.NewReader("{\"text\": \"topic 1\"}\n{oops\n") },
		"no text field":   func(o *MonitorOptions) { o.Input = strings.NewReader("{\"body\": \"topic 1\"}\n") },
		"window of one":   func(o *MonitorOptions) { o.Window = 1; o.Input = strings.NewReader("") },
		"bad threshold":   func(o *MonitorOptions) { o.Drift.Threshold = 3; o.Input = strings.NewReader("") },
		"missing watch":   func(o *MonitorOptions) { o.Watch = filepath.Join(reg, "nope"); o.Once = true },
		"watch a file":    func(o *MonitorOptions) { o.Watch = DriftReferencePath(reg, "sw"); o.Once = true },
	}
	for name, edit := range cases {
		o := base
		edit(&o)
		if _, err := Monitor(context.Background(), o); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// A reference built from another embedder's vectors is refused: its
// clusters mean nothing to the monitor's (a false drift otherwise).
func TestMonitorRefusesAnotherEmbedder(t *testing.T) {
	const k = 8
	reg := monitorRegistry(t, k, rand.New(rand.NewPCG(15, 16)))
	path := DriftReferencePath(reg, "sw")
	ref, err := LoadDriftReference(path)
	if err != nil {
		t.Fatal(err)
	}
	o := MonitorOptions{Registry: reg, Adapter: "sw", Window: 10, Embedder: topicEmbedder{k: k}}
	for _, c := range []struct {
		embedder string
		ok       bool
	}{{"topics", true}, {"model:/data/other#3333333333333333;pool=mean;maxlen=512", false}} {
		ref.Embedder = c.embedder
		if err := SaveDriftReference(path, ref); err != nil {
			t.Fatal(err)
		}
		o.Input = strings.NewReader("")
		_, err := Monitor(context.Background(), o)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "not comparable")) {
			t.Errorf("reference embedded by %q: %v", c.embedder, err)
		}
	}
}
