"""Training: deterministic on CPU, records its recipe, never sees the calibration split."""
import torch

from lmcdash.config import ModelSpec, TrainConfig
from lmcdash.data import load_dataset
from lmcdash.train import evaluate, train_model

SPEC = ModelSpec("mlp", 1, 4, (1, 8, 8), base_width=16, depth=1)
CFG = TrainConfig(dataset="synthetic", epochs=3, batch_size=64, lr=0.05, weight_decay=3e-3, seed=5, calib_size=200)


def _data():
    return load_dataset("synthetic", calib_size=200)


def test_training_is_deterministic_and_learns():
    data = _data()
    epochs = []
    m1, meta1 = train_model(SPEC, CFG, data, on_epoch=lambda e, n, row: epochs.append((e, n)))
    m2, meta2 = train_model(SPEC, CFG, data)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert epochs == [(1, 3), (2, 3), (3, 3)]
    assert meta1.history == meta2.history and len(meta1.history) == 3
    assert meta1.metrics["test_acc"] > 0.8  # four noisy templates are easy
    m3, _ = train_model(SPEC, TrainConfig(**{**CFG.to_dict(), "seed": 6}), data)
    assert not torch.equal(m3.linears[0].weight, m1.linears[0].weight)


def test_metadata_records_recipe():
    _, meta = train_model(SPEC, CFG, _data())
    assert meta.train["weight_decay"] == 3e-3 and meta.train["calib_size"] == 200 and meta.train["calib_seed"] == 0
    assert meta.train["schedule"] == "onecycle" and meta.train["optimizer"] == "sgd" and meta.seed == 5
    assert meta.dataset == "synthetic" and set(meta.metrics) == {"train_acc", "train_loss", "test_acc", "test_loss"}


def test_calibration_split_is_never_seen(monkeypatch):
    data = _data()
    data.calib_x = torch.full_like(data.calib_x, float("nan"))  # any use would poison the weights
    model, _ = train_model(SPEC, CFG, data)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_bn_model_trains_and_evaluates():
    data = _data()
    spec = ModelSpec("vgg11", 1, 4, (1, 8, 8), base_width=2)
    model, meta = train_model(spec, TrainConfig(**{**CFG.to_dict(), "epochs": 1}), data)
    acc, loss = evaluate(model, data.test_x, data.test_y)
    assert 0 <= acc <= 1 and loss > 0 and not model.training
