"""Safetensors checkpoints with one JSON metadata entry ("lmcdash"); strict validation; header-only listing.

Never pickle: files are parsed as safetensors only, and every problem raises CheckpointError with a
message that says what is wrong and what to do.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lmcdash import __version__
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.models import create_model, get_entry, list_models

META_KEY = "lmcdash"
MAX_HEADER_BYTES = 16 * 1024 * 1024  # far above any real model here; refuses hostile headers
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(ValueError):
    """A file is not a valid lmcdash checkpoint; the message names the problem and the fix."""


@dataclass
class Header:
    """A parsed safetensors header: tensor infos (dtype, shape) and the string metadata."""

    tensors: dict[str, dict]
    metadata: dict[str, str]
    header_len: int


def _looks_like_pickle(head: bytes) -> bool:
    """A torch zip (PK) or legacy pickle (0x80); a safetensors header always starts with '{' at byte 8."""
    return (head[:2] == b"PK" or head[:1] == b"\x80") and head[8:9] != b"{"


def _parse_header(head: bytes, total_size: int, name: str) -> Header:
    """Parse the first bytes of a safetensors file; ``total_size`` is the whole file length."""
    if len(head) < 8 or total_size < 8:
        raise CheckpointError(f"{name}: not a safetensors file (only {total_size} bytes). Save with "
                              "safetensors.torch.save_file or `python -m lmcdash train`.")
    if _looks_like_pickle(head):
        raise CheckpointError(
            f"{name}: this is a torch pickle (torch.save), not safetensors. lmcdash never unpickles files. "
            "Convert it where you trust it: `safetensors.torch.save_file(torch.load(p, weights_only=True), out)`.")
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{name}: header declares {n:,} bytes (limit {MAX_HEADER_BYTES:,}); the file is "
                              "corrupt or not safetensors. Re-save it with safetensors.")
    if 8 + n > total_size or len(head) < 8 + n:
        raise CheckpointError(f"{name}: truncated header ({total_size - 8:,} bytes after the length field, "
                              f"{n:,} declared). The file was cut short; copy or download it again.")
    try:
        header = json.loads(head[8:8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{name}: corrupt safetensors header ({exc}). The file is damaged or not "
                              "safetensors; re-save it with safetensors.") from None
    meta = header.pop("__metadata__", None) or {}
    end = 0
    for key, info in header.items():
        try:
            begin, stop = info["data_offsets"]
            shape, dtype = [int(s) for s in info["shape"]], str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name}: corrupt header entry for {key!r}; re-save the file.") from None
        if stop - begin != math.prod(shape) * _DTYPE_BYTES.get(dtype, 0) and dtype in _DTYPE_BYTES:
            raise CheckpointError(f"{name}: header entry {key!r} has inconsistent size; the file is corrupt.")
        end = max(end, stop)
    if 8 + n + end != total_size:
        raise CheckpointError(f"{name}: file is {total_size:,} bytes but its header describes {8 + n + end:,}. "
                              "It is truncated or has trailing data; copy or download it again.")
    return Header(header, {str(k): str(v) for k, v in meta.items()}, n)


def read_header(source: str | Path | bytes, name: str | None = None) -> Header:
    """Return the header of a file path or in-memory bytes, reading no tensor data."""
    if isinstance(source, (bytes, bytearray)):
        return _parse_header(bytes(source[:8 + MAX_HEADER_BYTES + 8]), len(source), name or "upload")
    path = Path(source)
    name = name or path.name
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        n = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
        if not _looks_like_pickle(head) and n <= MAX_HEADER_BYTES:
            head += f.read(max(n - 1, 0))
    return _parse_header(head, size, name)


def meta_from_header(header: Header, name: str) -> CheckpointMeta:
    """Return the lmcdash metadata, or raise CheckpointError saying how to describe the model instead."""
    raw = header.metadata.get(META_KEY)
    if raw is None:
        raise CheckpointError(
            f"{name}: no lmcdash metadata in the header. Describe the model instead: pass "
            f"model_spec=ModelSpec(arch=..., width=..., num_classes=..., input_shape=...) (arch one of "
            f"{', '.join(list_models())}), choose architecture and width on the Upload page, or load a plain "
            "ReLU-MLP state_dict with mlp_from_state_dict.")
    try:
        meta = CheckpointMeta.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{name}: lmcdash metadata is not valid JSON of the expected form ({exc}).") from None
    return meta


def build_model(spec: ModelSpec, name: str = "checkpoint") -> torch.nn.Module:
    """Return a fresh model for ``spec``; unknown architectures raise CheckpointError listing the registry."""
    try:
        get_entry(spec.arch)
    except KeyError:
        raise CheckpointError(f"{name}: unknown architecture {spec.arch!r}; registered: "
                              f"{', '.join(list_models())}.") from None
    return create_model(spec)


def validate_state(model: torch.nn.Module, header: Header, name: str) -> None:
    """Raise CheckpointError for missing/unexpected keys, wrong shapes or non-floating dtypes."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(header.tensors)), sorted(set(header.tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: keys do not match {model.model_spec.arch} (width {model.model_spec.width}): "
                              f"missing {missing}, unexpected {unexpected}. Check the architecture and width.")
    bad = [f"{k}: file {tuple(header.tensors[k]['shape'])} vs model {tuple(v.shape)}"
           for k, v in sorted(expected.items()) if list(header.tensors[k]["shape"]) != list(v.shape)]
    if bad:
        raise CheckpointError(f"{name}: wrong shapes for {model.model_spec.arch} width {model.model_spec.width}: "
                              + "; ".join(bad) + ". Check the width and input shape.")
    bad = [f"{k} ({header.tensors[k]['dtype']})" for k, v in sorted(expected.items())
           if v.is_floating_point() and header.tensors[k]["dtype"] not in _FLOAT_DTYPES]
    if bad:
        raise CheckpointError(f"{name}: non-floating dtypes for weights: {', '.join(bad)}. Save float weights.")


