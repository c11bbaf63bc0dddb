"""Layerwise oracles: the Gaussian weak-additivity constant; LEWC exact on a two-block construction (and
the fitted beta at 1/2 reproducing the logit-average ensemble); the table's shape for every architecture."""
import math

import pytest
import torch

from lmcdash.calibration import fit_beta
from lmcdash.data import TensorDataset, load_dataset
from lmcdash.engine import Evaluator, make_pair
from lmcdash.layerwise import LAYER_COLUMNS, layer_fit, output_modules, weak_additivity
from lmcdash.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in conftest.py


GAUSSIAN_WEAK_ADDITIVITY = (3 / 4 + 1 / math.pi) / math.sqrt(1 + 1 / math.pi)  # 0.9304


def test_gaussian_weak_additivity_constant():
    assert GAUSSIAN_WEAK_ADDITIVITY == pytest.approx(0.9304, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(64, 16384, generator=g), torch.randn(64, 16384, generator=g)
    for layer in (1, 3):  # at lam = 1/2 both weights are equal, so the layer index drops out
        assert float(weak_additivity(za, zb, 0.5, layer).mean()) == pytest.approx(GAUSSIAN_WEAK_ADDITIVITY, abs=3e-3)
    assert float(weak_additivity(za, zb, 1.0, 2).mean()) == pytest.approx(1.0)


def _block_pair(depth: int = 2, half: int = 12, classes: int = 4):
    """A and B: bias-free MLPs on disjoint input halves and disjoint hidden halves, so f_A + f_B add exactly."""
    torch.manual_seed(0)
    small = [create_model("mlp", 1, classes, input_shape=(1, 4, 8), base_width=half, depth=depth, bias=False)
             for _ in range(2)]
    big = [create_model("mlp", 1, classes, input_shape=(1, 8, 8), base_width=2 * half, depth=depth, bias=False)
           for _ in range(2)]
    with torch.no_grad():
        for side, (s, b) in enumerate(zip(small, big)):
            for i, (ls, lb) in enumerate(zip(s.linears, b.linears)):
                lb.weight.zero_()
                rows = slice(None) if i == depth else slice(side * half, (side + 1) * half)
                cols = slice(side * 32, (side + 1) * 32) if i == 0 else slice(side * half, (side + 1) * half)
                lb.weight[rows, cols] = ls.weight * 3  # larger logits: a well-posed temperature fit
    return make_pair(big[0].eval(), None, big[1].eval(), None)


def _labelled_data(pair, n: int = 3000) -> TensorDataset:
    """Random inputs labelled by sampling from the logit-average ensemble (so beta is well inside its bounds)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3 * n, 1, 8, 8, generator=g)
    with torch.no_grad():
        avg = (pair.a(x) + pair.b(x)) / 2
    y = torch.multinomial(torch.softmax(2 * avg / avg.std(), 1), 1, generator=g).squeeze(1)
    return TensorDataset("synthetic", x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], 4, {}, 0, n)


def test_lewc_exact_on_two_block_construction():
    pair = _block_pair()
    data = _labelled_data(pair)
    lams = [0.0, 0.2, 0.5, 0.8, 1.0]
    df = layer_fit(pair, data, lams, n_samples=500)
    assert list(df.columns) == LAYER_COLUMNS and len(df) == 3 * len(lams)
    assert df["cos_lewc"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert df["norm_ratio"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert df["coef_a"].to_numpy() == pytest.approx(df["lam_pow"].to_numpy(), abs=1e-5)
    assert df["coef_b"].to_numpy() == pytest.approx(df["one_minus_lam_pow"].to_numpy(), abs=1e-5)
    hidden = df[df["layer"] < 3]
    assert hidden["weak_additivity"].to_numpy() == pytest.approx(1.0, abs=1e-6)  # disjoint supports
    # layer 1 reads the shared input; from layer 2 on each model's weights see only the other's zeros
    assert df[df["layer"] > 1][["recip_orth_ab", "recip_orth_ba"]].to_numpy().max() == pytest.approx(0.0, abs=1e-7)
    assert df[df["layer"] == 3]["weak_additivity"].isna().all()

    ev = Evaluator(pair, data, device="cpu")
    row = ev.point(0.5)
    za, zb, zm = ev.logits([1.0, 0.0, 0.5], "test")
    torch.testing.assert_close(zm, 2 ** (1 - 3) * (za + zb) / 2, atol=1e-5, rtol=1e-5)  # 2^(1-L) x logit average
    assert row["loss_cal"] == pytest.approx(row["loss_cal_logit_ens"], abs=1e-6)
    assert row["acc"] == row["acc_logit_ens"]
    zca, zcb = ev.logits([1.0, 0.0], "calib")
    beta_ens = fit_beta((zca + zcb) / 2, data.calib_y)
    assert row["beta_cal"] * row["temperature_lewc"] == pytest.approx(beta_ens, rel=1e-3)


@pytest.mark.parametrize("arch,kw,shape,layers", [
    ("mlp", dict(depth=2, base_width=8), (1, 8, 8), 3),
    ("vgg11", dict(base_width=2), (1, 16, 16), 11),
    ("resnet20", dict(base_width=2), (1, 8, 8), 20),
])
def test_layer_fit_shape_every_architecture(arch, kw, shape, layers):
    data = load_dataset("synthetic", calib_size=100, synthetic_kwargs=dict(n_train=400, n_test=100, shape=shape))
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(create_model(arch, 1, 4, input_shape=shape, **kw).eval())
    pair = make_pair(models[0], None, models[1], None)
    df = layer_fit(pair, data, [0.5, 1.0], n_samples=40)
    assert list(df.columns) == LAYER_COLUMNS and len(df) == 2 * layers
    assert list(df["layer"].unique()) == list(range(1, layers + 1))
    at_a = df[df["lam"] == 1.0]  # the merged model is A itself
    assert at_a["cos_lewc"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert at_a["coef_a"].to_numpy() == pytest.approx(1.0, abs=1e-4)
    assert df[df["layer"] < layers]["weak_additivity"].notna().all()
    assert df.drop(columns=["weak_additivity"]).notna().all().all()


def test_resnet_residual_sum_is_the_layer_output():
    m = create_model("resnet20", 1, 10, input_shape=(3, 8, 8), base_width=2)
    outs = output_modules(m)
    assert len(outs) == 20 and outs[0] == ["bn1"] and outs[1] == ["blocks.0.bn1"]
    assert outs[2] == ["blocks.0.bn2", "blocks.0.shortcut"] and outs[-1] == ["linear"]
    assert output_modules(create_model("vgg11", 1, 10, input_shape=(3, 16, 16), base_width=2))[0] == ["features.1"]
