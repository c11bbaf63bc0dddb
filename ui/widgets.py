"""Shared selectors and the session_state keys every page uses (one place, so pages agree).

Widgets that several pages share (pair, lam, split, BN mode, permutation) use the same key and
persist_state="session", so a choice made on one page is still there on the next.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
import torch

from lmcdash import explore
from lmcdash.config import checkpoints_dir, default_device

# session_state keys
FOLDER, DEVICE, UPLOADS = "ckpt_folder", "device", "uploads"
PAIR_MODE, FAMILY, WIDTH, PICK_A, PICK_B, ANY_A, ANY_B = ("pair_mode", "family", "width", "pick_a", "pick_b",
                                                          "any_a", "any_b")
LAM, TEMP_MODE, TEMPERATURE, SPLIT, BN_MODE, PERM = "lam", "temp_mode", "temperature", "split", "bn_mode", "perm"
PAIR_MODES = ("zoo pair", "any two checkpoints")
SPLITS = ("test", "train")
TEMP_LABELS = {"calibrated": "calibrated per λ", "manual": "manual", "none": "none (raw logits)"}
BN_LABELS = {"reset": "reset statistics on train batches (default)", "interpolate": "interpolate buffers (naive)"}
PERM_LABELS = {"none": "none", "random": "random permutation (control)", "weight": "weight matching",
               "activation": "activation matching"}
KEEP = "session"
_FRAME = threading.local()  # set while app.py runs a page (script runs are synchronous in one thread)


@contextlib.contextmanager
def app_frame() -> Iterator[None]:
    """Mark the page run as happening inside app.py (the sidebar and page config exist)."""
    _FRAME.active = True
    try:
        yield
    finally:
        _FRAME.active = False


def require_frame() -> None:
    """Run app.py around a page that was started without it, then stop the outer run.

    Streamlit treats a pages/ folder as v1 auto-discovery until app.py has called st.navigation in
    this server process (AppTest resets that flag on every run). Then a page URL runs the page file
    alone, without page config, sidebar or our navigation. The page keeps its url_path, so app.py's
    st.navigation resolves to the same page and runs it inside the frame.
    """
    if getattr(_FRAME, "active", False):
        return
    app = Path(__file__).resolve().parent.parent / "app.py"
    exec(compile(app.read_text(), str(app), "exec"), {"__name__": "__main__", "__file__": str(app)})  # noqa: S102
    st.stop()


def sidebar() -> None:
    """Draw the shared sidebar: checkpoint folder and device (shown), zoo summary, cache reset."""
    with st.sidebar:
        st.session_state.setdefault(FOLDER, str(checkpoints_dir()))
        st.text_input("Checkpoint folder", key=FOLDER,
                      help="The model zoo: one subfolder per family. Defaults to $LMCDASH_CHECKPOINTS.")
        options = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        _keep_valid(DEVICE, options, options.index(default_device().type) if default_device().type in options else 0)
        st.selectbox("Device", options, key=DEVICE)
        name = torch.cuda.get_device_name(0) if device() == "cuda" else f"{torch.get_num_threads()} CPU threads"
        st.caption(f"Running on **{device()}** ({name}).")
        sources, errors = zoo_and_uploads()
        st.caption(f"{sum(s.kind == 'zoo' for s in sources)} zoo checkpoints, "
                   f"{sum(s.kind == 'upload' for s in sources)} session uploads.")
        if errors:
            with st.expander(f"{len(errors)} file(s) skipped"):
                for e in errors:
                    st.caption(e)
        if st.button("Clear caches", help="Drop every cached model, dataset and curve (all sessions)."):
            from ui.cache import clear_all

            clear_all()


def device() -> str:
    """Return the device chosen in the sidebar ('cpu' or 'cuda')."""
    return st.session_state.get(DEVICE) or default_device().type


def folder() -> str:
    return st.session_state.get(FOLDER) or str(checkpoints_dir())


def uploads() -> dict:
    """Return this session's valid uploads {digest: UploadEntry}."""
    return st.session_state.setdefault(UPLOADS, {})


def zoo_and_uploads() -> tuple[list[explore.Source], list[str]]:
    """Return every selectable source (zoo files, then session uploads) and the zoo's skipped-file messages."""
    from ui.cache import zoo_sources

    zoo, errors = zoo_sources(folder())
    return list(zoo) + [u.source for u in uploads().values()], list(errors)


