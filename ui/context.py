"""Turn the user's selection into loaded objects (through ui.cache), showing readable errors, never tracebacks.

Every loader here returns None after drawing an st.error that says what is wrong and what to do, so
the rest of the page keeps working with what was loaded.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from lmcdash import explore
from lmcdash.checkpoints import CheckpointError
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import DatasetError, TensorDataset
from lmcdash.uploads import UploadError
from ui import cache, widgets


@dataclass(frozen=True)
class UploadEntry:
    """A validated upload kept for the session (bytes in memory; never written to the checkpoint folder)."""

    name: str
    digest: str
    data: bytes
    dataset: str
    spec: ModelSpec | None  # a hand description; None when the file describes itself
    kind: str
    arch: str
    width: int
    seed: int | None

    @property
    def key(self) -> str:
        spec = json.dumps(self.spec.to_dict(), sort_keys=True) if self.spec else "-"
        return f"upload:{self.digest}:{self.dataset}:{spec}"

    @property
    def source(self) -> explore.Source:
        return explore.Source(key=self.key, label=f"upload · {self.name} · {self.digest[:6]}", kind="upload",
                              family=explore.UPLOAD_FAMILY, arch=self.arch, width=self.width, seed=self.seed,
                              dataset=self.dataset, digest=self.digest)


def message(exc: BaseException) -> str:
    """Return a readable message for an exception (library errors already say what to do)."""
    from lmcdash.engine import PairError

    if isinstance(exc, (CheckpointError, DatasetError, UploadError, PairError)):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "Out of memory: pick a narrower pair, the CPU device, or the test split, then try again."
    return (f"Unexpected {type(exc).__name__}: {exc}. Try another pair or setting; if it persists, "
            "report it with the checkpoint names.")


def guarded(what: str, fn: Callable, *args, **kwargs):
    """Return fn(*args, **kwargs), or None after showing '<what>: <message>' as an error (no traceback)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the page must survive any failure of one part
        st.error(f"**{what}.** {message(exc)}")
        return None


def _load_source(src: explore.Source):
    if src.kind == "zoo":
        return cache.zoo_checkpoint(src.key, src.path)
    entry = widgets.uploads().get(src.digest)
    if entry is None:
        raise UploadError(f"{src.label} is no longer in this session; upload it again on the Upload page.")
    model, meta, _ = cache.upload_checkpoint(entry.key, entry.name, entry.dataset, entry.spec, _data=entry.data)
    return model, meta


def load_source(src: explore.Source):
    """Return (model, meta) of a source, or None after showing why it cannot be loaded."""
    return guarded(f"Could not load {src.label}", _load_source, src)


def load_data(meta: CheckpointMeta) -> tuple[TensorDataset, tuple] | None:
    """Return (dataset named in the metadata with its calibration settings, data key) or None after an error."""
    args = explore.dataset_args(meta)
    if args[0] in ("", "unknown"):
        st.error("The checkpoint does not name its dataset. Describe it on the Upload page (choose the dataset).")
        return None
    data = guarded(f"Dataset {args[0]!r} is not available", cache.dataset, *args)
    return (data, args) if data is not None else None


@dataclass
class PairContext:
    """A loaded pair with its evaluation data (B not permuted)."""

    pair: object  # lmcdash.engine.Pair
    data: TensorDataset
    data_key: tuple
    source_a: explore.Source
    source_b: explore.Source

    @property
    def has_bn(self) -> bool:
        from lmcdash.models import get_entry

        return get_entry(self.pair.meta_a.model.arch).has_batchnorm


def selected_pair() -> PairContext | None:
    """Return the pair picked with the shared selector (zoo or uploads), loaded, or None."""
    sources, _ = widgets.zoo_and_uploads()
    picked = widgets.pair_selector(sources)
    return resolve_pair(*picked) if picked else None


def resolve_pair(a: explore.Source, b: explore.Source) -> PairContext | None:
    """Return the loaded pair and its dataset, or None after showing what went wrong."""
    la, lb = load_source(a), load_source(b)
    if la is None or lb is None:
        return None
    p = guarded("These two checkpoints cannot be interpolated", cache.pair, a.key, b.key, a.label, b.label,
                la[0], la[1], lb[0], lb[1])
    if p is None:
        return None
    loaded = load_data(la[1])
    if loaded is None:
        return None
    return PairContext(p, loaded[0], loaded[1], a, b)


def aligned(ctx: PairContext, method: str, split: str, seed: int = 0) -> cache.Aligned | None:
    """Return the pair with B permuted by ``method`` (cached per pair), or None after an error."""
    return guarded(f"Permutation '{method}' failed", cache.aligned, ctx.pair.key, method, seed, ctx.data_key, split,
                   _pair=ctx.pair, _data=ctx.data)


def evaluate(pair, ctx: PairContext, split: str, bn_mode: str, lams: tuple[float, ...], label: str = ""):
    """Return (EvalHandle, CurveResult) for a pair on the lam grid, showing a progress bar while logits compute."""
    h = guarded("Could not set up the evaluation", cache.evaluator, pair.key, ctx.data_key, widgets.device(),
                bn_mode, _pair=pair, _data=ctx.data)
    if h is None:
        return None, None
    slot = st.empty()

    def on_step(i: int, n: int, *_) -> None:  # lazily shown: nothing appears when the grid is cached
        slot.progress(min(i / max(n, 1), 1.0), text=f"{label}computing logits along λ: {i}/{n}")

    done = guarded("Evaluation failed", cache.ensure_logits, h, lams, split, on_step)
    slot.empty()
    if done is None:
        return h, None
    return h, guarded("Evaluation failed", cache.curve, h.key, lams, split, _h=h)


def family_curves(pairs: dict[int, tuple[explore.Source, explore.Source]], method: str, split: str, bn_mode: str,
                  lams: tuple[float, ...]) -> tuple[dict[int, object], dict[int, float]]:
    """Return ({width: CurveResult}, {width: max |B - permuted B|}); widths that fail show an error and are skipped."""
    curves, diffs = {}, {}
    for i, (w, (a, b)) in enumerate(sorted(pairs.items()), start=1):
        ctx = resolve_pair(a, b)
        if ctx is None:
            continue
        pair = ctx.pair
        if method != "none":
            al = aligned(ctx, method, split)
            if al is None:
                continue
            pair, diffs[w] = al.pair, al.max_output_diff
        _, res = evaluate(pair, ctx, split, bn_mode, lams, label=f"width {w} ({i}/{len(pairs)}), {method}: ")
        if res is not None:
            curves[w] = res
    return curves, diffs


def family_has_bn(sources: list[explore.Source], family: str) -> bool:
    """Return True when the family's architecture uses BatchNorm."""
    from lmcdash.models import REGISTRY

    archs = {s.arch for s in sources if s.family == family}
    return any(REGISTRY[a].has_batchnorm for a in archs if a in REGISTRY)
