"""Datasets as normalised tensors in memory, with a fixed seeded calibration split carved from train.

Fashion-MNIST is searched in $LMCDASH_DATA, then Debian's /usr/share/datasets/fashion-mnist
(package ``dataset-fashion-mnist``), then downloaded with torchvision where internet exists.
MNIST and CIFAR-10/100 load from torchvision's on-disk layout under $LMCDASH_DATA (or download).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmcdash.config import DEBIAN_FASHION_MNIST, data_dir

SPLITS = ("train", "calib", "test")
DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TV_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


class DatasetError(RuntimeError):
    """A dataset is missing or malformed; the message says how to get it."""


@dataclass
class TensorDataset:
    """A dataset held as tensors: train (calibration removed), calib and test splits."""

    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N,) int64
    calib_x: torch.Tensor
    calib_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    normalization: dict
    calib_seed: int
    calib_size: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) of 'train', 'calib' or 'test'; raise DatasetError for anything else."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


# ------------------------------------------------------------------ IDX (MNIST family) readers
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def idx_folder_ok(folder: Path) -> bool:
    """Return True if ``folder`` holds the four MNIST-style IDX files (plain or .gz)."""
    return all(_idx_file(folder, s) for pair in _IDX_FILES.values() for s in pair)


def candidate_folders(name: str, root: Path | None = None) -> list[Path]:
    """Return the folders searched for an MNIST-style dataset, in order."""
    root = Path(root) if root is not None else data_dir()
    sub = _TV_FOLDER[name]
    out = [root / name, root / sub / "raw", root / sub, root]
    if name == "fashion-mnist":
        out.append(DEBIAN_FASHION_MNIST)
    return out


def find_idx_folder(name: str, root: Path | None = None) -> Path | None:
    """Return the first candidate folder that holds the dataset, or None."""
    return next((f for f in candidate_folders(name, root) if idx_folder_ok(f)), None)


def _load_idx_dataset(name: str, root: Path | None) -> tuple[np.ndarray, ...]:
    folder = find_idx_folder(name, root)
    if folder is None:
        folder = _download_torchvision(name, root)
    arrays = []
    for split in ("train", "test"):
        img, lab = (_read_idx(_idx_file(folder, s)) for s in _IDX_FILES[split])
        arrays += [img[:, None], lab]
    return tuple(arrays)


def _download_torchvision(name: str, root: Path | None) -> Path:
    root = Path(root) if root is not None else data_dir()
    hint = (
        f"{name} was not found in {', '.join(str(p) for p in candidate_folders(name, root))}"
        + (" (on Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist`)" if name == "fashion-mnist" else "")
        + f", and downloading it with torchvision failed. Put the IDX files in {root / name} or set LMCDASH_DATA."
    )
    try:
        import torchvision.datasets as tvd

        cls = tvd.FashionMNIST if name == "fashion-mnist" else tvd.MNIST
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types
        raise DatasetError(f"{hint} ({type(exc).__name__}: {exc})") from None
    return root / _TV_FOLDER[name] / "raw"


def _load_cifar(name: str, root: Path | None) -> tuple[np.ndarray, ...]:
    root = Path(root) if root is not None else data_dir()
    try:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        try:
            sets = [cls(str(root), train=t, download=False) for t in (True, False)]
        except RuntimeError:
            sets = [cls(str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:
        raise DatasetError(
            f"{name} was not found under {root} (torchvision layout, e.g. {root}/cifar-10-batches-py) and "
            f"could not be downloaded ({type(exc).__name__}: {exc}). Download it on a machine with "
            "internet and set LMCDASH_DATA to its folder."
        ) from None
    out = []
    for s in sets:
        out += [np.asarray(s.data).transpose(0, 3, 1, 2), np.asarray(s.targets)]
    return tuple(out)


def synthetic_arrays(n_train: int = 1200, n_test: int = 400, seed: int = 0, num_classes: int = 4,
                     shape: tuple[int, int, int] = (1, 8, 8)) -> tuple[np.ndarray, ...]:
    """Return a small learnable uint8 image dataset: class templates plus noise (for tests)."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(num_classes, *shape))
    out = []
    for n in (n_train, n_test):
        y = rng.integers(0, num_classes, size=n)
        x = np.clip(templates[y] + rng.normal(0, 60, size=(n, *shape)), 0, 255).astype(np.uint8)
        out += [x, y]
    return tuple(out)


def load_dataset(name: str, calib_size: int = 5000, calib_seed: int = 0, root: Path | None = None,
                 synthetic_kwargs: dict | None = None) -> TensorDataset:
    """Return the dataset as normalised tensors with a seeded calibration split carved from train."""
    if name in ("fashion-mnist", "mnist"):
        arrays = _load_idx_dataset(name, root)
    elif name in ("cifar10", "cifar100"):
        arrays = _load_cifar(name, root)
    elif name == "synthetic":
        arrays = synthetic_arrays(**(synthetic_kwargs or {}))
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    xtr, ytr, xte, yte = arrays
    xtr = torch.from_numpy(np.array(xtr)).float().div_(255)
    xte = torch.from_numpy(np.array(xte)).float().div_(255)
    # Per-channel statistics of the full training images, stored in checkpoint metadata.
    mean = xtr.mean(dim=(0, 2, 3))
    std = xtr.std(dim=(0, 2, 3))
    norm = lambda x: (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    ytr_t, yte_t = torch.tensor(np.asarray(ytr), dtype=torch.int64), torch.tensor(np.asarray(yte), dtype=torch.int64)
    if not 0 < calib_size < len(xtr):
        raise DatasetError(f"calib_size must be between 1 and {len(xtr) - 1}, got {calib_size}")
    order = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(calib_seed))
    cal, tr = order[:calib_size].sort().values, order[calib_size:].sort().values
    xtr = norm(xtr)
    num_classes = int(max(ytr_t.max(), yte_t.max())) + 1
    return TensorDataset(
        name, xtr[tr], ytr_t[tr], xtr[cal], ytr_t[cal], norm(xte), yte_t, num_classes,
        {"mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]},
        calib_seed, calib_size,
    )
