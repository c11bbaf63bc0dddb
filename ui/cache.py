"""Every st.cache_* wrapper of the dashboard, all bounded (max_entries / ttl).

Cache keys are hashable strings and tuples (a source key holds the file's path, mtime and size, or an
upload's sha256); tensors, modules and datasets travel as underscore parameters, which streamlit does
not hash (ECOSYSTEM.md 1.2). Cached models and pairs are read-only: permuted and merged weights live
in fresh modules made by the library (DESIGN.md hard line 3).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from lmcdash import explore, matching, uploads
from lmcdash.checkpoints import load_checkpoint
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import TensorDataset, load_dataset
from lmcdash.engine import Evaluator, Pair, lam_grid, make_pair

HOUR = 3600


@st.cache_data(ttl=30, max_entries=8, show_spinner=False)
def zoo_sources(folder: str) -> tuple[list[explore.Source], list[str]]:
    """Return the zoo's sources and skipped-file messages (headers only; refreshed every 30 s)."""
    return explore.zoo_sources(folder)


@st.cache_resource(max_entries=48, ttl=2 * HOUR, show_spinner="Loading checkpoint…")
def zoo_checkpoint(key: str, path: str) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Return (model, metadata) of a zoo file; ``key`` carries its mtime so a retrained file reloads."""
    return load_checkpoint(path)


@st.cache_resource(max_entries=16, ttl=2 * HOUR, show_spinner="Loading upload…")
def upload_checkpoint(key: str, name: str, dataset_name: str, spec: ModelSpec | None, _data: bytes
                      ) -> tuple[torch.nn.Module, CheckpointMeta, list[tuple[str, str]]]:
    """Return (model, metadata, key mapping) of an upload, fitted to its evaluation dataset (UploadError if it
    does not fit); ``key`` is its digest plus description."""
    model, meta, mapping = uploads.load_upload(_data, name, dataset_name, spec)
    model, meta = uploads.fit_dataset(model, meta, dataset(*explore.dataset_args(meta)), name)
    return model, meta, mapping


@st.cache_data(max_entries=16, ttl=HOUR, show_spinner="Validating…")
def inspect_upload(digest: str, name: str, _data: bytes) -> uploads.Inspection:
    """Return what an uploaded file is (CheckpointError for bad files is raised, not cached)."""
    return uploads.inspect_upload(_data, name)


@st.cache_resource(max_entries=3, ttl=2 * HOUR, show_spinner="Loading dataset…")
def dataset(name: str, calib_size: int, calib_seed: int) -> TensorDataset:
    """Return a dataset as tensors (the calibration split fixed by size and seed)."""
    return load_dataset(name, calib_size=calib_size, calib_seed=calib_seed)


@st.cache_resource(max_entries=16, ttl=2 * HOUR, show_spinner=False)
def pair(key_a: str, key_b: str, name_a: str, name_b: str, _a: torch.nn.Module, _meta_a: CheckpointMeta,
         _b: torch.nn.Module, _meta_b: CheckpointMeta) -> Pair:
    """Return the engine pair of two loaded checkpoints (PairError when incompatible)."""
    return make_pair(_a, _meta_a, _b, _meta_b, name_a, name_b, key=f"{key_a}|{key_b}")


@dataclass
class Aligned:
    """A pair with B permuted, how it was matched, and max |B(x) - permuted B(x)| on the evaluation batch."""

    pair: Pair
    result: matching.MatchResult
    max_output_diff: float


@st.cache_resource(max_entries=24, ttl=2 * HOUR, show_spinner="Aligning B to A…")
def aligned(pair_key: str, method: str, seed: int, data_key: tuple, split: str, _pair: Pair,
            _data: TensorDataset) -> Aligned:
    """Return the pair with B permuted by ``method`` (computed once per pair, method and seed)."""
    new, result = matching.permute_pair(_pair, method, _data, seed=seed)
    x, _ = _data.split(split)
    diff = matching.max_output_diff(_pair.b, new.b, x[:1000]) if method != "none" else 0.0
    return Aligned(new, result, diff)


@dataclass
class EvalHandle:
    """An Evaluator shared by sessions, with the lock that serialises calls into it."""

    key: tuple
    evaluator: Evaluator
    lock: threading.RLock


@st.cache_resource(max_entries=12, ttl=2 * HOUR, show_spinner=False)
def evaluator(pair_key: str, data_key: tuple, device: str, bn_mode: str, _pair: Pair,
              _data: TensorDataset) -> EvalHandle:
    """Return the evaluator of one pair on one dataset, device and BN mode (holds a bounded logit cache)."""
    ev = Evaluator(_pair, _data, device=torch.device(device), bn_mode=bn_mode)
    return EvalHandle((pair_key, data_key, device, bn_mode), ev, threading.RLock())


def ensure_logits(h: EvalHandle, lams: tuple[float, ...], split: str,
                  on_step: Callable[[int, int], None] | None = None) -> bool:
    """Compute the logits of any grid lam not yet cached in the evaluator, reporting progress (not cached here:
    st.cache_* replays elements, and a progress bar must only show when work happens)."""
    with h.lock:
        h.evaluator.warm(lams, (split, "calib"), on_step=on_step)
    return True


@st.cache_data(max_entries=96, ttl=2 * HOUR, show_spinner=False)
def curve(eval_key: tuple, lams: tuple[float, ...], split: str, _h: EvalHandle):
    """Return the engine CurveResult on the lam grid (logits come from the evaluator's cache)."""
    with _h.lock:
        return _h.evaluator.curve(lams, split)


@st.cache_data(max_entries=512, ttl=2 * HOUR, show_spinner=False)
def point(eval_key: tuple, lam: float, split: str, temperature: float | None, _h: EvalHandle) -> dict:
    """Return the metrics at one lam (computes that lam's logits only if they are not cached)."""
    with _h.lock:
        row = _h.evaluator.point(lam, split, temperature=temperature)
    return {k: (float(v) if isinstance(v, (int, float)) or torch.is_tensor(v) else v) for k, v in dict(row).items()}


@st.cache_data(max_entries=32, ttl=2 * HOUR, show_spinner=False)
def temperature_sweep(eval_key: tuple, lams: tuple[float, ...], split: str, temperatures: tuple[float, ...],
                      _h: EvalHandle, _data: TensorDataset) -> pd.DataFrame:
    """Return the loss at every (grid lam, grid temperature) from cached logits (manual-temperature preview)."""
    with _h.lock:
        logits = _h.evaluator.logits(lams, split)
    return explore.temperature_sweep(logits, _data.split(split)[1], lams, temperatures)


@st.cache_data(max_entries=24, ttl=2 * HOUR, show_spinner="Fitting per-layer diagnostics…")
def layer_fit(pair_key: str, data_key: tuple, lams: tuple[float, ...], split: str, n_samples: int, device: str,
              bn_mode: str, _pair: Pair, _data: TensorDataset) -> pd.DataFrame:
    """Return the per-layer LEWC/LLFC diagnostics table (lmcdash.layerwise.layer_fit)."""
    from lmcdash.layerwise import layer_fit as fit

    return fit(_pair, _data, lams, split=split, n_samples=n_samples, device=torch.device(device), bn_mode=bn_mode)


def grid(n: int = 25) -> tuple[float, ...]:
    """Return the engine's lam grid as a hashable tuple."""
    return tuple(float(v) for v in lam_grid(n))


def clear_all() -> None:
    """Drop every cache (used by the sidebar button and by tests)."""
    st.cache_data.clear()
    st.cache_resource.clear()
