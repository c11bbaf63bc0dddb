"""Per-layer LEWC fit: how each layer's output of the merged model relates to the endpoints' (SCIENCE.md).

Layers. l = 1..L counts model.layer_groups from the input; l = L is the logits. A group is one
weight layer, except in ResNets where a block's shortcut convolution joins the block's second
convolution in the residual sum and so shares its index (ResNet-20: L = 20).

Layer output f_l. The pre-activation that the next ReLU sees:
- MLP: the Linear output W h + b;
- VGG (BatchNorm): the BN output after each conv. In eval mode conv + BN is one affine map, so its
  output is the affine pre-activation the LEWC argument is about; the raw conv output is not, since
  each model's BN rescales it differently (and BN reset rescales the merged one again);
- ResNet: after BN as above; for a block's second conv, f_l is the whole residual sum
  bn2(conv2(h)) + shortcut(x) (identity or conv-BN), i.e. the tensor right before the block's ReLU.

Statistics are per sample, then averaged over a seeded subset of the evaluation split, except the
least-squares coefficients (a, b) of merged ~ a f_l(A) + b f_l(B): they are pooled over all samples,
because per-sample 2x2 systems are ill-conditioned where f_l(A) and f_l(B) are nearly parallel (the
logits of two good classifiers). Reciprocal orthogonality applies weights only (no bias, no BN):
|W_l(B) h_(l-1)(A)| / |W_l(A) h_(l-1)(A)| (recip_orth_ab) and the symmetric term (recip_orth_ba).
weak_additivity is NaN at l = L (no ReLU follows the logits).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmcdash import merged as M
from lmcdash.config import default_device
from lmcdash.data import TensorDataset
from lmcdash.engine import BN_MODES, Pair, check_data

LAYER_COLUMNS = ["layer", "name", "lam", "cos_lewc", "cos_llfc", "cos_endpoints", "norm_ratio",
                 "coef_a", "coef_b", "lam_pow", "one_minus_lam_pow", "weak_additivity", "recip_orth_ab",
                 "recip_orth_ba"]
_SUMS = ("cos_lewc", "cos_llfc", "norm_ratio", "weak_additivity")
_CHUNK = 250  # samples per forward pass


def row_cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return the per-row cosine of two (n, D) tensors (NaN where a row is zero: undefined, skipped)."""
    u, v = u.double(), v.double()
    return (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Return per-row |num| / |den| (NaN where den is zero)."""
    d = den.double().norm(dim=1)
    return num.double().norm(dim=1) / torch.where(d > 0, d, torch.nan)


def weak_additivity(za: torch.Tensor, zb: torch.Tensor, lam: float, layer: int) -> torch.Tensor:
    """Return per-row cos(relu(lam^l zA + (1-lam)^l zB), lam^l relu(zA) + (1-lam)^l relu(zB))."""
    wa, wb = lam ** layer, (1 - lam) ** layer
    return row_cosine(torch.relu(wa * za + wb * zb), wa * torch.relu(za) + wb * torch.relu(zb))


def output_modules(model: nn.Module) -> list[list[str]]:
    """Return, per layer group, the module names whose outputs sum to f_l (see the module docstring)."""
    mods = dict(model.named_modules())
    names = list(mods)

    def after(name: str) -> str:  # the BatchNorm registered right after a weight layer normalises it
        i = names.index(name) + 1
        return names[i] if i < len(names) and isinstance(mods[names[i]], M._BN) else name

    out = []
    for group in model.layer_groups:
        parent = group[0].rpartition(".")[0]
        if group[0].endswith(".conv2") and hasattr(mods.get(parent), "shortcut"):
            out.append([after(group[0]), f"{parent}.shortcut"])  # the residual sum before the ReLU
        else:
            out.append([after(group[0])])
    return out


def _capture(template: nn.Module, state: dict, x: torch.Tensor, outs: list[list[str]],
             weights: list[str]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Return ([f_l flattened (n, D)], {weight module: its input}) for one forward pass."""
    mods, seen, inputs = dict(template.named_modules()), {}, {}
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
               for n in {n for g in outs for n in g}]
    handles += [mods[n].register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0])) for n in weights]
    try:
        with torch.inference_mode():
            functional_call(template, state, (x,))
    finally:
        for h in handles:
            h.remove()
    return [sum(seen[n] for n in g).flatten(1) for g in outs], inputs


