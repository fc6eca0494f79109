package selection

import (
	"fmt"

	"github.com/compassml/compass/sampling/internal/matrix"
)

// BaselineOptions configure the baselines, which spend the same budget as
// COMPASS without looking at the target usage.
type BaselineOptions struct {
	Budget int
	// Language caps and the target-language rule, as in Options.
	LanguageCap   int
	LanguageShare float64
	IncludeTarget bool
	// TopK is how many of the nearest auxiliary languages LangSim draws
	// from at least; 0 means 3. More are added, nearest first, while the
	// chosen ones hold fewer items than the budget.
	TopK      int
	Languages *LanguageTable // nil means DefaultLanguages
	Seed      uint64
}

// baselineOptionsSummary records the options a baseline ran with.
func baselineOptionsSummary(o BaselineOptions) map[string]string {
	return map[string]string{"language_cap": fmt.Sprint(o.LanguageCap), "language_share": fmt.Sprint(o.LanguageShare),
		"include_target": fmt.Sprint(o.IncludeTarget), "top_k": fmt.Sprint(o.TopK), "seed": fmt.Sprint(o.Seed)}
}

func checkBaseline(in Input, o BaselineOptions, method string) (*checked, *Report, error) {
	if o.Budget < 1 && method != "all" {
		return nil, nil, fmt.Errorf("selection: %s: budget %d; need at least 1", method, o.Budget)
	}
	if o.LanguageCap < 0 || o.TopK < 0 {
		return nil, nil, fmt.Errorf("selection: %s: negative language cap or top-k", method)
	}
	if !(o.LanguageShare >= 0 && o.LanguageShare <= 1) {
		return nil, nil, fmt.Errorf("selection: %s: language share %v: want [0, 1] (0: no cap)", method, o.LanguageShare)
	}
	c, err := checkInput(in, o.Languages, o.IncludeTarget, false)
	if err != nil {
		return nil, nil, err
	}
	rep := &Report{Method: method, Target: c.target.Code(), Budget: o.Budget, Pool: len(in.Items), Options: baselineOptionsSummary(o)}
	for _, e := range c.eligible {
		if e {
			rep.Eligible++
		}
	}
	return c, rep, nil
}

// Random selects the budget uniformly at random (by the seed) from the
// eligible pool items, under the language caps.
func Random(in Input, o BaselineOptions) (*Selection, error) {
	c, rep, err := checkBaseline(in, o, "random")
	if err != nil {
		return nil, err
	}
	var rows []int
	for i, e := range c.eligible {
		if e {
			rows = append(rows, i)
		}
	}
	picks := takeRandom(c, in.Items, rows, o, func(int) string { return "random: uniform over the eligible pool" })
	return finishBaseline(rep, picks, o), nil
}

// AllData selects every eligible pool item: the budget and the language
// caps are ignored (the report says so). It is the "use everything"
// reference point.
func AllData(in Input, o BaselineOptions) (*Selection, error) {
	c, rep, err := checkBaseline(in, o, "all")
	if err != nil {
		return nil, err
	}
	var picks []Pick
	for i, e := range c.eligible {
		if e {
			picks = append(picks, Pick{Row: i, ID: in.Items[i].ID, Language: in.Items[i].Language, Cluster: -1, Reason: "all: every eligible pool item"})
		}
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("all-data: the budget (%d) and language caps are ignored; every eligible pool item is selected (%d)", o.Budget, len(picks)))
	rep.finish(picks)
	return &Selection{Picks: picks, Report: rep}, nil
}

// LangSim selects from the auxiliary languages linguistically closest to
// the target (LanguageDistance): it ranks the pool's languages, takes the
// nearest TopK, adds further ones in rank order while their items do not
// cover the budget (under the language caps), and draws the budget
// uniformly at random from the chosen languages' items. Every pool language
// and the target must be in the language table.
func LangSim(in Input, o BaselineOptions) (*Selection, error) {
	c, rep, err := checkBaseline(in, o, "langsim")
	if err != nil {
		return nil, err
	}
	if o.TopK == 0 {
		o.TopK = 3
	}
	rep.Options["top_k"] = fmt.Sprint(o.TopK)
	// One entry per language (by ISO 639-3), named as the pool first names it.
	count := map[string]int{}
	var names []string
	for i, e := range c.eligible {
		if !e {
			continue
		}
		if count[c.canon[i]] == 0 {
			names = append(names, in.Items[i].Language)
		}
		count[c.canon[i]]++
	}
	ranked, err := c.langs.RankLanguages(in.Target, names)
	if err != nil {
		return nil, err
	}
	if len(ranked) == 0 {
		return nil, fmt.Errorf("selection: langsim: the pool has no language other than the target")
	}
	limit := languageLimit(o.Budget, o.LanguageCap, o.LanguageShare)
	chosen := map[string]int{} // ISO 639-3 -> rank
	avail := 0
	for i, l := range ranked {
		if i >= o.TopK && avail >= o.Budget {
			break
		}
		chosen[l.ISO3] = i
		avail += min(count[l.ISO3], limit)
	}
	rep.Languages, rep.LanguagesUsed = ranked, len(chosen)
	var rows []int
	for i, e := range c.eligible {
		if _, ok := chosen[c.canon[i]]; e && ok {
			rows = append(rows, i)
		}
	}
	picks := takeRandom(c, in.Items, rows, o, func(row int) string {
		l := ranked[chosen[c.canon[row]]]
		return fmt.Sprintf("langsim: %s (%s), distance %.4f, rank %d", l.Name, l.Language, l.Distance, chosen[c.canon[row]]+1)
	})
	return finishBaseline(rep, picks, o), nil
}

// takeRandom shuffles rows by the seed and takes up to the budget of them,
// skipping languages at their limit.
func takeRandom(c *checked, items []Item, rows []int, o BaselineOptions, why func(row int) string) []Pick {
	rng := matrix.NewRand(o.Seed, 3)
	rng.Shuffle(len(rows), func(a, b int) { rows[a], rows[b] = rows[b], rows[a] })
	limit := languageLimit(o.Budget, o.LanguageCap, o.LanguageShare)
	byLang := map[string]int{}
	var picks []Pick
	for _, row := range rows {
		if len(picks) == o.Budget {
			break
		}
		if byLang[c.canon[row]] >= limit {
			continue
		}
		byLang[c.canon[row]]++
		picks = append(picks, Pick{Row: row, ID: items[row].ID, Language: items[row].Language, Cluster: -1, Reason: why(row)})
	}
	return picks
}

func finishBaseline(rep *Report, picks []Pick, o BaselineOptions) *Selection {
	if len(picks) < o.Budget {
		limit := languageLimit(o.Budget, o.LanguageCap, o.LanguageShare)
		rep.Notes = append(rep.Notes, fmt.Sprintf("budget not reached: %d of %d selected (language limit %s)", len(picks), o.Budget, limitString(limit)))
	}
	rep.finish(picks)
	return &Selection{Picks: picks, Report: rep}
}
