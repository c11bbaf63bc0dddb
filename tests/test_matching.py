"""Oracle tests for lmcdash.matching: function-preserving perms, planted-perm recovery, CLI round trip."""
from __future__ import annotations

import pytest
import torch

from lmcdash import cli
from lmcdash.activations import output_modules, perm_correlations, sample_batches
from lmcdash.checkpoints import load_checkpoint, save_checkpoint
from lmcdash.config import CheckpointMeta, ModelSpec
from lmcdash.data import load_dataset
from lmcdash.matching import (
    METHODS, MatchResult, activation_matching, match_models, matching_objective, max_output_diff,
    objective_keys, permute_model, permute_state, random_match, weight_matching,
)
from lmcdash.models import create_model, list_models, perm_spec

SHAPES = {"mlp": (1, 8, 8), "vgg11": (3, 16, 16), "resnet20": (3, 8, 8)}  # VGG pools 4 times
ARCH_WIDTHS = [(a, w) for a in list_models() for w in (1, 2)]


def make_model(arch: str, width: int = 1, seed: int = 0) -> torch.nn.Module:
    """Return a seeded model in eval mode with random (distinct, mostly alive) BN params and statistics."""
    torch.manual_seed(seed)
    model = create_model(arch, width, 10, input_shape=SHAPES[arch]).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def inputs(arch: str, n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SHAPES[arch], generator=torch.Generator().manual_seed(seed))


def planted(arch: str, width: int = 1):
    """Return (model, randomly permuted copy, the planted MatchResult)."""
    model = make_model(arch, width)
    planted_perm = random_match(perm_spec(model), model.state_dict(), seed=7)
    return model, permute_model(model, planted_perm.perms), planted_perm