def _apply_weight(module: nn.Module, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return F.conv2d(h, w, None, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(h, w)


def _recip(template: nn.Module, group: list[str], s_self: dict, s_other: dict, ins: dict) -> torch.Tensor:
    """Return per-row |W(other) h(self)| / |W(self) h(self)| summed over the group's weight layers."""
    mods = dict(template.named_modules())
    num = sum(_apply_weight(mods[n], s_other[f"{n}.weight"], ins[n]).flatten(1) for n in group)
    den = sum(_apply_weight(mods[n], s_self[f"{n}.weight"], ins[n]).flatten(1) for n in group)
    return _ratio(num, den)


def _add(acc: dict, name: str, values: torch.Tensor) -> None:
    """Accumulate the sum and count of the defined (non-NaN) per-sample values."""
    ok = ~torch.isnan(values)
    acc[name][0] += float(values[ok].sum())
    acc[name][1] += int(ok.sum())


def _mean(pair: list) -> float:
    return pair[0] / pair[1] if pair[1] else float("nan")


def _lam_stats(acc: dict, layer: int, lam: float, fa: torch.Tensor, fb: torch.Tensor, fm: torch.Tensor,
               last: bool) -> None:
    """Add one chunk's per-sample sums and pooled Gram terms for (layer, lam) into ``acc``."""
    wa, wb = lam ** layer, (1 - lam) ** layer
    lewc, llfc = wa * fa + wb * fb, lam * fa + (1 - lam) * fb
    _add(acc, "cos_lewc", row_cosine(fm, lewc))
    _add(acc, "cos_llfc", row_cosine(fm, llfc))
    _add(acc, "norm_ratio", _ratio(fm, lewc))
    if not last:
        _add(acc, "weak_additivity", weak_additivity(fa, fb, lam, layer))
    a, b, m = fa.double().flatten(), fb.double().flatten(), fm.double().flatten()
    acc["gram"] += torch.stack([a @ a, a @ b, b @ b, a @ m, b @ m]).cpu()


def _coefs(gram: torch.Tensor) -> tuple[float, float]:
    g = torch.stack([gram[:2], gram[1:3]])  # [[aa, ab], [ab, bb]]
    sol = torch.linalg.pinv(g) @ gram[3:]  # min-norm solution when f_A and f_B coincide
    return float(sol[0]), float(sol[1])


def _endpoint_stats(ends: dict, template: nn.Module, groups: list[list[str]], sa: dict, sb: dict,
                    fa: list, fb: list, ins_a: dict, ins_b: dict) -> None:
    """Accumulate the lam-independent columns: endpoint cosine and reciprocal orthogonality."""
    for l, g in enumerate(groups):
        _add(ends[l], "cos_endpoints", row_cosine(fa[l], fb[l]))
        _add(ends[l], "recip_orth_ab", _recip(template, g, sa, sb, ins_a))
        _add(ends[l], "recip_orth_ba", _recip(template, g, sb, sa, ins_b))


def _table(groups: list[list[str]], lams: list[float], acc: dict, ends: dict) -> pd.DataFrame:
    rows = []
    for l, g in enumerate(groups):
        for k, lam in enumerate(lams):
            a, b = _coefs(acc[(l, k)]["gram"])
            rows.append({"layer": l + 1, "name": g[0], "lam": lam, **{c: _mean(acc[(l, k)][c]) for c in _SUMS},
                         **{c: _mean(v) for c, v in ends[l].items()}, "coef_a": a, "coef_b": b,
                         "lam_pow": lam ** (l + 1), "one_minus_lam_pow": (1 - lam) ** (l + 1)})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def layer_fit(pair: Pair, data: TensorDataset, lams: Sequence[float], split: str = "test",
              n_samples: int = 1000, seed: int = 0, device: str | torch.device | None = None,
              bn_mode: str = "reset", on_step: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Return the per-layer LEWC fit, one row per (layer, lam), columns LAYER_COLUMNS."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown BN mode {bn_mode!r}; choose one of {', '.join(BN_MODES)}")
    check_data(pair, data)
    device = torch.device(device) if device is not None else default_device()
    x, _ = data.split(split)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n_samples]
    x, lams = x[idx.sort().values].to(device), [float(v) for v in lams]
    template = M.make_template(pair.a.model_spec)
    sa, sb = M.endpoint_state(pair.a, device), M.endpoint_state(pair.b, device)
    mode = bn_mode if M.has_batchnorm(pair.a) else "none"
    batches = M.bn_batches(data.train_x, 10, 500, 0, device) if mode == "reset" else None  # Evaluator defaults
    states = [M.merged_state(template, sa, sb, lam, mode, batches) for lam in lams]
    groups, outs = pair.a.layer_groups, output_modules(pair.a)
    weights, L = [n for g in groups for n in g], len(groups)
    acc = {(l, k): {c: [0.0, 0] for c in _SUMS} | {"gram": torch.zeros(5, dtype=torch.float64)}
           for l in range(L) for k in range(len(lams))}
    ends = {l: {c: [0.0, 0] for c in ("cos_endpoints", "recip_orth_ab", "recip_orth_ba")} for l in range(L)}
    chunks = range(0, len(x), _CHUNK)
    for step, i in enumerate(chunks):  # chunks bound memory: conv activations of every layer are held
        xc = x[i:i + _CHUNK]
        (fa, ins_a), (fb, ins_b) = (_capture(template, s, xc, outs, weights) for s in (sa, sb))
        _endpoint_stats(ends, template, groups, sa, sb, fa, fb, ins_a, ins_b)
        for k, (lam, state) in enumerate(zip(lams, states)):
            fm, _ = _capture(template, state, xc, outs, [])
            for l in range(L):
                _lam_stats(acc[(l, k)], l + 1, lam, fa[l], fb[l], fm[l], l == L - 1)
        if on_step:
            on_step(step + 1, len(chunks))
    return _table(groups, lams, acc, ends)
