"""Registry: forward shapes, perm-spec validity and permutation invariance for every architecture."""
import pytest
import torch

from lmcdash.config import ModelSpec
from lmcdash.models import create_model, list_models, normalize_spec, perm_spec
from lmcdash.perm_spec import apply_permutation, random_permutations, validate_spec

ARCHS = list_models()


def _randomize_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def test_registry_lists_required_archs():
    assert {"mlp", "vgg11", "resnet20"} <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_forward_shape(arch, width, shape):
    model = create_model(arch, width, num_classes=7, input_shape=shape).eval()
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_width_multiplies_hidden_units():
    m = create_model("mlp", 4, 10, base_width=16, depth=3)
    assert [lin.out_features for lin in m.linears] == [64, 64, 64, 10]
    assert create_model("mlp", 1, 10, bias=False).linears[0].bias is None
    r = create_model("resnet20", 2, 10)
    assert r.conv1.out_channels == 32 and r.linear.in_features == 128
    assert len(r.weight_layers) == 20 and len(create_model("vgg11", 1, 10).weight_layers) == 11


def test_normalize_spec_fills_defaults():
    s = normalize_spec(ModelSpec("mlp", 2))
    assert s.base_width == 64 and s.depth == 1
    with pytest.raises(KeyError, match="registered: mlp, resnet20, vgg11"):
        create_model("transformer", 1, 10)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width", [1, 2])
def test_spec_covers_state_dict(arch, width):
    model = create_model(arch, width, 10)
    state = model.state_dict()
    spec = perm_spec(model)
    validate_spec(spec, state)  # every key, one entry per axis, consistent sizes
    assert set(spec.axes) == set(state)
    for key, perms in spec.axes.items():
        assert len(perms) == state[key].dim()
    # the input channels of the first layer and the logits are never permuted
    assert spec.axes[f"{model.weight_layers[0]}.weight"][1] is None
    assert spec.axes[f"{model.weight_layers[-1]}.weight"][0] is None


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width", [1, 2])
def test_random_permutation_keeps_outputs(arch, width):
    torch.manual_seed(0)
    model = create_model(arch, width, 10)
    _randomize_bn(model, 1)
    model.eval()
    state = model.state_dict()
    spec = perm_spec(model)
    perms = random_permutations(spec, state, seed=3)
    assert any((p != torch.arange(len(p))).any() for p in perms.values())
    permuted = apply_permutation(spec, perms, state)
    assert any(not torch.equal(permuted[k], state[k]) for k in state)
    other = create_model(arch, width, 10)
    other.load_state_dict(permuted)
    other.eval()
    x = torch.randn(5, 1, 28, 28)
    ref = model(x)
    assert ref.abs().max() > 1e-3  # a non-trivial function
    torch.testing.assert_close(other(x), ref, rtol=1e-5, atol=1e-5)


def test_validate_spec_rejects_inconsistent_spec():
    from lmcdash.perm_spec import PermSpec

    model = create_model("mlp", 1, 10)
    state = model.state_dict()
    bad = PermSpec({**perm_spec(model).axes, "linears.1.weight": (None, None)})
    validate_spec(bad, state)  # dropping a perm is allowed (it just isn't used) ...
    wrong = PermSpec({**perm_spec(model).axes, "linears.1.weight": ("P0", "P0")})
    with pytest.raises(ValueError, match="different sizes"):
        validate_spec(wrong, state)
    with pytest.raises(ValueError, match="missing"):
        validate_spec(PermSpec({}), state)
