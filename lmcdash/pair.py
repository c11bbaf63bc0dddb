"""Pairs of checkpoints: compatibility checks that name every difference, and the read-only Pair."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmcdash.checkpoints import load_checkpoint
from lmcdash.config import CheckpointMeta
from lmcdash.data import TensorDataset

_SPEC_FIELDS = ("arch", "width", "base_width", "depth", "bias", "num_classes", "input_shape")


class PairError(ValueError):
    """Two checkpoints (or a checkpoint and a dataset) cannot be compared; the message names the difference."""


@dataclass
class Pair:
    """Two endpoint models of one architecture (read-only) with their metadata."""

    a: nn.Module
    b: nn.Module
    meta_a: CheckpointMeta
    meta_b: CheckpointMeta
    name_a: str
    name_b: str
    key: str  # stable identity of (A, B, perm); used in cache keys
    perm: str = "none"  # permutation applied to B: "none", "random", "weight", "activation"


def model_digest(model: nn.Module) -> str:
    """Return a short content hash of a model's state_dict (names, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for k, v in sorted(model.state_dict().items()):
        h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pair_differences(a: nn.Module, meta_a: CheckpointMeta, b: nn.Module, meta_b: CheckpointMeta) -> list[str]:
    """Return human-readable differences that make A and B incomparable (empty if compatible)."""
    sa, sb = a.model_spec, b.model_spec
    diffs = [f"{f}: A has {getattr(sa, f)!r}, B has {getattr(sb, f)!r}"
             for f in _SPEC_FIELDS if getattr(sa, f) != getattr(sb, f)]
    da, db = meta_a.dataset, meta_b.dataset
    if "unknown" not in (da, db) and da != db:
        diffs.append(f"dataset: A was trained on {da!r}, B on {db!r}")
    ca = (meta_a.train.get("calib_size"), meta_a.train.get("calib_seed"))
    cb = (meta_b.train.get("calib_size"), meta_b.train.get("calib_seed"))
    if None not in ca + cb and ca != cb:
        diffs.append(f"calibration split (size, seed): A {ca}, B {cb}; one model's calibration images "
                     "would be the other's training images")
    st_a, st_b = a.state_dict(), b.state_dict()
    if set(st_a) != set(st_b):
        diffs.append(f"state_dict keys: only in A {sorted(set(st_a) - set(st_b))[:5]}, "
                     f"only in B {sorted(set(st_b) - set(st_a))[:5]}")
    shapes = [f"{k} {tuple(st_a[k].shape)} vs {tuple(st_b[k].shape)}"
              for k in sorted(set(st_a) & set(st_b)) if st_a[k].shape != st_b[k].shape]
    if shapes:
        diffs.append("shapes: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    return diffs


def make_pair(a: nn.Module, meta_a: CheckpointMeta | None, b: nn.Module, meta_b: CheckpointMeta | None,
              name_a: str = "A", name_b: str = "B", key: str | None = None, perm: str = "none") -> Pair:
    """Return a Pair after checking compatibility; raises PairError naming every difference."""
    meta_a = meta_a or CheckpointMeta(model=a.model_spec)
    meta_b = meta_b or CheckpointMeta(model=b.model_spec)
    diffs = pair_differences(a, meta_a, b, meta_b)
    if diffs:
        raise PairError(f"{name_a} and {name_b} cannot be interpolated: " + "; ".join(diffs)
                        + ". Pick two checkpoints of the same architecture, width and dataset.")
    key = key or f"{model_digest(a)}-{model_digest(b)}-{perm}"
    return Pair(a.eval(), b.eval(), meta_a, meta_b, name_a, name_b, key, perm)


def load_pair(path_a: str | Path, path_b: str | Path) -> Pair:
    """Return the Pair of two checkpoint files (CheckpointError for a bad file, PairError if incompatible)."""
    (a, meta_a), (b, meta_b) = load_checkpoint(path_a), load_checkpoint(path_b)
    return make_pair(a, meta_a, b, meta_b, Path(path_a).stem, Path(path_b).stem)


def check_data(pair: Pair, data: TensorDataset) -> None:
    """Raise PairError if ``data`` does not fit the pair (dataset name, input shape, classes)."""
    spec, trained = pair.a.model_spec, pair.meta_a.dataset
    if trained not in ("unknown", data.name):
        raise PairError(f"the checkpoints were trained on {trained!r} but the data is {data.name!r}; "
                        f"load {trained!r} instead")
    if tuple(data.input_shape) != tuple(spec.input_shape):
        raise PairError(f"input shape: data {tuple(data.input_shape)}, model {tuple(spec.input_shape)}")
    if data.num_classes > spec.num_classes:
        raise PairError(f"classes: data has {data.num_classes}, model outputs {spec.num_classes}")
