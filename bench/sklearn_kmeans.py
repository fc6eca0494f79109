# scikit-learn side of compass's k-means benchmark. Run by `compass bench`
# with the data and initial centroids the Go side uses; prints one JSON line.
# Usage: python3 sklearn_kmeans.py THREADS MIN_SECONDS X.npy INIT.npy MAX_ITER
# It times KMeans(init=INIT, n_init=1, max_iter=MAX_ITER, tol=0,
# algorithm="lloyd").fit(X) on the float32 data, the whole fit as a user
# calls it, at THREADS OpenMP and BLAS threads.
import json
import os
import sys
import time

threads = int(sys.argv[1])
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)  # before numpy and scikit-learn start their pools

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

min_seconds = float(sys.argv[2])
X = np.load(sys.argv[3])
C = np.load(sys.argv[4])
max_iter = int(sys.argv[5])


def fit():
    return KMeans(n_clusters=C.shape[0], init=C, n_init=1, max_iter=max_iter, tol=0,
                  algorithm="lloyd").fit(X)


with threadpool_limits(limits=threads):
    km = fit()  # warm-up
    times = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < min_seconds and len(times) < 20):
        t0 = time.perf_counter()
        km = fit()
        times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"seconds": times[len(times) // 2], "n_iter": int(km.n_iter_), "inertia": float(km.inertia_),
                  "reps": len(times), "threads": threads, "sklearn": sklearn.__version__}), flush=True)
