"""CLI: train writes one file per seed (byte-identical on rerun), checkpoints ls, clear errors."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOURCE_DATE_EPOCH": "1700000000", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lmcdash", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_train_is_reproducible_and_listed(tmp_path):
    args = ["train", "--dataset", "synthetic", "--arch", "mlp", "--width", "2", "--base-width", "4", "--seeds", "0", "1",
            "--epochs", "2", "--calib-size", "200", "--weight-decay", "3e-3"]
    r1 = _run(*args, "--out", str(tmp_path / "a"))
    assert r1.returncode == 0, r1.stderr
    r2 = _run(*args, "--out", str(tmp_path / "b"))
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["mlp-d1_w2_wd0.003_s0.safetensors", "mlp-d1_w2_wd0.003_s1.safetensors"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "a" / files[1]).read_bytes()
    ls = _run("checkpoints", "ls", str(tmp_path / "a"))
    assert ls.returncode == 0
    lines = ls.stdout.strip().splitlines()
    assert "arch" in lines[0] and "test_acc" in lines[0] and len(lines) == 3
    assert "mlp-d1_w2_wd0.003_s1.safetensors" in lines[2]


def test_bad_file_gives_one_line_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not really")
    (tmp_path / "ok").mkdir()
    r = _run("checkpoints", "ls", str(tmp_path))
    assert r.returncode == 0 and "torch pickle" in r.stderr and "Traceback" not in r.stderr
    r = _run("train", "--dataset", "nope", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown dataset 'nope'") and "Traceback" not in r.stderr
