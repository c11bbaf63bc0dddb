"""Merged-model weights and forward passes along lam, never touching the endpoint models.

theta(lam) = lam * theta_A + (1 - lam) * theta_B (SCIENCE.md): lam = 1 is A, lam = 0 is B. Floating
tensors are interpolated, integer buffers (num_batches_tracked) come from A. Endpoint models are
only read: their tensors are copied into plain dicts and every forward goes through
torch.func.functional_call on a weightless "meta" template, so no cached module is ever written.

Two paths give the logits of the merged model:
- generic (any architecture): one functional_call per lam over chunks of the split; on CPU this
  beats vmap over lam for CNNs (notes/ECOSYSTEM.md section 3);
- ReLU MLP: the first layer is linear in lam, so z1(lam) = lam (W_A x + b_A) + (1 - lam) (W_B x + b_B)
  reuses the two endpoint products z1_A, z1_B computed once per split; only the cheap layers after
  it run per lam. z1_A and z1_B come out of the endpoint forwards themselves, which mirror
  MLP.forward op for op, so lam = 0 and 1 reproduce the endpoint logits bit for bit.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmcdash.config import ModelSpec
from lmcdash.models import create_model

State = dict[str, torch.Tensor]
_BN = nn.modules.batchnorm._BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    """Return True if any submodule is a BatchNorm layer."""
    return any(isinstance(m, _BN) for m in model.modules())


def endpoint_state(model: nn.Module, device: torch.device) -> State:
    """Return a detached copy-on-device view of the state_dict (float tensors as float32)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        out[k] = v.to(device=device, dtype=torch.float32) if v.is_floating_point() else v.to(device)
    return out


def interpolate_state(sa: State, sb: State, lam: float) -> State:
    """Return theta(lam); lam = 1 and lam = 0 return A's and B's tensors themselves."""
    if lam == 1.0:
        return dict(sa)
    if lam == 0.0:
        return dict(sb)
    return {k: torch.lerp(sb[k], v, lam) if v.is_floating_point() else v for k, v in sa.items()}


def make_template(spec: ModelSpec) -> nn.Module:
    """Return a weightless (meta-device) module for functional_call; BN momentum=None (cumulative mean)."""
    with torch.device("meta"):
        template = create_model(spec)
    for m in template.modules():
        if isinstance(m, _BN):
            m.momentum = None  # BN reset: running stats become the plain average over the reset batches
    return template.eval()


def bn_batches(x_train: torch.Tensor, n_batches: int, batch_size: int, seed: int,
               device: torch.device) -> list[torch.Tensor]:
    """Return a fixed, seeded list of training batches for BN statistics (same for every lam)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x_train), generator=g)[: n_batches * batch_size]
    return [x_train[idx[i:i + batch_size]].to(device) for i in range(0, len(idx), batch_size)]


def bn_reset(template: nn.Module, state: State, batches: list[torch.Tensor]) -> State:
    """Return ``state`` with fresh BN running statistics estimated on ``batches`` (train mode, no grad)."""
    fresh = dict(state)
    for name, m in template.named_modules():
        if isinstance(m, _BN):
            ref = state[f"{name}.running_mean"]
            fresh[f"{name}.running_mean"] = torch.zeros_like(ref)
            fresh[f"{name}.running_var"] = torch.ones_like(ref)
            fresh[f"{name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long, device=ref.device)
    template.train()
    try:
        with torch.inference_mode():
            for xb in batches:  # BN updates the fresh buffers in place; the endpoints' stay untouched
                functional_call(template, fresh, (xb,))
    finally:
        template.eval()
    return fresh


def merged_state(template: nn.Module, sa: State, sb: State, lam: float, bn_mode: str,
                 batches: list[torch.Tensor] | None) -> State:
    """Return the merged state at lam; endpoints (lam in {0, 1}) are returned unchanged in every BN mode."""
    state = interpolate_state(sa, sb, lam)
    if bn_mode == "reset" and lam not in (0.0, 1.0):
        state = bn_reset(template, state, batches or [])
    return state


@torch.inference_mode()
def forward_chunks(template: nn.Module, state: State, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Return the (N, C) float32 logits of ``template`` with ``state`` on x, in chunks of rows."""
    return torch.cat([functional_call(template, state, (x[i:i + chunk],)) for i in range(0, len(x), chunk)])


