package selection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/tensor"
)

// planted is a data set where the under-served clusters are known: 8
// topics (directions in 16 dimensions); the target (Swahili) uses all 8
// evenly, but its own data covers topics 0-4 only. The pool holds every
// topic, but the languages closest to Swahili (Bantu ones) only hold
// topics 0-4; topics 5-7 are in English, French, Hindi and Japanese. The
// pool also holds Swahili items, which are not auxiliary data.
type planted struct {
	in    Input
	topic []int // topic of each pool row
}

const plantedDim = 16

func newPlanted(seed uint64) planted {
	rng := rand.New(rand.NewPCG(seed, 99))
	point := func(topic int) []float32 {
		v := make([]float32, plantedDim)
		for j := range v {
			v[j] = float32(rng.NormFloat64() * 0.6)
		}
		v[topic] += 5
		v[8+topic%8] += 2 // a second coordinate, so topics are not axis-aligned
		return v
	}
	var usage, have, pool [][]float32
	for i := 0; i < 240; i++ {
		usage = append(usage, point(i%8))
	}
	for i := 0; i < 500; i++ {
		have = append(have, point(i%5))
	}
	p := planted{}
	near := []string{"zu", "xh", "ny", "rw"}
	far := []string{"en", "fr", "hi", "ja"}
	for i := 0; i < 4000; i++ {
		topic := rng.IntN(8)
		lang := near[rng.IntN(len(near))]
		if topic >= 5 {
			lang = far[rng.IntN(len(far))]
		}
		pool = append(pool, point(topic))
		p.topic = append(p.topic, topic)
		p.in.Items = append(p.in.Items, Item{ID: fmt.Sprintf("aux-%d", i), Language: lang})
	}
	for i := 0; i < 200; i++ { // Swahili items in the gap topics: not auxiliary
		topic := 5 + i%3
		pool = append(pool, point(topic))
		p.topic = append(p.topic, topic)
		p.in.Items = append(p.in.Items, Item{ID: fmt.Sprintf("sw-%d", i), Language: "swa"})
	}
	p.in.Target = "sw"
	p.in.Usage, _ = cluster.NewMatrix(usage)
	p.in.Have, _ = cluster.NewMatrix(have)
	p.in.Pool, _ = cluster.NewMatrix(pool)
	return p
}

// gapShare is the share of picks from topics 5-7.
func (p planted) gapShare(picks []Pick) float64 {
	n := 0
	for _, pk := range picks {
		if p.topic[pk.Row] >= 5 {
			n++
		}
	}
	return float64(n) / float64(len(picks))
}

// minGapShare is the share of picks from the under-served topics required
// with options other than the defaults (the gap formula, within-cluster
// choice, temperature, K chosen by silhouette...): the lowest seen is 0.99
// (GapRatio).
const minGapShare = 0.97

func plantedOptions() Options {
	o := DefaultOptions(300)
	o.K = 8
	o.KMeans.NInit = 3
	o.Seed = 42
	return o
}

