"""Engine oracles: exact endpoints, fast path = generic path, zero self-barrier, barrier signs, BN reset,
read-only endpoints, clear errors for incompatible pairs and bad splits, bounded cache, CLI."""
import copy
import json
import math

import pandas as pd
import pytest
import torch

from lmcdash.config import CheckpointMeta
from lmcdash.data import DatasetError, load_dataset
from lmcdash.engine import Evaluator, PairError, lam_grid, make_pair
from lmcdash import merged as M
from lmcdash.merged import interpolate_state
from lmcdash.metrics import BARRIER_COLUMNS, TABLE_COLUMNS, barriers
from lmcdash.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in conftest.py


SYN = dict(n_train=800, n_test=200)
ARCHS = {  # name -> (create_model kwargs, input shape)
    "mlp": (dict(depth=1, base_width=16), (1, 8, 8)),
    "mlp3_nobias": (dict(depth=3, base_width=8, bias=False), (1, 8, 8)),
    "vgg11": (dict(base_width=2), (1, 16, 16)),
    "resnet20": (dict(base_width=2), (1, 8, 8)),
}


@pytest.fixture(scope="module")
def datasets():
    return {shape: load_dataset("synthetic", calib_size=200, synthetic_kwargs=dict(SYN, shape=shape))
            for shape in {(1, 8, 8), (1, 16, 16)}}


def _model(name: str, seed: int, width: int = 1):
    kw, shape = ARCHS[name]
    torch.manual_seed(seed)
    m = create_model("mlp" if name.startswith("mlp") else name, width, 4, input_shape=shape, **kw)
    if any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()):  # give BN non-trivial statistics
        with torch.no_grad():
            m.train()
            for _ in range(3):
                m(torch.randn(64, *shape) * 2 + 0.5)
    return m.eval()


def _pair(name: str, seeds=(0, 1)):
    return make_pair(_model(name, seeds[0]), None, _model(name, seeds[1]), None)


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("bn_mode", ["reset", "interpolate"])
def test_endpoints_reproduced_exactly(datasets, name, bn_mode):
    pair = _pair(name)
    data = datasets[ARCHS[name][1]]
    ev = Evaluator(pair, data, device="cpu", bn_mode=bn_mode)
    z = ev.logits([0.0, 1.0], "test")
    with torch.inference_mode():
        assert torch.equal(z[0], pair.b(data.test_x)) and torch.equal(z[1], pair.a(data.test_x))


