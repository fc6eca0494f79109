package engine

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/sampling/selection"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

// AdaptReport is report.json of `compass adapt`.
type AdaptReport struct {
	Version   string          `json:"version"`
	Model     string          `json:"model"` // embed.ModelSignature of the checkpoint
	Methods   []string        `json:"methods"`
	Seeds     []uint64        `json:"seeds"`
	Budget    int             `json:"budget"`
	Languages []AdaptLanguage `json:"languages"`
	Steps     []AdaptStep     `json:"steps"`
}

// AdaptLanguage is one target language's results.
type AdaptLanguage struct {
	Language   string                    `json:"language"`
	Tasks      []AdaptTask               `json:"tasks"`
	Selections []AdaptSelection          `json:"selections"`
	Gaps       []selection.ClusterReport `json:"gaps,omitempty"` // COMPASS's cluster table, first seed
	GapSeed    uint64                    `json:"gap_seed,omitempty"`
}

// AdaptTask is one evaluation task in one language.
type AdaptTask struct {
	Task   string        `json:"task"`
	Scores []AdaptScore  `json:"scores"` // one per method
	Paired []AdaptPaired `json:"paired"` // every pair of methods
}

// AdaptScore is a method's accuracy over items and seeds.
type AdaptScore struct {
	Method  string    `json:"method"`
	Items   int       `json:"items"`
	Mean    float64   `json:"mean"`     // over items and seeds
	Stderr  float64   `json:"stderr"`   // of the mean, over items of their seed-averaged score
	PerSeed []float64 `json:"per_seed"` // in the order of the seeds
}

// AdaptPaired is the difference B - A of two methods on the same items and
// seeds.
type AdaptPaired struct {
	A          string  `json:"a"`
	B          string  `json:"b"`
	Diff       float64 `json:"diff"`
	Low        float64 `json:"low"`  // 95% bootstrap interval over items
	High       float64 `json:"high"` //
	P          float64 `json:"p"`    // two-sided permutation test over items (their seed-averaged differences)
	Items      int     `json:"items"`
	Seeds      int     `json:"seeds"`
	Bootstraps int     `json:"bootstraps"`
	Perms      int     `json:"permutations"`
}

// AdaptSelection says what one method selected for one seed.
type AdaptSelection struct {
	Method     string         `json:"method"`
	Seed       uint64         `json:"seed"`
	Selected   int            `json:"selected"`
	ByLanguage map[string]int `json:"by_language"`
	K          int            `json:"k,omitempty"`
	ByCluster  map[int]int    `json:"by_cluster,omitempty"`
}

