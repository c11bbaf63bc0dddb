"""Permutation specs: which axis of which state_dict tensor each hidden-unit permutation acts on.

A spec is written once per architecture as ``axes``: {state_dict key: (perm name or None per axis)}.
The inverse map (perm name -> [(key, axis)]) is derived, never written by hand. Residual streams
share one permutation name. BatchNorm running statistics are listed like parameters.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PermSpec:
    """Permutation spec keyed by real state_dict names."""

    axes: Mapping[str, tuple[str | None, ...]]

    @property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Return {perm name: [(key, axis), ...]} derived from ``axes``."""
        out: dict[str, list[tuple[str, int]]] = {}
        for key, perms in self.axes.items():
            for axis, p in enumerate(perms):
                if p is not None:
                    out.setdefault(p, []).append((key, axis))
        return out

    def perm_sizes(self, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Return the size of every permutation, read off the state_dict shapes."""
        return {p: int(state[k].shape[a]) for p, ((k, a), *_) in self.perm_to_axes.items()}


def validate_spec(spec: PermSpec, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError unless the spec covers every key, axis by axis, with consistent sizes."""
    missing = sorted(set(state) - set(spec.axes))
    extra = sorted(set(spec.axes) - set(state))
    if missing or extra:
        raise ValueError(f"perm spec does not match state_dict: missing {missing}, unknown {extra}")
    for key, perms in spec.axes.items():
        if len(perms) != state[key].dim():
            raise ValueError(f"{key}: spec has {len(perms)} axes, tensor has {state[key].dim()}")
    for p, places in spec.perm_to_axes.items():
        sizes = {int(state[k].shape[a]) for k, a in places}
        if len(sizes) != 1:
            raise ValueError(f"perm {p} acts on axes of different sizes {sorted(sizes)}: {places}")


def apply_permutation(
    spec: PermSpec, perms: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return a new state_dict with every axis re-indexed: new[..., i, ...] = old[..., perm[i], ...]."""
    out = {}
    for key, tensor in state.items():
        t = tensor
        for axis, p in enumerate(spec.axes.get(key, ())):
            if p is not None and p in perms:
                t = torch.index_select(t, axis, perms[p].to(t.device))
        out[key] = t.contiguous() if t is not tensor else tensor
    return out


def random_permutations(
    spec: PermSpec, state: Mapping[str, torch.Tensor], seed: int = 0
) -> dict[str, torch.Tensor]:
    """Return one seeded random permutation (index tensor) per perm name, in sorted name order."""
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(n, generator=g) for p, n in sorted(spec.perm_sizes(state).items())}