def forward_parallel(templates: list[nn.Module], state: State, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Return forward_chunks' logits, one row block per template on CPU (bit-identical, see in_row_blocks).

    Each thread needs its own template: functional_call swaps tensors into the module while it runs.
    """
    n_chunks = -(-len(x) // chunk)
    if len(templates) < 2 or x.device.type != "cpu" or n_chunks < 2:
        return forward_chunks(templates[0], state, x, chunk)
    per = -(-n_chunks // len(templates)) * chunk  # whole chunks per block: the same chunks as one thread
    blocks = [(lo, min(lo + per, len(x))) for lo in range(0, len(x), per)]
    owner = {lo: templates[i] for i, (lo, _) in enumerate(blocks)}
    return torch.cat(in_row_blocks(lambda lo, hi: forward_chunks(owner[lo], state, x[lo:hi], chunk), blocks))


def flops_per_sample(template: nn.Module, state: State, input_shape: tuple[int, ...]) -> float:
    """Return the multiply-add FLOPs (2 per MAC) of Linear/Conv layers for one input (one tiny forward)."""
    total = [0.0]

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        fan_in = mod.weight[0].numel()  # in_features, or in_channels / groups * kh * kw
        total[0] += 2.0 * fan_in * out[0].numel()

    handles = [m.register_forward_hook(hook) for m in template.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:  # a real one-sample forward: shape inference on the meta device costs seconds of imports
        device = next(iter(state.values())).device
        forward_chunks(template, state, torch.zeros(1, *input_shape, device=device), 1)
    finally:
        for h in handles:
            h.remove()
    return total[0]


# ---------------------------------------------------------------- ReLU-MLP fast path
Layers = list[tuple[torch.Tensor, torch.Tensor | None]]


def mlp_layers(state: State) -> Layers:
    """Return [(weight, bias or None)] of an lmcdash MLP state, layer by layer."""
    n = sum(1 for k in state if k.endswith(".weight"))
    return [(state[f"linears.{i}.weight"], state.get(f"linears.{i}.bias")) for i in range(n)]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """Return F.linear(x, w, b) written into ``out``: the addmm / mm that F.linear runs on 2-D inputs."""
    return torch.mm(x, w.T, out=out) if b is None else torch.addmm(b, x, w.T, out=out)


@torch.inference_mode()
def mlp_endpoint(x: torch.Tensor, layers: Layers, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits, first-layer pre-activation z1), chunk by chunk of rows, with MLP.forward's ops."""
    x = x.flatten(1)
    n, hidden = len(x), layers[0][0].shape[0]
    # Chunks write into preallocated outputs: concatenating per-chunk results (and a fresh ReLU tensor
    # per chunk) measured 421 vs 179 MB peak for both endpoints of the bench pair, and 5-10% more CPU time.
    z1 = torch.empty(n, hidden, device=x.device)
    logits = torch.empty(n, layers[-1][0].shape[0], device=x.device)
    buf = torch.empty(min(chunk, n), hidden, device=x.device)
    for i in range(0, n, chunk):
        h = _linear(x[i:i + chunk], *layers[0], out=z1[i:i + chunk])
        for j, (w, b) in enumerate(layers[1:], start=1):
            h = torch.clamp_min(h, 0, out=buf[:len(h)]) if j == 1 else torch.relu(h)  # torch.relu is clamp_min(0)
            h = _linear(h, w, b, out=logits[i:i + chunk]) if j == len(layers) - 1 else F.linear(h, w, b)
    return logits, z1


def _interp_layers(la: Layers, lb: Layers, lam: float) -> Layers:
    return [(torch.lerp(wb, wa, lam).T, None if ba is None else torch.lerp(bb, ba, lam))
            for (wa, ba), (wb, bb) in zip(la, lb)]


def _interior_rows(za: torch.Tensor, zb: torch.Tensor, tail: list[Layers], lams: list[float],
                   rows: int, out: torch.Tensor) -> None:
    """Fill out[:, rows of za] for every lam; chunk outer, lam inner, so za/zb rows stay in cache."""
    n, hidden = za.shape
    # Preallocated buffers: reallocating multi-MB tensors per chunk costs more than the math on CPU.
    bufs = [torch.empty(rows, hidden, device=za.device)] + [
        torch.empty(rows, wt.shape[1], device=za.device) for wt, _ in tail[0][:-1]]
    with torch.inference_mode():
        for i in range(0, n, rows):
            r = min(rows, n - i)
            for k, lam in enumerate(lams):
                h = torch.lerp(zb[i:i + r], za[i:i + r], lam, out=bufs[0][:r]).relu_()
                for j, (wt, b) in enumerate(tail[k]):
                    dst = out[k, i:i + r] if j == len(tail[k]) - 1 else bufs[j + 1][:r]
                    h = torch.mm(h, wt, out=dst) if b is None else torch.addmm(b, h, wt, out=dst)
                    if j < len(tail[k]) - 1:
                        h.relu_()


_THREADS_LOCK = threading.Lock()


def in_row_blocks(work: Callable[[int, int], object], blocks: list[tuple[int, int]]) -> list:
    """Return [work(lo, hi) for each block], run by one Python thread per block with one intra-op thread.

    On CPU, per-chunk ops are too small to amortise an OpenMP fork/join (and on a loaded machine each
    join waits for a descheduled thread: measured 4x slower for the MLP interior, 1.2-3x for VGG
    chunks). torch releases the GIL inside ops, so disjoint row blocks run in parallel; results are
    bit-identical. set_num_threads is process-wide: the lock keeps concurrent callers (dashboard
    sessions) from restoring each other's setting, and it is restored at once.
    """
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(len(blocks)) as pool:
                return [job.result() for job in [pool.submit(work, lo, hi) for lo, hi in blocks]]
        finally:
            torch.set_num_threads(before)


def mlp_interior(za: torch.Tensor, zb: torch.Tensor, la: Layers, lb: Layers, lams: list[float],
                 rows: int, workers: int = 1) -> torch.Tensor:
    """Return (K, N, C) merged logits from the endpoint first-layer outputs za, zb (N, H)."""
    with torch.inference_mode():
        tail = [_interp_layers(la[1:], lb[1:], lam) for lam in lams]  # per lam: [(W^T, b)] of layers >= 2
        out = torch.empty(len(lams), len(za), la[-1][0].shape[0], device=za.device)
    if workers <= 1 or za.device.type != "cpu":
        _interior_rows(za, zb, tail, lams, rows, out)
        return out
    bounds = [round(w * len(za) / workers) for w in range(workers + 1)]
    blocks = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    in_row_blocks(lambda lo, hi: _interior_rows(za[lo:hi], zb[lo:hi], tail, lams, rows, out[:, lo:hi]), blocks)
    return out


def mlp_interior_flops(la: Layers, n: int, k: int) -> float:
    """Return the matmul FLOPs that mlp_interior runs for n rows and k lams (layers >= 2)."""
    return 2.0 * n * k * sum(w.numel() for w, _ in la[1:])
