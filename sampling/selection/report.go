package selection

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/sampling/cluster"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Report explains a selection: what was selected, from which languages
// and, for COMPASS, from which clusters and why.
type Report struct {
	Method   string `json:"method"` // compass, random, langsim or all
	Target   string `json:"target"` // ISO 639-3
	Budget   int    `json:"budget"`
	Selected int    `json:"selected"`
	Pool     int    `json:"pool"`     // pool rows
	Eligible int    `json:"eligible"` // pool rows that could be selected

	// COMPASS only.
	K          int              `json:"k,omitempty"`
	Silhouette float64          `json:"silhouette,omitempty"`
	Inertia    float64          `json:"inertia,omitempty"`
	KScores    []cluster.KScore `json:"k_scores,omitempty"` // when K was chosen by silhouette
	Clusters   []ClusterReport  `json:"clusters,omitempty"`

	// LangSim only: the auxiliary languages, nearest first, and how many
	// of them were used.
	Languages     []RankedLanguage `json:"languages,omitempty"`
	LanguagesUsed int              `json:"languages_used,omitempty"`

	ByLanguage map[string]int    `json:"by_language"` // picks by source language
	Options    map[string]string `json:"options"`
	Notes      []string          `json:"notes,omitempty"`
}

// ClusterReport is one cluster's row of the COMPASS report.
type ClusterReport struct {
	Cluster    int            `json:"cluster"`
	Usage      int            `json:"usage"`   // items of E_t in the cluster
	Have       int            `json:"have"`    // items of D_t
	Pool       int            `json:"pool"`    // eligible pool items
	PUsage     float64        `json:"p_e"`     // p_E(k)
	PHave      float64        `json:"p_d"`     // p_D(k)
	Gap        float64        `json:"gap"`     // g_k
	Share      float64        `json:"share"`   // planned share of the budget, g_k^(1/T) normalised
	Planned    int            `json:"planned"` // items allocated before language caps and fills
	Picked     int            `json:"picked"`
	ByLanguage map[string]int `json:"by_language"`
}

// finish fills the totals of a report from the picks.
func (r *Report) finish(picks []Pick) {
	r.Selected = len(picks)
	r.ByLanguage = map[string]int{}
	for _, p := range picks {
		r.ByLanguage[p.Language]++
	}
}

// optionsSummary records the options a selection ran with.
func optionsSummary(o Options) map[string]string {
	k := fmt.Sprint(o.K)
	if o.K == 0 {
		k = fmt.Sprintf("silhouette over %d:%d step %d", o.KMin, o.KMax, o.KStep)
	}
	return map[string]string{
		"k": k, "spherical": fmt.Sprint(o.KMeans.Spherical), "n_init": fmt.Sprint(max(1, o.KMeans.NInit)),
		"cluster": string(o.Cluster), "gap": string(o.Gap), "epsilon": fmt.Sprint(o.Epsilon),
		"smoothing": fmt.Sprint(o.Smoothing), "temperature": fmt.Sprint(o.Temperature),
		"within": string(o.Within), "language_cap": fmt.Sprint(o.LanguageCap),
		"language_share": fmt.Sprint(o.LanguageShare), "include_target": fmt.Sprint(o.IncludeTarget),
		"seed": fmt.Sprint(o.Seed),
	}
}

// WriteManifest writes the picks as JSONL, one {"id", "language", "cluster",
// "score", "reason"} object a line (plus "row", the pool row), atomically.
func WriteManifest(path string, picks []Pick) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, p := range picks {
			if err := enc.Encode(p); err != nil {
				return err
			}
		}
		return nil
	})
}

// WriteReport writes report.md (Markdown tables), report.json and a PNG bar
// chart into dir, each atomically: clusters.png (p_E, p_D and the share of
// picks per cluster) for COMPASS, languages.png (picks per language)
// otherwise.
func WriteReport(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "report.json"), append(js, '\n')); err != nil {
		return err
	}
	var md bytes.Buffer
	r.WriteMarkdown(&md)
	if err := atomicfile.WriteBytes(filepath.Join(dir, "report.md"), md.Bytes()); err != nil {
		return err
	}
	name, png, err := r.chart()
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, name), png)
}

