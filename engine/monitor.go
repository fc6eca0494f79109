package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/sampling/drift"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// The ECDA drift monitor: production texts arrive as JSONL, are embedded in
// windows of N, and each window's cluster histogram is compared with the
// adapter's reference (drift.Monitor). A confirmed drift is written
// as a record under the adapter's registry directory.
//
// Layout under --registry DIR for adapter NAME:
//
//	DIR/NAME/drift-reference.json   the clusters and reference counts (drift.Reference)
//	DIR/NAME/drift/*.json           one record per confirmed drift (DriftRecord)

// DefaultMonitorWindow is the default number of texts in a window: with 8
// to 16 clusters it gives 16 or more texts per cluster, enough for the
// chi-square test's approximation.
const DefaultMonitorWindow = 256

// MonitorOptions configure Monitor.
type MonitorOptions struct {
	Registry string // registry directory
	Adapter  string // adapter name in the registry
	Window   int    // texts per window; 0 means DefaultMonitorWindow
	Drift    drift.Options
	Embedder embed.Embedder // the embedder the adapter's clusters were built with

	// Input is read to its end when Watch is empty (e.g. stdin).
	Input io.Reader
	// Watch is a directory whose *.jsonl files are read in name order, each
	// once; a writer should rename a finished file into it. Monitor polls
	// every Poll (default 2s) until ctx is done, or returns after the files
	// present when Once is set.
	Watch string
	Poll  time.Duration
	Once  bool

	Out     io.Writer // one line per window; nil discards
	Version string    // compass's version, recorded in drift records

	// OnDrift, when not nil, is called after each drift record is written,
	// with the record's path and the window's texts (a JSONL file beside
	// it): compass monitor --update starts an update from it.
	OnDrift func(record, texts string) error
}

// DriftRecord is written when drift is confirmed.
type DriftRecord struct {
	Adapter   string        `json:"adapter"`
	Time      time.Time     `json:"time"`
	Version   string        `json:"compass_version"`
	Options   drift.Options `json:"options"`
	Window    drift.Window  `json:"window"`
	Source    string        `json:"source"` // the file (or "stdin") the window ended in
	Reference string        `json:"reference"`
	Texts     string        `json:"texts"` // the window's texts, JSONL {"text"}, beside the record
}

// MonitorResult summarises a Monitor run.
type MonitorResult struct {
	Windows  int      // windows compared
	Records  []string // drift records written
	Leftover int      // texts at the end that did not fill a window
}

// DriftReferencePath is where the reference of adapter name lives.
func DriftReferencePath(registry, name string) string {
	return filepath.Join(registry, name, "drift-reference.json")
}

// SaveDriftReference writes ref atomically as JSON.
func SaveDriftReference(path string, ref *drift.Reference) error {
	if err := ref.Check(); err != nil {
		return fmt.Errorf("save drift reference %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save drift reference: %w", err)
	}
	return writeJSONFile(path, ref)
}

// LoadDriftReference reads and checks a reference written by
// SaveDriftReference.
func LoadDriftReference(path string) (*drift.Reference, error) {
	var ref drift.Reference
	if err := readJSONFile(path, &ref); err != nil {
		return nil, fmt.Errorf("load drift reference: %w", err)
	}
	if err := ref.Check(); err != nil {
		return nil, fmt.Errorf("load drift reference %s: %w", path, err)
	}
	return &ref, nil
}

