"""Upload validation: every kind of bad file gets its own readable message; plain MLPs are mapped."""
import io
import json

import pytest
import torch
from safetensors.torch import save as st_save

from lmcdash.checkpoints import CheckpointError, checkpoint_bytes
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import load_dataset
from lmcdash.models import create_model
from lmcdash.uploads import UploadError, describe_spec, fit_dataset, inspect_upload, load_upload

SPEC = ModelSpec("mlp", 1, 4, (1, 8, 8), 8, 1)


def good_bytes(spec: ModelSpec = SPEC, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    model = create_model(spec)
    return checkpoint_bytes(model, CheckpointMeta(model=model.model_spec, dataset="synthetic", seed=seed,
                                                  train={"calib_size": 200}))


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a phrase the message must contain)."""
    good = good_bytes()
    buf = io.BytesIO()
    torch.save(create_model(SPEC).state_dict(), buf)
    nan_model = create_model(SPEC)
    with torch.no_grad():
        nan_model.linears[0].weight[0, 0] = float("nan")
    nan = checkpoint_bytes(nan_model, CheckpointMeta(model=nan_model.model_spec, dataset="synthetic"))
    wide = create_model(ModelSpec("mlp", 2, 4, (1, 8, 8), 8, 1))
    meta_says_w1 = CheckpointMeta(model=create_model(SPEC).model_spec, dataset="synthetic")
    state = {k: v.contiguous() for k, v in wide.state_dict().items()}
    wrong = st_save(state, metadata={"lmcdash": json.dumps(meta_says_w1.to_dict()), "note": "wrong shapes"})
    return {
        "truncated": (good[: len(good) // 2], "truncated"),
        "garbage": (b"\x13\x37 this is not a checkpoint at all" * 40, "not safetensors"),
        "pickle": (buf.getvalue(), "torch pickle"),
        "nan": (nan, "NaN or Inf"),
        "wrong_shapes": (wrong, "wrong shapes"),
    }


@pytest.mark.parametrize("kind", ["truncated", "garbage", "pickle", "nan", "wrong_shapes"])
def test_bad_files_raise_readable_errors(kind):
    data, phrase = bad_files()[kind]
    with pytest.raises(CheckpointError) as err:
        inspect_upload(data, f"{kind}.safetensors")
    assert phrase in str(err.value) and f"{kind}.safetensors" in str(err.value)


def test_valid_lmcdash_file():
    insp = inspect_upload(good_bytes(), "a.safetensors")
    assert insp.kind == "lmcdash" and insp.meta.dataset == "synthetic" and len(insp.digest) == 16
    model, meta, mapping = load_upload(good_bytes(), "a.safetensors", "synthetic")
    assert mapping == [] and meta.model.width == 1


def test_plain_mlp_state_dict_is_mapped():
    model = create_model(SPEC)
    names = {"linears.0.weight": "fc1.weight", "linears.0.bias": "fc1.bias",
             "linears.1.weight": "head.weight", "linears.1.bias": "head.bias"}
    data = st_save({names[k]: v.contiguous() for k, v in model.state_dict().items()})
    insp = inspect_upload(data, "plain.safetensors")
    assert insp.kind == "plain-mlp"
    assert ("fc1.weight", "linears.0.weight") in insp.mapping and ("head.bias", "linears.1.bias") in insp.mapping
    assert "no lmcdash metadata" in insp.note
    loaded, meta, mapping = load_upload(data, "plain.safetensors", "synthetic")
    assert meta.dataset == "synthetic"
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(loaded(x), model(x))


def test_no_metadata_non_mlp_needs_description():
    model = create_model(ModelSpec("vgg11", 1, 4, (1, 8, 8), 2))
    data = st_save({k: v.contiguous() for k, v in model.state_dict().items()})
    insp = inspect_upload(data, "conv.safetensors")
    assert insp.kind == "undescribed" and "no lmcdash metadata" in insp.note
    spec = describe_spec("vgg11", 1, 4, (1, 8, 8), base_width=2)
    loaded, meta, _ = load_upload(data, "conv.safetensors", "synthetic", spec)
    assert meta.model.arch == "vgg11" and meta.dataset == "synthetic"
    with pytest.raises(CheckpointError, match="width"):
        load_upload(data, "conv.safetensors", "synthetic", describe_spec("vgg11", 2, 4, (1, 8, 8), base_width=2))


def test_input_shape_that_does_not_fit_the_dataset():
    data = load_dataset("synthetic", calib_size=200)
    model = create_model(ModelSpec("mlp", 1, 10, (1, 28, 28), 8, 1))
    meta = CheckpointMeta(model=model.model_spec, dataset="synthetic")
    with pytest.raises(UploadError, match="784 input features"):
        fit_dataset(model, meta, data, "m.safetensors")
    model = create_model(ModelSpec("mlp", 1, 2, (1, 8, 8), 8, 1))
    with pytest.raises(UploadError, match="2 outputs"):
        fit_dataset(model, CheckpointMeta(model=model.model_spec), data, "m.safetensors")
    flat = create_model(ModelSpec("mlp", 1, 4, (64,), 8, 1))  # a plain MLP state_dict maps to a flat input
    fitted, meta = fit_dataset(flat, CheckpointMeta(model=flat.model_spec), data, "m.safetensors")
    assert meta.model.input_shape == (1, 8, 8) and fitted.model_spec.input_shape == (1, 8, 8)
    x = data.test_x[:3]
    assert torch.equal(fitted(x), flat(x))