func TestCompassSelectsUnderServedClusters(t *testing.T) {
	p := newPlanted(1)
	sel, err := Select(p.in, plantedOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.Picks) != 300 {
		t.Fatalf("%d picks", len(sel.Picks))
	}
	// Every pick: the gap clusters hold 1500 auxiliary rows, five times the
	// budget, so no pick has a reason to come from elsewhere.
	seen := map[int]bool{}
	for _, pk := range sel.Picks {
		if p.topic[pk.Row] < 5 {
			t.Errorf("pick %+v is from topic %d, which the target's data already covers", pk, p.topic[pk.Row])
		}
		if pk.Language == "swa" {
			t.Fatalf("picked a target-language item: %+v", pk)
		}
		if seen[pk.Row] {
			t.Fatalf("row %d picked twice", pk.Row)
		}
		seen[pk.Row] = true
		if pk.ID != p.in.Items[pk.Row].ID || pk.Reason == "" || !strings.Contains(pk.Reason, "under-served") {
			t.Fatalf("pick %+v", pk)
		}
	}
	// The report: three clusters with a positive gap got everything.
	rep := sel.Report
	positive, picked := 0, 0
	for _, c := range rep.Clusters {
		if c.Gap > 0.05 {
			positive++
			picked += c.Picked
			if c.PHave > 0.01 || math.Abs(c.PUsage-0.125) > 0.01 {
				t.Errorf("cluster %+v", c)
			}
		}
	}
	if positive != 3 || picked != 300 || rep.K != 8 || rep.Selected != 300 || rep.Eligible != 4000 {
		t.Errorf("%d clusters with a gap hold %d picks; report %+v", positive, picked, rep)
	}
	// The shares are the unsmoothed counts over their totals (Smoothing is
	// GapSmoothed's alone), the gap is max(0, p_E - p_D), and the planned
	// shares of the budget sum to 1.
	usageN, haveN := 0, 0
	for _, c := range rep.Clusters {
		usageN += c.Usage
		haveN += c.Have
	}
	shareSum := 0.0
	for _, c := range rep.Clusters {
		pE, pD := float64(c.Usage)/float64(usageN), float64(c.Have)/float64(haveN)
		if math.Abs(c.PUsage-pE) > 1e-12 || math.Abs(c.PHave-pD) > 1e-12 || math.Abs(c.Gap-max(0, pE-pD)) > 1e-12 {
			t.Errorf("cluster %d: p_E %v, p_D %v, gap %v; want %v, %v, %v", c.Cluster, c.PUsage, c.PHave, c.Gap, pE, pD, max(0, pE-pD))
		}
		shareSum += c.Share
	}
	if math.Abs(shareSum-1) > 1e-12 {
		t.Errorf("the clusters' planned shares sum to %v, want 1", shareSum)
	}

	// The baselines, with the same budget, do not.
	bo := BaselineOptions{Budget: 300, Seed: 42}
	random, err := Random(p.in, bo)
	if err != nil {
		t.Fatal(err)
	}
	if s := p.gapShare(random.Picks); s > 0.6 || len(random.Picks) != 300 {
		t.Errorf("random: %.2f from the under-served topics (%d picks)", s, len(random.Picks))
	}
	ls, err := LangSim(p.in, bo)
	if err != nil {
		t.Fatal(err)
	}
	if s := p.gapShare(ls.Picks); s > 0.1 || len(ls.Picks) != 300 {
		t.Errorf("langsim: %.2f from the under-served topics (%d picks)", s, len(ls.Picks))
	}
	for _, l := range ls.Report.Languages[:ls.Report.LanguagesUsed] {
		if !slices.Contains([]string{"zul", "xho", "nya", "kin"}, l.ISO3) {
			t.Errorf("langsim used %+v; want the Bantu languages first", l)
		}
	}
	t.Logf("share of picks from the under-served topics: compass %.3f, random %.3f, langsim %.3f",
		p.gapShare(sel.Picks), p.gapShare(random.Picks), p.gapShare(ls.Picks))
	all, err := AllData(p.in, bo)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Picks) != 4000 || len(all.Report.Notes) == 0 {
		t.Errorf("all: %d picks, notes %v", len(all.Picks), all.Report.Notes)
	}
}

