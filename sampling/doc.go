// Package sampling is the COMPASS method: it decides which auxiliary
// multilingual examples a target language's adapter is trained on. It
// holds no code of its own; each concern is a package:
//
//   - sampling/embed: vectors of texts (Embedder, the hidden states of a
//     decoder with ModelEmbedder, an on-disk Cache), embedding files
//     (.npy, safetensors, Parquet) and their rows files.
//   - sampling/cluster: k-means (k-means++ seeding, Lloyd iterations as
//     GEMMs on a tensor.Backend, spherical mode, mini-batch k-means), the
//     silhouette, and ChooseK over a range of K.
//   - sampling/selection: Select, the COMPASS selection for one target
//     language (cluster shares of its usage E_t and its data D_t, the gap,
//     a budget spent on under-served clusters), the Random, LangSim and
//     AllData baselines, the language table, and the manifest and report.
//   - sampling/drift: the statistics of COMPASS-ECDA's drift monitor.
//
// Everything random takes a seed: the same seed and inputs give the same
// result on the CPU backend, whatever the number of threads. Bad input
// (NaN, mismatched dimensions, K out of range, an empty pool, an unknown
// language) is an error that says what and where, never a panic. The jobs
// that run these steps on files are in engine (Embed, Cluster, Select).
package sampling
