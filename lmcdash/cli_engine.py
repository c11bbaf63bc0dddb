"""`python -m lmcdash eval | layers | bench`: barrier tables, the per-layer LEWC fit, and the speed benchmark."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lmcdash.config import checkpoints_dir, default_device
from lmcdash.data import TensorDataset, load_dataset
from lmcdash.engine import BN_MODES, Evaluator, Pair, lam_grid, load_pair
from lmcdash.merged import has_batchnorm

DEFAULT_BENCH_PAIRS = ("mlp1_wd3e-3/mlp1_w32_s0.safetensors:mlp1_wd3e-3/mlp1_w32_s1.safetensors",
                       "vgg11_wd3e-3/vgg11_w4_s0.safetensors:vgg11_wd3e-3/vgg11_w4_s1.safetensors")


def _bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="lam", file=sys.stderr, leave=False)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, on_step


def _data(pair: Pair, dataset: str | None) -> TensorDataset:
    """Return the dataset the pair was trained on, with the calibration split carved as in training."""
    name = dataset or pair.meta_a.dataset
    if name == "unknown":
        raise ValueError(f"{pair.name_a} does not say which dataset it was trained on; pass --dataset NAME")
    train = pair.meta_a.train or {}
    return load_dataset(name, calib_size=int(train.get("calib_size", 5000)),
                        calib_seed=int(train.get("calib_seed", 0)))


def _device(name: str | None) -> torch.device:
    return torch.device(name) if name else default_device()


def _describe(pair: Pair, data: TensorDataset, split: str, bn_mode: str) -> str:
    s = pair.a.model_spec
    return (f"A = {pair.name_a} (lam = 1), B = {pair.name_b} (lam = 0): {s.arch} width {s.width}, "
            f"{len(pair.a.layer_groups)} weight layers; {data.name} {split} split ({len(data.split(split)[1])} "
            f"images), temperature fitted on calib ({len(data.calib_y)}); BN: {bn_mode}")


def cmd_eval(args: argparse.Namespace) -> int:
    pair = load_pair(args.a, args.b)
    data = _data(pair, args.dataset)
    ev = Evaluator(pair, data, device=_device(args.device), bn_mode=args.bn_mode)
    ev._check_report_split(args.split)  # before the progress bar, so an error stays one line
    bar, on_step = _bar("merged models")
    with bar:
        res = ev.curve(lam_grid(args.grid), args.split, on_step=on_step)
    print(_describe(pair, data, args.split, res.bn_mode))
    table = res.table
    cols = ["lam", "acc", "loss_raw", "loss_cal", "temperature_cal", "temperature_lewc", "acc_logit_ens",
            "loss_cal_logit_ens"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    b = res.barriers.copy()
    b["shown"] = [f"{100 * v:+.2f} pp" if m == "accuracy" else f"{v:+.4f}" for m, v in zip(b["metric"], b["value"])]
    print("\nbarriers (accuracy in percentage points; value column in fractions):")
    print(b[["definition", "metric", "shown", "formula"]].to_string(index=False))
    if args.json:
        doc = {"a": str(args.a), "b": str(args.b), "dataset": data.name, "split": res.split, "bn_mode": res.bn_mode,
               "perm": res.perm, "num_layers": res.num_layers, "grid": list(lam_grid(args.grid)),
               "table": table.to_dict(orient="records"), "barriers": res.barriers.to_dict(orient="records")}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"\nfull per-lam results written to {args.json}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from lmcdash.layerwise import layer_fit

    pair = load_pair(args.a, args.b)
    data = _data(pair, args.dataset)
    df = layer_fit(pair, data, args.lams, split=args.split, n_samples=args.n_samples, seed=args.seed,
                   device=_device(args.device), bn_mode=args.bn_mode)
    mode = args.bn_mode if has_batchnorm(pair.a) else "none"
    n = min(args.n_samples, len(data.split(args.split)[1]))
    print(_describe(pair, data, args.split, mode) + f"; {n} samples (seeded)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"\nwritten to {args.csv}")
    return 0


def _bench_pairs(specs: list[str] | None) -> list[tuple[Path, Path]]:
    root, out = checkpoints_dir(), []
    for spec in specs or DEFAULT_BENCH_PAIRS:
        if ":" not in spec:
            raise ValueError(f"--pairs expects A.safetensors:B.safetensors, got {spec!r}")
        a, b = (Path(p) if Path(p).is_absolute() or Path(p).exists() else root / p for p in spec.split(":", 1))
        out.append((a, b))
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from lmcdash.bench import bench_pair

    say = lambda s: print(f"  [{s}]", file=sys.stderr, flush=True)  # noqa: E731
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {_device(args.device)}")
    for a, b in _bench_pairs(args.pairs):
        missing = [str(p) for p in (a, b) if not p.exists()]
        if missing:
            print(f"skipped {a.name} / {b.name}: missing {', '.join(missing)}")
            continue
        r = bench_pair(a, b, grid=args.grid, limit=args.limit, device=_device(args.device), on_step=say)
        print(f"\npair {r.pair}: {r.grid} lams, test {r.n_eval} + calib {r.n_calib} images, per-lam temperature "
              "fit, raw and calibrated barriers")
        print(f"  engine    {r.engine_s:8.3f} s   {r.engine_gflop:.1f} GFLOP run, {r.engine_gflops:.1f} GFLOP/s "
              f"= {100 * r.peak_fraction:.0f}% of measured fp32 matmul peak {r.peak_gflops:.1f} GFLOP/s "
              f"(median matmul {r.median_gflops:.1f} GFLOP/s)")
        print(f"  baseline  {r.baseline_s:8.3f} s   (fresh model + load_state_dict per lam, DataLoader batch 1000)")
        print(f"  speedup   {r.speedup:8.2f} x")
        print(f"  one new lam: {r.new_lam_logits_s:.3f} s (test logits), {r.new_lam_point_s:.3f} s "
              "(Evaluator.point: test + calib logits + fits)")
        print(f"  temperature change at a cached lam: {r.temperature_change_ms:.2f} ms")
        print(f"  engine vs baseline: max |logit diff| {r.max_logit_diff:.2e}, max |barrier diff| "
              f"{r.max_barrier_diff:.2e}")
        if r.weight_matching_s is not None:
            print(f"  weight matching: {r.weight_matching_s:.2f} s")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, help="checkpoint A (lam = 1)")
    p.add_argument("b", type=Path, help="checkpoint B (lam = 0)")
    p.add_argument("--split", default="test", help="evaluation split: test or train (calib fits the temperature)")
    p.add_argument("--bn-mode", default="reset", choices=BN_MODES,
                   help="BatchNorm nets: reset statistics on training batches (default) or interpolate buffers (naive)")
    p.add_argument("--dataset", default=None, help="override the dataset named in the checkpoint metadata")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: $LMCDASH_DEVICE or auto)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the eval, layers and bench commands to the lmcdash CLI."""
    e = sub.add_parser("eval", help="barriers, calibration and ensembles along the line from B to A")
    _common(e)
    e.add_argument("--grid", type=int, default=21, help="number of evenly spaced lam values (0 and 1 included)")
    e.add_argument("--json", default=None, help="write the full per-lam table and barriers to this file")
    e.set_defaults(func=cmd_eval)

    lay = sub.add_parser("layers", help="per-layer LEWC fit (cosines, norm ratio, coefficients, weak additivity)")
    _common(lay)
    lay.add_argument("--lams", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    lay.add_argument("--n-samples", type=int, default=1000)
    lay.add_argument("--seed", type=int, default=0)
    lay.add_argument("--csv", default=None, help="also write the table as CSV")
    lay.set_defaults(func=cmd_layers)

    bn = sub.add_parser("bench", help="engine vs naive baseline on the shipped MLP and VGG pairs")
    bn.add_argument("--pairs", nargs="+", default=None,
                    help="A:B checkpoint pairs (relative to the checkpoint folder or absolute)")
    bn.add_argument("--grid", type=int, default=25)
    bn.add_argument("--limit", type=int, default=None, help="use only the first N test and calib images")
    bn.add_argument("--device", default="cpu")
    bn.set_defaults(func=cmd_bench)
