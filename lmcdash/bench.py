"""Benchmark: the engine against a naive baseline on the same work, in one process (DESIGN.md, Performance).

The work: logits on a lam grid for the evaluation and calibration splits, a per-lam temperature
fit, raw and calibrated barriers. The baseline builds a fresh model per lam, load_state_dict's the
interpolated weights (BN reset the same way, on the same batches) and runs a DataLoader with batch
size 1000. Both paths first run lam = 0, 1/2, 1 once untimed (thread pools, oneDNN primitives, allocator),
so neither pays the other's warm-up. Speed lives here, not in pytest: timings on a shared machine are noisy.
FLOPs count multiply-adds of Linear/Conv layers (2 per MAC) that the engine actually ran,
including BN-reset forwards; elementwise work (lerp, ReLU) is not counted.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import TensorDataset as TorchTensorDataset

from lmcdash.calibration import accuracy, cross_entropy_at, fit_beta
from lmcdash.data import TensorDataset, load_dataset
from lmcdash.engine import Evaluator, Pair, lam_grid, load_pair
from lmcdash.merged import bn_batches, has_batchnorm, interpolate_state
from lmcdash.metrics import barriers
from lmcdash.models import create_model, perm_spec

OnStep = Callable[[str], None]  # a line of progress (the CLI prints it to stderr)


@dataclass
class BenchRow:
    """One benchmarked pair."""

    pair: str
    n_eval: int
    n_calib: int
    grid: int
    engine_s: float
    baseline_s: float
    speedup: float
    engine_gflop: float
    engine_gflops: float
    peak_gflops: float  # best of the matmul runs before and after the work
    median_gflops: float  # median matmul throughput: what a loaded machine sustains
    peak_fraction: float
    new_lam_logits_s: float  # one uncached lam, evaluation split only
    new_lam_point_s: float  # one uncached lam through Evaluator.point (eval + calib logits, fits)
    temperature_change_ms: float  # Evaluator.point at a cached lam with a new manual temperature
    max_logit_diff: float  # engine vs baseline, all lams and both splits
    max_barrier_diff: float
    weight_matching_s: float | None = None


def matmul_throughput(n: int = 2048, repeats: int = 7, device: torch.device | None = None) -> tuple[float, float]:
    """Return (best, median) float32 matmul throughput in GFLOP/s over ``repeats`` n x n products."""
    device = device or torch.device("cpu")
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        a @ a
        _sync(device)
        times.append(time.perf_counter() - t)
    times = times[1:]  # the first run is a warm-up
    return 2.0 * n ** 3 / min(times) / 1e9, 2.0 * n ** 3 / statistics.median(times) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def finish(lams: list[float], z: torch.Tensor, y: torch.Tensor, zc: torch.Tensor, yc: torch.Tensor) -> pd.DataFrame:
    """Return the barrier table from (K, N, C) eval and calib logits: per-lam beta fit, raw and calibrated loss."""
    rows = []
    for lam, zk, zck in zip(lams, z, zc):
        beta = fit_beta(zck, yc)
        rows.append({"lam": lam, "acc": accuracy(zk, y), "loss_raw": cross_entropy_at(zk, y),
                     "loss_cal": cross_entropy_at(zk, y, beta)})
    return barriers(pd.DataFrame(rows))


def engine_work(pair: Pair, data: TensorDataset, lams: list[float], device: torch.device) -> tuple:
    """Return (seconds, evaluator, eval logits, calib logits, barriers) for the engine."""
    t = time.perf_counter()
    ev = Evaluator(pair, data, device=device)
    ev.warm(lams, ("test", "calib"))
    z, zc = ev.logits(lams, "test"), ev.logits(lams, "calib")
    table = finish(lams, z, data.test_y, zc, data.calib_y)
    return time.perf_counter() - t, ev, z, zc, table


@torch.inference_mode()
def _reset_module(model: nn.Module, batches: list[torch.Tensor]) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    for xb in batches:
        model(xb)
    model.eval()


@torch.inference_mode()
def _loader_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    loader = DataLoader(TorchTensorDataset(x, y), batch_size=1000, shuffle=False)
    return torch.cat([model(xb.to(device)).cpu() for xb, _ in loader])


def baseline_work(pair: Pair, data: TensorDataset, lams: list[float], device: torch.device) -> tuple:
    """Return (seconds, eval logits, calib logits, barriers): fresh model + load_state_dict per lam."""
    t = time.perf_counter()
    sa, sb = pair.a.state_dict(), pair.b.state_dict()
    batches = bn_batches(data.train_x, 10, 500, 0, device) if has_batchnorm(pair.a) else []
    z, zc = [], []
    for lam in lams:
        model = create_model(pair.a.model_spec)
        model.load_state_dict(interpolate_state(sa, sb, lam))
        model.to(device)
        if batches and lam not in (0.0, 1.0):
            _reset_module(model, batches)
        model.eval()
        z.append(_loader_logits(model, data.test_x, data.test_y, device))
        zc.append(_loader_logits(model, data.calib_x, data.calib_y, device))
    z, zc = torch.stack(z), torch.stack(zc)
    table = finish(lams, z, data.test_y, zc, data.calib_y)
    return time.perf_counter() - t, z, zc, table


def _latencies(ev: Evaluator, lams: list[float]) -> tuple[float, float, float]:
    t = time.perf_counter()
    ev.logits([0.123456], "test")
    new_logits = time.perf_counter() - t
    t = time.perf_counter()
    ev.point(0.654321)
    new_point = time.perf_counter() - t
    ev.point(0.5, temperature=0.5)
    times = []
    for temp in (0.3, 0.4, 0.6, 0.7, 0.8):
        t = time.perf_counter()
        ev.point(0.5, temperature=temp)
        times.append(time.perf_counter() - t)
    return new_logits, new_point, 1e3 * statistics.median(times)


def _weight_matching_seconds(pair: Pair) -> float | None:
    try:
        from lmcdash.matching import weight_matching
    except ImportError:
        return None
    t = time.perf_counter()
    weight_matching(perm_spec(pair.b), pair.a.state_dict(), pair.b.state_dict(), seed=0)
    return time.perf_counter() - t


def _data_for(pair: Pair, limit: int | None) -> TensorDataset:
    train = pair.meta_a.train
    data = load_dataset(pair.meta_a.dataset, calib_size=train.get("calib_size", 5000),
                        calib_seed=train.get("calib_seed", 0))
    if limit:
        data = replace(data, test_x=data.test_x[:limit], test_y=data.test_y[:limit],
                       calib_x=data.calib_x[:limit], calib_y=data.calib_y[:limit])
    return data


def bench_pair(path_a: str | Path, path_b: str | Path, grid: int = 25, limit: int | None = None,
               device: torch.device | None = None, on_step: OnStep | None = None) -> BenchRow:
    """Return the benchmark of one pair of checkpoint files (engine, baseline, peak, latencies)."""
    device = device or torch.device("cpu")
    say = on_step or (lambda s: None)
    pair, lams = load_pair(path_a, path_b), list(lam_grid(grid))
    data = _data_for(pair, limit)
    say(f"{pair.name_a} vs {pair.name_b}: measuring matmul peak")
    peak, median = matmul_throughput(device=device)
    say("warm-up (lam 0, 1/2, 1 through both paths: thread pools, oneDNN primitives, allocator)")
    engine_work(pair, data, [0.0, 0.5, 1.0], device)
    baseline_work(pair, data, [0.0, 0.5, 1.0], device)
    say("engine")
    e_s, ev, z, zc, e_table = engine_work(pair, data, lams, device)
    flops = ev.flops
    say("baseline")
    b_s, bz, bzc, b_table = baseline_work(pair, data, lams, device)
    peak2, median2 = matmul_throughput(device=device)  # before and after: the machine may be shared
    peak, median = max(peak, peak2), statistics.median([median, median2])
    say("latencies")
    new_logits, new_point, temp_ms = _latencies(ev, lams)
    diff = max(float((z - bz).abs().max()), float((zc - bzc).abs().max()))
    bdiff = float((e_table["value"] - b_table["value"]).abs().max())
    wm = _weight_matching_seconds(pair)
    return BenchRow(f"{pair.name_a} / {pair.name_b}", len(data.test_y), len(data.calib_y), grid, e_s, b_s,
                    b_s / e_s, flops / 1e9, flops / 1e9 / e_s, peak, median, flops / 1e9 / e_s / peak,
                    new_logits, new_point, temp_ms, diff, bdiff, wm)