// The ranking reads the pool and usage rows from the stacked, normalised
// copy that was clustered: every pick's score is the cosine of its own
// pool row (as the caller gave it) with some usage row, and the caller's
// matrices are left as they were.
func TestCompassScoresAreThePoolRows(t *testing.T) {
	p := newPlanted(3)
	before := map[string][]float32{"usage": slices.Clone(p.in.Usage.F32()), "pool": slices.Clone(p.in.Pool.F32()), "have": slices.Clone(p.in.Have.F32())}
	sel, err := Select(p.in, plantedOptions())
	if err != nil {
		t.Fatal(err)
	}
	for name, x := range map[string]*tensor.Tensor{"usage": p.in.Usage, "pool": p.in.Pool, "have": p.in.Have} {
		if !slices.Equal(x.F32(), before[name]) {
			t.Errorf("Select changed the caller's %s matrix", name)
		}
	}
	unit := func(v []float32) []float64 {
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		u := make([]float64, len(v))
		for i, x := range v {
			u[i] = float64(x) / math.Sqrt(n)
		}
		return u
	}
	d := plantedDim
	usage, pool := before["usage"], before["pool"]
	for _, pk := range sel.Picks {
		row := unit(pool[pk.Row*d : (pk.Row+1)*d])
		best := math.Inf(1)
		for i := 0; i < len(usage)/d; i++ {
			var cos float64
			for j, x := range unit(usage[i*d : (i+1)*d]) {
				cos += x * row[j]
			}
			best = min(best, math.Abs(cos-pk.Score))
		}
		if best > 1e-5 {
			t.Fatalf("pick %+v: its score is no usage row's cosine with pool row %d (nearest off by %.3g)", pk, pk.Row, best)
		}
	}
}

