"""Checkpoints: exact round trip, header-only listing, and every CheckpointError case with real bad files."""
import json

import pytest
import torch
from safetensors.torch import save_file

from lmcdash import checkpoints as ck
from lmcdash.checkpoints import CheckpointError, list_checkpoints, load_checkpoint, mlp_from_state_dict, save_checkpoint
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.models import create_model


def _meta(spec: ModelSpec, **kw) -> CheckpointMeta:
    return CheckpointMeta(model=spec, dataset="synthetic", normalization={"mean": [0.5], "std": [0.2]}, seed=3,
                          train={"weight_decay": 3e-3, "epochs": 2, "lr": 0.05, "optimizer": "sgd"},
                          metrics={"test_acc": 0.75, "test_loss": 0.61}, history=[{"epoch": 1, "test_acc": 0.7}], **kw)


@pytest.fixture
def good(tmp_path):
    torch.manual_seed(0)
    model = create_model("mlp", 2, 10, base_width=8)
    path = save_checkpoint(tmp_path / "good.safetensors", model, _meta(model.model_spec))
    return model, path


@pytest.mark.parametrize("arch", ["mlp", "vgg11", "resnet20"])
def test_round_trip_is_exact(tmp_path, arch):
    torch.manual_seed(1)
    model = create_model(arch, 1, 10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(17)
    meta = _meta(model.model_spec)
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, meta2 = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert meta2.to_dict() == meta.to_dict()
    assert meta2.version and meta2.created
    assert not loaded.training


def test_load_from_bytes_and_with_explicit_spec(good):
    model, path = good
    loaded, meta = load_checkpoint(path.read_bytes(), name="up.safetensors")
    assert meta.model == model.model_spec
    bare = path.with_name("bare.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, bare)
    loaded, meta = load_checkpoint(bare, model_spec=ModelSpec("mlp", 2, 10, base_width=8))
    assert torch.equal(loaded.linears[0].weight, model.linears[0].weight)


def test_listing_reads_headers_only(good, monkeypatch, tmp_path):
    model, path = good
    (tmp_path / "junk.safetensors").write_bytes(b"garbage bytes here")
    monkeypatch.setattr(ck, "st_load", lambda *a: pytest.fail("listing must not load tensors"))
    rows, errors = list_checkpoints(tmp_path)
    assert len(rows) == 1 and rows[0]["arch"] == "mlp" and rows[0]["width"] == 2 and rows[0]["hidden"] == 16
    assert rows[0]["seed"] == 3 and rows[0]["weight_decay"] == 3e-3 and rows[0]["test_acc"] == 0.75
    assert len(errors) == 1 and "junk.safetensors" in errors[0]


def _bad(tmp_path, name: str, blob: bytes):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def test_garbage_file(tmp_path):
    with pytest.raises(CheckpointError, match="corrupt|not safetensors|truncated|header declares"):
        load_checkpoint(_bad(tmp_path, "g.safetensors", b"this is not a checkpoint at all, just text\n" * 3))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(_bad(tmp_path, "tiny.safetensors", b"abc"))


def test_renamed_torch_pickle(tmp_path, good):
    model, _ = good
    p = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), p)
    with pytest.raises(CheckpointError, match="torch pickle.*never unpickles.*save_file"):
        load_checkpoint(p)
    p2 = tmp_path / "legacy.safetensors"
    torch.save(model.state_dict(), p2, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="torch pickle"):
        load_checkpoint(p2)


def test_truncated_header_and_data(tmp_path, good):
    _, path = good
    blob = path.read_bytes()
    with pytest.raises(CheckpointError, match="truncated header"):
        load_checkpoint(_bad(tmp_path, "th.safetensors", blob[:40]))
    with pytest.raises(CheckpointError, match="truncated or has trailing data"):
        load_checkpoint(_bad(tmp_path, "td.safetensors", blob[:-64]))


def test_corrupt_header_json(tmp_path, good):
    _, path = good
    blob = bytearray(path.read_bytes())
    blob[9:14] = b"#####"
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_checkpoint(_bad(tmp_path, "c.safetensors", bytes(blob)))


def test_oversized_header_refused_before_reading(tmp_path):
    blob = (10**12).to_bytes(8, "little") + b"{" + b" " * 100
    with pytest.raises(CheckpointError, match="header declares 1,000,000,000,000 bytes"):
        load_checkpoint(_bad(tmp_path, "big.safetensors", blob))


