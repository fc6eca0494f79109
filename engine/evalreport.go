package engine

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// systemName is how a system appears in tables: "base" or the adapter
// directory's base name.
func systemName(s string) string {
	if s == "base" {
		return s
	}
	return filepath.Base(filepath.Clean(s))
}

// pct formats an accuracy and its stderr in percent.
func pct(m EvalMetric) string {
	if m.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f ± %.1f", 100*m.Acc, 100*m.Stderr)
}

// EvalReport renders report.md: per task, accuracy by language and by
// category for each system, and the paired comparisons. charts names each
// task's PNG (may be nil).
func EvalReport(res *EvalResults, charts map[string]string) string {
	var b strings.Builder
	b.WriteString("# compass eval\n\n")
	fmt.Fprintf(&b, "Model `%s`; systems: %s; languages: %s.\n\n", res.Model, strings.Join(mapStrings(res.Systems, func(s string) string {
		return "`" + systemName(s) + "`"
	}), ", "), strings.Join(res.Langs, ", "))
	b.WriteString("Accuracy in percent ± the standard error of the mean (lm-evaluation-harness's `acc_stderr`; a language pools\n" +
		"the stderrs of the harness's subtasks). Paired differences are the later system's accuracy minus the earlier one's\n" +
		"on the same items, with a 95% bootstrap interval and McNemar's exact p.\n")
	for _, tr := range res.Tasks {
		kind := "multiple choice by log-likelihood (`acc`)"
		if tr.Generative {
			kind = "generative, exact match of the extracted answer"
		}
		fmt.Fprintf(&b, "\n## %s\n\n%d-shot, %s; %d items.", tr.Task, tr.Shots, kind, len(tr.Items))
		if n := skippedTotal(tr.Skipped); n > 0 {
			fmt.Fprintf(&b, " Skipped %d:", n)
			keys := sortedKeys(tr.Skipped)
			for i, k := range keys {
				sep := ","
				if i == len(keys)-1 {
					sep = "."
				}
				fmt.Fprintf(&b, " %s (%d)%s", k, tr.Skipped[k], sep)
			}
		}
		if tr.Truncated > 0 {
			fmt.Fprintf(&b, " Items with requests cut on the left to the model's context, as the harness cuts them: %d.", tr.Truncated)
		}
		b.WriteString("\n\n")
		header := "| language | n |"
		rule := "|---|---:|"
		for _, s := range res.Systems {
			header += " " + systemName(s) + " |"
			rule += "---:|"
		}
		b.WriteString(header + "\n" + rule + "\n")
		rows := append(append([]string{}, mapStrings(res.Langs, func(l string) string { return "lang:" + l })...), "all")
		for _, g := range rows {
			name := strings.TrimPrefix(g, "lang:")
			m0, _ := tr.metric(res.Systems[0], g)
			line := fmt.Sprintf("| %s | %d |", name, m0.N)
			if g == "all" {
				line = fmt.Sprintf("| **all** | %d |", m0.N)
			}
			for _, s := range res.Systems {
				m, _ := tr.metric(s, g)
				line += " " + pct(m) + " |"
			}
			b.WriteString(line + "\n")
		}
		if !tr.Generative {
			b.WriteString("\n`acc_norm` (log-likelihood divided by the choice's length in characters):")
			for i, s := range res.Systems {
				m, _ := tr.metric(s, "all")
				sep := ";"
				if i == len(res.Systems)-1 {
					sep = "."
				}
				fmt.Fprintf(&b, " %s %.1f ± %.1f%s", systemName(s), 100*m.AccNorm, 100*m.NormErr, sep)
			}
			b.WriteString("\n")
		}
		// Categories; and for the long-context tasks, whose subjects are
		// (variant, length, depth), a row per subject (MMLU's 57 subjects
		// stay in results.json).
		tables := []struct{ prefix, title string }{{"category:", "category (all languages)"}}
		if tr.Task == "niah" || tr.Task == "cwe" {
			tables = append(tables, struct{ prefix, title string }{"subject:", "variant / length / depth (all languages)"})
		}
		for _, tb := range tables {
			var groups []string
			for _, m := range tr.Metrics {
				if m.System == res.Systems[0] && strings.HasPrefix(m.Group, tb.prefix) {
					groups = append(groups, m.Group)
				}
			}
			if len(groups) == 0 {
				continue
			}
			fmt.Fprintf(&b, "\n| %s | n |", tb.title)
			for _, s := range res.Systems {
				b.WriteString(" " + systemName(s) + " |")
			}
			b.WriteString("\n|---|---:|" + strings.Repeat("---:|", len(res.Systems)) + "\n")
			for _, g := range groups {
				m0, _ := tr.metric(res.Systems[0], g)
				fmt.Fprintf(&b, "| %s | %d |", strings.TrimPrefix(g, tb.prefix), m0.N)
				for _, s := range res.Systems {
					m, _ := tr.metric(s, g)
					b.WriteString(" " + pct(m) + " |")
				}
				b.WriteString("\n")
			}
		}
		if len(tr.Paired) > 0 {
			b.WriteString("\n| comparison | n | difference | 95% interval | only first right | only second right | McNemar p |\n")
			b.WriteString("|---|---:|---:|---|---:|---:|---:|\n")
			for _, c := range tr.Paired {
				fmt.Fprintf(&b, "| %s → %s | %d | %+.1f | [%+.1f, %+.1f] | %d | %d | %.3g |\n", systemName(c.A), systemName(c.B), c.N,
					100*c.Diff, 100*c.Low, 100*c.High, c.OnlyA, c.OnlyB, c.McNemarP)
			}
		}
		if name := charts[tr.Task]; name != "" {
			fmt.Fprintf(&b, "\n![%s accuracy by language](%s)\n", tr.Task, name)
		}
	}
	return b.String()
}

