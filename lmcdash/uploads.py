"""Validate uploaded .safetensors files and turn them into (model, metadata) for the dashboard (no streamlit).

Three kinds of valid upload: an lmcdash checkpoint (metadata in the header); a plain ReLU-MLP
state_dict (any key names, Linear weights and biases in order), mapped onto the registry's mlp; and a
file without metadata that the user describes by hand (architecture and width from the registry).
Uploads live in memory only and never touch the checkpoint folder.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import torch

from lmcdash.checkpoints import (META_KEY, CheckpointError, Header, load_checkpoint, meta_from_header,
                                 mlp_from_state_dict, read_header)
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import TensorDataset
from lmcdash.models import create_model

KINDS = ("lmcdash", "plain-mlp", "undescribed")


class UploadError(ValueError):
    """An upload does not fit what it is used with; the message says what to do."""


@dataclass
class Inspection:
    """What a file is, read from its header (and, for a plain MLP, its tensors)."""

    name: str
    digest: str  # sha256 hex of the bytes (first 16 digits): the upload's identity
    size: int
    kind: str  # one of KINDS
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # key -> (dtype, shape)
    meta: CheckpointMeta | None = None
    mapping: list[tuple[str, str]] = field(default_factory=list)  # plain MLP: (file key, registry key)
    note: str = ""  # why it is not an lmcdash checkpoint (kinds other than "lmcdash")


def digest(data: bytes) -> str:
    """Return the first 16 hex digits of the sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]


def _tensor_summary(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (str(v["dtype"]), tuple(int(s) for s in v["shape"])) for k, v in header.tensors.items()}


def inspect_upload(data: bytes, name: str) -> Inspection:
    """Return what the upload is, or raise CheckpointError (truncated, garbage, pickle, NaN, wrong shapes...)."""
    header = read_header(data, name)
    base = dict(name=name, digest=digest(data), size=len(data), tensors=_tensor_summary(header))
    if META_KEY in header.metadata:
        _, meta = load_checkpoint(data, name=name)  # full validation: keys, shapes, dtypes, finite values
        return Inspection(kind="lmcdash", meta=meta, **base)
    note = ""
    try:
        meta_from_header(header, name)
    except CheckpointError as exc:
        note = str(exc)
    try:
        _, meta, mapping = mlp_from_state_dict(data, name)
    except CheckpointError as exc:
        if "NaN or Inf" in str(exc) or "truncated" in str(exc) or "corrupt" in str(exc):
            raise
        return Inspection(kind="undescribed", note=f"{note}\n\nNot a plain ReLU-MLP state_dict either: {exc}", **base)
    return Inspection(kind="plain-mlp", meta=meta, mapping=mapping, note=note, **base)


def describe_spec(arch: str, width: int, num_classes: int, input_shape: tuple[int, ...],
                  base_width: int | None = None, depth: int | None = None, bias: bool = True) -> ModelSpec:
    """Return the ModelSpec a user described by hand on the Upload page."""
    return ModelSpec(arch, int(width), int(num_classes), tuple(int(v) for v in input_shape), base_width,
                     depth if arch == "mlp" else None, bias if arch == "mlp" else True)


def load_upload(data: bytes, name: str, dataset: str, spec: ModelSpec | None = None
                ) -> tuple[torch.nn.Module, CheckpointMeta, list[tuple[str, str]]]:
    """Return (model in eval mode, metadata with ``dataset``, key mapping) for an upload; CheckpointError if invalid.

    ``spec`` describes a file without metadata; without it a plain MLP state_dict is mapped automatically.
    """
    header = read_header(data, name)
    mapping: list[tuple[str, str]] = []
    if META_KEY in header.metadata and spec is None:
        model, meta = load_checkpoint(data, name=name)
    elif spec is not None:
        model, meta = load_checkpoint(data, model_spec=spec, name=name)
    else:
        model, meta, mapping = mlp_from_state_dict(data, name)
    if meta.dataset in ("", "unknown") or dataset != meta.dataset:
        meta = replace(meta, dataset=dataset)
    return model, meta, mapping


def fit_dataset(model: torch.nn.Module, meta: CheckpointMeta, data: TensorDataset, name: str
                ) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Return (model, meta) adapted to ``data``'s input shape, or raise UploadError when it does not fit.

    An MLP flattens its input, so only the number of features must agree; its spec then takes the
    dataset's shape (the engine compares shapes exactly). Conv nets need the dataset's channel count.
    """
    spec, shape = meta.model, tuple(data.input_shape)
    fix = (f"Choose the dataset the model was trained on, or describe the model with input shape {shape} "
           f"and {data.num_classes} classes.")
    if spec.arch == "mlp" and math.prod(spec.input_shape) != math.prod(shape):
        raise UploadError(f"{name}: the MLP takes {math.prod(spec.input_shape)} input features (shape "
                          f"{tuple(spec.input_shape)}), but {data.name} images have shape {shape} = "
                          f"{math.prod(shape)} features. {fix}")
    if spec.arch != "mlp" and spec.input_shape[0] != shape[0]:
        raise UploadError(f"{name}: the model takes {spec.input_shape[0]} input channels, but {data.name} has "
                          f"{shape[0]} (shape {shape}). {fix}")
    if tuple(spec.input_shape) != shape:
        new = create_model(replace(spec, input_shape=shape))
        new.load_state_dict(model.state_dict())
        model, meta = new.eval(), replace(meta, model=new.model_spec)
    try:
        with torch.no_grad():
            out = model(data.test_x[:2].to(next(model.parameters()).device))
    except RuntimeError as exc:
        raise UploadError(f"{name}: the model cannot run on {data.name} inputs of shape {shape} "
                          f"({str(exc).splitlines()[0]}). {fix}") from None
    if out.shape[-1] < data.num_classes:
        raise UploadError(f"{name}: the model has {out.shape[-1]} outputs, but {data.name} has "
                          f"{data.num_classes} classes. {fix}")
    return model, meta