// A clustering given is used as it is (every pick in the cluster it puts
// the pick's pool row), and one that does not fit the rows is an error.
func TestCompassGivenClustering(t *testing.T) {
	p := newPlanted(4)
	nu, np, nh := p.in.Usage.Dim(0), p.in.Pool.Dim(0), p.in.Have.Dim(0)
	stacked := slices.Concat(p.in.Usage.F32(), p.in.Pool.F32(), p.in.Have.F32())
	x, err := tensor.FromF32(stacked, nu+np+nh, plantedDim)
	if err != nil {
		t.Fatal(err)
	}
	km := cluster.DefaultKMeansOptions(8)
	km.Spherical, km.Seed = true, 5
	given, err := cluster.KMeans(x, km)
	if err != nil {
		t.Fatal(err)
	}
	o := plantedOptions()
	o.K = 3 // unused: the clustering given has 8
	o.Clustering = given
	sel, err := Select(p.in, o)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Report.K != 8 || sel.Report.Inertia != given.Inertia {
		t.Errorf("report K %d, inertia %v; the clustering given has 8 and %v", sel.Report.K, sel.Report.Inertia, given.Inertia)
	}
	for _, pk := range sel.Picks {
		if want := int(given.Labels[nu+pk.Row]); pk.Cluster != want {
			t.Fatalf("pick %+v in cluster %d; the clustering given puts pool row %d in %d", pk, pk.Cluster, pk.Row, want)
		}
	}
	short := *given
	short.Labels = given.Labels[1:]
	outside := *given
	outside.Labels = slices.Clone(given.Labels)
	outside.Labels[7] = 8
	narrow := *given
	narrow.Centroids = tensor.New(tensor.F32, 8, plantedDim-1)
	for name, c := range map[string]*cluster.KMeansResult{"a label short": &short, "a label outside": &outside, "centroids too narrow": &narrow} {
		o.Clustering = c
		if _, err := Select(p.in, o); err == nil || !strings.Contains(err.Error(), "clustering given") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// With the rows given stacked, Select clusters them where they are: the
// same picks as from a copy, for both cluster sets, and the caller's
// matrix is the one normalised. Rows that are not the stacked matrix's,
// in order, are an error.
func TestCompassStackedInPlace(t *testing.T) {
	for _, set := range []ClusterSet{ClusterAll, ClusterUsagePool} {
		p := newPlanted(5)
		o := plantedOptions()
		o.Cluster = set
		want, err := Select(p.in, o)
		if err != nil {
			t.Fatal(err)
		}
		nu, np, nh := p.in.Usage.Dim(0), p.in.Pool.Dim(0), p.in.Have.Dim(0)
		stacked := slices.Concat(p.in.Usage.F32(), p.in.Pool.F32(), p.in.Have.F32())
		x, err := tensor.FromF32(stacked, nu+np+nh, plantedDim)
		if err != nil {
			t.Fatal(err)
		}
		view := func(lo, hi int) *tensor.Tensor {
			v, err := x.Slice(lo, hi)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		in := p.in
		in.Usage, in.Pool, in.Have, in.Stacked = view(0, nu), view(nu, nu+np), view(nu+np, nu+np+nh), x
		got, err := Select(in, o)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Picks, want.Picks) {
			t.Errorf("%s: the stacked rows gave other picks than a copy of them", set)
		}
		clustered := nu + np
		if set == ClusterAll {
			clustered += nh
		}
		for i := 0; i < nu+np+nh; i++ {
			var n float64
			for _, v := range stacked[i*plantedDim : (i+1)*plantedDim] {
				n += float64(v) * float64(v)
			}
			if unit := math.Abs(n-1) < 1e-5; unit != (i < clustered) {
				t.Fatalf("%s: row %d of the stacked matrix has squared norm %v; only the %d clustered rows are normalised in place", set, i, n, clustered)
			}
		}

		in.Usage, in.Pool = in.Pool, in.Usage
		in.Items = in.Items[:nu]
		if nu == np {
			t.Fatal("the planted usage and pool have as many rows")
		}
		if _, err := Select(in, o); err == nil || !strings.Contains(err.Error(), "are not the stacked rows") {
			t.Errorf("%s: usage and pool swapped: %v", set, err)
		}
	}
	p := newPlanted(5)
	in := p.in
	in.Stacked = tensor.New(tensor.F32, 3, plantedDim)
	if _, err := Select(in, plantedOptions()); err == nil || !strings.Contains(err.Error(), "stacked rows are") {
		t.Errorf("a stacked matrix of 3 rows: %v", err)
	}
	in.Stacked = tensor.New(tensor.F32, in.Usage.Dim(0)+in.Pool.Dim(0)+in.Have.Dim(0), plantedDim)
	if _, err := Select(in, plantedOptions()); err == nil || !strings.Contains(err.Error(), "are not the stacked rows") {
		t.Errorf("rows that are not views of the stacked matrix: %v", err)
	}
}

func TestCompassChoosesKBySilhouette(t *testing.T) {
	p := newPlanted(2)
	o := plantedOptions()
	o.K, o.KMin, o.KMax, o.KStep = 0, 4, 12, 4
	sel, err := Select(p.in, o)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Report.K != 8 || len(sel.Report.KScores) != 3 {
		t.Errorf("K = %d, scores %+v", sel.Report.K, sel.Report.KScores)
	}
	if s := p.gapShare(sel.Picks); s < minGapShare {
		t.Errorf("%.3f of picks from the under-served topics, want at least %g", s, minGapShare)
	}
}

func TestCompassOptions(t *testing.T) {
	p := newPlanted(3)
	for _, tc := range []struct {
		name string
		set  func(*Options)
	}{
		{"ratio", func(o *Options) { o.Gap = GapRatio }},
		{"smoothed", func(o *Options) { o.Gap = GapSmoothed }},
		{"centroid", func(o *Options) { o.Within = WithinCentroid }},
		{"random within", func(o *Options) { o.Within = WithinRandom }},
		{"usage+pool", func(o *Options) { o.Cluster = ClusterUsagePool }},
		{"euclidean", func(o *Options) { o.KMeans.Spherical = false }},
		{"cold", func(o *Options) { o.Temperature = 0.05 }},
		{"hot", func(o *Options) { o.Temperature = 20 }},
		{"language share", func(o *Options) { o.LanguageShare = 0.25 }}, // 75 each: the 4 languages of the gap topics suffice
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := plantedOptions()
			tc.set(&o)
			sel, err := Select(p.in, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(sel.Picks) != 300 {
				t.Errorf("%d picks; notes %v", len(sel.Picks), sel.Report.Notes)
			}
			if s := p.gapShare(sel.Picks); s < minGapShare {
				t.Errorf("%.3f of picks from the under-served topics, want at least %g", s, minGapShare)
			}
			if o.LanguageShare > 0 {
				for lang, n := range sel.Report.ByLanguage {
					if n > 75 {
						t.Errorf("%s gave %d picks, over the cap of 75", lang, n)
					}
				}
			}
		})
	}
}

func TestCompassLanguageCapFillsElsewhere(t *testing.T) {
	// Only four languages hold the gap topics; a cap of 50 each leaves 100
	// of the 300 for the fill stage, from the other clusters.
	p := newPlanted(4)
	o := plantedOptions()
	o.LanguageCap = 50
	sel, err := Select(p.in, o)
	if err != nil {
		t.Fatal(err)
	}
	fill := 0
	for _, pk := range sel.Picks {
		if strings.HasPrefix(pk.Reason, "fill") {
			fill++
		}
	}
	if len(sel.Picks) != 300 || fill != 100 {
		t.Errorf("%d picks, %d fill", len(sel.Picks), fill)
	}
	for lang, n := range sel.Report.ByLanguage {
		if n > 50 {
			t.Errorf("%s: %d picks over the cap", lang, n)
		}
	}
}

func TestSelectionReproducible(t *testing.T) {
	p := newPlanted(5)
	o := plantedOptions()
	o.Within = WithinRandom // the seed matters within clusters too
	run := func() ([]Pick, []byte) {
		sel, err := Select(p.in, o)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "m.jsonl")
		if err := WriteManifest(path, sel.Picks); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		return sel.Picks, b
	}
	a, ma := run()
	b, mb := run()
	if !reflect.DeepEqual(a, b) || !bytes.Equal(ma, mb) {
		t.Error("same seed, different selection")
	}
	o.Seed++
	c, _ := run()
	if reflect.DeepEqual(a, c) {
		t.Error("another seed gave the same random within-cluster order")
	}
	for _, method := range []func(Input, BaselineOptions) (*Selection, error){Random, LangSim} {
		x, _ := method(p.in, BaselineOptions{Budget: 100, Seed: 9})
		y, _ := method(p.in, BaselineOptions{Budget: 100, Seed: 9})
		if !reflect.DeepEqual(x.Picks, y.Picks) {
			t.Error("baseline not reproducible")
		}
	}
}

