"""Figure builders: traces, frames and sliders from engine-shaped tables (no engine needed)."""
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from lmcdash import explore, plots

LAMS = tuple(np.linspace(0, 1, 9))


def fake_table(lams=LAMS, shift: float = 0.0) -> pd.DataFrame:
    lam = np.array(lams)
    bump = 4 * lam * (1 - lam)
    acc = 0.9 - 0.1 * bump + shift
    raw = 0.3 + 0.5 * bump
    cal = 0.3 + 0.1 * bump
    L = 3
    t_lewc = lam ** L + (1 - lam) ** L
    return pd.DataFrame(dict(
        lam=lam, acc=acc, loss_raw=raw, loss_cal=cal, beta_cal=1 / (t_lewc + 0.05), temperature_cal=t_lewc + 0.05,
        temperature_lewc=t_lewc, beta_lewc=1 / t_lewc, acc_logit_ens=0.91 + 0 * lam, loss_logit_ens=0.28 + 0 * lam,
        loss_cal_logit_ens=0.27 + 0 * lam, acc_prob_ens=0.91 + 0 * lam, loss_prob_ens=0.27 + 0 * lam,
        acc_lewc_ens=0.91 + 0 * lam, loss_lewc_ens=0.5 + bump, loss_cal_lewc_ens=0.27 + 0 * lam,
        loss_chord=0.3 + 0 * lam, acc_chord=0.9 + 0 * lam))


def fake_barriers(scale: float = 1.0) -> pd.DataFrame:
    rows = []
    for d in ("midpoint", "max over grid"):
        for m, v in (("accuracy", 0.1), ("loss (raw)", 0.5), ("loss (calibrated)", 0.1)):
            rows.append(dict(definition=d, metric=m, value=v * scale, formula="…"))
    return pd.DataFrame(rows)


def point_at(table: pd.DataFrame, lam: float, manual: float | None = None) -> dict:
    row = {c: float(np.interp(lam, table["lam"], table[c])) for c in table.columns}
    if manual is not None:
        row["loss_manual"] = 0.4
    return row


def _traces_named(fig: go.Figure, part: str) -> list:
    return [t for t in fig.data if t.name and part in t.name]


@pytest.mark.parametrize("mode", plots.TEMP_MODES)
def test_explorer_figure_has_curves_markers_and_frames(mode):
    t = fake_table()
    manual = 0.5 if mode == "manual" else None
    sweep = None
    if manual:
        import torch

        logits = torch.randn(len(LAMS), 50, 4)
        sweep = explore.temperature_sweep(logits, torch.randint(0, 4, (50,)), LAMS, explore.temperature_grid(7))
    fig = plots.explorer_figure(t, point_at(t, 0.3, manual), mode, sweep, manual)
    markers = [tr for tr in fig.data if tr.mode == "markers"]
    assert all(tr.x[0] == pytest.approx(0.3) for tr in markers)
    assert len(markers) == (4 if mode != "none" else 3) + (1 if manual else 0)
    assert _traces_named(fig, "straight line A–B") and _traces_named(fig, "LEWC prediction")
    assert bool(_traces_named(fig, "calibrated loss")) == (mode != "none")
    lam_frames = [f for f in fig.frames if f.name.startswith("lam")]
    assert len(lam_frames) == len(LAMS)
    # A frame moves every marker of the lam slider to its grid lam.
    f = lam_frames[2]
    assert all(d.x[0] == pytest.approx(LAMS[2]) for d in f.data)
    assert len(f.traces) == len(f.data)
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == len(LAMS)
    assert slider.active == int(np.argmin(np.abs(np.array(LAMS) - 0.3)))
    assert slider.steps[0].method == "animate" and slider.steps[0].args[1]["frame"]["redraw"] is False
    assert "acc" in slider.steps[4].label and "λ=0.500" in slider.steps[4].label
    if manual:
        assert len(fig.layout.sliders) == 2
        t_frames = [f for f in fig.frames if f.name.startswith("T")]
        assert len(t_frames) == 7 and len(t_frames[0].data[0].y) == len(LAMS)
    fig.to_json()  # serialisable for st.plotly_chart