def assert_same_state(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    bad = [k for k in want if not torch.equal(got[k], want[k])]
    assert not bad, f"differ: {bad}"


@pytest.mark.parametrize("arch,width", ARCH_WIDTHS)
def test_random_permutation_preserves_function(arch, width):
    model, permuted, result = planted(arch, width)
    assert result.method == "random"
    assert any(not torch.equal(p, torch.arange(len(p))) for p in result.perms.values())
    assert not torch.equal(permuted.state_dict()[next(iter(result_keys(model)))],
                           model.state_dict()[next(iter(result_keys(model)))])
    assert max_output_diff(model, permuted, inputs(arch)) < 1e-5
    assert not permuted.training


def result_keys(model):
    return [k for k, v in perm_spec(model).axes.items() if v and v[0] is not None]


@pytest.mark.parametrize("arch,width", ARCH_WIDTHS)
def test_weight_matching_recovers_planted_permutation(arch, width):
    model, permuted, _ = planted(arch, width)
    spec = perm_spec(model)
    steps = []
    result = weight_matching(spec, model.state_dict(), permuted.state_dict(), seed=0,
                             on_step=lambda s, obj: steps.append((s, obj)))
    assert_same_state(permute_state(spec, permuted.state_dict(), result.perms), model.state_dict())
    hist = result.objective_history
    assert all(b >= a for a, b in zip(hist, hist[1:])), hist
    assert [s for s, _ in steps] == list(range(1, len(hist)))
    assert [o for _, o in steps] == hist[1:]
    assert hist[-1] == pytest.approx(matching_objective(spec, model.state_dict(), model.state_dict(),
                                                        {p: torch.arange(len(v)) for p, v in result.perms.items()}))


@pytest.mark.parametrize("arch", list_models())
def test_weight_matching_objective_never_decreases_on_unrelated_models(arch):
    a, b = make_model(arch, 1, seed=0), make_model(arch, 1, seed=1)
    result = weight_matching(perm_spec(a), a.state_dict(), b.state_dict(), seed=3)
    hist = result.objective_history
    assert len(hist) >= 3 and hist[-1] > hist[0]
    assert all(y >= x for x, y in zip(hist, hist[1:])), hist
    again = weight_matching(perm_spec(a), a.state_dict(), b.state_dict(), seed=3)
    assert all(torch.equal(result.perms[p], again.perms[p]) for p in result.perms)  # seeded
    assert all(p.dtype == torch.int64 and p.device.type == "cpu" for p in result.perms.values())


def test_objective_excludes_bn_statistics():
    a, b = make_model("vgg11", 1, 0), make_model("vgg11", 1, 1)
    spec = perm_spec(a)
    keys = objective_keys(spec, a.state_dict())
    assert not [k for k in keys if "running" in k or "num_batches" in k]
    assert "features.1.weight" in keys and "features.1.bias" in keys
    state_b = b.state_dict()
    noisy = {k: (v + 5 * torch.randn_like(v) if "running_mean" in k else v) for k, v in state_b.items()}
    r1 = weight_matching(spec, a.state_dict(), state_b)
    r2 = weight_matching(spec, a.state_dict(), noisy)
    assert all(torch.equal(r1.perms[p], r2.perms[p]) for p in r1.perms)


@pytest.mark.parametrize("arch", list_models())
def test_activation_matching_recovers_planted_permutation(arch):
    model, permuted, _ = planted(arch)
    batches = sample_batches(inputs(arch, 96, seed=1), n_samples=96, batch_size=32, seed=0)
    calls = []
    result = activation_matching(model, permuted, perm_spec(model), batches,
                                 on_step=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.method == "activation" and result.objective_history[1] >= result.objective_history[0]
    assert_same_state(permute_state(perm_spec(model), permuted.state_dict(), result.perms), model.state_dict())


def test_output_modules_follow_the_spec():
    mods = output_modules(perm_spec(create_model("resnet20", 1, 10, input_shape=(3, 8, 8))))
    assert {"conv1", "bn1", "blocks.0.conv2", "blocks.0.bn2", "blocks.2.bn2"} <= set(mods["P_res0"])
    assert set(mods["P_blk0"]) == {"blocks.0.conv1", "blocks.0.bn1"}
    assert "blocks.3.shortcut.0" in mods["P_res1"] and "linear" not in sum(mods.values(), [])


def test_correlations_use_chain_ends_only():
    """conv -> BN chains count once (the BN); residual streams sum every block's output."""
    a, b = make_model("resnet20", 1, 0), make_model("resnet20", 1, 1)
    corr = perm_correlations(a, a, perm_spec(a), [inputs("resnet20", 16)])
    diag = {p: c.diagonal() for p, c in corr.items()}
    assert torch.allclose(diag["P_res0"], torch.full_like(diag["P_res0"], 4.0))  # bn1 + 3 x bn2
    assert torch.allclose(diag["P_res1"], torch.full_like(diag["P_res1"], 4.0))  # 3 x bn2 + shortcut BN
    assert torch.allclose(diag["P_blk0"], torch.ones_like(diag["P_blk0"]))
    x = inputs("resnet20", 16)
    corr = perm_correlations(a, b, perm_spec(a), [x])["P_blk4"]
    feats = []
    for m in (a, b):
        h = m.blocks[4].bn1.register_forward_hook(lambda _m, _i, out: feats.append(out.movedim(1, -1).flatten(0, -2)))
        with torch.no_grad():
            m(x)
        h.remove()
    n = corr.shape[0]
    want = torch.corrcoef(torch.cat(feats, 1).T.double())[:n, n:]
    assert torch.allclose(corr, want, atol=1e-8)


@pytest.mark.parametrize("arch", list_models())
def test_zero_barrier_after_matching(arch):
    """Matched permuted copy merged with the original at lam = 1/2 computes the original logits."""
    model, permuted, _ = planted(arch)
    aligned = permute_model(permuted, match_models(model, permuted, "weight").perms)
    sa, sb = model.state_dict(), aligned.state_dict()
    merged = create_model(model.model_spec).eval()
    merged.load_state_dict({k: torch.lerp(sb[k], sa[k], 0.5) if sa[k].is_floating_point() else sa[k] for k in sa})
    x = inputs(arch)
    with torch.no_grad():
        assert torch.allclose(merged(x), model(x), atol=1e-6, rtol=0)


def test_inputs_are_never_mutated():
    model, permuted, planted_perm = planted("resnet20")
    before = {k: v.clone() for k, v in permuted.state_dict().items()}
    perms = match_models(model, permuted, "weight").perms
    permute_model(permuted, perms)
    activation_matching(model, permuted, perm_spec(model), [inputs("resnet20")])
    assert_same_state(permuted.state_dict(), before)
    assert not permuted._forward_hooks and not any(m._forward_hooks for m in permuted.modules())


def test_bad_inputs_raise_clear_errors():
    model = make_model("mlp")
    spec = perm_spec(model)
    with pytest.raises(ValueError, match="not a permutation"):
        permute_state(spec, model.state_dict(), {"P0": torch.zeros(64, dtype=torch.int64)})
    with pytest.raises(ValueError, match="unknown perm"):
        permute_state(spec, model.state_dict(), {"Q": torch.arange(64)})
    wide = make_model("mlp", 2)
    with pytest.raises(ValueError, match="same architecture"):
        weight_matching(spec, model.state_dict(), wide.state_dict())
    with pytest.raises(ValueError, match="needs data"):
        match_models(model, model, "activation")
    with pytest.raises(ValueError, match="unknown alignment method"):
        match_models(model, model, "sinkhorn")
    assert METHODS == ("none", "random", "weight", "activation")


# ------------------------------------------------------------------ CLI
def write_pair(tmp_path, planted_b: bool):
    """Write A and B (a permuted copy of A, or an unrelated model) as synthetic-data checkpoints."""
    spec = ModelSpec("mlp", 1, 4, (1, 8, 8))
    torch.manual_seed(0)
    a = create_model(spec).eval()
    b = permute_model(a, random_match(perm_spec(a), a.state_dict(), 5).perms) if planted_b else create_model(spec)
    meta = CheckpointMeta(model=spec, dataset="synthetic", train={"calib_size": 200, "calib_seed": 0},
                          extra={"note": "kept"})
    return save_checkpoint(tmp_path / "a.safetensors", a, meta), save_checkpoint(tmp_path / "b.safetensors", b, meta), a


@pytest.mark.parametrize("method", ["weight", "activation", "random"])
def test_cli_align_round_trip(tmp_path, capsys, method):
    path_a, path_b, a = write_pair(tmp_path, planted_b=True)
    out = tmp_path / "b_aligned.safetensors"
    assert cli.main(["align", str(path_a), str(path_b), "--method", method, "--seed", "3",
                     "--n-samples", "300", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |B(x) - aligned B(x)|" in printed and " s" in printed
    aligned, meta = load_checkpoint(out)
    info = meta.extra["alignment"]
    assert meta.extra["note"] == "kept"
    assert info["method"] == method and info["seed"] == 3
    assert info["source_a"] == "a.safetensors" and info["source_b"] == "b.safetensors"
    assert isinstance(info["objective_history"], list) and info["max_output_diff"] < 1e-5
    b, _ = load_checkpoint(path_b)
    assert max_output_diff(b, aligned, torch.randn(16, 1, 8, 8)) < 1e-5
    if method in ("weight", "activation"):  # a planted permutation is recovered exactly
        assert_same_state(aligned.state_dict(), a.state_dict())
        assert len(info["objective_history"]) >= 2


def test_cli_align_errors(tmp_path, capsys):
    path_a, path_b, _ = write_pair(tmp_path, planted_b=False)
    wide = save_checkpoint(tmp_path / "wide.safetensors", create_model("mlp", 2, 4, input_shape=(1, 8, 8)),
                           CheckpointMeta(model=ModelSpec("mlp", 2, 4, (1, 8, 8)), dataset="synthetic"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [([str(path_a), str(wide)], "width: 1 vs 2"),
             ([str(path_a), str(path_b), "--out", str(path_b)], "overwrite"),
             ([str(path_a), str(garbage)], "garbage.safetensors")]
    for args, message in cases:
        argv = ["align", *args] + ([] if "--out" in args else ["--out", str(tmp_path / "o.safetensors")])
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.safetensors").exists()


def test_permute_pair_sets_perm_and_key():
    from lmcdash.engine import make_pair
    from lmcdash.matching import permute_pair

    model, permuted, _ = planted("mlp")
    meta = CheckpointMeta(model=model.model_spec, dataset="synthetic", train={"calib_size": 200, "calib_seed": 0})
    pair = make_pair(model, meta, permuted, meta, "A", "B")
    before = {k: v.clone() for k, v in permuted.state_dict().items()}
    new, result = permute_pair(pair, "weight", seed=0)
    assert isinstance(result, MatchResult) and new.perm == "weight" and new.key != pair.key
    assert new.b is not pair.b and new.a is pair.a
    assert_same_state(new.b.state_dict(), model.state_dict())
    assert_same_state(pair.b.state_dict(), before)
    assert new.meta_b.extra["alignment"]["method"] == "weight"
    same, _ = permute_pair(pair, "none")
    assert same is pair
    data = load_dataset("synthetic", calib_size=200)
    act, result = permute_pair(pair, "activation", data=data, seed=1)
    assert act.perm == "activation" and result.seed == 1
    assert_same_state(act.b.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match="input shape"):
        permute_pair(pair, "activation", data=load_dataset("synthetic", 200, synthetic_kwargs={"shape": (1, 4, 4)}))
