"""Data: IDX reading, search order, calibration split, synthetic data, and one real Fashion-MNIST load."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcdash import data
from lmcdash.data import DatasetError, find_idx_folder, load_dataset


def _write_idx(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, value: int = 7) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        img = np.full((n, 28, 28), value, np.uint8)
        lab = (np.arange(n) % 10).astype(np.uint8)
        blobs = {
            f"{split}-images-idx3-ubyte": bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in img.shape) + img.tobytes(),
            f"{split}-labels-idx1-ubyte": bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + lab.tobytes(),
        }
        for name, blob in blobs.items():
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(blob)
            else:
                (folder / name).write_bytes(blob)


def test_search_order_prefers_lmcdash_data(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    _write_idx(tmp_path / "debian", value=1)
    root = tmp_path / "user"
    assert find_idx_folder("fashion-mnist", root) == tmp_path / "debian"  # fallback to Debian's package
    _write_idx(root / "FashionMNIST" / "raw", gz=False, value=2)  # torchvision layout, decompressed
    assert find_idx_folder("fashion-mnist", root) == root / "FashionMNIST" / "raw"
    _write_idx(root / "fashion-mnist", value=3)  # our own folder name wins
    assert find_idx_folder("fashion-mnist", root) == root / "fashion-mnist"
    monkeypatch.setenv("LMCDASH_DATA", str(root))
    ds = load_dataset("fashion-mnist", calib_size=5)
    assert ds.train_x.shape == (25, 1, 28, 28) and ds.calib_x.shape == (5, 1, 28, 28)


def test_mnist_not_searched_in_debian_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    _write_idx(tmp_path / "debian")
    assert find_idx_folder("mnist", tmp_path / "user") is None


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nothing")

    def offline(*a, **k):
        raise OSError("no internet")

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_truncated_idx_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nothing")
    _write_idx(tmp_path / "mnist", gz=False)
    p = tmp_path / "mnist" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("mnist", calib_size=5, root=tmp_path)


def test_calibration_split_is_seeded_and_disjoint():
    a = load_dataset("synthetic", calib_size=100, calib_seed=1)
    b = load_dataset("synthetic", calib_size=100, calib_seed=1)
    c = load_dataset("synthetic", calib_size=100, calib_seed=2)
    assert torch.equal(a.calib_x, b.calib_x) and not torch.equal(a.calib_x, c.calib_x)
    assert len(a.train_x) + len(a.calib_x) == 1200
    rows = {tuple(r.tolist()) for r in a.train_x.flatten(1)[:, :16]}
    assert not any(tuple(r.tolist()) in rows for r in a.calib_x.flatten(1)[:, :16])
    assert a.split("calib")[0] is a.calib_x
    with pytest.raises(DatasetError, match="unknown split"):
        a.split("validation")


def test_cifar_layout_synthetic_stand_in(tmp_path, monkeypatch):
    """CIFAR-10 in torchvision's on-disk layout (a tiny synthetic stand-in) loads without internet."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(range(n))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # stand-ins lack official md5s
    ds = load_dataset("cifar10", calib_size=4, root=tmp_path)
    assert ds.train_x.shape == (16, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert len(ds.normalization["mean"]) == 3


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.skipif(find_idx_folder("fashion-mnist") is None, reason="Fashion-MNIST not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (55000, 1, 28, 28) and ds.calib_x.shape == (5000, 1, 28, 28)
    assert ds.test_x.shape == (10000, 1, 28, 28)
    assert set(ds.test_y.tolist()) == set(range(10)) and ds.num_classes == 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert abs(ds.normalization["mean"][0] - 0.286) < 1e-3
    assert abs(float(ds.train_x.mean())) < 0.01
