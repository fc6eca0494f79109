package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/compassml/compass/internal/atomicfile"
)

// writeContinualReport writes report.json, report.md and continual.png
// into dir.
func writeContinualReport(dir string, rep *ContinualReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("continual: report: %w", err)
	}
	data, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		return fmt.Errorf("continual: report: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "report.json"), func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	}); err != nil {
		return fmt.Errorf("continual: report: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "report.md"), func(w io.Writer) error {
		rep.WriteMarkdown(w)
		return nil
	}); err != nil {
		return fmt.Errorf("continual: report: %w", err)
	}
	return writeContinualChart(filepath.Join(dir, "continual.png"), rep)
}

// WriteMarkdown writes the forgetting table and, per strategy, the score
// matrix.
func (rep *ContinualReport) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "# compass continual\n\n")
	fmt.Fprintf(w, "Held-out NLL per token (lower is better) on each period's evaluation text, after training\n"+
		"through the last period (%s). Forgetting: the mean, over the earlier periods, of the NLL on that\n"+
		"period's text after the last period minus right after its own (positive: forgotten).\n\n", rep.Periods[len(rep.Periods)-1])
	fmt.Fprintf(w, "| strategy | %s | mean | forgetting |\n|---|%s---|---|\n", strings.Join(rep.Periods, " | "), strings.Repeat("---|", len(rep.Periods)))
	fmt.Fprintf(w, "| base model | %s | %.4f | |\n", joinScores(rep.Base), mean(rep.Base))
	for _, s := range rep.Strategies {
		fmt.Fprintf(w, "| %s | %s | %.4f | %+.4f |\n", s.Strategy, joinScores(s.Final), s.MeanFinal, s.Forgetting)
	}
	fmt.Fprintf(w, "\nStrategies: naive continues the previous adapter on the new data; replay adds a replay\n"+
		"buffer of earlier data; ewc adds the EWC penalty around the previous adapter; ecda both (COMPASS-ECDA's\n"+
		"update); retrain trains a new adapter on all data so far.\n")
	for _, s := range rep.Strategies {
		fmt.Fprintf(w, "\n## %s: NLL after each period (rows) on each period's text (columns)\n\n", s.Strategy)
		fmt.Fprintf(w, "| after | %s |\n|---|%s\n", strings.Join(rep.Periods, " | "), strings.Repeat("---|", len(rep.Periods)))
		for i, row := range s.After {
			fmt.Fprintf(w, "| %s | %s |\n", rep.Periods[i], joinScores(row))
		}
	}
	fmt.Fprintf(w, "\nSettings: ")
	var keys []string
	for k, v := range rep.Settings {
		keys = append(keys, fmt.Sprintf("%s %v", k, v))
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "%s. compass %s.\n", strings.Join(keys, ", "), rep.Version)
}

func joinScores(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.4f", x)
	}
	return strings.Join(parts, " | ")
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(max(1, len(v)))
}

// writeContinualChart draws, per strategy, the NLL on each period's text
// after the last period (the base model's as a reference).
func writeContinualChart(path string, rep *ContinualReport) error {
	p := plot.New()
	p.Title.Text = "compass continual: after the last period"
	p.X.Label.Text = "evaluation text of period"
	p.Y.Label.Text = "held-out NLL per token"
	p.Legend.Top = true
	series := append([]ContinualStrategyR{{Strategy: "base model", Final: rep.Base}}, rep.Strategies...)
	for si, s := range series {
		xys := make(plotter.XYs, len(s.Final))
		for j, v := range s.Final {
			xys[j] = plotter.XY{X: float64(j), Y: v}
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("continual: chart: %w", err)
		}
		c := evalColors[si%len(evalColors)]
		line.Color, points.Color = c, c
		if si == 0 {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(line, points)
		p.Legend.Add(s.Strategy, line, points)
	}
	p.NominalX(rep.Periods...)
	wt, err := p.WriterTo(vg.Length(max(5, 1.2*float64(len(rep.Periods))))*vg.Inch, 4*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("continual: chart: %w", err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}