func TestSelectErrors(t *testing.T) {
	p := newPlanted(6)
	o := plantedOptions()
	nanUsage := tensor.New(tensor.F32, 10, plantedDim)
	nanUsage.F32()[3*plantedDim+2] = float32(math.NaN())
	narrow := tensor.New(tensor.F32, 10, plantedDim-1)
	for _, tc := range []struct {
		name string
		edit func(*Input, *Options)
		want string
	}{
		{"K > N", func(_ *Input, o *Options) { o.K = 100000 }, "more than the"},
		{"NaN", func(in *Input, _ *Options) { in.Usage = nanUsage }, "target usage: row 3, column 2"},
		{"dimensions", func(in *Input, _ *Options) { in.Usage = narrow }, "dimension 15, the pool 16"},
		{"dimensions of D_t", func(in *Input, _ *Options) { in.Have = narrow }, "dimension 15, the pool 16"},
		{"empty pool", func(in *Input, _ *Options) {
			in.Pool, in.Items = tensor.New(tensor.F32, 0, plantedDim), nil
		}, "pool is empty"},
		{"only target language", func(in *Input, _ *Options) {
			in.Pool, _ = in.Pool.Slice(4000, 4200)
			in.Items = in.Items[4000:]
		}, "all 200 items are in the target language"},
		{"items", func(in *Input, _ *Options) { in.Items = in.Items[:10] }, "10 pool items for 4200"},
		{"unknown target", func(in *Input, _ *Options) { in.Target = "xx" }, `unknown language "xx"`},
		{"budget", func(_ *Input, o *Options) { o.Budget = 0 }, "budget 0"},
		{"no usage", func(in *Input, _ *Options) { in.Usage = nil }, "no target usage"},
		{"temperature", func(_ *Input, o *Options) { o.Temperature = 0 }, "temperature"},
		{"gap", func(_ *Input, o *Options) { o.Gap = "log" }, "unknown gap"},
		{"language share above 1", func(_ *Input, o *Options) { o.LanguageShare = 2 }, "language share 2: want [0, 1]"},
		{"language share NaN", func(_ *Input, o *Options) { o.LanguageShare = math.NaN() }, "language share NaN"},
	} {
		in, oo := p.in, o
		tc.edit(&in, &oo)
		_, err := Select(in, oo)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// LangSim needs every pool language in the table.
	in := p.in
	in.Items = slices.Clone(in.Items)
	in.Items[7].Language = "tlh"
	if _, err := LangSim(in, BaselineOptions{Budget: 10}); err == nil || !strings.Contains(err.Error(), `"tlh"`) {
		t.Errorf("unknown pool language: %v", err)
	}
	if _, err := Random(Input{Target: "sw"}, BaselineOptions{Budget: 10}); err == nil || !strings.Contains(err.Error(), "pool is empty") {
		t.Errorf("random on an empty pool: %v", err)
	}
	if _, err := LangSim(Input{Target: "xx", Items: p.in.Items}, BaselineOptions{Budget: 10}); err == nil || !strings.Contains(err.Error(), "unknown language") {
		t.Errorf("langsim, unknown target: %v", err)
	}
}

func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		budget   int
		w        []float64
		capacity []int
		want     []int
	}{
		{10, []float64{1, 1, 0}, []int{100, 100, 100}, []int{5, 5, 0}},
		{10, []float64{1, 1, 1}, []int{100, 100, 100}, []int{4, 3, 3}}, // largest remainder, ties to the lower index
		{10, []float64{3, 1, 0}, []int{2, 100, 100}, []int{2, 8, 0}},   // short of candidates: passes on
		{10, []float64{1, 1, 1}, []int{1, 2, 100}, []int{1, 2, 7}},
		{10, []float64{1, 1}, []int{2, 3}, []int{2, 3}},                       // everyone runs out
		{7, []float64{0.5, 0.25, 0.25}, []int{100, 100, 100}, []int{3, 2, 2}}, // quotas 3.5, 1.75, 1.75
	} {
		if got := allocate(tc.budget, tc.w, tc.capacity); !slices.Equal(got, tc.want) {
			t.Errorf("allocate(%d, %v, %v) = %v, want %v", tc.budget, tc.w, tc.capacity, got, tc.want)
		}
	}
	w := tempered([]float64{0.1, 0.05, 0}, 0.01)
	if w[0] != 1 || w[1] > 1e-20 || w[2] != 0 {
		t.Errorf("cold temperature: %v", w)
	}
	w = tempered([]float64{0.1, 0.05, 0}, 1000)
	if math.Abs(w[1]-1) > 1e-3 || w[2] != 0 {
		t.Errorf("hot temperature: %v", w)
	}
}

