"""House rules from DESIGN.md: the library never imports streamlit/ui/pages; pages never import each other."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_does_not_import_ui():
    for path in (ROOT / "lmcdash").rglob("*.py"):
        assert not _imports(path) & {"streamlit", "ui", "pages"}, path


def test_pages_do_not_import_each_other():
    for path in (ROOT / "pages").glob("*.py"):
        assert "pages" not in _imports(path), path


def test_library_runs_without_streamlit():
    code = ("import sys; sys.modules['streamlit'] = None\n"
            "import lmcdash.cli, lmcdash.models, lmcdash.checkpoints, lmcdash.data, lmcdash.train\n"
            "import importlib, pkgutil, lmcdash\n"
            "for m in pkgutil.iter_modules(lmcdash.__path__):\n    if m.name != '__main__': importlib.import_module('lmcdash.' + m.name)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
