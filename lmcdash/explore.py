"""Tables the dashboard shows, derived from checkpoint headers and engine results (no streamlit).

A *source* is one selectable checkpoint: a zoo file or a session upload. Zoo families are the
subfolders of the checkpoint folder (checkpoints/<family>/<family>_w<width>_s<seed>.safetensors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from lmcdash.checkpoints import list_checkpoints
from lmcdash.config import CheckpointMeta, TrainConfig

UPLOAD_FAMILY = "session uploads"
SYNTHETIC_CALIB = 200  # load_dataset("synthetic") has 1200 training images: the 5000 default does not fit


@dataclass(frozen=True)
class Source:
    """One selectable checkpoint; ``key`` is its stable, hashable identity (cache keys use it)."""

    key: str
    label: str
    kind: str  # "zoo" | "upload"
    family: str
    arch: str
    width: int
    seed: int | None
    dataset: str
    path: str | None = None  # zoo files only
    digest: str | None = None  # uploads only


def zoo_sources(folder: str | Path) -> tuple[list[Source], list[str]]:
    """Return (a Source per valid checkpoint under ``folder``, messages for files that were skipped)."""
    root = Path(folder)
    if not root.is_dir():
        return [], [f"checkpoint folder {root} does not exist; set it in the sidebar or via LMCDASH_CHECKPOINTS."]
    rows, errors = list_checkpoints(root)
    out = []
    for r in rows:
        path = Path(r["file"])
        rel = path.parent.relative_to(root) if path.parent != root else Path(root.name)
        stat = path.stat()
        out.append(Source(key=f"zoo:{path}:{stat.st_mtime_ns}:{stat.st_size}", label=f"{rel}/{path.stem}",
                          kind="zoo", family=str(rel), arch=str(r["arch"]), width=int(r["width"]),
                          seed=None if r["seed"] is None else int(r["seed"]), dataset=str(r["dataset"]),
                          path=str(path)))
    return out, errors


def families(sources: list[Source]) -> list[str]:
    """Return the family names, zoo families sorted, session uploads last."""
    names = sorted({s.family for s in sources if s.kind == "zoo"})
    return names + ([UPLOAD_FAMILY] if any(s.kind == "upload" for s in sources) else [])


def family_table(sources: list[Source], family: str) -> pd.DataFrame:
    """Return one row per checkpoint of ``family``: width, seed, label, key (sorted by width, seed)."""
    rows = [dict(width=s.width, seed=s.seed if s.seed is not None else -1, label=s.label, key=s.key)
            for s in sources if s.family == family]
    return pd.DataFrame(rows, columns=["width", "seed", "label", "key"]).sort_values(["width", "seed", "label"])


def width_pairs(sources: list[Source], family: str, seed_a: int | None = None,
                seed_b: int | None = None) -> dict[int, tuple[Source, Source]]:
    """Return {width: (A, B)} for a family: the given seeds, or the first two checkpoints of each width."""
    by_key = {s.key: s for s in sources}
    out = {}
    for w, sub in family_table(sources, family).groupby("width"):
        if seed_a is not None and seed_b is not None:
            a, b = sub[sub["seed"] == seed_a], sub[sub["seed"] == seed_b]
            if len(a) and len(b) and seed_a != seed_b:
                out[int(w)] = (by_key[a["key"].iloc[0]], by_key[b["key"].iloc[0]])
        elif len(sub) >= 2:
            out[int(w)] = (by_key[sub["key"].iloc[0]], by_key[sub["key"].iloc[1]])
    return out


def dataset_args(meta: CheckpointMeta) -> tuple[str, int, int]:
    """Return (dataset, calib_size, calib_seed) for evaluating a checkpoint, from its training metadata."""
    default = SYNTHETIC_CALIB if meta.dataset == "synthetic" else TrainConfig.calib_size
    return (meta.dataset, int(meta.train.get("calib_size") or default),
            int(meta.train.get("calib_seed") or TrainConfig.calib_seed))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def recipe_table(meta_a: CheckpointMeta, meta_b: CheckpointMeta, name_a: str = "A (λ=1)",
                 name_b: str = "B (λ=0)") -> pd.DataFrame:
    """Return the pair's training recipe and endpoint metrics side by side (strings, one row per item)."""
    def col(m: CheckpointMeta) -> list[str]:
        t, met, s = m.train, m.metrics, m.model
        acc = lambda k: "—" if met.get(k) is None else f"{100 * met[k]:.2f} %"  # noqa: E731
        return [m.dataset, f"{s.arch} (depth {s.depth})" if s.depth else s.arch, _fmt(s.width),
                _fmt((s.base_width or 0) * s.width if s.arch == "mlp" else s.base_width),
                _fmt(m.seed), _fmt(t.get("weight_decay")), _fmt(t.get("epochs")), _fmt(t.get("optimizer")),
                _fmt(t.get("lr")), _fmt(t.get("schedule")), _fmt(t.get("batch_size")),
                acc("test_acc"), acc("train_acc"), _fmt(met.get("test_loss"))]
    items = ["dataset", "architecture", "width multiplier", "hidden units / base channels", "seed", "weight decay",
             "epochs", "optimizer", "learning rate", "schedule", "batch size", "test accuracy (metadata)",
             "train accuracy (metadata)", "test loss (metadata)"]
    return pd.DataFrame({"item": items, name_a: col(meta_a), name_b: col(meta_b)})