func TestWriteReport(t *testing.T) {
	p := newPlanted(7)
	sel, err := Select(p.in, plantedOptions())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteReport(dir, sel.Report); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, want := range []string{"| cluster | E_t | D_t | pool | p_E | p_D | gap |", "## Picks by language", "gap: diff"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	var rep Report
	js, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(js, &rep); err != nil || len(rep.Clusters) != 8 || rep.Selected != 300 {
		t.Errorf("report.json: %v %+v", err, rep)
	}
	png, _ := os.ReadFile(filepath.Join(dir, "clusters.png"))
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Error("clusters.png is not a PNG")
	}
	ls, _ := LangSim(p.in, BaselineOptions{Budget: 50})
	if err := WriteReport(dir, ls.Report); err != nil {
		t.Fatal(err)
	}
	if png, _ := os.ReadFile(filepath.Join(dir, "languages.png")); !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Error("languages.png is not a PNG")
	}
	path := filepath.Join(dir, "manifest.jsonl")
	if err := WriteManifest(path, sel.Picks); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || len(lines) != 300 {
		t.Fatalf("manifest: %v, %d lines", err, len(lines))
	}
	for _, k := range []string{"id", "language", "cluster", "score", "reason"} {
		if _, ok := first[k]; !ok {
			t.Errorf("manifest line lacks %q: %s", k, lines[0])
		}
	}
}

