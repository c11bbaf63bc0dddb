"""Pairs of checkpoints and the Evaluator: merged-model logits along lam, cached, and the curves built on them.

The endpoint models are read-only (DESIGN.md hard line 3): their tensors are copied into dicts and
every merged forward goes through functional_call (lmcdash.merged). Logits are cached per
(pair, data, split, lam, BN mode, permutation) in a bounded LRU, so accuracy, losses, calibration,
barriers and ensembles (lmcdash.metrics) are cheap views, and a temperature change runs no network.

BatchNorm default: "reset" re-estimates the merged model's BN statistics at every interior lam from
a fixed, seeded set of training images (10 batches x 500 = 5000 by default: the standard error of
a channel mean is then under 1.5% of the channel's std before counting spatial positions, far below
the effects measured, and it costs one third of a test+calibration pass per lam). Endpoints (lam in
{0, 1}) keep their own trained statistics in every mode, so they reproduce the shipped models exactly.
"""
from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from lmcdash.config import default_device
from lmcdash.data import TensorDataset
from lmcdash import merged as M
from lmcdash.calibration import cross_entropy_at
from lmcdash.metrics import TABLE_COLUMNS, SplitLogits, barriers, lam_row
from lmcdash.pair import Pair, PairError, check_data, load_pair, make_pair, model_digest, pair_differences

__all__ = ["BN_MODES", "CurveResult", "Evaluator", "Pair", "PairError", "check_data", "lam_grid", "load_pair",
           "make_pair", "model_digest", "pair_differences"]

BN_MODES = ("reset", "interpolate")
OnStep = Callable[[int, int], None]  # (done, total)
_Z_BUDGET_BYTES = 1 << 30  # cache of first-layer products (MLP fast path); above it, recompute per call


def lam_grid(n: int = 25) -> tuple[float, ...]:
    """Return n evenly spaced lam values from 0 to 1 (both included; 0.5 included when n is odd)."""
    if n < 2:
        raise ValueError(f"a lam grid needs at least 2 points (0 and 1), got {n}")
    return tuple(round(i / (n - 1), 12) for i in range(n))


@dataclass
class CurveResult:
    """Per-lam metrics and barriers of one pair on one split."""

    table: pd.DataFrame  # metrics.TABLE_COLUMNS, one row per lam
    barriers: pd.DataFrame  # metrics.BARRIER_COLUMNS
    split: str
    bn_mode: str  # "reset", "interpolate", or "none" for models without BatchNorm
    perm: str
    num_layers: int


