"""Frozen configuration dataclasses and path defaults (env vars override)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def data_dir() -> Path:
    """Return the user data root ($LMCDASH_DATA or ./data next to the repo)."""
    return Path(os.environ.get("LMCDASH_DATA", ROOT / "data"))


def checkpoints_dir() -> Path:
    """Return the checkpoint folder ($LMCDASH_CHECKPOINTS or the shipped zoo)."""
    return Path(os.environ.get("LMCDASH_CHECKPOINTS", ROOT / "checkpoints"))


def default_device() -> torch.device:
    """Return $LMCDASH_DEVICE if set, else CUDA when present, else CPU."""
    name = os.environ.get("LMCDASH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class ModelSpec:
    """Everything create_model needs to rebuild an architecture."""

    arch: str
    width: int = 1
    num_classes: int = 10
    input_shape: tuple[int, ...] = (1, 28, 28)
    base_width: int | None = None  # None: the architecture's default
    depth: int | None = None  # hidden layers for mlp; ignored by fixed-depth nets
    bias: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "input_shape" in known:
            known["input_shape"] = tuple(int(v) for v in known["input_shape"])
        return cls(**known)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: optimizer, schedule and data settings."""

    dataset: str = "fashion-mnist"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-3
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "constant"
    optimizer: str = "sgd"
    seed: int = 0
    calib_size: int = 5000
    calib_seed: int = 0
    train_subset: int | None = None  # None: the whole training split minus calibration

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class CheckpointMeta:
    """The lmcdash JSON document stored in a checkpoint's safetensors metadata."""

    model: ModelSpec
    dataset: str = "unknown"
    normalization: dict = field(default_factory=dict)  # {"mean": [...], "std": [...]}
    seed: int | None = None
    train: dict = field(default_factory=dict)  # TrainConfig.to_dict() or {}
    metrics: dict = field(default_factory=dict)  # final train/test accuracy and loss
    history: list = field(default_factory=list)  # per-epoch metrics
    extra: dict = field(default_factory=dict)  # e.g. alignment provenance
    version: str = ""
    created: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckpointMeta":
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "model"}
        return cls(model=ModelSpec.from_dict(d["model"]), **fields)
