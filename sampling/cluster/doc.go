// Package cluster is the k-means of COMPASS: k-means++ seeding
// (scikit-learn's greedy variant), Lloyd iterations whose distances are one
// GEMM per block of rows on a tensor.Backend, spherical (cosine) mode,
// empty clusters re-seeded, restarts, and mini-batch k-means for data
// larger than memory. Silhouette scores a clustering (exactly, or on a
// sample) and ChooseK picks K over a range by it.
package cluster