// fixedClusters is an input for Swahili with its clustering given: cluster
// j holds usage[j] rows of E_t, have[j] rows of D_t and one pool row per
// language in pool[j], all at the unit vector e_j, so that the candidates
// of a cluster tie and keep their order.
func fixedClusters(t *testing.T, usage, have []int, pool [][]string) (Input, *cluster.KMeansResult) {
	t.Helper()
	k := len(usage)
	unit := func(j int) []float32 {
		v := make([]float32, k)
		v[j] = 1
		return v
	}
	var usageRows, poolRows, haveRows [][]float32
	var labels []int32
	in := Input{Target: "sw"}
	for j, n := range usage {
		for range n {
			usageRows = append(usageRows, unit(j))
			labels = append(labels, int32(j))
		}
	}
	for j, langs := range pool {
		for _, lang := range langs {
			poolRows = append(poolRows, unit(j))
			labels = append(labels, int32(j))
			in.Items = append(in.Items, Item{ID: fmt.Sprintf("c%d-%d", j, len(in.Items)), Language: lang})
		}
	}
	for j, n := range have {
		for range n {
			haveRows = append(haveRows, unit(j))
			labels = append(labels, int32(j))
		}
	}
	var err error
	if in.Usage, err = cluster.NewMatrix(usageRows); err != nil {
		t.Fatal(err)
	}
	if in.Pool, err = cluster.NewMatrix(poolRows); err != nil {
		t.Fatal(err)
	}
	if len(haveRows) > 0 {
		if in.Have, err = cluster.NewMatrix(haveRows); err != nil {
			t.Fatal(err)
		}
	}
	var centroids [][]float32
	for j := range k {
		centroids = append(centroids, unit(j))
	}
	c, err := cluster.NewMatrix(centroids)
	if err != nil {
		t.Fatal(err)
	}
	return in, &cluster.KMeansResult{Centroids: c, Labels: labels}
}

// pickedByCluster counts the picks of each of k clusters.
func pickedByCluster(picks []Pick, k int) []int {
	n := make([]int, k)
	for _, pk := range picks {
		n[pk.Cluster]++
	}
	return n
}

// GapSmoothed compares smoothed shares, p'(k) = (n(k) + s) / (n + K s):
// E_t [3 1] and D_t [1 3] with s = 1 give p'_E [2/3 1/3] and p'_D [1/3
// 2/3], so gaps [1/3 0]. The report's p_E and p_D stay unsmoothed.
func TestSelectGapSmoothed(t *testing.T) {
	in, given := fixedClusters(t, []int{3, 1}, []int{1, 3}, [][]string{{"en"}, {"en"}})
	o := DefaultOptions(1)
	o.Gap, o.Smoothing, o.Clustering = GapSmoothed, 1, given
	sel, err := Select(in, o)
	if err != nil {
		t.Fatal(err)
	}
	for j, want := range []struct{ pE, pD, gap float64 }{{0.75, 0.25, 1.0 / 3}, {0.25, 0.75, 0}} {
		c := sel.Report.Clusters[j]
		if math.Abs(c.PUsage-want.pE) > 1e-12 || math.Abs(c.PHave-want.pD) > 1e-12 || math.Abs(c.Gap-want.gap) > 1e-12 {
			t.Errorf("cluster %d: p_E %v, p_D %v, gap %v; want %v, %v, %v", j, c.PUsage, c.PHave, c.Gap, want.pE, want.pD, want.gap)
		}
	}
}

