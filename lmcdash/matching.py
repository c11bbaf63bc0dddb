"""Permutation alignment of model B to model A: weight matching, activation matching, random control.

Weight matching follows Ainsworth et al., "Git Re-Basin" (ICLR 2023), Sec. 3.2: coordinate descent
over the spec's permutations, each step one linear assignment on the summed correlations of every
tensor the permutation touches. Activation matching (their Sec. 3.1) correlates hidden outputs on
training batches, one assignment per permutation. Everything here is driven by the PermSpec alone:
no layer types are inspected, so every registered architecture works the same way.

Convention (as in perm_spec.apply_permutation): perms[p][i] = j means unit i of the aligned B is
unit j of the original B, i.e. aligned[..., i, ...] = old[..., perm[i], ...].
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from lmcdash.activations import OnBatch, perm_correlations, sample_batches
from lmcdash.data import TensorDataset
from lmcdash.engine import Pair, check_data, make_pair
from lmcdash.models import create_model, perm_spec
from lmcdash.perm_spec import PermSpec, apply_permutation, random_permutations, validate_spec


METHODS = ("none", "random", "weight", "activation")
# BatchNorm running statistics describe the data, not the learned map: they are permuted with their
# channels but kept out of the matching objective (Git Re-Basin matches weights and affine params).
OBJECTIVE_EXCLUDE = ("running_mean", "running_var", "num_batches_tracked")

OnSweep = Callable[[int, float], None]  # (sweep, objective after the sweep)


@dataclass
class MatchResult:
    """Permutations for B, the objective trace and provenance of one alignment."""

    perms: dict[str, torch.Tensor]  # perm name -> (n,) int64 index tensor on CPU
    objective_history: list[float] = field(default_factory=list)  # [initial, after sweep 1, ...]
    method: str = "none"
    seed: int = 0
    seconds: float = 0.0

    @property
    def sweeps(self) -> int:
        """Return the number of completed sweeps (weight matching) or steps recorded."""
        return max(len(self.objective_history) - 1, 0)

    def to_meta(self) -> dict:
        """Return the JSON-ready provenance (no perms: the aligned weights embody them)."""
        return {"method": self.method, "seed": self.seed, "seconds": round(self.seconds, 4),
                "objective_history": [float(v) for v in self.objective_history]}


# ------------------------------------------------------------------ helpers
def objective_keys(spec: PermSpec, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Return the keys whose tensors enter the matching objective (floating, not BN statistics)."""
    return [k for k in spec.axes if k in state and state[k].is_floating_point()
            and not k.rsplit(".", 1)[-1] in OBJECTIVE_EXCLUDE]