// Monitor reads production texts and reports drift against the adapter's
// reference, one line per window to o.Out.
func Monitor(ctx context.Context, o MonitorOptions) (*MonitorResult, error) {
	if o.Registry == "" || o.Adapter == "" {
		return nil, fmt.Errorf("monitor: need a registry directory and an adapter name")
	}
	if strings.ContainsAny(o.Adapter, `/\`) || o.Adapter == "." || o.Adapter == ".." {
		return nil, fmt.Errorf("monitor: adapter name %q is not a plain name", o.Adapter)
	}
	if o.Window == 0 {
		o.Window = DefaultMonitorWindow
	}
	if o.Window < 2 {
		return nil, fmt.Errorf("monitor: window of %d texts: want at least 2", o.Window)
	}
	if o.Embedder == nil {
		return nil, fmt.Errorf("monitor: no embedder")
	}
	if o.Watch == "" && o.Input == nil {
		return nil, fmt.Errorf("monitor: no input: give a directory to watch or a reader")
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	refPath := DriftReferencePath(o.Registry, o.Adapter)
	ref, err := LoadDriftReference(refPath)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %w", o.Adapter, err)
	}
	if err := embed.SameEmbedder("the reference "+refPath, ref.Embedder, "the monitor's texts", o.Embedder.Name()); err != nil {
		return nil, fmt.Errorf("monitor %s: %w", o.Adapter, err)
	}
	mon, err := drift.NewMonitor(ref, o.Drift)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %w", o.Adapter, err)
	}
	m := &monitorRun{o: o, ref: ref, refPath: refPath, mon: mon, res: &MonitorResult{}}
	if o.Watch == "" {
		err = m.read(ctx, o.Input, "stdin")
	} else {
		err = m.watch(ctx)
	}
	m.res.Leftover = len(m.texts)
	return m.res, err
}

type monitorRun struct {
	o       MonitorOptions
	ref     *drift.Reference
	refPath string
	mon     *drift.Monitor
	texts   []string
	res     *MonitorResult
}

// watch reads each new *.jsonl file of the directory once, in name order.
func (m *monitorRun) watch(ctx context.Context) error {
	seen := map[string]bool{}
	for {
		names, err := filepath.Glob(filepath.Join(m.o.Watch, "*.jsonl"))
		if err != nil {
			return fmt.Errorf("monitor: watch %s: %w", m.o.Watch, err)
		}
		if st, err := os.Stat(m.o.Watch); err != nil {
			return fmt.Errorf("monitor: watch: %w", err)
		} else if !st.IsDir() {
			return fmt.Errorf("monitor: watch %s: not a directory (files are read from a directory; pipe a single file to standard input)", m.o.Watch)
		}
		slices.Sort(names)
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("monitor: %w", err)
			}
			err = m.read(ctx, f, name)
			f.Close()
			if err != nil {
				return err
			}
		}
		if m.o.Once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.o.Poll):
		}
	}
}

// read takes JSONL records {"text": ...} from r, comparing each full window.
func (m *monitorRun) read(ctx context.Context, r io.Reader, source string) error {
	lines := dataset.NewJSONLines(r, source)
	for lines.Next() {
		var rec struct {
			Text *string `json:"text"`
		}
		if err := lines.Decode(&rec); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
		if rec.Text == nil {
			return fmt.Errorf("monitor: %w", lines.Errorf("no \"text\" field"))
		}
		m.texts = append(m.texts, *rec.Text)
		if len(m.texts) == m.o.Window {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := m.window(source); err != nil {
				return err
			}
			m.texts = m.texts[:0]
		}
	}
	if err := lines.Err(); err != nil {
		return fmt.Errorf("monitor: read %w", err)
	}
	return nil
}

// window embeds and compares the current window and prints its line.
func (m *monitorRun) window(source string) error {
	vecs, err := m.o.Embedder.Embed(m.texts)
	if err != nil {
		return fmt.Errorf("monitor: embed window %d: %w", m.res.Windows, err)
	}
	x, err := matrixOf(vecs)
	if err != nil {
		return fmt.Errorf("monitor: window %d: %w", m.res.Windows, err)
	}
	w, err := m.mon.Observe(x)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	m.res.Windows++
	opts := m.mon.Options()
	fmt.Fprintf(m.o.Out, "window %d: %d texts, JS %.4f (threshold %.4f), chi2 %.1f df %d p %.3g, new region %.1f%%, shifted %d of last %d",
		w.Window, w.Rows, w.JS, opts.Threshold, w.ChiSquare, w.DF, w.PValue, 100*w.NewRegionShare, w.Recent, opts.M)
	if !w.Confirmed {
		fmt.Fprintln(m.o.Out)
		return nil
	}
	rec := DriftRecord{
		Adapter: m.o.Adapter, Time: time.Now().UTC(), Version: m.o.Version, Options: opts,
		Window: *w, Source: source, Reference: m.refPath,
	}
	dir := filepath.Join(m.o.Registry, m.o.Adapter, "drift")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("monitor: drift record: %w", err)
	}
	base := filepath.Join(dir, fmt.Sprintf("drift-%s-w%06d", rec.Time.Format("20060102T150405Z"), w.Window))
	path := base + ".json"
	rec.Texts = base + "-texts.jsonl"
	if err := atomicfile.Write(rec.Texts, func(wr io.Writer) error {
		enc := json.NewEncoder(wr)
		enc.SetEscapeHTML(false)
		for _, text := range m.texts {
			if err := enc.Encode(map[string]string{"text": text}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("monitor: drift window texts: %w", err)
	}
	if err := writeJSONFile(path, rec); err != nil {
		return fmt.Errorf("monitor: drift record: %w", err)
	}
	m.res.Records = append(m.res.Records, path)
	fmt.Fprintf(m.o.Out, ": DRIFT confirmed, record %s\n", path)
	m.mon.Reset() // the next alarm needs fresh evidence
	if m.o.OnDrift != nil {
		if err := m.o.OnDrift(path, rec.Texts); err != nil {
			return fmt.Errorf("monitor: update after %s: %w", path, err)
		}
	}
	return nil
}

// matrixOf copies equal-length vectors into an F32 [n, d] tensor.
func matrixOf(vecs [][]float32) (*tensor.Tensor, error) {
	if len(vecs) == 0 || len(vecs[0]) == 0 {
		return nil, fmt.Errorf("embedder returned no vectors")
	}
	d := len(vecs[0])
	t := tensor.New(tensor.F32, len(vecs), d)
	v := t.F32()
	for i, r := range vecs {
		if len(r) != d {
			return nil, fmt.Errorf("embedder returned vector %d of length %d, vector 0 has %d", i, len(r), d)
		}
		copy(v[i*d:], r)
	}
	return t, nil
}

// BuildDriftReference makes an adapter's reference from the embeddings of
// the usage distribution it was selected for (a file `compass embed` wrote)
// and the centroids of its clusters (`compass cluster`'s centroids.npy).
func BuildDriftReference(usagePath, centroidsPath string, spherical bool, quantile float64) (*drift.Reference, error) {
	usage, err := embed.Load(usagePath, embed.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("drift reference: usage embeddings: %w", err)
	}
	cent, err := embed.ReadNPY(centroidsPath)
	if err != nil {
		return nil, fmt.Errorf("drift reference: centroids: %w", err)
	}
	ref, err := drift.NewReference(usage.Vectors, cent, spherical, quantile)
	if err != nil {
		return nil, fmt.Errorf("drift reference from %s and %s: %w", usagePath, centroidsPath, err)
	}
	ref.Embedder = usage.Embedder
	return ref, nil
}