def _labels_at(sources: list[explore.Source], family: str, width: int) -> list[str]:
    tab = explore.family_table(sources, family)
    return list(tab[tab["width"] == width]["label"])


def pair_selector(sources: list[explore.Source]) -> tuple[explore.Source, explore.Source] | None:
    """Draw the pair picker (zoo family / width / two seeds, or any two checkpoints); return (A, B) or None."""
    by_label = {s.label: s for s in sources}
    if not sources:
        st.info(f"No checkpoints in {folder()} and no uploads yet. Set the folder in the sidebar, train a zoo "
                "(`make zoo`), or upload files on the Upload page.")
        return None
    mode = st.radio("Pair", PAIR_MODES, horizontal=True, key=PAIR_MODE, persist_state=KEEP,
                    label_visibility="collapsed")
    if mode == PAIR_MODES[1]:
        labels = list(by_label)
        _keep_valid(ANY_A, labels, 0)
        _keep_valid(ANY_B, labels, 1)
        c1, c2 = st.columns(2)
        a = c1.selectbox("Model A (λ = 1)", labels, key=ANY_A, persist_state=KEEP)
        b = c2.selectbox("Model B (λ = 0)", labels, key=ANY_B, persist_state=KEEP)
        return by_label[a], by_label[b]
    fams = explore.families(sources)
    c1, c2, c3, c4 = st.columns([3, 1, 2, 2])
    family = c1.selectbox("Family", fams, key=FAMILY, persist_state=KEEP)
    widths = sorted(explore.family_table(sources, family)["width"].unique().tolist())
    width = c2.selectbox("Width", widths, key=WIDTH, persist_state=KEEP)
    labels = _labels_at(sources, family, width)
    fmt = lambda lab: _short(by_label[lab])  # noqa: E731
    if len(labels) < 2:
        c3.selectbox("Model A (λ = 1)", labels, format_func=fmt, disabled=True)
        st.warning(f"{family} has only one checkpoint at width {width}; pick another width, or choose "
                   "'any two checkpoints' above.")
        return None
    _keep_valid(PICK_A, labels, 0)
    _keep_valid(PICK_B, labels, 1)
    a = c3.selectbox("Model A (λ = 1)", labels, format_func=fmt, key=PICK_A, persist_state=KEEP)
    b = c4.selectbox("Model B (λ = 0)", labels, format_func=fmt, key=PICK_B, persist_state=KEEP)
    if a == b:
        st.info("A and B are the same checkpoint: every barrier is zero (a useful sanity check).")
    return by_label[a], by_label[b]


def _short(s: explore.Source) -> str:
    return f"seed {s.seed}" if s.seed is not None and s.kind == "zoo" else s.label


def _keep_valid(key: str, options: list[str], default: int) -> None:
    """Reset a selectbox's state when its stored value is no longer an option (e.g. after a width change)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[min(default, len(options) - 1)]


def lam_slider(label: str = "λ (1 = model A, 0 = model B)") -> float:
    """Draw the lam slider shared by Explorer and Layers (step 0.01; values off the grid are computed exactly)."""
    return float(st.slider(label, 0.0, 1.0, 0.5, 0.01, key=LAM, persist_state=KEEP,
                           help="Sends its value on release. Drag the slider under the chart for a live preview."))


def split_select(container=st) -> str:
    return container.selectbox("Evaluation split", SPLITS, key=SPLIT, persist_state=KEEP,
                               help="The temperature is always fitted on the held-out calibration split.")


def bn_select(has_bn: bool, container=st) -> str:
    """Draw the BN-mode choice for BN models; return 'reset' for models without BatchNorm."""
    if not has_bn:
        return "reset"
    return container.selectbox("BatchNorm statistics", list(BN_LABELS), format_func=BN_LABELS.get, key=BN_MODE,
                               persist_state=KEEP)


def perm_select(container=st, key: str = PERM) -> str:
    from lmcdash.matching import METHODS

    return container.selectbox("Permutation of B", list(METHODS), format_func=PERM_LABELS.get, key=key,
                               persist_state=KEEP, help="Git Re-Basin alignment of B to A before interpolating; "
                               "'random' changes no function and is the control.")
