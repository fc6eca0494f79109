// Package sampling decides which auxiliary multilingual examples a target
// language's adapter is trained on, the COMPASS way: embed the candidate
// data, cluster it, find the clusters where the target's usage is
// under-served by the data it already has, and spend a budget there.
//
// The pieces:
//
//   - Embeddings (Embedder, LoadEmbeddings, SaveEmbeddings): vectors of
//     texts from a model's hidden states, or precomputed ones read from
//     .npy, safetensors or Parquet.
//   - KMeans: k-means++ seeding (scikit-learn's greedy variant), Lloyd
//     iterations whose distances are one GEMM per block of rows on a
//     tensor.Backend, spherical (cosine) mode, empty clusters re-seeded,
//     restarts, and mini-batch k-means for data larger than memory.
//     Silhouette scores a clustering (exactly, or on a sample) and ChooseK
//     picks K over a range by it.
//   - Select: the COMPASS selection for one target language (cluster shares
//     p_E and p_D of the target usage E_t and the target's data D_t, the
//     gap, a budget allocated over clusters, candidates ranked within a
//     cluster by closeness to the target items, caps per source language).
//   - Random, LangSim and AllData: the baselines under the same budget;
//     LangSim ranks languages with LanguageDistance over the language table
//     (testdata/languages/languages.tsv, from WALS and Glottolog).
//   - WriteManifest and WriteReport: the selection as JSONL, and its
//     explanation as Markdown, JSON and a PNG chart.
//
// Everything random takes a seed: the same seed and inputs give the same
// result on the CPU backend, whatever the number of threads. Bad input (NaN,
// mismatched dimensions, K out of range, an empty pool, an unknown
// language) is an error that says what and where, never a panic.
package sampling
