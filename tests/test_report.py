"""lmcdash.report: the width table is the engine's numbers laid out per (width, perm); the `widths` CLI."""
from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest

from lmcdash import cli, cli_report
from lmcdash.checkpoints import load_checkpoint, save_checkpoint
from lmcdash.data import load_dataset
from lmcdash.engine import Evaluator, lam_grid, load_pair
from lmcdash.matching import permute_model, random_match
from lmcdash.models import perm_spec
from lmcdash.report import WIDTH_COLUMNS, curve_row, family_pairs, width_table

GRID = 5


def _main(argv: list[str]) -> int:
    """Run the CLI with the `widths` command registered (cli.py's module list may not name cli_report yet)."""
    cli._load_extra_commands()
    if cli_report.register not in cli.EXTRA_COMMANDS:
        cli.EXTRA_COMMANDS.append(cli_report.register)
    return cli.main(argv)


def test_width_table_rows_are_the_engine_numbers(tiny_zoo):
    folder = tiny_zoo / "mlp1_tiny"
    steps = []
    df = width_table(folder, perms=("none", "weight", "random"), grid=GRID, device="cpu",
                     on_step=lambda d, t: steps.append((d, t)))
    assert list(df.columns) == WIDTH_COLUMNS
    assert df[["width", "perm"]].values.tolist() == [[w, p] for w in (1, 2, 4) for p in ("none", "weight", "random")]
    assert (df["hidden"] == 8 * df["width"]).all()
    assert df.attrs["notes"] == [] and df.attrs["dataset"] == "synthetic" and df.attrs["bn_mode"] == "none"
    assert [d for d, _ in steps] == sorted(d for d, _ in steps) and steps[-1][0] == steps[-1][1] == 9 * GRID
    none, permuted = df[df["perm"] == "none"], df[df["perm"] != "none"]
    assert none["max_output_diff"].isna().all() and (permuted["max_output_diff"] < 1e-5).all()
    data = load_dataset("synthetic", calib_size=200, calib_seed=0)
    for w in (1, 2, 4):
        pair = load_pair(folder / f"mlp1_tiny_w{w}_s0.safetensors", folder / f"mlp1_tiny_w{w}_s1.safetensors")
        curve = Evaluator(pair, data, device="cpu").curve(lam_grid(GRID))
        got = none[none["width"] == w].iloc[0]
        want = curve.barriers.set_index(["definition", "metric"])["value"]
        assert got["barrier_acc_mid_pp"] == pytest.approx(100 * want[("midpoint", "accuracy")], abs=1e-9)
        assert got["barrier_loss_mid_raw"] == pytest.approx(want[("midpoint", "loss (raw)")], abs=1e-9)
        assert got["barrier_loss_max_cal"] == pytest.approx(want[("max over grid", "loss (calibrated)")], abs=1e-9)
        assert got[list(curve_row(curve))].to_dict() == pytest.approx(curve_row(curve), abs=1e-9)
        mid = curve.table.set_index("lam").loc[0.5]
        assert got["temperature_mid"] == pytest.approx(mid["temperature_cal"])
        assert got["temperature_lewc_mid"] == pytest.approx(0.5)  # 2^(1-L) with L = 2
        # every permutation of B leaves B's own accuracy unchanged
        assert (df[df["width"] == w]["acc_b"] == got["acc_b"]).all()


def test_weight_matching_removes_a_planted_permutation(tiny_zoo, tmp_path):
    src = tiny_zoo / "mlp2_tiny" / "mlp2_tiny_w1_s0.safetensors"
    model, meta = load_checkpoint(src)
    shutil.copy(src, tmp_path / "fam_w1_s0.safetensors")
    planted = permute_model(model, random_match(perm_spec(model), model.state_dict(), seed=5).perms)
    meta.seed = 1  # the header, not the file name, says which seed a file is
    path = save_checkpoint(tmp_path / "copy.safetensors", planted, meta)
    while path.read_bytes()[:1] == b"\x80":  # header length 128 mod 256 reads as a pickle: pad (as conftest)
        meta.extra["pad"] = meta.extra.get("pad", "") + "."
        save_checkpoint(path, planted, meta)
    df = width_table(tmp_path, perms=("none", "weight"), grid=GRID, device="cpu").set_index("perm")
    barriers = [c for c in WIDTH_COLUMNS if c.startswith("barrier_")]
    assert df.loc["weight", barriers].abs().max() < 1e-5
    assert df.loc["none", "barrier_loss_mid_raw"] > 1e-3  # the planted copy is far away in weight space
    assert df.loc["weight", "acc_a"] == df.loc["weight", "acc_b"] == df.loc["weight", "acc_mid"]
    assert df.loc["weight", "match_seconds"] >= 0 and df.loc["weight", "max_output_diff"] < 1e-5


def test_family_pairs_reads_headers_and_notes_missing_seeds(tiny_zoo, tmp_path):
    for w in (1, 2):
        shutil.copy(tiny_zoo / "mlp1_tiny" / f"mlp1_tiny_w{w}_s0.safetensors", tmp_path / f"x{w}.safetensors")
    shutil.copy(tiny_zoo / "mlp1_tiny" / "mlp1_tiny_w2_s1.safetensors", tmp_path / "y.safetensors")
    pairs, notes = family_pairs(tmp_path)
    assert list(pairs) == [2] and pairs[2] == (tmp_path / "x2.safetensors", tmp_path / "y.safetensors")
    assert notes == ["width 1: no checkpoint with seed 1; width left out"]
    df = width_table(tmp_path, grid=3, device="cpu")
    assert df["width"].tolist() == [2] and df.attrs["notes"] == notes
    shutil.copy(tmp_path / "y.safetensors", tmp_path / "z.safetensors")
    with pytest.raises(ValueError, match="both hold width 2, seed 1"):
        family_pairs(tmp_path)
    with pytest.raises(ValueError, match="no width .* has both seed 0 and seed 7"):
        width_table(tiny_zoo / "mlp1_tiny", seed_b=7)
    with pytest.raises(ValueError, match="unknown permutation"):
        width_table(tiny_zoo / "mlp1_tiny", perms=("bogus",))


def test_cli_widths_markdown_and_csv(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "t.csv"
    argv = ["widths", str(tiny_zoo / "mlp1_tiny"), "--perm", "none", "weight", "--grid", str(GRID), "--device", "cpu"]
    assert _main([*argv, "--markdown", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| " + " | ".join(WIDTH_COLUMNS) + " |" in printed and "mlp1_tiny: synthetic test split" in printed
    assert printed.count("| none |") == 3 and printed.count("| weight |") == 3
    table = pd.read_csv(out)
    assert list(table.columns) == WIDTH_COLUMNS and len(table) == 6
    assert math.isnan(table.loc[0, "max_output_diff"])
    assert _main([*argv[:2], "--split", "calib"]) == 2
    err = capsys.readouterr().err
    assert "calib" in err and "Traceback" not in err
    assert _main(["widths", str(tmp_path)]) == 2
    assert "no lmcdash checkpoints" in capsys.readouterr().err