func mapStrings(xs []string, f func(string) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func skippedTotal(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// evalColors are the bars' colors, one per system (matplotlib's tab10).
var evalColors = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255},
}

// errBars are error bars at data coordinates.
type errBars struct {
	plotter.XYs
	plotter.YErrors
}

// writeEvalChart draws accuracy by language, one bar per system, with
// the standard error as error bars.
func writeEvalChart(path string, tr *EvalTaskResult, res *EvalResults) error {
	p := plot.New()
	p.Title.Text = "compass eval: " + tr.Task
	p.Y.Label.Text = "accuracy (%)"
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = true
	labels := append(append([]string{}, res.Langs...), "all")
	groups := append(mapStrings(res.Langs, func(l string) string { return "lang:" + l }), "all")
	for si, s := range res.Systems {
		values, errs := make([]float64, len(groups)), make([]float64, len(groups))
		for gi, g := range groups {
			m, _ := tr.metric(s, g)
			values[gi], errs[gi] = m.Acc, m.Stderr
		}
		first, err := addBarSeries(p, si, len(res.Systems), values, errs)
		if err != nil {
			return fmt.Errorf("eval: chart: %w", err)
		}
		p.Legend.Add(systemName(s), first)
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(len(labels))-0.4
	wt, err := p.WriterTo(vg.Length(max(6, 1.2*float64(len(labels))))*vg.Inch, 4*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("eval: chart: %w", err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}

// addBarSeries draws series number si of n side by side over the groups
// 0..len(values)-1: one bar per group at 100 x value (a share, in
// percent), with a +-100 x errs error bar, in the series' colour. It
// returns the first bar, for the legend.
func addBarSeries(p *plot.Plot, si, n int, values, errs []float64) (*plotter.Polygon, error) {
	width := 0.8 / float64(max(1, n))
	var bars []*plotter.Polygon
	eb := errBars{}
	for gi, v := range values {
		x0 := float64(gi) - 0.4 + float64(si)*width
		y := 100 * v
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: 0}, {X: x0 + width, Y: 0}, {X: x0 + width, Y: y}, {X: x0, Y: y}})
		if err != nil {
			return nil, err
		}
		poly.Color = evalColors[si%len(evalColors)]
		poly.LineStyle.Width = 0
		bars = append(bars, poly)
		eb.XYs = append(eb.XYs, plotter.XY{X: x0 + width/2, Y: y})
		eb.YErrors = append(eb.YErrors, struct{ Low, High float64 }{100 * errs[gi], 100 * errs[gi]})
	}
	for _, poly := range bars {
		p.Add(poly)
	}
	e, err := plotter.NewYErrorBars(eb)
	if err != nil {
		return nil, err
	}
	p.Add(e)
	return bars[0], nil
}
