"""Model registry: MLP, VGG-11 (BatchNorm, thin) and ResNet-20 (BatchNorm), each with its perm spec.

Every model exposes ``weight_layers``: the state_dict prefixes of its weight layers (Linear/Conv) on
the main path, in order l = 1..L from the input (l = L gives the logits). ResNet shortcut
convolutions are not counted as layers of their own: their output joins the block's second
convolution in the residual sum, so they share that layer's index (see ``layer_groups``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmcdash.config import ModelSpec
from lmcdash.perm_spec import PermSpec


# ---------------------------------------------------------------- MLP
class MLP(nn.Module):
    """ReLU MLP: ``depth`` hidden layers of ``hidden`` units; keys linears.{i}.weight/bias."""

    def __init__(self, in_features: int, hidden: int, depth: int, num_classes: int, bias: bool):
        super().__init__()
        sizes = [in_features] + [hidden] * depth + [num_classes]
        self.linears = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.weight_layers = [f"linears.{i}" for i in range(len(self.linears))]
        self.layer_groups = [[n] for n in self.weight_layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (N, C)
        h = x.flatten(1)
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i < len(self.linears) - 1:
                h = torch.relu(h)
        return h


def mlp_spec(model: MLP) -> PermSpec:
    axes: dict[str, tuple] = {}
    n = len(model.linears)
    for i, lin in enumerate(model.linears):
        p_out = f"P{i}" if i < n - 1 else None
        p_in = f"P{i - 1}" if i > 0 else None
        axes[f"linears.{i}.weight"] = (p_out, p_in)
        if lin.bias is not None:
            axes[f"linears.{i}.bias"] = (p_out,)
    return PermSpec(axes)


# ---------------------------------------------------------------- shared BN helpers
def _bn_axes(prefix: str, perm: str | None) -> dict[str, tuple]:
    return {
        f"{prefix}.weight": (perm,),
        f"{prefix}.bias": (perm,),
        f"{prefix}.running_mean": (perm,),
        f"{prefix}.running_var": (perm,),
        f"{prefix}.num_batches_tracked": (),
    }


def _conv_axes(prefix: str, p_out: str | None, p_in: str | None) -> dict[str, tuple]:
    return {f"{prefix}.weight": (p_out, p_in, None, None)}


# ---------------------------------------------------------------- VGG-11
VGG11_CFG = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8]  # channel multiples of the base


class VGG11(nn.Module):
    """VGG-11 with BatchNorm: 8 conv (3x3) + 3 linear layers, channels = base x width x cfg.

    The fifth max-pool of the ImageNet/CIFAR version is replaced by a global average pool so the
    net also runs on 28x28 inputs.
    """

    def __init__(self, in_channels: int, base: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        self.conv_idx: list[int] = []
        c_in = in_channels
        for v in VGG11_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # small inputs never shrink to 0
                continue
            c_out = base * v
            self.conv_idx.append(len(layers))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, num_classes)
        )
        self.weight_layers = [f"features.{i}" for i in self.conv_idx] + [
            "classifier.0", "classifier.2", "classifier.4"]
        self.layer_groups = [[n] for n in self.weight_layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg11_spec(model: VGG11) -> PermSpec:
    axes: dict[str, tuple] = {}
    prev = None
    for j, i in enumerate(model.conv_idx):
        p = f"P_conv{j}"
        axes.update(_conv_axes(f"features.{i}", p, prev))
        axes.update(_bn_axes(f"features.{i + 1}", p))
        prev = p
    fc_perms = ["P_fc0", "P_fc1", None]
    for k, p in zip((0, 2, 4), fc_perms):
        axes[f"classifier.{k}.weight"] = (p, prev)
        axes[f"classifier.{k}.bias"] = (p,)
        prev = p
    return PermSpec(axes)


# ---------------------------------------------------------------- ResNet-20
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 (He et al. 2016, CIFAR variant) with BatchNorm; stages of 16/32/64 x width channels."""

    def __init__(self, in_channels: int, base: int, num_classes: int):
        super().__init__()
        chans = [base, 2 * base, 4 * base]
        self.conv1 = nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        blocks, c_in = [], chans[0]
        for s, c in enumerate(chans):
            for b in range(3):
                blocks.append(BasicBlock(c_in, c, 2 if (s > 0 and b == 0) else 1))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c_in, num_classes)
        self.weight_layers = ["conv1"]
        self.layer_groups = [["conv1"]]
        for i, blk in enumerate(self.blocks):
            self.weight_layers += [f"blocks.{i}.conv1", f"blocks.{i}.conv2"]
            second = [f"blocks.{i}.conv2"] + ([f"blocks.{i}.shortcut.0"] if len(blk.shortcut) else [])
            self.layer_groups += [[f"blocks.{i}.conv1"], second]
        self.weight_layers.append("linear")
        self.layer_groups.append(["linear"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.blocks(h)
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def resnet20_spec(model: ResNet20) -> PermSpec:
    """Residual stream of stage s shares perm P_res{s}; each block's inner channels get their own."""
    axes: dict[str, tuple] = {}
    axes.update(_conv_axes("conv1", "P_res0", None))
    axes.update(_bn_axes("bn1", "P_res0"))
    stream = "P_res0"
    for i, blk in enumerate(model.blocks):
        stage = i // 3
        out_stream = f"P_res{stage}"
        inner = f"P_blk{i}"
        axes.update(_conv_axes(f"blocks.{i}.conv1", inner, stream))
        axes.update(_bn_axes(f"blocks.{i}.bn1", inner))
        axes.update(_conv_axes(f"blocks.{i}.conv2", out_stream, inner))
        axes.update(_bn_axes(f"blocks.{i}.bn2", out_stream))
        if len(blk.shortcut):
            axes.update(_conv_axes(f"blocks.{i}.shortcut.0", out_stream, stream))
            axes.update(_bn_axes(f"blocks.{i}.shortcut.1", out_stream))
        stream = out_stream
    axes["linear.weight"] = (None, stream)
    axes["linear.bias"] = (None,)
    return PermSpec(axes)


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class ArchEntry:
    """One registered architecture: builder, default base width, perm spec builder."""

    build: Callable[[ModelSpec], nn.Module]
    default_base: int
    spec: Callable[[nn.Module], PermSpec]
    has_batchnorm: bool
    description: str


def _build_mlp(s: ModelSpec) -> nn.Module:
    return MLP(math.prod(s.input_shape), (s.base_width or 64) * s.width, s.depth or 1, s.num_classes, s.bias)


def _build_vgg(s: ModelSpec) -> nn.Module:
    return VGG11(s.input_shape[0], (s.base_width or 4) * s.width, s.num_classes)


def _build_resnet(s: ModelSpec) -> nn.Module:
    return ResNet20(s.input_shape[0], (s.base_width or 16) * s.width, s.num_classes)


REGISTRY: dict[str, ArchEntry] = {
    "mlp": ArchEntry(_build_mlp, 64, mlp_spec, False, "ReLU MLP; hidden = base_width x width, depth hidden layers"),
    "vgg11": ArchEntry(_build_vgg, 4, vgg11_spec, True, "VGG-11 with BatchNorm; channels base x width x (1,2,4,4,8,8,8,8)"),
    "resnet20": ArchEntry(_build_resnet, 16, resnet20_spec, True, "ResNet-20 with BatchNorm; stages base x width x (1,2,4)"),
}


def list_models() -> list[str]:
    """Return the registered architecture names, sorted."""
    return sorted(REGISTRY)


def normalize_spec(spec: ModelSpec) -> ModelSpec:
    """Return the spec with defaults filled in (base width, depth), so metadata is explicit."""
    entry = get_entry(spec.arch)
    depth = (spec.depth or 1) if spec.arch == "mlp" else None
    bias = spec.bias if spec.arch == "mlp" else True
    return ModelSpec(spec.arch, int(spec.width), int(spec.num_classes), tuple(spec.input_shape),
                     spec.base_width or entry.default_base, depth, bias)


def get_entry(arch: str) -> ArchEntry:
    """Return the registry entry or raise KeyError naming the registered architectures."""
    if arch not in REGISTRY:
        raise KeyError(f"unknown architecture {arch!r}; registered: {', '.join(list_models())}")
    return REGISTRY[arch]


def create_model(arch: str | ModelSpec, width: int = 1, num_classes: int = 10, **kwargs) -> nn.Module:
    """Return a freshly initialised model for ``arch`` (or a full ModelSpec)."""
    spec = arch if isinstance(arch, ModelSpec) else ModelSpec(arch, width, num_classes, **kwargs)
    spec = normalize_spec(spec)
    model = get_entry(spec.arch).build(spec)
    model.model_spec = spec
    return model


def perm_spec(model: nn.Module) -> PermSpec:
    """Return the permutation spec of a registry model."""
    return get_entry(model.model_spec.arch).spec(model)
