// Package embed turns texts into vectors for COMPASS: an Embedder
// interface; ModelEmbedder, the mean-pooled, unit-length last hidden states
// of a decoder; CachedEmbedder, any embedder behind an append-only on-disk
// Cache keyed by text; Records, a data set embedded a chunk at a time
// (RecordsToFile, straight into a file); and the files embeddings live in:
// Save, Load and LoadStacked (.npy, safetensors, Parquet), with the
// records' ids and languages in a rows file beside the matrix.
package embed