def _check_finite(state: Mapping[str, torch.Tensor], name: str) -> None:
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{name}: NaN or Inf values in {bad}. The training diverged; use another checkpoint.")


def _read_tensors(source: str | Path | bytes, name: str) -> dict[str, torch.Tensor]:
    try:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        return st_load(data)
    except Exception as exc:  # safetensors raises its own error type
        raise CheckpointError(f"{name}: tensors could not be read ({exc}); the file is corrupt.") from None


def load_checkpoint(source: str | Path | bytes, model_spec: ModelSpec | None = None,
                    name: str | None = None) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Return (model in eval mode, metadata), rebuilt from the metadata alone (or ``model_spec``)."""
    name = name or (Path(source).name if not isinstance(source, (bytes, bytearray)) else "upload")
    header = read_header(source, name)
    if model_spec is not None:
        meta = CheckpointMeta(model=model_spec, version="", created="")
        if META_KEY in header.metadata:
            meta = meta_from_header(header, name)
            meta.model = model_spec
    else:
        meta = meta_from_header(header, name)
    model = build_model(meta.model, name)
    meta.model = model.model_spec
    validate_state(model, header, name)
    state = _read_tensors(source, name)
    _check_finite(state, name)
    ref = model.state_dict()
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})
    return model.eval(), meta


def _creation_time() -> str:
    """Return UTC now, or $SOURCE_DATE_EPOCH when set (reproducible files: same config, same bytes)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return now.isoformat(timespec="seconds")


def checkpoint_bytes(model: torch.nn.Module, meta: CheckpointMeta) -> bytes:
    """Return the safetensors bytes of ``model`` with ``meta`` in the header."""
    meta.version = meta.version or __version__
    meta.created = meta.created or _creation_time()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state, metadata={"format": "pt", META_KEY: json.dumps(meta.to_dict(), sort_keys=True)})
    # safetensors writes metadata in hash-map order; re-serialise the header sorted so bytes are reproducible.
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: CheckpointMeta) -> Path:
    """Write the checkpoint to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(checkpoint_bytes(model, meta))
    return path


def describe(path: Path, meta: CheckpointMeta) -> dict:
    """Return one listing row (architecture, width, seed, weight decay, accuracy) from metadata."""
    s = meta.model
    return {
        "file": str(path), "arch": s.arch, "depth": s.depth, "base_width": s.base_width, "width": s.width,
        "hidden": (s.base_width or 0) * s.width, "dataset": meta.dataset, "seed": meta.seed,
        "weight_decay": meta.train.get("weight_decay"), "epochs": meta.train.get("epochs"),
        "test_acc": meta.metrics.get("test_acc"), "test_loss": meta.metrics.get("test_loss"),
    }


def list_checkpoints(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Return (rows for every valid checkpoint under ``folder``, error messages for the others); headers only."""
    rows, errors = [], []
    for path in sorted(Path(folder).rglob("*.safetensors"), key=lambda p: _natural_key(str(p))):
        try:
            rows.append(describe(path, meta_from_header(read_header(path), path.name)))
        except CheckpointError as exc:
            errors.append(str(exc))
    return rows, errors


