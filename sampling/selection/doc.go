// Package selection spends an auxiliary-data budget for one target
// language. Select is COMPASS: it clusters the target usage E_t, the
// target's data D_t and the pool D_aux, measures per cluster how much more
// of E_t than of D_t falls there (the gap), allocates the budget over the
// under-served clusters and ranks candidates within a cluster by closeness
// to the target items, under caps per source language. Random, LangSim and
// AllData are the baselines under the same budget; LangSim ranks languages
// with LanguageDistance over the language table (testdata/languages,
// from WALS and Glottolog). WriteManifest and WriteReport write a
// selection as JSONL, and its explanation as Markdown, JSON and a chart.
package selection
