"""`python -m lmcdash align A B --method weight|activation|random --out B_aligned.safetensors`."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from lmcdash.checkpoints import load_checkpoint, save_checkpoint
from lmcdash.config import CheckpointMeta, default_device
from lmcdash.data import load_dataset
from lmcdash.matching import METHODS, MatchResult, match_models, max_output_diff, permute_model

SANITY_BATCH = 256  # inputs for the B vs permuted-B output check


def _check_same_model(meta_a: CheckpointMeta, meta_b: CheckpointMeta, name_a: str, name_b: str) -> None:
    if meta_a.model != meta_b.model:
        diff = [f"{f}: {getattr(meta_a.model, f)} vs {getattr(meta_b.model, f)}"
                for f in meta_a.model.__dataclass_fields__ if getattr(meta_a.model, f) != getattr(meta_b.model, f)]
        raise ValueError(f"{name_a} and {name_b} are different models ({'; '.join(diff)}); "
                         "only models of the same architecture and width can be aligned.")


def _load_data(meta_a: CheckpointMeta, meta_b: CheckpointMeta, name_b: str):
    if meta_a.dataset != meta_b.dataset:
        raise ValueError(f"activation matching needs one dataset, but A was trained on {meta_a.dataset!r} and "
                         f"{name_b} on {meta_b.dataset!r}. Use --method weight instead.")
    train = meta_a.train or {}
    data = load_dataset(meta_a.dataset, calib_size=int(train.get("calib_size", 5000)),
                        calib_seed=int(train.get("calib_seed", 0)))
    if tuple(data.input_shape) != tuple(meta_a.model.input_shape):
        raise ValueError(f"dataset {meta_a.dataset!r} has inputs {data.input_shape}, the models expect "
                         f"{tuple(meta_a.model.input_shape)}.")
    return data


def _match(args: argparse.Namespace, a, b, meta_a, meta_b, name_b: str) -> tuple[MatchResult, torch.Tensor]:
    """Return (match result, the inputs for the sanity check)."""
    from tqdm import tqdm

    data = _load_data(meta_a, meta_b, name_b) if args.method == "activation" else None
    gen = torch.Generator().manual_seed(args.seed)
    x = (data.train_x[torch.randperm(len(data.train_x), generator=gen)[:SANITY_BATCH]] if data is not None
         else torch.randn(SANITY_BATCH, *meta_a.model.input_shape, generator=gen))
    unit = "batch" if args.method == "activation" else "sweep"
    with tqdm(desc=f"{args.method} matching", unit=unit, disable=args.method == "random") as bar:
        def on_step(step: int, value: float) -> None:
            if args.method == "weight":
                bar.set_postfix(objective=f"{value:.6g}", refresh=False)
            else:
                bar.total = int(value)
            bar.update(step - bar.n)
        result = match_models(a, b, args.method, data, args.seed, on_step, n_samples=args.n_samples)
    return result, x


def cmd_align(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    if out.resolve() in (Path(args.a).resolve(), Path(args.b).resolve()):
        raise ValueError(f"--out {out} would overwrite an input checkpoint; choose another file name.")
    a, meta_a = load_checkpoint(args.a)
    b, meta_b = load_checkpoint(args.b)
    name_a, name_b = Path(args.a).name, Path(args.b).name
    _check_same_model(meta_a, meta_b, name_a, name_b)
    device = torch.device(args.device) if args.device else default_device()
    a, b = a.to(device), b.to(device)
    result, x = _match(args, a, b, meta_a, meta_b, name_b)
    aligned = permute_model(b, result.perms)
    diff = max_output_diff(b, aligned, x)
    with torch.no_grad():
        scale = max(1.0, float(b(x[:64].to(device)).abs().max()))
    if diff > 1e-4 * scale:
        raise RuntimeError(f"permuted B differs from B by {diff:.3g} on the sanity batch: the permutation spec of "
                           f"{meta_b.model.arch} is wrong. Nothing was written.")
    alignment = {**result.to_meta(), "source_a": name_a, "source_b": name_b, "max_output_diff": diff}
    meta = dataclasses.replace(meta_b, extra={**meta_b.extra, "alignment": alignment}, version="", created="")
    save_checkpoint(out, aligned.cpu(), meta)
    hist = result.objective_history
    trace = f"objective {hist[0]:.6g} -> {hist[-1]:.6g} in {result.sweeps} sweeps; " if args.method == "weight" else ""
    print(f"wrote {out}: B aligned to A by {args.method} matching (seed {args.seed}); {trace}"
          f"max |B(x) - aligned B(x)| = {diff:.3g} on {len(x)} inputs; matching {result.seconds:.2f} s, "
          f"total {time.perf_counter() - start:.2f} s")
    return 0


def register(subparsers) -> None:
    """Add the `align` command to the lmcdash CLI."""
    p = subparsers.add_parser("align", help="permute B's hidden units to match A; writes a normal checkpoint")
    p.add_argument("a", help="reference checkpoint A (.safetensors)")
    p.add_argument("b", help="checkpoint B to permute (.safetensors)")
    p.add_argument("--method", default="weight", choices=[m for m in METHODS if m != "none"])
    p.add_argument("--seed", type=int, default=0, help="visit order (weight), perms (random), batches (activation)")
    p.add_argument("--n-samples", type=int, default=5000, help="training inputs for activation matching")
    p.add_argument("--device", default=None, help="torch device (default: $LMCDASH_DEVICE, else cuda if present)")
    p.add_argument("--out", required=True, help="where to write the aligned B (.safetensors)")
    p.set_defaults(func=cmd_align)
