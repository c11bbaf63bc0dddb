"""`python -m lmcdash <command>`: train, checkpoints ls (more commands register below)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmcdash.checkpoints import CheckpointError, list_checkpoints


def _tqdm(**kw):
    from tqdm import tqdm

    return tqdm(**kw)


def cmd_train(args: argparse.Namespace) -> int:
    from lmcdash.checkpoints import save_checkpoint
    from lmcdash.config import ModelSpec, TrainConfig
    from lmcdash.data import load_dataset
    from lmcdash.train import train_model

    data = load_dataset(args.dataset, calib_size=args.calib_size, calib_seed=args.calib_seed)
    out = Path(args.out)
    for seed in args.seeds:
        spec = ModelSpec(args.arch, args.width, data.num_classes, data.input_shape, args.base_width,
                         args.depth, not args.no_bias)
        cfg = TrainConfig(args.dataset, args.epochs, args.batch_size, args.lr, args.momentum, args.weight_decay,
                          args.schedule, "sgd", seed, args.calib_size, args.calib_seed, args.train_subset)
        bar = _tqdm(total=args.epochs, desc=f"{args.arch} w{args.width} seed {seed}", unit="epoch")

        def on_epoch(epoch: int, total: int, row: dict) -> None:
            bar.update(1)
            bar.set_postfix(loss=row["train_loss"], test_acc=row["test_acc"])

        model, meta = train_model(spec, cfg, data, on_epoch=on_epoch)
        bar.close()
        name = args.name or "{arch}{depth}_w{width}_wd{wd}_s{seed}"
        fname = name.format(arch=args.arch, depth=f"-d{meta.model.depth}" if meta.model.depth else "",
                            width=args.width, wd=f"{args.weight_decay:g}", seed=seed) + ".safetensors"
        path = save_checkpoint(out / fname, model, meta)
        print(f"{path}  test_acc={meta.metrics['test_acc']:.4f}  test_loss={meta.metrics['test_loss']:.4f}")
    return 0


def cmd_checkpoints_ls(args: argparse.Namespace) -> int:
    import pandas as pd

    rows, errors = list_checkpoints(args.folder)
    if rows:
        df = pd.DataFrame(rows)
        df["depth"] = df["depth"].astype("Int64")  # None for fixed-depth nets, not 1.0 / NaN
        df["file"] = [str(Path(f).relative_to(args.folder)) if Path(f).is_relative_to(args.folder) else f
                      for f in df["file"]]
        if args.history:
            df = _with_history(df, args.folder)
        print(_markdown(df) if args.markdown else df.to_string(index=False))
    else:
        print(f"no lmcdash checkpoints under {args.folder}")
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from lmcdash.data import find_idx_folder, load_dataset

    if args.action == "check":
        folder = find_idx_folder(args.name) if args.name in ("fashion-mnist", "mnist") else None
        print(f"{args.name}: {folder}" if folder else f"{args.name}: not found locally")
        return 0 if folder else 1
    ds = load_dataset(args.name)  # downloads through torchvision where needed, else a DatasetError with a hint
    print(f"{args.name}: train {tuple(ds.train_x.shape)}, calib {tuple(ds.calib_x.shape)}, test {tuple(ds.test_x.shape)}")
    return 0


def _with_history(df, folder: Path):
    """Add the per-epoch test accuracy (from each header's training history) as one column."""
    from lmcdash.checkpoints import meta_from_header, read_header

    curves = []
    for f in df["file"]:
        meta = meta_from_header(read_header(Path(folder) / f), f)
        curves.append(" ".join(f"{row['test_acc']:.3f}" for row in meta.history))
    return df.assign(test_acc_per_epoch=curves)


def _markdown(df) -> str:
    """Return a GitHub markdown table (pandas' to_markdown needs an extra package)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmcdash", description="Linear mode connectivity toolkit")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model per seed and write .safetensors checkpoints")
    t.add_argument("--dataset", default="fashion-mnist")
    t.add_argument("--arch", default="mlp")
    t.add_argument("--width", type=int, default=1, help="width multiplier")
    t.add_argument("--base-width", type=int, default=None)
    t.add_argument("--depth", type=int, default=None, help="hidden layers (mlp)")
    t.add_argument("--no-bias", action="store_true")
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=3e-3)
    t.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"])
    t.add_argument("--calib-size", type=int, default=5000)
    t.add_argument("--calib-seed", type=int, default=0)
    t.add_argument("--train-subset", type=int, default=None)
    t.add_argument("--name", default=None, help="file name pattern, e.g. '{arch}_w{width}_s{seed}'")
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("checkpoints", help="inspect checkpoint folders")
    csub = c.add_subparsers(dest="action", required=True)
    ls = csub.add_parser("ls", help="table of every checkpoint in a folder (headers only)")
    ls.add_argument("folder", type=Path)
    ls.add_argument("--markdown", action="store_true", help="print a markdown table")
    ls.add_argument("--history", action="store_true", help="add the per-epoch test accuracy curve")
    ls.set_defaults(func=cmd_checkpoints_ls)

    d = sub.add_parser("data", help="check that a dataset is on disk, or fetch it")
    d.add_argument("action", choices=["check", "fetch"])
    d.add_argument("name", choices=["fashion-mnist", "mnist", "cifar10", "cifar100"])
    d.set_defaults(func=cmd_data)

    for register in EXTRA_COMMANDS:
        register(sub)
    return p


# Other modules' commands: each is a function(subparsers) that adds its parser and sets func.
EXTRA_COMMANDS: list = []


def _load_extra_commands() -> None:
    import importlib

    for mod in ("lmcdash.cli_engine", "lmcdash.cli_matching", "lmcdash.cli_report"):
        try:
            register = importlib.import_module(mod).register
            if register not in EXTRA_COMMANDS:  # main() may run many times in one process (tests)
                EXTRA_COMMANDS.append(register)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    _load_extra_commands()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, ValueError, KeyError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
