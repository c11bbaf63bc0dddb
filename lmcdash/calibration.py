"""Temperature calibration: cross-entropy at an inverse temperature beta, and the fit of beta.

beta multiplies the logits (beta = 1 / temperature). CE(beta) = mean(logsumexp(beta z) - beta z_y) is
convex in beta, hence unimodal in log beta, so a bounded Brent search on log beta finds the minimiser
(SCIENCE.md, Metrics). Calibration rescales logits and never changes an argmax, so accuracy is unaffected.

The maths runs in float64 NumPy: these (N, C) arrays are small, and single-threaded NumPy avoids the
OpenMP fork/join of every small torch op, which on a loaded 2-core machine measured 45x slower.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

Logits = torch.Tensor | np.ndarray


def _np(a: Logits, dtype=np.float64) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


class _CE:
    """CE(beta) on fixed logits, with the row maximum factored out once: for beta > 0,
    logsumexp(beta z) = beta max(z) + log sum exp(beta (z - max z))."""

    def __init__(self, logits: Logits, y: Logits):
        z, y = _np(logits), _np(y, np.int64)
        zmax = z.max(1, keepdims=True)
        self.d = z - zmax  # (N, C), <= 0
        self.c = float((zmax[:, 0] - z[np.arange(len(y)), y]).mean())

    def __call__(self, beta: float) -> float:
        return float(np.log(np.exp(beta * self.d).sum(1)).mean()) + beta * self.c


def cross_entropy_at(logits: Logits, y: Logits, beta: float = 1.0) -> float:
    """Return the mean cross-entropy of softmax(beta * logits) against integer labels y."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return _CE(logits, y)(float(beta))


def accuracy(logits: Logits, y: Logits) -> float:
    """Return the fraction of rows whose argmax equals the label."""
    return float((_np(logits, np.float32).argmax(1) == _np(y, np.int64)).mean())


def fit_beta(logits: Logits, y: Logits, lo: float = 1e-2, hi: float = 1e2, tol: float = 1e-5) -> float:
    """Return the inverse temperature in [lo, hi] minimising mean cross-entropy (never worse than beta = 1)."""
    if not 0 < lo < hi:
        raise ValueError(f"fit_beta needs 0 < lo < hi, got lo={lo}, hi={hi}")
    ce = _CE(logits, y)
    res = minimize_scalar(lambda t: ce(math.exp(t)), bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": tol})
    beta, best = math.exp(float(res.x)), float(res.fun)
    # Brent stops within tol of the optimum; guard the promise that calibration never hurts.
    if lo <= 1.0 <= hi and ce(1.0) < best:
        return 1.0
    return beta


def _log_softmax(z: np.ndarray) -> np.ndarray:
    d = z - z.max(1, keepdims=True)
    return d - np.log(np.exp(d).sum(1, keepdims=True))


def mixture_cross_entropy(logits_a: Logits, logits_b: Logits, y: Logits, weight_a: float) -> tuple[float, float]:
    """Return (accuracy, mean CE) of the probability mixture w softmax(a) + (1 - w) softmax(b)."""
    y = _np(y, np.int64)
    la = _log_softmax(_np(logits_a)) + math.log(weight_a) if weight_a > 0 else None
    lb = _log_softmax(_np(logits_b)) + math.log(1 - weight_a) if weight_a < 1 else None
    # log of the mixture, computed stably; a zero weight drops that model entirely.
    logp = lb if la is None else la if lb is None else np.logaddexp(la, lb)  # (N, C)
    return float((logp.argmax(1) == y).mean()), float(-logp[np.arange(len(y)), y].mean())
