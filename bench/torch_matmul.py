# PyTorch side of compass's CPU matmul benchmark. Run by `compass bench` with
# the same shapes and thread count as the Go side; prints one JSON line per
# case. Usage: python3 torch_matmul.py THREADS MIN_SECONDS 'JSON list of cases'
# where a case is {"name", "m", "n", "k", "trans_b", "dtype": "f32"|"bf16"}.
import json
import os
import sys
import time

threads = int(sys.argv[1])
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)  # before torch loads its BLAS

import torch  # noqa: E402

torch.set_num_threads(threads)
min_seconds = float(sys.argv[2])
for case in json.loads(sys.argv[3]):
    m, n, k = case["m"], case["n"], case["k"]
    dtype = torch.float32 if case["dtype"] == "f32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, k, generator=g).to(dtype) if case["trans_b"] else torch.randn(k, n, generator=g).to(dtype)
    bt = b.t() if case["trans_b"] else b  # a transposed view: BLAS gets the flag, no copy
    out = torch.empty(m, n, dtype=dtype)
    torch.matmul(a, bt, out=out)  # warm-up
    times = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < min_seconds and len(times) < 20):
        t0 = time.perf_counter()
        torch.matmul(a, bt, out=out)
        times.append(time.perf_counter() - t0)
    times.sort()
    sec = times[len(times) // 2]
    print(json.dumps({"name": case["name"], "dtype": case["dtype"], "seconds": sec,
                      "gflops": 2.0 * m * n * k / sec / 1e9, "reps": len(times),
                      "torch": torch.__version__}), flush=True)
