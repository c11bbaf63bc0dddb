"""Barrier vs width, with and without permutations: the paper's Table 1 read off a zoo family.

A family folder holds checkpoints <family>/<family>_w<width>_s<seed>.safetensors; widths and seeds
are read from the headers (lmcdash.checkpoints.list_checkpoints), never from file names. Every
number comes from the engine (Evaluator.curve and its barrier table, SCIENCE.md "Metrics"); this
module only picks pairs, applies lmcdash.matching, and lays the engine's results out as one tidy
row per (width, perm).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch

from lmcdash.checkpoints import list_checkpoints, meta_from_header, read_header
from lmcdash.config import CheckpointMeta
from lmcdash.data import TensorDataset, load_dataset
from lmcdash.engine import CurveResult, Evaluator, lam_grid, load_pair
from lmcdash.explore import dataset_args
from lmcdash.matching import METHODS, max_output_diff, permute_pair

# hidden = base_width * width: hidden units of an MLP, first-stage channels of VGG-11 / ResNet-20.
WIDTH_COLUMNS = [
    "width", "hidden", "perm", "acc_a", "acc_b", "acc_mid",
    "barrier_acc_mid_pp", "barrier_loss_mid_raw", "barrier_loss_mid_cal",
    "barrier_acc_max_pp", "barrier_loss_max_raw", "barrier_loss_max_cal",
    "temperature_mid", "temperature_lewc_mid", "max_output_diff", "match_seconds",
]
# (engine barrier definition, engine metric) -> column; accuracy barriers become percentage points.
BARRIER_COLUMNS = {
    ("midpoint", "accuracy"): "barrier_acc_mid_pp",
    ("midpoint", "loss (raw)"): "barrier_loss_mid_raw",
    ("midpoint", "loss (calibrated)"): "barrier_loss_mid_cal",
    ("max over grid", "accuracy"): "barrier_acc_max_pp",
    ("max over grid", "loss (raw)"): "barrier_loss_max_raw",
    ("max over grid", "loss (calibrated)"): "barrier_loss_max_cal",
}
SANITY_INPUTS = 1000  # evaluation-split inputs for max |B(x) - permuted B(x)| (as the dashboard uses)

OnStep = Callable[[int, int], None]  # (done, total) in units of lam evaluations
OnRow = Callable[[dict], None]  # one finished row of the table


def family_pairs(folder: str | Path, seed_a: int = 0,
                 seed_b: int = 1) -> tuple[dict[int, tuple[Path, Path]], list[str]]:
    """Return ({width: (checkpoint of seed_a, checkpoint of seed_b)}, notes on widths and files left out)."""
    if seed_a == seed_b:
        raise ValueError(f"seed_a and seed_b are both {seed_a}; a pair needs two different seeds")
    rows, notes = list_checkpoints(folder)
    if not rows:
        raise ValueError(f"no lmcdash checkpoints under {folder}" + (f" ({notes[0]})" if notes else "")
                         + "; pass a family folder such as checkpoints/mlp1_wd3e-3")
    found: dict[tuple[int, int], Path] = {}
    for r in rows:
        key = (int(r["width"]), -1 if r["seed"] is None else int(r["seed"]))
        if key[1] not in (seed_a, seed_b):
            continue
        if key in found:
            raise ValueError(f"{found[key]} and {r['file']} both hold width {key[0]}, seed {key[1]}; move one out "
                             "of the family folder (aligned copies written by `align` keep B's seed)")
        found[key] = Path(r["file"])
    pairs = {}
    for w in sorted({w for w, _ in found}):
        missing = [s for s in (seed_a, seed_b) if (w, s) not in found]
        if missing:
            notes.append(f"width {w}: no checkpoint with seed {', '.join(map(str, missing))}; width left out")
        else:
            pairs[w] = (found[(w, seed_a)], found[(w, seed_b)])
    return pairs, notes


def family_data(meta: CheckpointMeta) -> TensorDataset:
    """Return the dataset a checkpoint was trained on, with its calibration split carved as in training."""
    if meta.dataset in ("", "unknown"):
        raise ValueError("the checkpoint does not name its dataset, so the family cannot be evaluated")
    name, calib_size, calib_seed = dataset_args(meta)
    return load_dataset(name, calib_size=calib_size, calib_seed=calib_seed)


def curve_row(curve: CurveResult) -> dict:
    """Return endpoint/midpoint accuracies, the six engine barriers and the temperatures at 1/2 of one curve."""
    table = curve.table.set_index("lam")
    row = {"acc_a": float(table.at[1.0, "acc"]), "acc_b": float(table.at[0.0, "acc"]),
           "acc_mid": float(table.at[0.5, "acc"])}
    for r in curve.barriers.itertuples(index=False):
        col = BARRIER_COLUMNS[(r.definition, r.metric)]
        row[col] = 100 * float(r.value) if r.metric == "accuracy" else float(r.value)
    row["temperature_mid"] = float(table.at[0.5, "temperature_cal"])
    row["temperature_lewc_mid"] = float(table.at[0.5, "temperature_lewc"])
    return row


def width_row(width: int, hidden: int, perm: str, curve: CurveResult, max_output_diff: float = math.nan,
              match_seconds: float = math.nan) -> dict:
    """Return one row of the width table (WIDTH_COLUMNS) from an engine curve of B permuted by ``perm``."""
    row = {"width": int(width), "hidden": int(hidden), "perm": perm, **curve_row(curve),
           "max_output_diff": float(max_output_diff), "match_seconds": float(match_seconds)}
    return {c: row[c] for c in WIDTH_COLUMNS}


def _check_data(meta: CheckpointMeta, data: TensorDataset, name: str) -> None:
    """Raise ValueError when a checkpoint's calibration split is not the one the family's data carved."""
    train = meta.train or {}
    size, seed = train.get("calib_size"), train.get("calib_seed")
    want = (data.calib_size if size is None else int(size), data.calib_seed if seed is None else int(seed))
    if meta.dataset != data.name or want != (data.calib_size, data.calib_seed):
        raise ValueError(f"{name} was trained on {meta.dataset!r} with calibration split (size, seed) {want}, "
                         f"but the family's data is {data.name!r} with {(data.calib_size, data.calib_seed)}; "
                         "keep one recipe per family folder")


def width_table(family_folder: str | Path, perms: Sequence[str] = ("none",), split: str = "test", grid: int = 25,
                seed_a: int = 0, seed_b: int = 1, device: str | torch.device | None = None,
                on_step: OnStep | None = None, bn_mode: str = "reset", perm_seed: int = 0,
                on_row: OnRow | None = None) -> pd.DataFrame:
    """Return one row per (width, perm) with WIDTH_COLUMNS; widths left out are listed in ``df.attrs['notes']``.

    ``df.attrs`` also holds family, dataset, split, grid, seeds and bn_mode ("none" for models without BN).

    For every width with both seeds, B (seed_b) is permuted to A (seed_a) by each method of ``perms``
    (lmcdash.matching; "none" leaves B as is) and the pair is evaluated on the full ``split`` at
    ``grid`` lams (0, 1/2 and 1 always included), the temperature fitted on the calibration split.
    """
    bad = [p for p in perms if p not in METHODS]
    if bad or not perms:
        raise ValueError(f"unknown permutation method(s) {bad}; choose from {', '.join(METHODS)}")
    pairs, notes = family_pairs(family_folder, seed_a, seed_b)
    if not pairs:
        raise ValueError(f"no width in {family_folder} has both seed {seed_a} and seed {seed_b}: " + "; ".join(notes))
    first = next(iter(pairs.values()))[0]
    data = family_data(meta_from_header(read_header(first), first.name))
    lams = lam_grid(grid)
    n_lams = len({round(v, 12) for v in lams} | {0.0, 0.5, 1.0})
    total, rows, bn_modes = len(pairs) * len(perms) * n_lams, [], set()
    for w, (path_a, path_b) in pairs.items():
        pair = load_pair(path_a, path_b)
        for meta, path in ((pair.meta_a, path_a), (pair.meta_b, path_b)):
            _check_data(meta, data, path.name)
        spec = pair.a.model_spec
        for perm in perms:
            base = len(rows) * n_lams
            step = None if on_step is None else (
                lambda d, t, b=base: on_step(b + round(n_lams * d / max(t, 1)), total))  # engine (done, total)
            curve, diff, seconds = _evaluate(pair, perm, data, split, lams, device, bn_mode, perm_seed, step)
            row = width_row(w, int(spec.base_width or 0) * w, perm, curve, diff, seconds)
            bn_modes.add(curve.bn_mode)
            rows.append(row)
            if on_step is not None:
                on_step(len(rows) * n_lams, total)
            if on_row is not None:
                on_row(row)
    df = pd.DataFrame(rows, columns=WIDTH_COLUMNS)
    df.attrs.update(family=Path(family_folder).name, dataset=data.name, split=split, grid=grid, seeds=(seed_a, seed_b),
                    bn_mode=", ".join(sorted(bn_modes)), notes=notes)
    return df


def _evaluate(pair, perm: str, data: TensorDataset, split: str, lams: Sequence[float], device, bn_mode: str,
              perm_seed: int, on_step: OnStep | None) -> tuple[CurveResult, float, float]:
    """Return (curve of ``pair`` with B permuted by ``perm``, max |B(x) - permuted B(x)|, matching seconds)."""
    aligned, result = permute_pair(pair, perm, data, seed=perm_seed)
    diff = math.nan
    if perm != "none":
        diff = max_output_diff(pair.b, aligned.b, data.split(split)[0][:SANITY_INPUTS])
    curve = Evaluator(aligned, data, device=device, bn_mode=bn_mode).curve(lams, split, on_step=on_step)
    return curve, diff, float(result.seconds)
