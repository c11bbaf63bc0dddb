"""Shared fixtures: a tiny synthetic model zoo for app, browser and dashboard-library tests."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_FAMILIES = {  # family -> (arch, depth, base width, widths)
    "mlp1_tiny": ("mlp", 1, 8, (1, 2, 4)),
    "mlp2_tiny": ("mlp", 2, 8, (1,)),
    "vgg_tiny": ("vgg11", None, 2, (1,)),  # BatchNorm: exercises the BN modes and the generic engine path
}


def build_tiny_zoo(root: Path, epochs: int = 1) -> Path:
    """Train tiny MLPs and a tiny VGG-11 on the offline 'synthetic' dataset into root/<family>/<family>_w<w>_s<seed>.safetensors."""
    import torch

    from lmcdash.checkpoints import save_checkpoint
    from lmcdash.config import ModelSpec, TrainConfig
    from lmcdash.data import load_dataset
    from lmcdash.train import train_model

    torch.set_num_threads(1)
    data = load_dataset("synthetic", calib_size=200, calib_seed=0)
    for family, (arch, depth, base, widths) in TINY_FAMILIES.items():
        for w in widths:
            for seed in (0, 1):
                spec = ModelSpec(arch, w, data.num_classes, data.input_shape, base, depth)
                cfg = TrainConfig("synthetic", epochs, 64, 0.05, 0.9, 3e-3, "onecycle", "sgd", seed, 200, 0)
                model, meta = train_model(spec, cfg, data)
                save_checkpoint(root / family / f"{family}_w{w}_s{seed}.safetensors", model, meta)
    return root


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """Return the folder of a tiny zoo (about 1 s to train on one core; endpoints near 80 % accuracy)."""
    return build_tiny_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP joins otherwise dominate small tensors."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