def test_missing_metadata_names_arguments(tmp_path, good):
    model, _ = good
    p = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, p)
    with pytest.raises(CheckpointError, match=r"no lmcdash metadata.*model_spec=ModelSpec\(arch=.*mlp, resnet20, vgg11"):
        load_checkpoint(p)


def _with_meta(tmp_path, name, state, spec_dict):
    meta = _meta(ModelSpec("mlp")).to_dict()
    meta["model"] = spec_dict
    p = tmp_path / name
    save_file(state, p, metadata={"lmcdash": json.dumps(meta)})
    return p


def test_unknown_architecture(tmp_path, good):
    model, _ = good
    p = _with_meta(tmp_path, "u.safetensors", model.state_dict(), {"arch": "vit", "width": 1})
    with pytest.raises(CheckpointError, match="unknown architecture 'vit'; registered: mlp, resnet20, vgg11"):
        load_checkpoint(p)


def test_missing_and_unexpected_keys_sorted(tmp_path, good):
    model, _ = good
    state = dict(model.state_dict())
    state.pop("linears.1.bias")
    state.pop("linears.0.bias")
    state["zz.extra"] = torch.zeros(2)
    state["aa.extra"] = torch.zeros(2)
    p = _with_meta(tmp_path, "k.safetensors", state, model.model_spec.to_dict())
    with pytest.raises(CheckpointError, match=r"missing \['linears.0.bias', 'linears.1.bias'\], "
                                              r"unexpected \['aa.extra', 'zz.extra'\]"):
        load_checkpoint(p)


def test_wrong_shapes(tmp_path, good):
    model, _ = good
    spec = model.model_spec.to_dict() | {"width": 3}
    p = _with_meta(tmp_path, "s.safetensors", model.state_dict(), spec)
    with pytest.raises(CheckpointError, match=r"wrong shapes.*linears.0.weight: file \(16, 784\) vs model \(24, 784\)"):
        load_checkpoint(p)


def test_non_floating_dtype(tmp_path, good):
    model, _ = good
    state = {k: v.to(torch.int32) if k == "linears.0.weight" else v for k, v in model.state_dict().items()}
    p = _with_meta(tmp_path, "d.safetensors", state, model.model_spec.to_dict())
    with pytest.raises(CheckpointError, match=r"non-floating dtypes for weights: linears.0.weight \(I32\)"):
        load_checkpoint(p)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf(tmp_path, good, value):
    model, _ = good
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["linears.1.weight"][0, 0] = value
    p = _with_meta(tmp_path, "n.safetensors", state, model.model_spec.to_dict())
    with pytest.raises(CheckpointError, match=r"NaN or Inf values in \['linears.1.weight'\]"):
        load_checkpoint(p)


def test_plain_mlp_state_dict_is_mapped(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    p = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, p)
    model, meta, mapping = mlp_from_state_dict(p)
    assert mapping[0] == ("1.weight", "linears.0.weight") and mapping[-1] == ("5.bias", "linears.2.bias")
    assert meta.model.depth == 2 and meta.model.base_width == 32 and meta.dataset == "unknown"
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), net(x))


def test_plain_state_dict_that_is_not_an_mlp(tmp_path):
    p = tmp_path / "conv.safetensors"
    save_file({"conv.weight": torch.zeros(4, 1, 3, 3), "fc.weight": torch.zeros(10, 4)}, p)
    with pytest.raises(CheckpointError, match="not a plain MLP"):
        mlp_from_state_dict(p)
    p2 = tmp_path / "chain.safetensors"
    save_file({"a.weight": torch.zeros(10, 7), "b.weight": torch.zeros(7, 784)}, p2)
    with pytest.raises(CheckpointError, match="do not chain"):
        mlp_from_state_dict(p2)


def test_header_length_starting_with_pickle_byte_is_not_a_pickle(tmp_path, good):
    """A header of 0x..80 bytes starts the file with 0x80, like a pickle; it must still load."""
    model, path = good
    meta = _meta(model.model_spec)
    for pad in range(0, 400):
        meta.extra = {"pad": "x" * pad}
        blob = ck.checkpoint_bytes(model, meta)
        if blob[0] == 0x80:
            break
    assert blob[0] == 0x80
    p = tmp_path / "x80.safetensors"
    p.write_bytes(blob)
    loaded, meta2 = load_checkpoint(p)
    assert meta2.extra["pad"] == meta.extra["pad"]
