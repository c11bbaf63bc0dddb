"""Per-lam metrics, ensembles and barriers as cheap views of cached logits (SCIENCE.md, Metrics).

Every number here is computed from logits that the engine already holds; nothing runs a network.
Conventions: lam = 1 is A, lam = 0 is B; L counts weight layers; beta is the inverse temperature.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from lmcdash.calibration import Logits, _np, accuracy, cross_entropy_at, fit_beta, mixture_cross_entropy

TABLE_COLUMNS = [
    "lam", "acc", "loss_raw", "loss_cal", "beta_cal", "temperature_cal", "temperature_lewc", "beta_lewc",
    "acc_logit_ens", "loss_logit_ens", "loss_cal_logit_ens", "acc_prob_ens", "loss_prob_ens",
    "acc_lewc_ens", "loss_lewc_ens", "loss_cal_lewc_ens", "loss_chord", "acc_chord",
]
BARRIER_COLUMNS = ["definition", "metric", "value", "formula"]
BARRIER_METRICS = ("accuracy", "loss (raw)", "loss (calibrated)")


@dataclass
class SplitLogits:
    """Logits at one lam and at both endpoints on one split, with labels."""

    z: torch.Tensor  # (N, C) merged model at lam
    za: torch.Tensor  # (N, C) model A (lam = 1)
    zb: torch.Tensor  # (N, C) model B (lam = 0)
    y: torch.Tensor  # (N,)


def lewc_temperature(lam: float, num_layers: int) -> float:
    """Return lam^L + (1 - lam)^L, the logit scale LEWC predicts (2^(1-L) at lam = 1/2)."""
    return lam ** num_layers + (1 - lam) ** num_layers


def calibrated(z: Logits, y: torch.Tensor, zc: Logits, yc: torch.Tensor,
               scale: float = 1.0) -> tuple[float, float]:
    """Return (beta fitted on (zc, yc), CE of z at that beta); ``scale`` widens the search to 1e2/scale."""
    beta = fit_beta(zc, yc, hi=1e2 / min(1.0, scale))  # shrunk logits (deep nets, LEWC) need a larger beta
    return beta, cross_entropy_at(z, y, beta)


def lam_row(lam: float, num_layers: int, ev: SplitLogits, cal: SplitLogits) -> dict:
    """Return one table row (TABLE_COLUMNS) at lam; calibration is fitted on ``cal``, reported on ``ev``."""
    t_lewc = lewc_temperature(lam, num_layers)
    wa, wb = lam ** num_layers, (1 - lam) ** num_layers
    # One search range for every lam (widened by the smallest LEWC scale, at lam = 1/2): equal logits
    # then give equal fits, so a model merged with itself has exactly zero calibrated barrier.
    beta, loss_cal = calibrated(ev.z, ev.y, cal.z, cal.y, lewc_temperature(0.5, num_layers))
    za, zb, zca, zcb = _np(ev.za), _np(ev.zb), _np(cal.za), _np(cal.zb)  # small: NumPy, no OpenMP joins
    lin, lin_c = lam * za + (1 - lam) * zb, lam * zca + (1 - lam) * zcb  # logit ensemble
    # LEWC ensemble divided by its own scale: calibrated loss is scale-free, and the fit stays in range.
    lewc, lewc_c = (wa * za + wb * zb) / t_lewc, (wa * zca + wb * zcb) / t_lewc
    acc_prob, loss_prob = mixture_cross_entropy(za, zb, ev.y, lam)
    loss_a, loss_b = cross_entropy_at(za, ev.y), cross_entropy_at(zb, ev.y)
    acc_a, acc_b = accuracy(za, ev.y), accuracy(zb, ev.y)
    return {
        "lam": float(lam), "acc": accuracy(ev.z, ev.y), "loss_raw": cross_entropy_at(ev.z, ev.y),
        "loss_cal": loss_cal, "beta_cal": beta, "temperature_cal": 1.0 / beta,
        "temperature_lewc": t_lewc, "beta_lewc": 1.0 / t_lewc,
        "acc_logit_ens": accuracy(lin, ev.y), "loss_logit_ens": cross_entropy_at(lin, ev.y),
        "loss_cal_logit_ens": calibrated(lin, ev.y, lin_c, cal.y)[1],
        "acc_prob_ens": acc_prob, "loss_prob_ens": loss_prob,
        "acc_lewc_ens": accuracy(lewc, ev.y), "loss_lewc_ens": cross_entropy_at(lewc * t_lewc, ev.y),
        "loss_cal_lewc_ens": calibrated(lewc, ev.y, lewc_c, cal.y)[1],
        "loss_chord": lam * loss_a + (1 - lam) * loss_b, "acc_chord": lam * acc_a + (1 - lam) * acc_b,
    }


def _at(table: pd.DataFrame, lam: float) -> pd.Series | None:
    hit = table[(table["lam"] - lam).abs() < 1e-12]
    return hit.iloc[0] if len(hit) else None


def barriers(table: pd.DataFrame) -> pd.DataFrame:
    """Return midpoint and max-over-grid barriers (accuracy in fraction units, raw and calibrated loss)."""
    a, b, m = _at(table, 1.0), _at(table, 0.0), _at(table, 0.5)
    if a is None or b is None:
        raise ValueError("barriers need lam = 0 and lam = 1 in the table; evaluate a grid that includes both")
    lam = table["lam"]
    nan = float("nan")
    rows = []
    for metric, col, sign in (("accuracy", "acc", -1.0), ("loss (raw)", "loss_raw", 1.0),
                              ("loss (calibrated)", "loss_cal", 1.0)):
        # sign = +1 for losses (higher is worse), -1 for accuracy (lower is worse)
        mid = nan if m is None else sign * (m[col] - (a[col] + b[col]) / 2)
        chord = lam * a[col] + (1 - lam) * b[col]
        peak = float((sign * (table[col] - chord)).max())
        name = {"acc": "Acc", "loss_raw": "L", "loss_cal": "L_cal"}[col]
        if sign > 0:
            f_mid = f"{name}(1/2) - ({name}(A) + {name}(B)) / 2"
            f_max = f"max_lam [{name}(lam) - (lam {name}(A) + (1 - lam) {name}(B))]"
        else:
            f_mid = f"({name}(A) + {name}(B)) / 2 - {name}(1/2)"
            f_max = f"max_lam [(lam {name}(A) + (1 - lam) {name}(B)) - {name}(lam)]"
        rows.append({"definition": "midpoint", "metric": metric, "value": float(mid), "formula": f_mid})
        rows.append({"definition": "max over grid", "metric": metric, "value": peak, "formula": f_max})
    order = {"midpoint": 0, "max over grid": 1}
    rows.sort(key=lambda r: (order[r["definition"]], BARRIER_METRICS.index(r["metric"])))
    return pd.DataFrame(rows, columns=BARRIER_COLUMNS)