def identity_perms(spec: PermSpec, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the identity permutation for every perm of the spec."""
    return {p: torch.arange(n) for p, n in sorted(spec.perm_sizes(state).items())}


def _check_pair_states(spec: PermSpec, state_a: Mapping, state_b: Mapping) -> None:
    """Raise ValueError unless the spec fits A and B has A's keys and shapes."""
    validate_spec(spec, state_a)
    missing, extra = sorted(set(state_a) - set(state_b)), sorted(set(state_b) - set(state_a))
    bad = [f"{k}: {tuple(state_a[k].shape)} vs {tuple(state_b[k].shape)}" for k in state_a
           if k in state_b and state_a[k].shape != state_b[k].shape]
    if bad or missing or extra:
        raise ValueError(f"A and B do not have the same architecture (shapes A vs B: {'; '.join(bad[:5]) or 'ok'}; "
                         f"missing in B: {missing[:5]}; unexpected in B: {extra[:5]}). "
                         "Align models of one architecture and width.")


def _check_perms(spec: PermSpec, state: Mapping, perms: Mapping[str, torch.Tensor]) -> None:
    sizes = spec.perm_sizes(state)
    for p, idx in perms.items():
        if p not in sizes:
            raise ValueError(f"unknown perm {p!r}; the spec has {', '.join(sorted(sizes))}")
        if idx.shape != (sizes[p],) or not torch.equal(idx.sort().values.cpu(), torch.arange(sizes[p])):
            raise ValueError(f"perm {p!r} is not a permutation of 0..{sizes[p] - 1}")


def _flat(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Return t with ``axis`` moved to the front and the rest flattened: (n, -1) float64."""
    return t.movedim(axis, 0).reshape(t.shape[axis], -1).double()


def _permuted_except(spec: PermSpec, perms: Mapping, key: str, t: torch.Tensor, skip: int) -> torch.Tensor:
    for axis, p in enumerate(spec.axes[key]):
        if p is not None and axis != skip:
            t = torch.index_select(t, axis, perms[p].to(t.device))
    return t


def matching_objective(spec: PermSpec, state_a: Mapping, state_b: Mapping, perms: Mapping) -> float:
    """Return sum over objective tensors of <W_A, P(W_B)> (float64)."""
    permuted = apply_permutation(spec, perms, state_b)
    return float(sum((state_a[k].double() * permuted[k].double()).sum() for k in objective_keys(spec, state_a)))


# ------------------------------------------------------------------ weight matching
def _assignment_gain(spec, state_a, state_b, perms, p: str, keys: set[str]) -> tuple[torch.Tensor, float]:
    """Return (best perm for p with the others fixed, its gain over the current perm)."""
    n = perms[p].numel()
    sim = None  # (n, n): sim[i, j] = similarity of A's unit i and B's unit j
    for key, axis in spec.perm_to_axes[p]:
        if key not in keys:
            continue
        w_a = _flat(state_a[key], axis)
        w_b = _flat(_permuted_except(spec, perms, key, state_b[key], axis), axis)
        sim = w_a @ w_b.T if sim is None else sim + w_a @ w_b.T
    if sim is None:
        return perms[p], 0.0
    sim = sim.cpu().numpy()
    _, cols = linear_sum_assignment(sim, maximize=True)
    rows = torch.arange(n).numpy()
    gain = float(sim[rows, cols].sum() - sim[rows, perms[p].numpy()].sum())
    return torch.as_tensor(cols, dtype=torch.int64), gain


def _perm_neighbors(spec: PermSpec, keys: set[str]) -> dict[str, set[str]]:
    """Return {p: perms whose change alters p's assignment problem} (perms sharing an objective tensor)."""
    out: dict[str, set[str]] = {p: set() for p in spec.perm_to_axes}
    for key in keys:
        on_axes = [p for p in spec.axes[key] if p is not None]
        for p in on_axes:
            out[p] |= {q for q in on_axes if q != p or on_axes.count(p) > 1}
    return out


def weight_matching(spec: PermSpec, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                    seed: int = 0, max_sweeps: int = 100, on_step: OnSweep | None = None) -> MatchResult:
    """Return the perms that maximise sum <W_A, P(W_B)> by coordinate descent (Git Re-Basin, Alg. 1).

    Each sweep visits every perm once in a seeded random order; a perm is replaced only when its
    assignment strictly gains, so the objective never decreases. A perm none of whose neighbours
    changed since its last assignment is skipped (its problem, hence its optimum, is unchanged).
    Stops after the first sweep with no gain, or after ``max_sweeps``. objective_history[0] is the
    objective with identity perms, then one value per sweep.
    """
    start = time.perf_counter()
    _check_pair_states(spec, state_a, state_b)
    keys = set(objective_keys(spec, state_a))
    neighbors = _perm_neighbors(spec, keys)
    perms = identity_perms(spec, state_a)
    names, dirty = sorted(perms), set(perms)
    gen = torch.Generator().manual_seed(seed)
    history = [matching_objective(spec, state_a, state_b, perms)]
    for sweep in range(1, max_sweeps + 1):
        improved = False
        for p in [names[i] for i in torch.randperm(len(names), generator=gen).tolist()]:
            if p not in dirty:
                continue
            dirty.discard(p)
            best, gain = _assignment_gain(spec, state_a, state_b, perms, p, keys)
            # Relative tolerance: float64 rounding must not count as progress (avoids cycling on ties).
            if gain > 1e-12 * max(1.0, abs(history[-1])):
                perms[p], improved = best, True
                dirty |= neighbors[p]
        history.append(matching_objective(spec, state_a, state_b, perms) if improved else history[-1])
        if on_step is not None:
            on_step(sweep, history[-1])
        if not improved:
            break
    return MatchResult(perms, history, "weight", seed, time.perf_counter() - start)


# ------------------------------------------------------------------ random control and identity
def random_match(spec: PermSpec, state_b: Mapping[str, torch.Tensor], seed: int = 0) -> MatchResult:
    """Return one seeded random permutation per perm (the function-preserving control)."""
    start = time.perf_counter()
    validate_spec(spec, state_b)
    return MatchResult(random_permutations(spec, state_b, seed), [], "random", seed, time.perf_counter() - start)


def identity_match(spec: PermSpec, state_b: Mapping[str, torch.Tensor]) -> MatchResult:
    """Return identity perms (method 'none')."""
    return MatchResult(identity_perms(spec, state_b), [], "none", 0, 0.0)


# ------------------------------------------------------------------ activation matching
def activation_matching(model_a: nn.Module, model_b: nn.Module, spec: PermSpec,
                        x_batches: Iterable[torch.Tensor], seed: int = 0,
                        on_step: OnBatch | None = None) -> MatchResult:
    """Return perms maximising the summed output correlations of each perm (one assignment per perm).

    Which outputs carry which perm is read off the spec (activations.output_modules). The batches are
    the only random source: draw them with sample_batches(seed). The models are never touched.
    objective_history is [summed correlation with identity perms, after matching].
    """
    start = time.perf_counter()
    _check_pair_states(spec, model_a.state_dict(), model_b.state_dict())
    corrs = perm_correlations(model_a, model_b, spec, x_batches, on_step)
    perms, before, after = {}, 0.0, 0.0
    for p in sorted(corrs):
        corr = corrs[p].numpy()  # (n, n)
        _, cols = linear_sum_assignment(corr, maximize=True)
        perms[p] = torch.as_tensor(cols, dtype=torch.int64)
        before += float(corr.trace())
        after += float(corr[range(len(cols)), cols].sum())
    return MatchResult(perms, [before, after], "activation", seed, time.perf_counter() - start)


# ------------------------------------------------------------------ applying perms
def permute_state(spec: PermSpec, state_b: Mapping[str, torch.Tensor],
                  perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a new state_dict of B with every perm applied (BN statistics included); checks perms."""
    _check_perms(spec, state_b, perms)
    return apply_permutation(spec, perms, state_b)


def permute_model(model_b: nn.Module, perms: Mapping[str, torch.Tensor]) -> nn.Module:
    """Return a fresh module computing the same function as ``model_b`` with its units permuted."""
    state = permute_state(perm_spec(model_b), model_b.state_dict(), perms)
    ref = next(model_b.parameters())
    model = create_model(model_b.model_spec).to(device=ref.device, dtype=ref.dtype)
    model.load_state_dict(state)
    return model.train(model_b.training)


@torch.no_grad()
def max_output_diff(model_b: nn.Module, permuted_b: nn.Module, x: torch.Tensor) -> float:
    """Return max |B(x) - permuted B(x)| in eval mode (0 up to float rounding when perms are valid)."""
    b, p = (m if not m.training else copy.deepcopy(m).eval() for m in (model_b, permuted_b))
    device = next(b.parameters()).device
    return float((b(x.to(device)) - p(x.to(device))).abs().max())


def permute_pair(pair: Pair, method: str, data: TensorDataset | None = None, seed: int = 0,
                 on_step: Callable | None = None) -> tuple[Pair, MatchResult]:
    """Return (pair with B aligned to A by ``method`` in a fresh module, MatchResult); inputs untouched.

    ``data`` is needed for 'activation'; on_step as in weight_matching (sweep, objective) or
    activation_matching (batches done, batches). Method 'none' returns the pair itself.
    """

    if method == "activation" and data is not None:
        check_data(pair, data)  # PairError naming a wrong dataset or input shape
    result = match_models(pair.a, pair.b, method, data, seed, on_step)
    if method == "none":
        return pair, result
    b = permute_model(pair.b, result.perms)
    extra = {**pair.meta_b.extra, "alignment": {**result.to_meta(), "reference": pair.name_a}}
    meta_b = replace(pair.meta_b, extra=extra)
    key = f"{pair.key}|perm={method}:{seed}"
    return make_pair(pair.a, pair.meta_a, b, meta_b, pair.name_a, pair.name_b, key=key, perm=method), result


def match_models(model_a: nn.Module, model_b: nn.Module, method: str, data: TensorDataset | None = None,
                 seed: int = 0, on_step: Callable | None = None, n_samples: int = 5000) -> MatchResult:
    """Return the MatchResult aligning ``model_b`` to ``model_a`` with one of METHODS."""
    spec = perm_spec(model_b)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    if method == "none":
        return identity_match(spec, state_b)
    if method == "random":
        return random_match(spec, state_b, seed)
    if method == "weight":
        return weight_matching(spec, state_a, state_b, seed=seed, on_step=on_step)
    if method == "activation":
        if data is None:
            raise ValueError("activation matching needs data: pass the dataset the models were trained on")
        batches = sample_batches(data.train_x, n_samples=n_samples, seed=seed)
        return activation_matching(model_a, model_b, spec, batches, seed=seed, on_step=on_step)
    raise ValueError(f"unknown alignment method {method!r}; choose one of {', '.join(METHODS)}")