// report gathers the scores and selections of every cell.
func (r *adaptRun) report(steps []AdaptStep) (*AdaptReport, error) {
	rep := &AdaptReport{Version: r.env.Version, Model: r.sig, Methods: r.cfg.Methods, Seeds: r.cfg.Seeds,
		Budget: r.cfg.Budget, Steps: steps}
	nBoot, nPerm := cmp.Or(r.cfg.Bootstrap, 10000), cmp.Or(r.cfg.Permutations, 10000)
	for _, t := range r.cfg.Targets {
		lang, _ := dataset.NormalizeLanguage(t.Language)
		lr := AdaptLanguage{Language: lang}
		// scores[method][task][seed] = item scores by id
		scores := map[string]map[string][]map[string]float64{}
		for _, c := range r.cells {
			if c.lang != lang {
				continue
			}
			var sc evalScores
			if err := readJSONFile(filepath.Join(c.eval.dir, "scores.json"), &sc); err != nil {
				return nil, err
			}
			if scores[c.method] == nil {
				scores[c.method] = map[string][]map[string]float64{}
			}
			for task, items := range sc {
				byID := map[string]float64{}
				for _, it := range items {
					byID[it.ID] = it.Acc
				}
				scores[c.method][task] = append(scores[c.method][task], byID)
			}
			if c.sel != nil {
				var sr selection.Report
				if err := readJSONFile(filepath.Join(c.sel.dir, "selection", "report.json"), &sr); err != nil {
					return nil, err
				}
				s := AdaptSelection{Method: c.method, Seed: c.seed, Selected: sr.Selected, ByLanguage: sr.ByLanguage, K: sr.K}
				if c.method == "all" {
					s.Seed = 0
				}
				if len(sr.Clusters) > 0 {
					s.ByCluster = map[int]int{}
					for _, cl := range sr.Clusters {
						if cl.Picked > 0 {
							s.ByCluster[cl.Cluster] = cl.Picked
						}
					}
					if lr.Gaps == nil {
						lr.Gaps, lr.GapSeed = sr.Clusters, c.seed
					}
				}
				if c.method != "all" || !slices.ContainsFunc(lr.Selections, func(x AdaptSelection) bool { return x.Method == "all" }) {
					lr.Selections = append(lr.Selections, s)
				}
			}
		}
		tasks := slices.Clone(r.cfg.Eval.Tasks)
		if t.Heldout != "" {
			tasks = append(tasks, HeldoutTask)
		}
		for _, task := range tasks {
			tr := AdaptTask{Task: task}
			for _, m := range r.cfg.Methods {
				tr.Scores = append(tr.Scores, scoreOf(m, scores[m][task]))
			}
			for i, a := range r.cfg.Methods {
				for _, b := range r.cfg.Methods[i+1:] {
					p := comparePairedSeeds(scores[a][task], scores[b][task], nBoot, nPerm, 1)
					p.A, p.B = a, b
					tr.Paired = append(tr.Paired, p)
				}
			}
			lr.Tasks = append(lr.Tasks, tr)
		}
		rep.Languages = append(rep.Languages, lr)
	}
	return rep, nil
}

