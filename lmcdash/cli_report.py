"""`python -m lmcdash widths FAMILY_FOLDER [--perm none weight random] [--markdown] [--csv out.csv]`."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from lmcdash.engine import BN_MODES
from lmcdash.matching import METHODS

# Display formats (the CSV keeps full precision): pp and losses as the paper prints them.
FORMATS = {
    "acc_a": "{:.4f}", "acc_b": "{:.4f}", "acc_mid": "{:.4f}",
    "barrier_acc_mid_pp": "{:.2f}", "barrier_acc_max_pp": "{:.2f}",
    "barrier_loss_mid_raw": "{:.4f}", "barrier_loss_mid_cal": "{:.4f}",
    "barrier_loss_max_raw": "{:.4f}", "barrier_loss_max_cal": "{:.4f}",
    "temperature_mid": "{:.3g}", "temperature_lewc_mid": "{:.3g}",
    "max_output_diff": "{:.1e}", "match_seconds": "{:.2f}",
}


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """Return the table as strings in FORMATS ("—" for NaN)."""
    out = df.copy().astype(object)
    for col, fmt in FORMATS.items():
        if col in out:
            out[col] = ["—" if isinstance(v, float) and math.isnan(v) else fmt.format(v) for v in df[col]]
    return out


def cmd_widths(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lmcdash.cli import _markdown
    from lmcdash.report import width_table

    bar = tqdm(desc=f"{Path(args.folder).name}", unit="lam", file=sys.stderr)

    def on_step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    def on_row(row: dict) -> None:
        bar.set_postfix_str(f"w{row['width']} {row['perm']} done")

    with bar:
        df = width_table(args.folder, perms=args.perm, split=args.split, grid=args.grid, seed_a=args.seeds[0],
                         seed_b=args.seeds[1], device=args.device, on_step=on_step, bn_mode=args.bn_mode,
                         perm_seed=args.perm_seed, on_row=on_row)
    a = df.attrs
    print(f"{a['family']}: {a['dataset']} {a['split']} split, seeds {a['seeds'][0]} (A, lam = 1) and "
          f"{a['seeds'][1]} (B, lam = 0), {a['grid']}-point lam grid, temperature fitted on calib"
          + ("" if a["bn_mode"] == "none" else f", BN statistics: {a['bn_mode']}") + "; "
          "accuracy barriers in pp, midpoint = Table 1, max = max over the grid")
    for note in a["notes"]:
        print(f"note: {note}")
    shown = formatted(df)
    print(_markdown(shown) if args.markdown else shown.to_string(index=False))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
        print(f"written to {args.csv}")
    return 0


def register(subparsers) -> None:
    """Add the `widths` command to the lmcdash CLI."""
    p = subparsers.add_parser("widths", help="barrier vs width of a zoo family, with and without permutations "
                                             "(the paper's Table 1)")
    p.add_argument("folder", type=Path, help="family folder, e.g. checkpoints/mlp1_wd3e-3")
    p.add_argument("--perm", nargs="+", default=["none"], choices=METHODS,
                   help="permutation of B before interpolating (default: none)")
    p.add_argument("--split", default="test", help="evaluation split: test or train (calib fits the temperature)")
    p.add_argument("--grid", type=int, default=25, help="lam grid points (0, 1/2 and 1 always included)")
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 1], metavar=("A", "B"), help="seeds of A and B")
    p.add_argument("--perm-seed", type=int, default=0, help="seed of the matching visit order / random perm")
    p.add_argument("--bn-mode", default="reset", choices=BN_MODES,
                   help="BatchNorm nets: reset statistics on training batches (default) or interpolate (naive)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: $LMCDASH_DEVICE or auto)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--csv", default=None, help="also write the full-precision table to this CSV file")
    p.set_defaults(func=cmd_widths)
