"""Real-data tests on the shipped zoo: complete per checkpoints/retrain.sh, every file loads, a header
accuracy reproduces on the real test split, and one real pair through the engine behaves as measured
(calibration lowers the barrier; the fitted temperature at lam = 1/2 is near LEWC's 2^(1-L) = 0.5)."""
from pathlib import Path

import pytest

from lmcdash.checkpoints import list_checkpoints, load_checkpoint
from lmcdash.config import ROOT
from lmcdash.data import find_idx_folder, load_dataset
from lmcdash.engine import Evaluator, lam_grid, load_pair
from lmcdash.train import evaluate

ZOO = ROOT / "checkpoints"  # the shipped zoo itself, whatever $LMCDASH_CHECKPOINTS says
FILES = sorted(ZOO.rglob("*.safetensors"))
RECIPE = {  # family -> (arch, depth, base width, weight decay, epochs, widths), as in checkpoints/retrain.sh
    "mlp1_wd3e-3": ("mlp", 1, 64, 3e-3, 20, (1, 2, 4, 8, 16, 32)),
    "mlp3_wd3e-3": ("mlp", 3, 32, 3e-3, 20, (1, 2, 4, 8, 16)),
    "mlp1_wd1e-4": ("mlp", 1, 64, 1e-4, 20, (4, 32)),
    "vgg11_wd3e-3": ("vgg11", None, 4, 3e-3, 10, (1, 2, 4)),
}
PAIR = ("mlp1_wd3e-3/mlp1_w4_s0.safetensors", "mlp1_wd3e-3/mlp1_w4_s1.safetensors")

pytestmark = pytest.mark.skipif(not FILES, reason=f"the shipped zoo is absent (no *.safetensors under {ZOO}); "
                                                  "`make zoo` retrains it")
needs_fmnist = pytest.mark.skipif(find_idx_folder("fashion-mnist") is None,
                                  reason="Fashion-MNIST not found; `make fashion-mnist` installs it")


def test_zoo_is_complete_per_recipe_and_small():
    rows, errors = list_checkpoints(ZOO)  # headers only
    assert errors == []
    got = {str(Path(r["file"]).relative_to(ZOO)): (r["arch"], r["depth"], r["base_width"], r["width"], r["seed"],
                                                  r["weight_decay"], r["epochs"], r["dataset"]) for r in rows}
    want = {f"{fam}/{fam.split('_')[0]}_w{w}_s{s}.safetensors": (arch, depth, base, w, s, wd, epochs, "fashion-mnist")
            for fam, (arch, depth, base, wd, epochs, widths) in RECIPE.items() for w in widths for s in (0, 1)}
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    assert not missing and not extra, f"zoo differs from checkpoints/retrain.sh: missing {missing}, unexpected {extra}"
    assert got == want  # per file: arch, depth, base width, width, seed, weight decay, epochs, dataset
    low = {str(Path(r["file"]).relative_to(ZOO)): r["test_acc"] for r in rows if not r["test_acc"] > 0.8}
    assert low == {}, "a zoo model trained badly (header test accuracy <= 0.8)"
    size = sum(p.stat().st_size for p in FILES)
    assert size < 80e6, f"the zoo is {size / 1e6:.1f} MB; the product brief allows under 80 MB"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ZOO)))
def test_every_zoo_file_loads(path):
    model, meta = load_checkpoint(path)
    assert model.model_spec == meta.model and not model.training


@pytest.fixture(scope="module")
def pair_and_data():
    pair = load_pair(ZOO / PAIR[0], ZOO / PAIR[1])
    train = pair.meta_a.train
    return pair, load_dataset(pair.meta_a.dataset, train["calib_size"], train["calib_seed"])


@needs_fmnist
def test_header_accuracy_reproduces_on_the_real_test_split(pair_and_data):
    pair, data = pair_and_data
    assert data.normalization == pair.meta_a.normalization  # same preprocessing as in training
    acc, loss = evaluate(pair.a, data.test_x, data.test_y)
    assert acc == pytest.approx(pair.meta_a.metrics["test_acc"], abs=1e-4)
    assert loss == pytest.approx(pair.meta_a.metrics["test_loss"], abs=1e-4)


@needs_fmnist
def test_real_pair_through_the_engine(pair_and_data):
    pair, data = pair_and_data
    res = Evaluator(pair, data, device="cpu").curve(lam_grid(5), "test")
    t = res.table.set_index("lam")
    for lam, model in ((1.0, pair.a), (0.0, pair.b)):  # endpoints: exactly the shipped models
        acc, loss = evaluate(model, data.test_x, data.test_y)
        assert t.loc[lam, "acc"] == acc
        assert t.loc[lam, "loss_raw"] == pytest.approx(loss, abs=1e-5)  # float64 vs float32 summation
    mid = res.barriers[res.barriers["definition"] == "midpoint"].set_index("metric")["value"]
    assert mid["loss (raw)"] > 0 and mid["loss (calibrated)"] < mid["loss (raw)"]
    # LEWC predicts a logit scale 2^(1-L) = 0.5 at lam = 1/2 for L = 2; measured 0.43-0.51 on this zoo.
    assert res.num_layers == 2 and 0.3 <= t.loc[0.5, "temperature_cal"] <= 0.7