# ---------------------------------------------------------------- plain ReLU-MLP state_dicts
_INPUT_SHAPES = {784: (1, 28, 28), 3072: (3, 32, 32)}


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _mlp_layers(state: Mapping[str, torch.Tensor], name: str) -> list[tuple[str, str | None]]:
    """Return [(weight key, bias key or None)] in input-to-output order, or raise CheckpointError."""
    weights = sorted((k for k, v in state.items() if v.dim() == 2), key=_natural_key)
    others = sorted(k for k, v in state.items() if v.dim() not in (1, 2))
    if not weights or others:
        raise CheckpointError(f"{name}: not a plain MLP state_dict (needs 2-D Linear weights and 1-D biases; "
                              f"found tensors of other rank: {others}). Describe the model by hand instead.")
    layers = []
    for w in weights:
        prefix = w[: -len("weight")] if w.endswith("weight") else None
        b = f"{prefix}bias" if prefix is not None and f"{prefix}bias" in state else None
        layers.append((w, b))
    for (w1, _), (w2, _) in zip(layers, layers[1:]):
        if state[w1].shape[0] != state[w2].shape[1]:
            raise CheckpointError(f"{name}: Linear weights do not chain in name order: {w1} {tuple(state[w1].shape)} "
                                  f"then {w2} {tuple(state[w2].shape)}. Rename keys so their order is input to output.")
    used = {k for pair in layers for k in pair if k}
    if set(state) - used:
        raise CheckpointError(f"{name}: tensors that are not Linear weights/biases: {sorted(set(state) - used)}.")
    return layers


def mlp_from_state_dict(source: str | Path | bytes, name: str | None = None
                        ) -> tuple[torch.nn.Module, CheckpointMeta, list[tuple[str, str]]]:
    """Return (registry mlp, metadata with dataset 'unknown', [(file key, registry key)]) for a plain ReLU MLP."""
    name = name or (Path(source).name if not isinstance(source, (bytes, bytearray)) else "upload")
    read_header(source, name)
    state = _read_tensors(source, name)
    _check_finite(state, name)
    layers = _mlp_layers(state, name)
    hidden = {int(state[w].shape[0]) for w, _ in layers[:-1]}
    if len(hidden) > 1:
        raise CheckpointError(f"{name}: hidden sizes differ ({sorted(hidden)}); the registry mlp has equal hidden sizes.")
    biases = {b is not None for _, b in layers}
    if len(biases) > 1:
        raise CheckpointError(f"{name}: some Linear layers have a bias and some do not; lmcdash's mlp needs all or none.")
    if any(not state[w].is_floating_point() for w, _ in layers):
        raise CheckpointError(f"{name}: non-floating weights; save float weights.")
    n_in, n_out = int(state[layers[0][0]].shape[1]), int(state[layers[-1][0]].shape[0])
    spec = ModelSpec("mlp", 1, n_out, _INPUT_SHAPES.get(n_in, (n_in,)),
                     hidden.pop() if hidden else n_out, len(layers) - 1, biases.pop())
    if spec.depth == 0:
        raise CheckpointError(f"{name}: a single Linear layer has no hidden layer; lmcdash's mlp needs at least one.")
    model = create_model(spec)
    mapping = []
    for i, (w, b) in enumerate(layers):
        mapping.append((w, f"linears.{i}.weight"))
        if b:
            mapping.append((b, f"linears.{i}.bias"))
    model.load_state_dict({dst: state[src].float() for src, dst in mapping})
    meta = CheckpointMeta(model=model.model_spec, dataset="unknown", extra={"mapped_from": dict(mapping)})
    return model.eval(), meta, mapping