// itemIDs returns the ids every seed scored, sorted.
func itemIDs(seeds ...[]map[string]float64) []string {
	count := map[string]int{}
	total := 0
	for _, ss := range seeds {
		for _, s := range ss {
			total++
			for id := range s {
				count[id]++
			}
		}
	}
	var ids []string
	for id, n := range count {
		if n == total {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// scoreOf averages a method's item scores over items and seeds.
func scoreOf(method string, seeds []map[string]float64) AdaptScore {
	s := AdaptScore{Method: method}
	ids := itemIDs(seeds)
	s.Items = len(ids)
	if len(ids) == 0 {
		return s
	}
	avg := make([]float64, len(ids))
	for _, sc := range seeds {
		sum := 0.0
		for i, id := range ids {
			sum += sc[id]
			avg[i] += sc[id] / float64(len(seeds))
		}
		s.PerSeed = append(s.PerSeed, sum/float64(len(ids)))
	}
	for _, v := range avg {
		s.Mean += v
	}
	s.Mean /= float64(len(ids))
	if n := len(ids); n > 1 {
		ss := 0.0
		for _, v := range avg {
			ss += (v - s.Mean) * (v - s.Mean)
		}
		s.Stderr = math.Sqrt(ss / float64(n-1) / float64(n))
	}
	return s
}

// comparePairedSeeds compares b with a on the items both scored, seed by
// seed (a method with one score set, the base model, is paired with every
// seed of the other). Both the interval and the test take the item as
// their unit, through its seed-averaged difference: the interval resamples
// items, and the permutation test flips the sign of each item's difference
// at random, which is exact under the null hypothesis that on each item
// the two methods are exchangeable. (Flipping each (seed, item) pair on
// its own, as it did before, counted the base model's one score on an item
// as many independent observations as there are seeds: one item that
// every seed got right gave p = 0.002 with ten seeds.)
func comparePairedSeeds(a, b []map[string]float64, nBoot, nPerm int, seed uint64) AdaptPaired {
	p := AdaptPaired{P: 1, Bootstraps: nBoot, Perms: nPerm}
	ids := itemIDs(a, b)
	nSeeds := max(len(a), len(b))
	if len(ids) == 0 || len(a) == 0 || len(b) == 0 {
		return p
	}
	p.Items, p.Seeds = len(ids), nSeeds
	d := make([]float64, 0, nSeeds*len(ids)) // by seed, then item
	for s := range nSeeds {
		sa, sb := a[min(s, len(a)-1)], b[min(s, len(b)-1)]
		for _, id := range ids {
			d = append(d, sb[id]-sa[id])
		}
	}
	obs := 0.0
	for _, v := range d {
		obs += v
	}
	p.Diff = obs / float64(len(d))
	item := make([]float64, len(ids)) // each item's seed-averaged difference
	for s := range nSeeds {
		for i := range ids {
			item[i] += d[s*len(ids)+i] / float64(nSeeds)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x61646170742d7374))
	if nBoot > 0 {
		means := make([]float64, nBoot)
		for r := range means {
			sum := 0.0
			for range item {
				sum += item[rng.IntN(len(item))]
			}
			means[r] = sum / float64(len(item))
		}
		slices.Sort(means)
		p.Low, p.High = percentile(means, 0.025), percentile(means, 0.975)
	}
	if nPerm > 0 {
		// Items without a difference flip to themselves: only the others
		// count.
		var nz []float64
		total := 0.0
		for _, v := range item {
			if v != 0 {
				nz = append(nz, v)
			}
			total += v
		}
		hits := 0
		for range nPerm {
			sum := 0.0
			var bits uint64
			for i, v := range nz {
				if i%64 == 0 {
					bits = rng.Uint64()
				}
				if bits&1 == 1 {
					v = -v
				}
				bits >>= 1
				sum += v
			}
			// A small slack: sums of the same values in another order.
			if math.Abs(sum) >= math.Abs(total)-1e-9 {
				hits++
			}
		}
		p.P = float64(hits+1) / float64(nPerm+1)
	}
	return p
}

// writeAdaptReport writes report.json, report.md and one chart per
// language into dir, each atomically.
func writeAdaptReport(dir string, rep *AdaptReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adapt: report: %w", err)
	}
	if err := writeJSONFile(filepath.Join(dir, "report.json"), rep); err != nil {
		return err
	}
	var md bytes.Buffer
	rep.WriteMarkdown(&md)
	if err := atomicfile.WriteBytes(filepath.Join(dir, "report.md"), md.Bytes()); err != nil {
		return fmt.Errorf("adapt: report: %w", err)
	}
	for _, l := range rep.Languages {
		if err := writeAdaptChart(filepath.Join(dir, "scores-"+l.Language+".png"), l); err != nil {
			return err
		}
	}
	return nil
}

// WriteMarkdown writes the report as Markdown tables.
func (rep *AdaptReport) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "# compass adapt\n\ncompass %s; model %s\n\n", rep.Version, rep.Model)
	seeds := make([]string, len(rep.Seeds))
	for i, s := range rep.Seeds {
		seeds[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(w, "Methods %s; budget %d pool items; seeds %s.\n", strings.Join(rep.Methods, ", "), rep.Budget, strings.Join(seeds, ", "))
	for _, l := range rep.Languages {
		fmt.Fprintf(w, "\n## %s\n", l.Language)
		for _, t := range l.Tasks {
			// Accuracies in percent; the held-out NLL in nats per token.
			metric, scale, f := "accuracy (%)", 100.0, "%.1f"
			if t.Task == HeldoutTask {
				metric, scale, f = "NLL per token (nats; lower is better)", 1, "%.3f"
			}
			fmt.Fprintf(w, "\n### %s\n\n| method | %s | ± stderr | items | per seed |\n|---|---:|---:|---:|---|\n", t.Task, metric)
			for _, s := range t.Scores {
				per := make([]string, len(s.PerSeed))
				for i, v := range s.PerSeed {
					per[i] = fmt.Sprintf(f, scale*v)
				}
				fmt.Fprintf(w, "| %s | "+f+" | "+f+" | %d | %s |\n", s.Method, scale*s.Mean, scale*s.Stderr, s.Items, strings.Join(per, ", "))
			}
			if len(t.Paired) > 0 {
				fmt.Fprintf(w, "\nPaired differences (B - A; 95%% bootstrap interval over items; permutation p over items):\n\n| A | B | diff | 95%% interval | p |\n|---|---|---:|---|---:|\n")
				g := strings.Replace(f, "%", "%+", 1)
				for _, p := range t.Paired {
					fmt.Fprintf(w, "| %s | %s | "+g+" | ["+g+", "+g+"] | %.3g |\n", p.A, p.B, scale*p.Diff, scale*p.Low, scale*p.High, p.P)
				}
			}
		}
		if len(l.Selections) > 0 {
			fmt.Fprintf(w, "\n### What each method selected\n\n| method | seed | selected | K | by language | by cluster |\n|---|---:|---:|---:|---|---|\n")
			for _, s := range l.Selections {
				k := ""
				if s.K > 0 {
					k = fmt.Sprint(s.K)
				}
				fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s |\n", s.Method, s.Seed, s.Selected, k, countsOf(s.ByLanguage), clusterCounts(s.ByCluster))
			}
		}
		if len(l.Gaps) > 0 {
			fmt.Fprintf(w, "\n### COMPASS's clusters (seed %d)\n\n| cluster | E_t | D_t | pool | p_E | p_D | gap | picked |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n", l.GapSeed)
			for _, c := range l.Gaps {
				fmt.Fprintf(w, "| %d | %d | %d | %d | %.3f | %.3f | %.3f | %d |\n", c.Cluster, c.Usage, c.Have, c.Pool, c.PUsage, c.PHave, c.Gap, c.Picked)
			}
		}
		fmt.Fprintf(w, "\n![scores](scores-%s.png)\n", l.Language)
	}
	fmt.Fprintf(w, "\n## Steps\n\n| step | on | reused | seconds | tokens | peak memory |\n|---|---|---|---:|---:|---:|\n")
	for _, s := range rep.Steps {
		mem := ""
		if s.Cost.PeakBytes > 0 {
			mem = fmt.Sprintf("%.1f MiB", float64(s.Cost.PeakBytes)/(1<<20))
		}
		fmt.Fprintf(w, "| %s | %s | %v | %.1f | %d | %s |\n", s.Kind, s.Name, s.Reused, s.Cost.Seconds, s.Cost.Tokens, mem)
	}
}

// countsOf writes "fr 3, en 2", the largest first.
func countsOf(m map[string]int) string {
	type kc struct {
		k string
		n int
	}
	var kcs []kc
	for k, n := range m {
		kcs = append(kcs, kc{k, n})
	}
	slices.SortFunc(kcs, func(a, b kc) int { return cmp.Or(b.n-a.n, strings.Compare(a.k, b.k)) })
	parts := make([]string, len(kcs))
	for i, x := range kcs {
		parts[i] = fmt.Sprintf("%s %d", x.k, x.n)
	}
	return strings.Join(parts, ", ")
}

func clusterCounts(m map[int]int) string {
	s := map[string]int{}
	for k, n := range m {
		s[fmt.Sprintf("#%d", k)] = n
	}
	return countsOf(s)
}

// writeAdaptChart draws each method's accuracy per task, with the
// standard error as error bars.
func writeAdaptChart(path string, l AdaptLanguage) error {
	p := plot.New()
	p.Title.Text = "compass adapt: " + l.Language
	p.Y.Label.Text = "accuracy (%)"
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = true
	// Accuracies only: the held-out NLL is on another scale.
	l.Tasks = slices.DeleteFunc(slices.Clone(l.Tasks), func(t AdaptTask) bool { return t.Task == HeldoutTask })
	if len(l.Tasks) == 0 {
		return nil
	}
	methods := len(l.Tasks[0].Scores)
	for mi := range methods {
		values, errs := make([]float64, len(l.Tasks)), make([]float64, len(l.Tasks))
		for ti, t := range l.Tasks {
			values[ti], errs[ti] = t.Scores[mi].Mean, t.Scores[mi].Stderr
		}
		first, err := addBarSeries(p, mi, methods, values, errs)
		if err != nil {
			return fmt.Errorf("adapt: chart: %w", err)
		}
		p.Legend.Add(l.Tasks[0].Scores[mi].Method, first)
	}
	names := make([]string, len(l.Tasks))
	for i, t := range l.Tasks {
		names[i] = t.Task
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	wt, err := p.WriterTo(vg.Length(max(5, 1.5*float64(len(names)*max(1, methods))))*vg.Inch, 4*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("adapt: chart: %w", err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}
