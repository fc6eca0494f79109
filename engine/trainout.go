package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

const metricsName = "metrics.jsonl"

// openMetrics opens OUTPUT/metrics.jsonl for appending. When resuming, the
// lines of steps after the checkpoint (written before the run stopped) are
// dropped first, so that the file reads as one uninterrupted run.
func (r *trainRun) openMetrics() error {
	path := filepath.Join(r.opts.Output, metricsName)
	if r.state.Step > 0 {
		if err := truncateMetrics(path, r.state.Step); err != nil {
			return fmt.Errorf("train: %s: %w", path, err)
		}
	} else if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("train: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	r.metrics = f
	return nil
}

// truncateMetrics rewrites path keeping the lines of steps <= step; a torn
// last line (a crash mid-write) is dropped too.
func truncateMetrics(path string, step int) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var keep bytes.Buffer
	lines := dataset.NewJSONLines(bytes.NewReader(data), path)
	for lines.Next() {
		var rec struct {
			Step *int `json:"step"`
		}
		if lines.Decode(&rec) != nil || rec.Step == nil || *rec.Step > step {
			continue
		}
		keep.Write(lines.Bytes())
		keep.WriteByte('\n')
	}
	if err := lines.Err(); err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, keep.Bytes())
}

// writeMetric appends one JSON line to metrics.jsonl.
func (r *trainRun) writeMetric(rec map[string]any) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("train: metrics: %w", err)
	}
	if _, err := r.metrics.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("train: metrics: %w", err)
	}
	return nil
}

// readMetrics returns the train and eval losses of metrics.jsonl by step.
func readMetrics(path string) (train, eval plotter.XYs, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	lines := dataset.NewJSONLines(f, path)
	for lines.Next() {
		var rec struct {
			Type     string  `json:"type"`
			Step     int     `json:"step"`
			Loss     float64 `json:"loss"`
			EvalLoss float64 `json:"eval_loss"`
		}
		if lines.Decode(&rec) != nil {
			continue
		}
		switch rec.Type {
		case "train":
			train = append(train, plotter.XY{X: float64(rec.Step), Y: rec.Loss})
		case "eval":
			eval = append(eval, plotter.XY{X: float64(rec.Step), Y: rec.EvalLoss})
		}
	}
	return train, eval, lines.Err()
}

// plot draws OUTPUT/loss.png: the training loss of every step and the
// held-out loss of every evaluation, against the step.
func (r *trainRun) plot() error {
	train, eval, err := readMetrics(filepath.Join(r.opts.Output, metricsName))
	if err != nil {
		return fmt.Errorf("train: loss.png: %w", err)
	}
	p := plot.New()
	p.Title.Text = "compass train: loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss (mean -log p per target token)"
	p.Legend.Top = true
	if len(train) > 0 {
		l, err := plotter.NewLine(train)
		if err != nil {
			return fmt.Errorf("train: loss.png: %w", err)
		}
		l.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		p.Add(l)
		p.Legend.Add("train", l)
	}
	if len(eval) > 0 {
		l, pts, err := plotter.NewLinePoints(eval)
		if err != nil {
			return fmt.Errorf("train: loss.png: %w", err)
		}
		l.Color, pts.Color = color.RGBA{R: 214, G: 39, B: 40, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255}
		p.Add(l, pts)
		p.Legend.Add("eval", l, pts)
	}
	wt, err := p.WriterTo(8*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("train: loss.png: %w", err)
	}
	return atomicfile.Write(filepath.Join(r.opts.Output, "loss.png"), func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}

// trainProgress redraws one status line: step/total, loss, lr, tokens/s,
// ETA and, on a GPU, device memory.
type trainProgress struct {
	w     io.Writer
	total int
	mem   func() (int64, bool)
	last  time.Time
	drawn bool
	width int
}

func newTrainProgress(w io.Writer, total int, mem func() (int64, bool)) *trainProgress {
	return &trainProgress{w: w, total: total, mem: mem}
}

func (p *trainProgress) update(step int, loss, lr, tokPerSec, secPerStep float64) {
	if p.w == nil || (time.Since(p.last) < 200*time.Millisecond && step < p.total) {
		return
	}
	p.last = time.Now()
	eta := time.Duration(float64(p.total-step) * secPerStep * float64(time.Second)).Round(time.Second)
	line := fmt.Sprintf("step %d/%d  loss %.4f  lr %.3g  %.0f tok/s  ETA %s", step, p.total, loss, lr, tokPerSec, eta)
	if p.mem != nil {
		if used, ok := p.mem(); ok {
			line += fmt.Sprintf("  mem %.1f GiB", float64(used)/(1<<30))
		}
	}
	pad := max(0, p.width-len(line))
	fmt.Fprintf(p.w, "\r%s%*s", line, pad, "")
	p.width, p.drawn = len(line), true
}

// clear ends the progress line so that what follows starts on its own.
func (p *trainProgress) clear() {
	if p.w != nil && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// dataProgress redraws "train: tokenizing --data: 37% of 2 files" while
// the data loads: minutes of silence for a file of gigabytes otherwise.
type dataProgress struct {
	w     io.Writer
	what  string
	last  time.Time
	drawn bool
}

func newDataProgress(w io.Writer, what string) *dataProgress {
	return &dataProgress{w: w, what: what}
}

// update is LoadExamples's DataOptions.Progress.
func (p *dataProgress) update(done, total float64) {
	if p.w == nil || total <= 0 || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	files := "1 file"
	if total > 1 {
		files = fmt.Sprintf("%.0f files", total)
	}
	fmt.Fprintf(p.w, "\rtrain: tokenizing %s: %3.0f%% of %s", p.what, 100*done/total, files)
	p.drawn = true
}

// clear ends the line so that what follows starts on its own.
func (p *dataProgress) clear() {
	if p.w != nil && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// Summary is the line printed at the end of a run.
func (r *TrainResult) Summary() string {
	s := fmt.Sprintf("trained %d steps (%d this run), %d tokens in %.1fs, %.0f tokens/s, last loss %.4f",
		r.Steps, r.StepsThis, r.Tokens, r.Seconds, r.TokensPerSec, r.LastLoss)
	if !math.IsNaN(r.BestEvalLoss) {
		s += fmt.Sprintf(", best eval loss %.4f at step %d", r.BestEvalLoss, r.BestStep)
	}
	if r.PeakBytes > 0 {
		s += fmt.Sprintf(", peak device memory %.2f GiB", float64(r.PeakBytes)/(1<<30))
	}
	return s
}