def test_accuracy_is_plotted_in_percent():
    t = fake_table()
    fig = plots.explorer_figure(t, point_at(t, 0.5), "calibrated")
    assert max(fig.data[0].y) == pytest.approx(100 * t["acc"].max())


def test_readout_names_values():
    text = plots.readout({"lam": 0.25, "acc": 0.8, "loss_raw": 0.5, "loss_cal": 0.4, "temperature_cal": 0.3})
    assert "λ=0.250" in text and "80.00 %" in text and "0.5000" in text and "T=0.300" in text


def test_width_colors_are_ordered_and_distinct():
    colors = plots.width_colors([1, 2, 4, 8, 16, 32])
    assert len(set(colors.values())) == 6
    assert plots.width_colors([4]) == {4: plots.width_colors([4])[4]}


def width_frames():
    curves = {w: type("R", (), {"table": fake_table(shift=0.01 * w), "barriers": fake_barriers(1 / w)})()
              for w in (1, 2, 4, 8)}
    return explore.stack_curves(curves)


def test_width_figures():
    per_lam, bars = width_frames()
    fig = plots.width_overlay(per_lam, lam=0.5)
    assert len(fig.data) == 4 * 2 and sum(tr.showlegend for tr in fig.data) == 4
    small = plots.width_small_multiples(per_lam)
    assert len(small.layout.annotations) >= 4  # one column title per width
    bfig = plots.barrier_vs_width(bars)
    assert bfig.layout.xaxis.type == "log" and list(bfig.layout.xaxis.tickvals) == [1, 2, 4, 8]
    names = {tr.name for tr in bfig.data}
    assert {"loss (raw), midpoint", "loss (calibrated), max over grid", "accuracy, midpoint"} <= names
    acc = next(tr for tr in bfig.data if tr.name == "accuracy, midpoint")
    assert acc.y[0] == pytest.approx(10.0)  # pp


def test_permutation_comparison_lines():
    bars = {(w, m): fake_barriers(s / w) for w in (1, 2, 4) for m, s in (("none", 1.0), ("weight", 0.2),
                                                                       ("random", 1.0))}
    table = explore.permutation_table(bars, "midpoint", {(w, "weight"): 1e-7 for w in (1, 2, 4)})
    assert set(table["condition"]) == {"no permutation, raw", "no permutation, calibrated", "weight matching",
                                       "random permutation"}
    fig = plots.permutation_comparison(table.rename(columns={"loss_barrier": "value"}), "loss barrier")
    assert len(fig.data) == 4


def layer_df(L: int = 3, lams=LAMS) -> pd.DataFrame:
    rows = []
    for l in range(1, L + 1):
        for lam in lams:
            rows.append(dict(layer=l, name=f"linears.{l - 1}", lam=lam, cos_lewc=0.99, cos_llfc=0.98,
                             cos_endpoints=0.5, norm_ratio=1.0, coef_a=lam ** l, coef_b=(1 - lam) ** l,
                             lam_pow=lam ** l, one_minus_lam_pow=(1 - lam) ** l, weak_additivity=0.93,
                             recip_orth_ab=0.1, recip_orth_ba=0.1))
    return pd.DataFrame(rows)


def test_layer_figures():
    df = layer_df()
    hm = plots.layer_heatmap(df, "cos_lewc", "t", lam=0.5, zmin=0, zmax=1)
    assert np.array(hm.data[0].z).shape == (3, len(LAMS))
    assert list(hm.data[0].y) == ["l=1 · linears.0", "l=2 · linears.1", "l=3 · linears.2"]
    assert any(s.x0 == 0.5 for s in hm.layout.shapes)
    coef = plots.layer_coefficients(df, 0.5)
    assert len(coef.data) == 3 * 5
    prof = plots.layer_profile(df, 0.52)
    assert "λ=0.500" in prof.layout.annotations[0].text
    assert any(getattr(s, "y0", None) == pytest.approx(plots.GAUSSIAN_WEAK_ADDITIVITY) for s in prof.layout.shapes)


def test_gaussian_constant():
    assert plots.GAUSSIAN_WEAK_ADDITIVITY == pytest.approx(0.9304, abs=1e-4)
    assert math.isfinite(plots.GAUSSIAN_WEAK_ADDITIVITY)


def test_plots_do_not_import_streamlit():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(plots))
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("streamlit" in str(x) for x in names | mods)
