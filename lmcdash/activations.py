"""Per-permutation output correlations of two models, captured generically from a PermSpec.

Used by activation matching (Ainsworth et al., Git Re-Basin, Sec. 3.1). No layer types are
inspected: which module outputs carry which permutation is read off the spec (see output_modules).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from lmcdash.perm_spec import PermSpec

OnBatch = Callable[[int, int], None]  # (batches done, batches in all)


def output_modules(spec: PermSpec) -> dict[str, list[str]]:
    """Return {perm: names of the modules whose output carries the perm on dim 1}.

    Rule: the module owns a tensor ``<module>.weight`` whose axis 0 is the perm. For Linear, Conv and
    BatchNorm (every layer whose weight's axis 0 indexes its outputs) the output's dim 1 is then that
    perm; the shape is checked on the first batch. A perm may have several such modules (a conv and
    the BN after it; every block writing into a residual stream); perm_correlations keeps the ends of
    the chains among them.
    """
    out: dict[str, list[str]] = {}
    for p, places in spec.perm_to_axes.items():
        mods = [k[: -len(".weight")] for k, a in places if a == 0 and k.endswith(".weight")]
        if not mods:
            raise ValueError(f"activation matching: no module's weight carries perm {p!r} on axis 0, so there "
                             "is no output to correlate. Use weight matching for this spec.")
        out[p] = mods
    return out


class _CrossStats:
    """Streaming cross-correlation of two (M, n) sample streams, in float64."""

    def __init__(self, n: int, device: torch.device):
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        self.count, self.sa, self.sb, self.qa, self.qb, self.cross = 0, z(n), z(n), z(n), z(n), z(n, n)

    def update(self, fa: torch.Tensor, fb: torch.Tensor) -> None:
        a = fa.movedim(1, -1).reshape(-1, fa.shape[1]).double()  # (M, n): spatial positions are samples
        b = fb.movedim(1, -1).reshape(-1, fb.shape[1]).double()
        self.count += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.qa += (a * a).sum(0)
        self.qb += (b * b).sum(0)
        self.cross += a.T @ b

    def corr(self) -> torch.Tensor:
        """Return (n, n) Pearson correlations: [i, j] = corr(A's unit i, B's unit j)."""
        m = self.count
        ma, mb = self.sa / m, self.sb / m
        sd_a = (self.qa / m - ma * ma).clamp_min(0).sqrt().clamp_min(1e-12)  # constant units correlate 0
        sd_b = (self.qb / m - mb * mb).clamp_min(0).sqrt().clamp_min(1e-12)
        return (self.cross / m - torch.outer(ma, mb)) / torch.outer(sd_a, sd_b)


def _capture(model: nn.Module, names: list[str], store: dict, inputs: dict) -> list:
    """Hook ``names``: store[name] = output; inputs[name] = first input (kept as objects, see _chain_ends)."""
    def hook(name: str):
        def save(_m, args, out):
            store[name], inputs[name] = out, (args[0] if args else None)
        return save
    return [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]


def _chain_ends(owner: Mapping[str, str], outs: Mapping, ins: Mapping) -> dict[str, str]:
    """Return the hooked modules whose output is not fed straight into another module of the same perm.

    A conv whose output goes directly into a BN keeps only the BN: that is what the next layer sees,
    and summing both would cancel where the BN scales of A and B differ in sign. Outputs that merge
    first (residual sums) are all kept and their correlations summed.
    """
    fed = {m for m, p in owner.items() for n, q in owner.items() if n != m and q == p and ins[n] is outs[m]}
    return {m: p for m, p in owner.items() if m not in fed}


def _check_output(name: str, out: torch.Tensor, perm: str, size: int) -> None:
    if out.dim() < 2 or out.shape[1] != size:
        raise ValueError(f"activation matching: output of {name} has shape {tuple(out.shape)}, expected {size} "
                         f"channels (perm {perm}) on dim 1; the spec and the model disagree.")


@torch.no_grad()
def perm_correlations(model_a: nn.Module, model_b: nn.Module, spec: PermSpec, x_batches: Iterable[torch.Tensor],
                      on_step: OnBatch | None = None) -> dict[str, torch.Tensor]:
    """Return {perm: (n, n) correlation of A's and B's units, summed over the perm's output modules}.

    The models are deep-copied and run in eval mode: the inputs are never touched (not even by hooks).
    """
    mods = output_modules(spec)
    sizes: Mapping[str, int] = spec.perm_sizes(model_a.state_dict())
    owner = {m: p for p, ms in mods.items() for m in ms}
    a, b = copy.deepcopy(model_a).eval(), copy.deepcopy(model_b).eval()
    device = next(a.parameters()).device
    out_a, out_b, in_a, in_b = {}, {}, {}, {}
    handles = _capture(a, sorted(owner), out_a, in_a) + _capture(b, sorted(owner), out_b, in_b)
    stats: dict[str, _CrossStats] = {}
    try:
        batches = list(x_batches)
        for i, x in enumerate(batches):
            a(x.to(device))
            b(x.to(device))
            if i == 0:
                for name, p in owner.items():
                    _check_output(name, out_a[name], p, sizes[p])
                owner = _chain_ends(owner, out_a, in_a)
            for name, p in owner.items():
                stats.setdefault(name, _CrossStats(sizes[p], device)).update(out_a[name], out_b[name])
            if on_step is not None:
                on_step(i + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
    if not stats:
        raise ValueError("activation matching needs at least one input batch")
    return {p: sum(stats[m].corr() for m in owner if owner[m] == p).cpu() for p in mods}


def sample_batches(x: torch.Tensor, n_samples: int = 5000, batch_size: int = 500, seed: int = 0) -> list[torch.Tensor]:
    """Return a seeded random subset of ``x`` (training inputs) cut into batches."""
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: min(n_samples, len(x))]
    return [x[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)]