// Additive smoothing adds alpha to every count and K alpha to the total.
func TestShares(t *testing.T) {
	for _, tc := range []struct {
		n     []int
		alpha float64
		want  []float64
	}{
		{[]int{1, 3}, 1, []float64{1.0 / 3, 2.0 / 3}},
		{[]int{1, 3}, 0, []float64{0.25, 0.75}},
		{[]int{0, 0}, 0, []float64{0, 0}},
	} {
		got := shares(tc.n, tc.alpha)
		for j := range tc.want {
			if math.Abs(got[j]-tc.want[j]) > 1e-15 {
				t.Errorf("shares(%v, %v) = %v, want %v", tc.n, tc.alpha, got, tc.want)
				break
			}
		}
	}
}

// The language share is rounded up: a quarter of 10 is 3 items.
func TestLanguageLimit(t *testing.T) {
	for _, tc := range []struct {
		budget, cap int
		share       float64
		want        int
	}{
		{10, 0, 0.25, 3},
		{10, 2, 0.25, 2},
		{10, 5, 0, 5},
		{10, 0, 0, math.MaxInt},
	} {
		if got := languageLimit(tc.budget, tc.cap, tc.share); got != tc.want {
			t.Errorf("languageLimit(%d, %d, %v) = %d, want %d", tc.budget, tc.cap, tc.share, got, tc.want)
		}
	}
}

// What a language cap keeps a cluster from giving goes to the other
// clusters with a gap: gaps [0.8 0.2] plan both picks in cluster 0, whose
// second English item the cap of 1 refuses, so the French one of cluster 1
// is picked in its place.
func TestSelectLanguageCapPassesOn(t *testing.T) {
	in, given := fixedClusters(t, []int{4, 1}, nil, [][]string{{"en", "en"}, {"fr"}})
	o := DefaultOptions(2)
	o.Clustering, o.LanguageCap = given, 1
	sel, err := Select(in, o)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, pk := range sel.Picks {
		if !strings.HasPrefix(pk.Reason, "under-served") {
			t.Errorf("pick %+v is not from the gap stage", pk)
		}
		got = append(got, fmt.Sprintf("%d:%s", pk.Cluster, pk.Language))
	}
	if want := []string{"0:en", "1:fr"}; !slices.Equal(got, want) {
		t.Errorf("picks (cluster:language) %v, want %v; notes %v", got, want, sel.Report.Notes)
	}
}

// With no gap anywhere the budget is filled in proportion to p_E: usage
// [3 1] gives 3 and 1 of 4 picks, not 2 and 2.
func TestSelectFillByUsageShare(t *testing.T) {
	four := []string{"en", "en", "en", "en"}
	in, given := fixedClusters(t, []int{3, 1}, []int{3, 1}, [][]string{four, four})
	o := DefaultOptions(4)
	o.Clustering = given
	sel, err := Select(in, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range sel.Picks {
		if !strings.HasPrefix(pk.Reason, "fill") {
			t.Errorf("pick %+v is not a fill", pk)
		}
	}
	if got, want := pickedByCluster(sel.Picks, 2), []int{3, 1}; !slices.Equal(got, want) {
		t.Errorf("picks by cluster %v, want %v", got, want)
	}
}

// Clusters pick in the order of their gaps, so under a language cap the
// cluster with the larger gap takes the language's items first: gaps
// [0.2 0.8], every item English, a cap of 2.
func TestSelectLargestGapPicksFirst(t *testing.T) {
	three := []string{"en", "en", "en"}
	in, given := fixedClusters(t, []int{1, 4}, nil, [][]string{three, three})
	o := DefaultOptions(5)
	o.Clustering, o.LanguageCap = given, 2
	sel, err := Select(in, o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pickedByCluster(sel.Picks, 2), []int{0, 2}; !slices.Equal(got, want) {
		t.Errorf("picks by cluster %v, want %v", got, want)
	}
}