// WriteMarkdown writes the report as Markdown: a summary, the per-cluster
// table (COMPASS) or the language ranking (LangSim), and picks by language.
func (r *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "# Selection for %s: %s\n\n", r.Target, r.Method)
	fmt.Fprintf(w, "Selected %d of a budget of %d from %d eligible pool items (%d in the pool).\n\n", r.Selected, r.Budget, r.Eligible, r.Pool)
	if r.Method == "compass" {
		fmt.Fprintf(w, "K = %d clusters, silhouette %.4f, inertia %.6g.\n\n", r.K, r.Silhouette, r.Inertia)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
	}
	if len(r.KScores) > 0 {
		fmt.Fprintf(w, "## Choice of K\n\n| K | silhouette | inertia |\n|---:|---:|---:|\n")
		for _, s := range r.KScores {
			fmt.Fprintf(w, "| %d | %.4f | %.6g |\n", s.K, s.Silhouette, s.Inertia)
		}
		fmt.Fprintln(w)
	}
	if len(r.Clusters) > 0 {
		fmt.Fprintf(w, "## Clusters (largest gap first)\n\n")
		fmt.Fprintf(w, "| cluster | E_t | D_t | pool | p_E | p_D | gap | share | planned | picked | picks by language |\n")
		fmt.Fprintf(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		rows := slices.Clone(r.Clusters)
		slices.SortStableFunc(rows, func(a, b ClusterReport) int { return cmp.Compare(b.Gap, a.Gap) })
		for _, c := range rows {
			fmt.Fprintf(w, "| %d | %d | %d | %d | %.4f | %.4f | %.4f | %.4f | %d | %d | %s |\n",
				c.Cluster, c.Usage, c.Have, c.Pool, c.PUsage, c.PHave, c.Gap, c.Share, c.Planned, c.Picked, countsString(c.ByLanguage))
		}
		fmt.Fprintln(w)
	}
	if len(r.Languages) > 0 {
		fmt.Fprintf(w, "## Auxiliary languages by distance to %s (the first %d used)\n\n| rank | language | name | distance |\n|---:|---|---|---:|\n", r.Target, r.LanguagesUsed)
		for i, l := range r.Languages {
			fmt.Fprintf(w, "| %d | %s | %s | %.4f |\n", i+1, l.Language, l.Name, l.Distance)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "## Picks by language\n\n| language | picks |\n|---|---:|\n")
	for _, kv := range sortedCounts(r.ByLanguage) {
		fmt.Fprintf(w, "| %s | %d |\n", kv.key, kv.n)
	}
	fmt.Fprintf(w, "\n## Options\n\n")
	keys := make([]string, 0, len(r.Options))
	for k := range r.Options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "- %s: %s\n", k, r.Options[k])
	}
}

type keyCount struct {
	key string
	n   int
}

// sortedCounts orders counts largest first, ties by key.
func sortedCounts(m map[string]int) []keyCount {
	var kv []keyCount
	for k, n := range m {
		kv = append(kv, keyCount{k, n})
	}
	slices.SortFunc(kv, func(a, b keyCount) int {
		if a.n != b.n {
			return cmp.Compare(b.n, a.n)
		}
		return strings.Compare(a.key, b.key)
	})
	return kv
}

func countsString(m map[string]int) string {
	var parts []string
	for _, kv := range sortedCounts(m) {
		parts = append(parts, fmt.Sprintf("%s %d", kv.key, kv.n))
	}
	return strings.Join(parts, ", ")
}

// chart draws the report's bar chart as PNG.
func (r *Report) chart() (name string, png []byte, err error) {
	p := plot.New()
	p.Legend.Top = true
	if len(r.Clusters) > 0 {
		name = "clusters.png"
		p.Title.Text = fmt.Sprintf("COMPASS for %s: cluster shares (clusters by gap)", r.Target)
		p.Y.Label.Text = "share"
		rows := slices.Clone(r.Clusters)
		slices.SortStableFunc(rows, func(a, b ClusterReport) int { return cmp.Compare(b.Gap, a.Gap) })
		pe, pd, pk := make(plotter.Values, len(rows)), make(plotter.Values, len(rows)), make(plotter.Values, len(rows))
		labels := make([]string, len(rows))
		for i, c := range rows {
			pe[i], pd[i] = c.PUsage, c.PHave
			if r.Selected > 0 {
				pk[i] = float64(c.Picked) / float64(r.Selected)
			}
			labels[i] = fmt.Sprint(c.Cluster)
		}
		w := vg.Points(max(1, min(24, 600/float64(3*len(rows)))))
		for i, s := range []struct {
			v     plotter.Values
			label string
			c     color.RGBA
		}{{pe, "p_E (target usage)", color.RGBA{R: 214, G: 39, B: 40, A: 255}},
			{pd, "p_D (target data)", color.RGBA{R: 31, G: 119, B: 180, A: 255}},
			{pk, "share of picks", color.RGBA{R: 44, G: 160, B: 44, A: 255}}} {
			bars, err := plotter.NewBarChart(s.v, w)
			if err != nil {
				return "", nil, err
			}
			bars.LineStyle.Width = 0
			bars.Color = s.c
			bars.Offset = vg.Length(i-1) * w
			p.Add(bars)
			p.Legend.Add(s.label, bars)
		}
		p.X.Label.Text = "cluster, largest gap first"
		if len(rows) <= 40 {
			p.NominalX(labels...)
		}
	} else {
		name = "languages.png"
		p.Title.Text = fmt.Sprintf("%s for %s: picks by language", r.Method, r.Target)
		p.Y.Label.Text = "picks"
		kv := sortedCounts(r.ByLanguage)
		v := make(plotter.Values, len(kv))
		labels := make([]string, len(kv))
		for i, c := range kv {
			v[i], labels[i] = float64(c.n), c.key
		}
		if len(v) == 0 {
			v, labels = plotter.Values{0}, []string{"none"}
		}
		bars, err := plotter.NewBarChart(v, vg.Points(max(2, min(20, 600/float64(len(v))))))
		if err != nil {
			return "", nil, err
		}
		bars.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		p.Add(bars)
		p.NominalX(labels...)
	}
	wt, err := p.WriterTo(10*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return "", nil, err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return "", nil, err
	}
	return name, buf.Bytes(), nil
}
