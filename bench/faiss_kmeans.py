# FAISS side of compass's k-means benchmark (Debian's python3-faiss, CPU).
# Run by `compass bench` with the data and initial centroids the Go side uses;
# prints one JSON line.
# Usage: python3 faiss_kmeans.py THREADS X.npy INIT.npy NITER
# It times faiss.Kmeans(d, k, niter=NITER).train(X, init_centroids=INIT) with
# every point used (max_points_per_centroid = N: no subsampling), then the
# final assignment (index.search, the "output"), at THREADS OpenMP threads.
# The input is memory-mapped (np.load(mmap_mode="r")).
import json
import sys
import time

import faiss
import numpy as np

threads = int(sys.argv[1])
faiss.omp_set_num_threads(threads)
X = np.load(sys.argv[2], mmap_mode="r")
C = np.ascontiguousarray(np.load(sys.argv[3]), dtype=np.float32)
niter = int(sys.argv[4])
n, d = X.shape
k = C.shape[0]

t0 = time.perf_counter()
Xc = np.ascontiguousarray(X, dtype=np.float32)  # FAISS needs contiguous float32 in memory
t_load = time.perf_counter() - t0

km = faiss.Kmeans(d, k, niter=niter, verbose=False, max_points_per_centroid=n, min_points_per_centroid=1, seed=1234)
t0 = time.perf_counter()
km.train(Xc, init_centroids=C)
t_train = time.perf_counter() - t0
t0 = time.perf_counter()
D, I = km.index.search(Xc, 1)
t_assign = time.perf_counter() - t0
stats = km.iteration_stats
print(json.dumps({"train_seconds": t_train, "per_iter_seconds": t_train / niter, "assign_seconds": t_assign,
                  "load_seconds": t_load, "n_iter": len(stats), "inertia": float(D.astype(np.float64).sum()),
                  "threads": threads, "faiss": faiss.__version__}), flush=True)