def barrier_display(barriers: pd.DataFrame) -> pd.DataFrame:
    """Return the engine's barrier table for display: accuracy in percentage points, units named."""
    out = barriers.copy()
    is_acc = out["metric"] == "accuracy"
    out["shown"] = [f"{100 * v:.2f} pp" if a else f"{v:.4f}" for v, a in zip(out["value"], is_acc)]
    return out[["definition", "metric", "shown", "formula"]].rename(columns={"shown": "value"})


def temperature_grid(n: int = 25, lo: float = 0.05, hi: float = 2.0) -> tuple[float, ...]:
    """Return ``n`` temperatures spaced evenly in log between ``lo`` and ``hi`` (manual-temperature preview)."""
    return tuple(round(lo * (hi / lo) ** (i / (n - 1)), 6) for i in range(n))


@torch.no_grad()
def temperature_sweep(logits: torch.Tensor, y: torch.Tensor, lams: tuple[float, ...],
                      temperatures: tuple[float, ...]) -> pd.DataFrame:
    """Return (lam, temperature, loss): mean cross-entropy of logits / T for each lam and T. logits: (K, N, C)."""
    k, n, _ = logits.shape
    flat, target = logits.float().reshape(k * n, -1), y.repeat(k)
    rows = []
    for t in temperatures:
        loss = F.cross_entropy(flat / t, target, reduction="none").view(k, n).mean(1)
        rows += [(float(l), float(t), float(v)) for l, v in zip(lams, loss)]
    return pd.DataFrame(rows, columns=["lam", "temperature", "loss"])


def stack_curves(curves: dict[int, object]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (per-lam table, barrier table) of several CurveResults keyed by width, with a width column."""
    tables = [c.table.assign(width=w) for w, c in sorted(curves.items())]
    bars = [c.barriers.assign(width=w) for w, c in sorted(curves.items())]
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(),
            pd.concat(bars, ignore_index=True) if bars else pd.DataFrame())


PERM_CONDITIONS = {  # condition label -> (permutation method, barrier metric)
    "no permutation, raw": ("none", "loss (raw)"),
    "no permutation, calibrated": ("none", "loss (calibrated)"),
    "weight matching": ("weight", "loss (raw)"),
    "activation matching": ("activation", "loss (raw)"),
    "random permutation": ("random", "loss (raw)"),
}


def permutation_table(barriers: dict[tuple[int, str], pd.DataFrame], definition: str = "midpoint",
                      diffs: dict[tuple[int, str], float] | None = None) -> pd.DataFrame:
    """Return Table-1 style rows (width, condition, accuracy barrier pp, loss barrier, max |B - permuted B|).

    ``barriers`` maps (width, method) to an engine barrier table; conditions whose method is missing are skipped.
    """
    rows = []
    for w in sorted({w for w, _ in barriers}):
        for cond, (method, loss_metric) in PERM_CONDITIONS.items():
            bar = barriers.get((w, method))
            if bar is None:
                continue
            sel = bar[bar["definition"] == definition].set_index("metric")["value"]
            rows.append(dict(width=w, condition=cond, acc_barrier_pp=100 * float(sel.get("accuracy", math.nan)),
                             loss_barrier=float(sel.get(loss_metric, math.nan)),
                             loss_barrier_calibrated=float(sel.get("loss (calibrated)", math.nan)),
                             max_output_diff=(diffs or {}).get((w, method), 0.0 if method == "none" else math.nan)))
    return pd.DataFrame(rows, columns=["width", "condition", "acc_barrier_pp", "loss_barrier",
                                       "loss_barrier_calibrated", "max_output_diff"])


def fmt_metrics(row: dict) -> dict[str, str]:
    """Return the Explorer's metric labels and strings for a point row (the app tests compare against these)."""
    out = {"Accuracy": f"{100 * row['acc']:.2f} %", "Raw loss": f"{row['loss_raw']:.4f}",
           "Calibrated loss": f"{row['loss_cal']:.4f}", "Fitted temperature T": f"{row['temperature_cal']:.4f}"}
    if row.get("loss_manual") is not None:
        out["Loss at manual T"] = f"{row['loss_manual']:.4f}"
    return out
