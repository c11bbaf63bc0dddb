"""AppTest tests for every page, on a tiny synthetic zoo (LMCDASH_CHECKPOINTS points at it)."""
from __future__ import annotations

import ast
import inspect
import io
import json
from pathlib import Path

import pytest
import streamlit as st
import torch
from safetensors.torch import save as st_save
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

import lmcdash.merged as merged
from lmcdash import explore, uploads
from lmcdash.checkpoints import checkpoint_bytes, load_checkpoint
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import load_dataset
from lmcdash.engine import Evaluator, load_pair
from lmcdash.models import create_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/explorer.py", "pages/layers.py", "pages/widths.py", "pages/permutations.py", "pages/upload.py"]


def _run_main_script(main_script_path: str) -> None:
    path = Path(main_script_path)
    exec(compile(path.read_text(), str(path), "exec"), {"__name__": "__main__", "__file__": str(path)})  # noqa: S102


@pytest.fixture(autouse=True)
def fresh(tiny_zoo, monkeypatch):
    """Point the app at the tiny zoo, on the CPU, with empty caches.

    AppTest resets streamlit's "pages/ folder means v1 auto-discovery" flag before every run, so each
    rerun would start a page file without app.py; a server clears it for good once app.py has called
    st.navigation. Running the main script plainly reproduces the server's steady state. (The first
    request of a fresh server is covered by ui.widgets.require_frame and the browser test.)
    """
    monkeypatch.setattr(script_runner, "_mpa_v1", _run_main_script)
    monkeypatch.setenv("LMCDASH_CHECKPOINTS", str(tiny_zoo))
    monkeypatch.setenv("LMCDASH_DEVICE", "cpu")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def app(**state) -> AppTest:
    """Return the app after its first run (``state`` presets session_state, e.g. the sidebar's folder)."""
    at = AppTest.from_file("../app.py", default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame_with(at: AppTest, column: str):
    """Return the first st.dataframe value that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def chart(at: AppTest, i: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def engine_row(zoo: Path, family: str, width: int, lam: float, temperature: float | None = None,
               bn_mode: str = "reset") -> dict:
    pair = load_pair(zoo / family / f"{family}_w{width}_s0.safetensors", zoo / family / f"{family}_w{width}_s1.safetensors")
    data = load_dataset("synthetic", calib_size=200, calib_seed=0)
    return Evaluator(pair, data, device="cpu", bn_mode=bn_mode).point(lam, "test", temperature=temperature)


def zoo_bytes(zoo: Path, family: str, width: int, seed: int) -> bytes:
    return (zoo / family / f"{family}_w{width}_s{seed}.safetensors").read_bytes()


# ----------------------------------------------------------------------------- structure
def test_every_page_is_listed_and_opens():
    listed = {n.value for n in ast.walk(ast.parse((ROOT / "app.py").read_text()))
              if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("pages/")}
    assert listed == {str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py")} == set(PAGES)
    at = ok(app())
    assert "cpu" in " ".join(c.value for c in at.sidebar.caption)
    for page in PAGES:
        ok(at.switch_page(page).run())


# ----------------------------------------------------------------------------- explorer
def test_explorer_metrics_equal_the_engine(tiny_zoo):
    at = ok(app())
    at.selectbox(key="family").set_value("mlp1_tiny").run()
    ok(at.selectbox(key="width").set_value(2).run())
    assert at.selectbox(key="pick_a").value.endswith("_w2_s0") and at.selectbox(key="pick_b").value.endswith("_w2_s1")
    assert metrics(at) == explore.fmt_metrics(engine_row(tiny_zoo, "mlp1_tiny", 2, 0.5))
    ok(at.slider(key="lam").set_value(0.3).run())
    assert metrics(at) == explore.fmt_metrics(engine_row(tiny_zoo, "mlp1_tiny", 2, 0.3))
    spec = chart(at)
    markers = [t for t in spec["data"] if t.get("mode") == "markers"]
    assert markers and all(t["x"][0] == pytest.approx(0.3) for t in markers)
    assert len(spec["frames"]) == 25 and spec["layout"]["sliders"][0]["steps"][6]["method"] == "animate"
    # manual temperature: a temperature slider, a second client-side slider, the loss at T as a metric
    at.selectbox(key="temp_mode").set_value("manual").run()
    ok(at.slider(key="temperature").set_value(0.5).run())
    assert metrics(at) == explore.fmt_metrics(engine_row(tiny_zoo, "mlp1_tiny", 2, 0.3, 0.5))
    assert len(chart(at)["layout"]["sliders"]) == 2
    # barrier table names each definition; CSV download of the per-lam table
    bars = frame_with(at, "definition")
    assert set(bars["definition"]) == {"midpoint", "max over grid"} and "formula" in bars
    assert any(b.proto.label.startswith("Download per-λ") for b in at.get("download_button"))
    recipe = frame_with(at, "item")
    assert "weight decay" in set(recipe["item"]) and "dataset" in set(recipe["item"])


def test_batchnorm_pair_offers_bn_modes(tiny_zoo):
    at = ok(app())
    assert not [s for s in at.selectbox if s.key == "bn_mode"]  # MLPs have no BatchNorm choice
    ok(at.selectbox(key="family").set_value("vgg_tiny").run())
    assert at.selectbox(key="bn_mode").value == "reset"
    assert metrics(at) == explore.fmt_metrics(engine_row(tiny_zoo, "vgg_tiny", 1, 0.5))
    ok(at.selectbox(key="bn_mode").set_value("interpolate").run())
    assert metrics(at) == explore.fmt_metrics(engine_row(tiny_zoo, "vgg_tiny", 1, 0.5, bn_mode="interpolate"))


def test_temperature_change_runs_no_network_and_new_lam_computes_one(monkeypatch):
    calls = []  # every network run of the engine: lams for the MLP fast path, the function name otherwise

    def spy(name: str) -> None:
        real = getattr(merged, name)
        sig = inspect.signature(real)

        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs).arguments
            calls.append(list(bound["lams"]) if "lams" in bound else name)
            return real(*args, **kwargs)
        monkeypatch.setattr(merged, name, wrapper)

    for name in ("mlp_interior", "mlp_endpoint", "forward_chunks"):
        spy(name)
    at = ok(app())
    assert calls, "the first view computes the grid"
    at.selectbox(key="temp_mode").set_value("manual").run()
    calls.clear()
    ok(at.slider(key="temperature").set_value(0.7).run())
    ok(at.slider(key="temperature").set_value(0.3).run())
    assert calls == []  # a temperature change never runs the network
    ok(at.slider(key="lam").set_value(0.37).run())
    assert calls and all(c == [0.37] for c in calls)  # an off-grid lam computes only that lam (test + calib)


def test_incompatible_pair_and_missing_dataset_show_messages(tiny_zoo, tmp_path):
    at = ok(app())
    at.radio(key="pair_mode").set_value("any two checkpoints").run()
    at.selectbox(key="any_a").set_value("mlp1_tiny/mlp1_tiny_w1_s0")
    at.selectbox(key="any_b").set_value("mlp1_tiny/mlp1_tiny_w2_s0").run()
    assert not at.exception and at.error and "cannot be interpolated" in at.error[0].value
    assert "width" in at.error[0].value
    # a folder whose checkpoints name a dataset that cannot be loaded
    model = create_model(ModelSpec("mlp", 1, 4, (1, 8, 8), 8, 1))
    for s in (0, 1):
        meta = CheckpointMeta(model=model.model_spec, dataset="no-such-dataset", seed=s)
        (tmp_path / "fam").mkdir(exist_ok=True)
        (tmp_path / "fam" / f"fam_w1_s{s}.safetensors").write_bytes(checkpoint_bytes(model, meta))
    at = app(ckpt_folder=str(tmp_path))
    assert at.text_input(key="ckpt_folder").value == str(tmp_path)
    assert not at.exception and at.error and "unknown dataset" in at.error[0].value
    assert at.selectbox(key="family").value == "fam"  # the page still shows what loaded


# ----------------------------------------------------------------------------- layers, widths, permutations
def test_layers_page(tiny_zoo):
    at = ok(app().switch_page("pages/layers.py").run())
    charts = at.get("plotly_chart")
    assert len(charts) == 6
    heat = chart(at, 0)
    assert heat["data"][0]["type"] == "heatmap" and len(heat["data"][0]["y"]) == 2  # mlp1: L = 2
    ok(at.slider(key="lam").set_value(0.25).run())
    assert any(s.get("x0") == 0.25 for s in chart(at, 0)["layout"]["shapes"])
    table = frame_with(at, "cos_lewc")
    assert {"cos_lewc", "cos_llfc", "norm_ratio", "coef_a", "weak_additivity", "recip_orth_ab"} <= set(table)


def test_widths_page(tiny_zoo):
    at = ok(app().switch_page("pages/widths.py").run())
    at.selectbox(key="w_family").set_value("mlp1_tiny").run()
    ok(at)
    assert len(at.get("plotly_chart")) == 3
    table = frame_with(at, "loss (raw) · midpoint")
    assert list(table["width"]) == [1, 2, 4]
    assert "loss (calibrated) · midpoint" in table and "loss (raw) · max over grid" in table
    ok(at.multiselect(key="w_widths_mlp1_tiny").set_value([1, 4]).run())
    assert list(frame_with(at, "loss (raw) · midpoint")["width"]) == [1, 4]
    barrier_fig = chart(at, 2)
    assert barrier_fig["layout"]["xaxis"]["type"] == "log"


def test_permutations_page(tiny_zoo):
    at = app().switch_page("pages/permutations.py").run()
    at.selectbox(key="p_family").set_value("mlp1_tiny").run()
    ok(at)
    table = frame_with(at, "condition")
    assert set(table["condition"]) == {"no permutation, raw", "no permutation, calibrated", "weight matching",
                                       "random permutation"}
    permuted = table[table["condition"].isin(["weight matching", "random permutation"])]
    assert len(permuted) == 6 and (permuted["max_output_diff"] < 1e-4).all()


def test_explorer_with_weight_matching_shows_output_difference():
    at = ok(app())
    ok(at.selectbox(key="perm").set_value("weight").run())
    text = " ".join(c.value for c in at.caption)
    assert "Max |B(x) − permuted B(x)|" in text and "weight matching" in text


# ----------------------------------------------------------------------------- upload
def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    up = at.file_uploader(key="upload_files")
    for name, data in files:
        up.upload(name, data)
    return up.run()


def test_upload_valid_pair_becomes_selectable(tiny_zoo):
    at = ok(app().switch_page("pages/upload.py").run())
    assert "200 MB" in " ".join(c.value for c in at.caption)
    a, b = zoo_bytes(tiny_zoo, "mlp1_tiny", 2, 0), zoo_bytes(tiny_zoo, "mlp1_tiny", 2, 1)
    ok(upload(at, ("a.safetensors", a), ("b.safetensors", b)))
    assert len(at.success) == 2
    labels = [s.label for s in (at.session_state["uploads"][k].source for k in at.session_state["uploads"])]
    assert all(lab.startswith("upload · ") for lab in labels)
    next(b for b in at.button if b.proto.label == "Open in Explorer").click().run()
    ok(at)
    assert at.radio(key="pair_mode").value == "any two checkpoints"
    options = at.selectbox(key="any_a").options
    assert set(labels) <= set(options)
    expected = explore.fmt_metrics(engine_row(tiny_zoo, "mlp1_tiny", 2, 0.5))
    assert metrics(at) == expected  # the same files as the zoo pair give the same numbers
    # Widths lists the uploads as a family of their own
    at.switch_page("pages/widths.py").run()
    assert explore.UPLOAD_FAMILY in at.selectbox(key="w_family").options


def bad_files(zoo: Path) -> dict[str, tuple[bytes, str]]:
    good = zoo_bytes(zoo, "mlp1_tiny", 1, 0)
    pickle = io.BytesIO()
    torch.save(load_checkpoint(zoo / "mlp1_tiny" / "mlp1_tiny_w1_s0.safetensors")[0].state_dict(), pickle)
    model = create_model(ModelSpec("mlp", 1, 4, (1, 8, 8), 8, 1))
    with torch.no_grad():
        model.linears[1].bias[0] = float("nan")
    nan = checkpoint_bytes(model, CheckpointMeta(model=model.model_spec, dataset="synthetic"))
    wide = create_model(ModelSpec("mlp", 2, 4, (1, 8, 8), 8, 1))
    claims_w1 = CheckpointMeta(model=create_model(ModelSpec("mlp", 1, 4, (1, 8, 8), 8, 1)).model_spec,
                               dataset="synthetic")
    wrong = st_save({k: v.contiguous() for k, v in wide.state_dict().items()},
                    metadata={"lmcdash": json.dumps(claims_w1.to_dict()), "note": "wrong shapes"})
    return {"truncated.safetensors": (good[:-100], "truncated"),
            "garbage.safetensors": (bytes(range(256)) * 8, "not safetensors"),
            "pickle.safetensors": (pickle.getvalue(), "torch pickle"),
            "nan.safetensors": (nan, "NaN or Inf"),
            "shapes.safetensors": (wrong, "wrong shapes")}


@pytest.mark.parametrize("name", ["truncated.safetensors", "garbage.safetensors", "pickle.safetensors",
                                  "nan.safetensors", "shapes.safetensors"])
def test_upload_bad_file_shows_its_message(tiny_zoo, name):
    data, phrase = bad_files(tiny_zoo)[name]
    at = app().switch_page("pages/upload.py").run()
    upload(at, (name, data), ("good.safetensors", zoo_bytes(tiny_zoo, "mlp1_tiny", 1, 1)))
    assert not at.exception
    assert len(at.error) == 1 and phrase in at.error[0].value and name in at.error[0].value
    assert len(at.success) == 1 and len(at.session_state["uploads"]) == 1  # the good file still loads


def test_upload_plain_mlp_state_dict_is_mapped(tiny_zoo):
    model, _ = load_checkpoint(tiny_zoo / "mlp1_tiny" / "mlp1_tiny_w1_s0.safetensors")
    names = {"linears.0.weight": "encoder.fc.weight", "linears.0.bias": "encoder.fc.bias",
             "linears.1.weight": "head.weight", "linears.1.bias": "head.bias"}
    data = st_save({names[k]: v.contiguous() for k, v in model.state_dict().items()})
    at = ok(upload(app().switch_page("pages/upload.py").run(), ("plain.safetensors", data)))
    assert "plain ReLU-MLP state_dict" in at.info[0].value
    mapping = frame_with(at, "registry key")
    assert list(mapping.iloc[0]) == ["encoder.fc.weight", "linears.0.weight"]
    assert at.selectbox(key=f"ds_{next(iter(at.session_state['uploads']))}").value == "synthetic"
    assert len(at.success) == 1


def test_upload_without_metadata_is_described_by_hand():
    model = create_model(ModelSpec("vgg11", 1, 4, (1, 8, 8), 2))
    data = st_save({k: v.contiguous() for k, v in model.state_dict().items()})
    at = ok(upload(app().switch_page("pages/upload.py").run(), ("conv.safetensors", data)))
    assert "no lmcdash metadata" in at.warning[0].value and not at.session_state["uploads"]
    d = uploads.digest(data)
    at.selectbox(key=f"arch_{d}").set_value("vgg11")  # the form: architecture, width, base width, depth, dataset
    at.number_input(key=f"base_{d}").set_value(2)
    at.selectbox(key=f"dsd_{d}").set_value("synthetic")
    next(b for b in at.button if b.proto.label == "Use this description").click().run()
    ok(at)
    assert len(at.success) == 1 and next(iter(at.session_state["uploads"].values())).arch == "vgg11"


def test_upload_input_shape_that_does_not_fit_the_dataset():
    model = torch.nn.Sequential(torch.nn.Linear(100, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    data = st_save({k: v.contiguous() for k, v in model.state_dict().items()})
    at = upload(app().switch_page("pages/upload.py").run(), ("flat.safetensors", data))
    assert not at.exception
    assert at.error and "100 input features" in at.error[0].value and "(1, 8, 8)" in at.error[0].value
    assert not at.session_state["uploads"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explorer_on_cuda_matches_cpu(tiny_zoo, monkeypatch):
    monkeypatch.setenv("LMCDASH_DEVICE", "cuda")
    at = ok(app())
    assert at.selectbox(key="device").value == "cuda"
    assert "cuda" in " ".join(c.value for c in at.sidebar.caption)
    shown = {k: float(v.split()[0]) for k, v in metrics(at).items()}
    cpu = explore.fmt_metrics(engine_row(tiny_zoo, "mlp1_tiny", 1, 0.5))
    assert shown == pytest.approx({k: float(v.split()[0]) for k, v in cpu.items()}, abs=2e-3)
    for page in PAGES[1:4]:
        ok(at.switch_page(page).run())
