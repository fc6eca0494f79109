"""Fits the two polynomials of the CPU's float32 GELU (tensor/gelu.go).

gelu(x) = x Phi(x), Phi the standard normal CDF, computed as

    |x| < 1:  Phi(x) = 1/2 + x P(x^2)
    |x| >= 1: Phi(-|x|) = exp(-x^2/2) t S(t),  t = 1/(1 + |x|/2)

(Phi(x) = 1 - Phi(-x) for x >= 1). P fits (Phi(x) - 1/2)/x on (0, 1],
S fits erfcx(|x|/sqrt2)/(2t) on [1, 14.5]; beyond, exp(-x^2/2) is 0 in
float32. Both minimise the largest relative error, by least squares
reweighted toward it (Lawson's algorithm), and print float32 coefficients,
lowest degree first. Run with Debian's python3 (scipy).
"""
import numpy as np
from scipy.special import erf, erfcx


def fit(u, target, deg, rounds=40):
    A = np.stack([u**k for k in range(deg + 1)], axis=1)
    w = np.ones_like(u)
    for _ in range(rounds):
        s = w / np.abs(target)
        c, *_ = np.linalg.lstsq(A * s[:, None], target * s, rcond=None)
        err = (A @ c - target) / target
        w = np.maximum(w * np.abs(err), 1e-300)
        w /= w.sum()
    return c, np.max(np.abs(err))


x = np.linspace(1e-6, 1, 40001)
P, eP = fit(x * x, 0.5 * erf(x / np.sqrt(2)) / x, 5)
a = np.concatenate([np.linspace(1, 6, 40001), np.linspace(6, 14.5, 10001)])
t = 1 / (1 + a / 2)
S, eS = fit(t, 0.5 * erfcx(a / np.sqrt(2)) / t, 8)
for name, c, e in (("P", P, eP), ("S", S, eS)):
    print(f"{name}: largest relative error {e:.2e}")
    for k, v in enumerate(c):
        print(f"  {name}{k} = {float(np.float32(v))!r}")