@pytest.mark.parametrize("name", ["mlp", "mlp3_nobias"])
def test_fast_mlp_path_equals_generic_path(datasets, name):
    pair = _pair(name)
    data = datasets[(1, 8, 8)]
    lams = [0.1, 0.37, 0.5, 0.9]
    ev = Evaluator(pair, data, device="cpu")
    z = ev.logits(lams, "test")
    la, lb = M.mlp_layers(ev._sa), M.mlp_layers(ev._sb)
    za, zb = ev._z["test"]
    torch.testing.assert_close(M.mlp_interior(za, zb, la, lb, lams, rows=16, workers=3), z)  # row blocks in threads
    for lam, zk in zip(lams, z):
        ref = copy.deepcopy(pair.a)
        ref.load_state_dict(interpolate_state(pair.a.state_dict(), pair.b.state_dict(), lam))
        with torch.inference_mode():
            torch.testing.assert_close(zk, ref(data.test_x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name,bn_mode", [("mlp", "reset"), ("mlp3_nobias", "reset"), ("vgg11", "interpolate")])
def test_model_merged_with_itself_has_zero_barrier(datasets, name, bn_mode):
    a = _model(name, 0)
    pair = make_pair(a, None, copy.deepcopy(a), None)
    res = Evaluator(pair, datasets[ARCHS[name][1]], device="cpu", bn_mode=bn_mode).curve(lam_grid(5))
    assert (res.barriers["value"].abs() < 1e-9).all(), res.barriers
    assert res.table["loss_raw"].nunique() == 1


def test_barrier_signs():
    lam = [0.0, 0.5, 1.0]
    better = pd.DataFrame({"lam": lam, "acc": [0.8, 0.9, 0.8], "loss_raw": [1.0, 0.5, 1.0], "loss_cal": [1.0, 0.6, 1.0]})
    b = barriers(better).set_index(["definition", "metric"])["value"]
    assert b[("midpoint", "loss (raw)")] == pytest.approx(-0.5)
    assert b[("midpoint", "loss (calibrated)")] == pytest.approx(-0.4)
    assert b[("midpoint", "accuracy")] == pytest.approx(-0.1)
    assert b[("max over grid", "loss (raw)")] == pytest.approx(0.0)  # the endpoints attain the max
    worse = better.assign(acc=[0.8, 0.6, 0.9], loss_raw=[1.0, 2.0, 0.5])
    b = barriers(worse).set_index(["definition", "metric"])["value"]
    assert b[("midpoint", "loss (raw)")] == pytest.approx(1.25)
    assert b[("midpoint", "accuracy")] == pytest.approx(0.25)
    assert b[("max over grid", "accuracy")] == pytest.approx(0.25)
    assert list(barriers(worse).columns) == BARRIER_COLUMNS


def test_bn_reset_changes_statistics_never_the_endpoints(datasets):
    pair = _pair("vgg11")
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (pair.a, pair.b)]
    data = datasets[(1, 16, 16)]
    ev = Evaluator(pair, data, device="cpu", bn_mode="reset", bn_batches=2, bn_batch_size=100)
    ev.curve(lam_grid(3))
    reset = ev.merged_state(0.5)
    naive = Evaluator(pair, data, device="cpu", bn_mode="interpolate").merged_state(0.5)
    key = "features.1.running_mean"
    torch.testing.assert_close(naive[key], 0.5 * (before[0][key] + before[1][key]))
    assert not torch.allclose(reset[key], naive[key])
    # the reset mean is the plain average of the first conv's output over the fixed reset batches
    x = torch.cat(ev._reset_batches())
    conv = torch.nn.functional.conv2d(x, reset["features.0.weight"], padding=1)
    torch.testing.assert_close(reset[key], conv.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)
    for m, ref in zip((pair.a, pair.b), before):
        after = m.state_dict()
        assert all(torch.equal(after[k], v) for k, v in ref.items())


def test_incompatible_pairs_name_the_difference(datasets):
    with pytest.raises(PairError, match="arch"):
        make_pair(_model("mlp", 0), None, _model("resnet20", 0), None)
    with pytest.raises(PairError, match="width"):
        make_pair(_model("mlp", 0), None, _model("mlp", 0, width=2), None)
    a, b = _model("mlp", 0), _model("mlp", 1)
    ma, mb = CheckpointMeta(a.model_spec, dataset="mnist"), CheckpointMeta(b.model_spec, dataset="fashion-mnist")
    with pytest.raises(PairError, match="dataset"):
        make_pair(a, ma, b, mb)
    pair = make_pair(a, ma, b, CheckpointMeta(b.model_spec, dataset="mnist"))
    with pytest.raises(PairError, match="mnist.*synthetic"):
        Evaluator(pair, datasets[(1, 8, 8)])
    with pytest.raises(PairError, match="input shape"):
        Evaluator(_pair("mlp"), datasets[(1, 16, 16)])


def test_bad_split_and_bad_options(datasets):
    ev = Evaluator(_pair("mlp"), datasets[(1, 8, 8)], device="cpu")
    with pytest.raises(DatasetError, match="'validation'.*train, calib, test"):
        ev.logits([0.5], "validation")
    with pytest.raises(ValueError, match="calib"):
        ev.curve([0.5], "calib")
    with pytest.raises(ValueError, match="BN mode"):
        Evaluator(_pair("mlp"), datasets[(1, 8, 8)], bn_mode="recompute")
    with pytest.raises(ValueError, match="temperature"):
        ev.point(0.5, temperature=0.0)


def test_curve_table_cache_and_temperature_change(datasets):
    pair = _pair("mlp3_nobias")
    ev = Evaluator(pair, datasets[(1, 8, 8)], device="cpu", max_cached=6)
    res = ev.curve(lam_grid(4))  # 0.5 is added to an even grid
    t = res.table
    assert list(t.columns) == TABLE_COLUMNS and list(t["lam"]) == pytest.approx([0, 1 / 3, 0.5, 2 / 3, 1])
    assert res.num_layers == 4 and res.bn_mode == "none" and res.perm == "none"
    mid = t.set_index("lam").loc[0.5]
    assert mid["temperature_lewc"] == pytest.approx(2 ** -3) and mid["beta_lewc"] == pytest.approx(8)
    assert (t["acc_logit_ens"].iloc[[0, -1]].values == t["acc"].iloc[[0, -1]].values).all()
    assert len(ev._cache) <= 6
    row = ev.point(0.5)
    flops = ev.flops
    manual = ev.point(0.5, temperature=1.0)
    assert manual["loss_manual"] == pytest.approx(row["loss_raw"]) and ev.flops == flops  # no network ran
    assert ev.point(0.5, temperature=0.5)["loss_manual"] != manual["loss_manual"] and ev.flops == flops


def test_lam_grid():
    assert lam_grid(5) == (0.0, 0.25, 0.5, 0.75, 1.0) and len(lam_grid()) == 25
    with pytest.raises(ValueError):
        lam_grid(1)


def test_cli_eval_and_layers(tiny_zoo, tmp_path, capsys):
    from lmcdash.cli import main

    fam = tiny_zoo / "mlp1_tiny"
    a, b = fam / "mlp1_tiny_w2_s0.safetensors", fam / "mlp1_tiny_w2_s1.safetensors"
    out = tmp_path / "eval.json"
    assert main(["eval", str(a), str(b), "--grid", "5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "midpoint" in text and "max over grid" in text and "pp" in text
    doc = json.loads(out.read_text())
    assert len(doc["table"]) == 5 and set(doc["table"][0]) == set(TABLE_COLUMNS) and len(doc["barriers"]) == 6
    assert main(["layers", str(a), str(b), "--n-samples", "50", "--lams", "0.5"]) == 0
    assert "cos_lewc" in capsys.readouterr().out
    assert main(["eval", str(a), str(fam / "mlp1_tiny_w4_s1.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "width" in err and len(err.strip().splitlines()) == 1
    for split in ("valid", "calib"):
        assert main(["eval", str(a), str(b), "--split", split]) == 2
        err = capsys.readouterr().err
        assert split in err and len(err.strip().splitlines()) == 1
    assert math.isfinite(doc["barriers"][0]["value"])


def test_parallel_row_blocks_are_bit_identical():
    """CPU row blocks on per-thread template copies give exactly the single-thread logits."""
    import copy

    from lmcdash import merged as M

    torch.manual_seed(0)
    model = create_model("vgg11", 1, 10, base_width=2).eval()
    state = dict(model.state_dict())
    template = M.make_template(model.model_spec)
    x = torch.randn(53, 1, 28, 28)
    ref = M.forward_chunks(template, state, x, 8)
    got = M.forward_parallel([template, copy.deepcopy(template)], state, x, 8)
    assert torch.equal(got, ref)
    assert torch.equal(ref, model(x)) or torch.allclose(ref, model(x), atol=1e-6)