class Evaluator:
    """One pair on one dataset and device; a bounded per-lam logit cache."""

    def __init__(self, pair: Pair, data: TensorDataset, device: str | torch.device | None = None,
                 bn_mode: str = "reset", bn_batches: int = 10, bn_batch_size: int = 500, bn_seed: int = 0,
                 max_cached: int = 64):
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown BN mode {bn_mode!r}; choose one of {', '.join(BN_MODES)}")
        check_data(pair, data)
        self.pair, self.data = pair, data
        self.device = torch.device(device) if device is not None else default_device()
        self.has_bn = M.has_batchnorm(pair.a)
        self.bn_mode = bn_mode if self.has_bn else "none"
        self.bn_batches, self.bn_batch_size, self.bn_seed = bn_batches, bn_batch_size, bn_seed
        self.max_cached = max(1, int(max_cached))
        self.num_layers = len(pair.a.layer_groups)
        self.flops = 0.0  # multiply-add FLOPs of every forward run so far (for the benchmark)
        self._sa = M.endpoint_state(pair.a, self.device)
        self._sb = M.endpoint_state(pair.b, self.device)
        self._template = M.make_template(pair.a.model_spec)
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        self._templates = [self._template] + [copy.deepcopy(self._template) for _ in range(workers - 1)]
        self._fast = pair.a.model_spec.arch == "mlp" and not self.has_bn
        self._flops_sample = M.flops_per_sample(self._template, self._sa, pair.a.model_spec.input_shape)
        self._chunk = 1000 if self.device.type == "cpu" else 8192
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._rows: OrderedDict[tuple, dict] = OrderedDict()
        self._z: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._x: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._bn_x: list[torch.Tensor] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------ data and keys
    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._x:
            x, y = self.data.split(split)  # DatasetError names the valid splits
            self._x[split] = (x.to(self.device), y)
        return self._x[split]

    def _key(self, lam: float, split: str) -> tuple:
        return (self.pair.key, self.data.name, split, round(float(lam), 12), self.bn_mode, self.pair.perm)

    def _reset_batches(self) -> list[torch.Tensor]:
        if self._bn_x is None:
            self._bn_x = M.bn_batches(self.data.train_x, self.bn_batches, self.bn_batch_size, self.bn_seed,
                                      self.device)
        return self._bn_x

    def merged_state(self, lam: float) -> dict[str, torch.Tensor]:
        """Return the merged state_dict at lam (BN statistics per this evaluator's BN mode)."""
        batches = self._reset_batches() if self.bn_mode == "reset" and lam not in (0.0, 1.0) else None
        if batches:
            self.flops += self._flops_sample * sum(len(b) for b in batches)
        return M.merged_state(self._template, self._sa, self._sb, float(lam), self.bn_mode, batches)

    # ------------------------------------------------------------ logits
    def _store(self, lam: float, split: str, logits: torch.Tensor) -> torch.Tensor:
        out = logits.detach().to("cpu", torch.float32)
        self._cache[self._key(lam, split)] = out
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return out

    def _mlp_z(self, split: str, got: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Return first-layer products (z1_A, z1_B) of a split; endpoint logits land in ``got``."""
        ends_cached = all(self._key(lam, split) in self._cache for lam in (0.0, 1.0))
        if split in self._z and ends_cached:
            return self._z[split]
        x, _ = self._split(split)
        la, lb = M.mlp_layers(self._sa), M.mlp_layers(self._sb)
        c = 2 * self._chunk  # larger GEMMs run faster here (measured 2500 vs 1000 rows)
        (ya, za), (yb, zb) = M.mlp_endpoint(x, la, c), M.mlp_endpoint(x, lb, c)
        self.flops += 2 * self._flops_sample * len(x)
        got[(1.0, split)], got[(0.0, split)] = self._store(1.0, split, ya), self._store(0.0, split, yb)
        if za.numel() * za.element_size() * 2 <= _Z_BUDGET_BYTES:
            self._z[split] = (za, zb)
        return za, zb

    def _compute_fast(self, lams: list[float], splits: Sequence[str], got: dict, step: Callable) -> None:
        la, lb = M.mlp_layers(self._sa), M.mlp_layers(self._sb)
        # CPU: chunks of about 1 MiB of hidden activations stay in L2 across the lams of a group.
        rows = max(32, (1 << 20) // (4 * la[0][0].shape[0])) if self.device.type == "cpu" else 16384
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        inner = [lam for lam in lams if lam not in (0.0, 1.0)]
        for split in splits:
            za, zb = self._mlp_z(split, got)
            for i in range(0, len(inner), 8):  # groups of lams: progress and bounded output memory
                group = inner[i:i + 8]
                out = M.mlp_interior(za, zb, la, lb, group, rows, workers)
                self.flops += M.mlp_interior_flops(la, len(za), len(group))
                for lam, z in zip(group, out):
                    got[(lam, split)] = self._store(lam, split, z)
                step(len(group))
            step(len([lam for lam in lams if lam in (0.0, 1.0)]))

    def _compute_generic(self, lams: list[float], splits: Sequence[str], got: dict, step: Callable) -> None:
        for lam in lams:
            state = self.merged_state(lam)  # one BN reset serves every split at this lam
            for split in splits:
                x, _ = self._split(split)
                got[(lam, split)] = self._store(lam, split, M.forward_parallel(self._templates, state, x, self._chunk))
                self.flops += self._flops_sample * len(x)
            step(1)

    def _ensure(self, lams: Sequence[float], splits: Sequence[str], on_step: OnStep | None = None) -> dict:
        """Return {(lam, split): logits} for every pair, computing only what the cache lacks."""
        lams = [float(v) for v in lams]
        for split in splits:
            self._split(split)
        with self._lock:
            got, todo = {}, []
            for lam in dict.fromkeys(lams):
                for split in splits:
                    key = self._key(lam, split)
                    if key in self._cache:
                        self._cache.move_to_end(key)
                        got[(lam, split)] = self._cache[key]
                missing = [s for s in splits if (lam, s) not in got]
                if missing:
                    todo.append(lam)
            need = sorted({s for lam in todo for s in splits if (lam, s) not in got})
            done, total = [0], len(todo) * (len(need) if self._fast else 1)

            def step(n: int) -> None:
                done[0] += n
                if on_step and n:
                    on_step(min(done[0], total), total)

            if todo:
                (self._compute_fast if self._fast else self._compute_generic)(todo, need, got, step)
            return got

    def logits(self, lams: Sequence[float], split: str = "test", on_step: OnStep | None = None) -> torch.Tensor:
        """Return (K, N, C) float32 CPU logits at each lam; computes only uncached lams."""
        got = self._ensure(lams, [split], on_step)
        return torch.stack([got[(float(lam), split)] for lam in lams])

    def warm(self, lams: Sequence[float], splits: Sequence[str] = ("test", "calib"),
             on_step: OnStep | None = None) -> None:
        """Fill the cache for every (lam, split); one merged state (and BN reset) serves all splits."""
        self._ensure(lams, list(splits), on_step)

    # ------------------------------------------------------------ curves
    def _row(self, lam: float, split: str, got: dict) -> dict:
        key = self._key(lam, split)
        if key not in self._rows:
            y, yc = self._split(split)[1], self._split("calib")[1]
            ev = SplitLogits(got[(lam, split)], got[(1.0, split)], got[(0.0, split)], y)
            cal = SplitLogits(got[(lam, "calib")], got[(1.0, "calib")], got[(0.0, "calib")], yc)
            self._rows[key] = lam_row(lam, self.num_layers, ev, cal)
            while len(self._rows) > 4 * self.max_cached:
                self._rows.popitem(last=False)
        return self._rows[key]

    def _check_report_split(self, split: str) -> None:
        self.data.split(split)
        if split == "calib":
            raise ValueError("the temperature is fitted on the 'calib' split, so it cannot also be the "
                             "reported split; evaluate on 'test' (or 'train')")

    def curve(self, lams: Sequence[float], split: str = "test", on_step: OnStep | None = None) -> CurveResult:
        """Return per-lam metrics and barriers; lam = 0, 1/2 and 1 are always added to the grid."""
        self._check_report_split(split)
        lams = sorted({round(float(v), 12) for v in lams} | {0.0, 0.5, 1.0})
        with self._lock:
            got = self._ensure(lams, [split, "calib"], on_step)
            table = pd.DataFrame([self._row(lam, split, got) for lam in lams], columns=TABLE_COLUMNS)
        return CurveResult(table, barriers(table), split, self.bn_mode, self.pair.perm, self.num_layers)

    def point(self, lam: float, split: str = "test", temperature: float | None = None) -> dict:
        """Return the table row at lam, plus temperature_manual and loss_manual when a temperature is given."""
        self._check_report_split(split)
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        lam = round(float(lam), 12)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        with self._lock:
            got = self._ensure([lam, 0.0, 1.0], [split, "calib"])
            row = dict(self._row(lam, split, got))
        if temperature is not None:
            row["temperature_manual"] = float(temperature)
            row["loss_manual"] = cross_entropy_at(got[(lam, split)], self._split(split)[1], 1.0 / temperature)
        return row
