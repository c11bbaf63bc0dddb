"""Dashboard tables: zoo sources and families, width pairs, recipe, barrier display, temperature sweep."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lmcdash import explore
from lmcdash.config import CheckpointMeta, ModelSpec


def test_zoo_sources_and_families(tiny_zoo):
    sources, errors = explore.zoo_sources(tiny_zoo)
    assert not errors
    assert explore.families(sources) == ["mlp1_tiny", "mlp2_tiny", "vgg_tiny"]
    pairs = explore.width_pairs(sources, "mlp1_tiny", 0, 1)
    assert sorted(pairs) == [1, 2, 4]
    a, b = pairs[2]
    assert (a.seed, b.seed, a.width) == (0, 1, 2) and a.key != b.key and a.dataset == "synthetic"
    assert explore.width_pairs(sources, "mlp2_tiny") and not explore.width_pairs(sources, "mlp2_tiny", 0, 0)


def test_zoo_sources_missing_folder(tmp_path):
    sources, errors = explore.zoo_sources(tmp_path / "nope")
    assert sources == [] and "does not exist" in errors[0]


def test_dataset_args_from_metadata():
    meta = CheckpointMeta(model=ModelSpec("mlp"), dataset="fashion-mnist", train={"calib_size": 3000, "calib_seed": 7})
    assert explore.dataset_args(meta) == ("fashion-mnist", 3000, 7)
    assert explore.dataset_args(CheckpointMeta(model=ModelSpec("mlp"), dataset="synthetic"))[1] == 200
    assert explore.dataset_args(CheckpointMeta(model=ModelSpec("mlp"), dataset="mnist"))[1:] == (5000, 0)


def test_recipe_table():
    m = CheckpointMeta(model=ModelSpec("mlp", 4, base_width=64, depth=1), dataset="fashion-mnist", seed=0,
                       train={"weight_decay": 3e-3, "epochs": 20, "optimizer": "sgd"}, metrics={"test_acc": 0.9})
    t = explore.recipe_table(m, m)
    row = dict(zip(t["item"], t["A (λ=1)"]))
    assert row["weight decay"] == "0.003" and row["epochs"] == "20" and row["test accuracy (metadata)"] == "90.00 %"
    assert row["hidden units / base channels"] == "256" and row["learning rate"] == "—"


def test_barrier_display_in_pp():
    bars = pd.DataFrame([dict(definition="midpoint", metric="accuracy", value=0.0123, formula="f"),
                         dict(definition="midpoint", metric="loss (raw)", value=0.5, formula="g")])
    shown = explore.barrier_display(bars)
    assert list(shown["value"]) == ["1.23 pp", "0.5000"] and list(shown.columns) == ["definition", "metric",
                                                                                       "value", "formula"]


def test_temperature_sweep_matches_cross_entropy():
    logits, y = torch.randn(3, 40, 5), torch.randint(0, 5, (40,))
    temps = explore.temperature_grid(5)
    assert temps[0] == pytest.approx(0.05) and temps[-1] == pytest.approx(2.0)
    sweep = explore.temperature_sweep(logits, y, (0.0, 0.5, 1.0), temps)
    assert len(sweep) == 15
    row = sweep[(sweep["lam"] == 0.5) & (sweep["temperature"] == temps[2])]["loss"].item()
    assert row == pytest.approx(F.cross_entropy(logits[1] / temps[2], y).item(), rel=1e-5)


def test_fmt_metrics():
    row = dict(lam=0.5, acc=0.81234, loss_raw=0.5, loss_cal=0.25, temperature_cal=0.4, loss_manual=None)
    assert explore.fmt_metrics(row) == {"Accuracy": "81.23 %", "Raw loss": "0.5000", "Calibrated loss": "0.2500",
                                        "Fitted temperature T": "0.4000"}
    assert "Loss at manual T" in explore.fmt_metrics({**row, "loss_manual": 1.0})
