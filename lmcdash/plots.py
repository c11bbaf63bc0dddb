"""Plotly figure builders for the dashboard and reports (no streamlit): curves over lam, heatmaps, barriers.

Conventions (SCIENCE.md): lam = 1 is model A, lam = 0 is model B; accuracy is shown in percent; every
barrier is labelled with its definition. Explorer figures carry their own client-side Plotly slider
(one frame per grid lam, and one per temperature for a manual temperature) so the marker and the
readout move while the user drags, without a server round trip (ECOSYSTEM.md 1.3).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

GAUSSIAN_WEAK_ADDITIVITY = (0.75 + 1 / math.pi) / math.sqrt(1 + 1 / math.pi)  # 0.9304 (SCIENCE.md)
LAM_TICKS = dict(tickvals=[0, 0.25, 0.5, 0.75, 1], ticktext=["0<br>B", "0.25", "0.5", "0.75", "1<br>A"])
MERGED, CAL, MANUAL, GREY = "#1f77b4", "#d62728", "#9467bd", "#7f7f7f"
ENS_STYLE = {"logit": ("#2ca02c", "dash"), "prob": ("#ff7f0e", "dot"), "lewc": ("#8c564b", "dashdot")}
ENS_NAMES = {"logit": "logit-average", "prob": "probability-average", "lewc": "LEWC-weighted"}
TEMP_MODES = ("calibrated", "manual", "none")


def _lam_axis(fig: go.Figure, **kw) -> None:
    fig.update_xaxes(title_text="λ", range=[-0.03, 1.03], **LAM_TICKS, **kw)


def readout(row: dict | pd.Series, temp_mode: str = "calibrated") -> str:
    """Return the one-line value readout shown beside the marker (slider label)."""
    text = (f"λ={row['lam']:.3f} · acc {100 * row['acc']:.2f} % · loss raw {row['loss_raw']:.4f}"
            f" · calibrated {row['loss_cal']:.4f} (T={row['temperature_cal']:.3f})")
    if temp_mode == "manual" and "loss_manual" in row and row["loss_manual"] is not None:
        text += f" · manual {row['loss_manual']:.4f}"
    return text


def _line(x, y, name, color, dash="solid", width=2.0, group=None, show=True, hover="%{y:.4f}") -> go.Scatter:
    return go.Scatter(x=list(x), y=list(y), name=name, mode="lines", legendgroup=group or name, showlegend=show,
                      line=dict(color=color, dash=dash, width=width), hovertemplate=f"{name}: {hover}<extra></extra>")


def _marker(x: float, y: float, color: str, name: str) -> go.Scatter:
    return go.Scatter(x=[x], y=[y], mode="markers", name=name, showlegend=False, hoverinfo="skip",
                      marker=dict(size=12, color=color, line=dict(color="white", width=1.5)))


def _loss_columns(temp_mode: str) -> dict[str, str]:
    """Ensemble loss columns to draw for a temperature mode (calibrated ensembles when calibrating)."""
    cal = temp_mode != "none"
    return {"logit": "loss_cal_logit_ens" if cal else "loss_logit_ens", "prob": "loss_prob_ens",
            "lewc": "loss_cal_lewc_ens" if cal else "loss_lewc_ens"}


def explorer_figure(table: pd.DataFrame, point: dict, temp_mode: str = "calibrated",
                    manual_sweep: pd.DataFrame | None = None, manual_temperature: float | None = None) -> go.Figure:
    """Return accuracy, loss and temperature vs lam with a marker at ``point`` and a client-side lam slider.

    ``table`` is an engine CurveResult.table; ``point`` a row at the current lam (Evaluator.point).
    ``manual_sweep`` (lam, temperature, loss) adds a second slider that redraws the manual-temperature
    loss curve for each temperature on its grid.
    """
    t = table.sort_values("lam").reset_index(drop=True)
    lams, manual = t["lam"].to_numpy(), temp_mode == "manual" and manual_temperature is not None
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=("Accuracy (%)", "Loss (cross-entropy)", "Temperature T = 1/β"))
    add = lambda tr, c: fig.add_trace(tr, row=1, col=c)  # noqa: E731
    add(_line(lams, 100 * t["acc"], "merged model", MERGED, hover="%{y:.2f} %"), 1)
    for kind, col in (("logit", "acc_logit_ens"), ("prob", "acc_prob_ens"), ("lewc", "acc_lewc_ens")):
        add(_line(lams, 100 * t[col], f"{ENS_NAMES[kind]} ensemble", ENS_STYLE[kind][0], ENS_STYLE[kind][1], 1.5,
                  hover="%{y:.2f} %"), 1)
    add(_line(lams, 100 * t["acc_chord"], "straight line A–B", GREY, "dot", 1.5, hover="%{y:.2f} %"), 1)
    raw_main = temp_mode == "none"
    add(_line(lams, t["loss_raw"], "merged, raw loss", MERGED if raw_main else GREY, "solid" if raw_main else "dash",
              2.0 if raw_main else 1.5), 2)
    if temp_mode != "none":
        add(_line(lams, t["loss_cal"], "merged, calibrated loss", CAL, width=2.0 if not manual else 1.5), 2)
    manual_idx = None
    if manual:
        y = (manual_sweep_curve(manual_sweep, manual_temperature) if manual_sweep is not None
             else [float("nan")] * len(lams))
        manual_idx = len(fig.data)
        add(_line(lams, y, f"merged, loss at T={manual_temperature:.3f}", MANUAL), 2)
    for kind, col in _loss_columns(temp_mode).items():
        add(_line(lams, t[col], f"{ENS_NAMES[kind]} ensemble", ENS_STYLE[kind][0], ENS_STYLE[kind][1], 1.5, show=False), 2)
    add(_line(lams, t["loss_chord"], "straight line A–B", GREY, "dot", 1.5, show=False), 2)
    add(_line(lams, t["temperature_cal"], "fitted T (calibration split)", CAL), 3)
    add(_line(lams, t["temperature_lewc"], "LEWC prediction λ^L + (1−λ)^L", "black", "dash", 1.5), 3)
    if manual:
        add(_line([0, 1], [manual_temperature] * 2, "manual T", MANUAL, "dot", 1.5), 3)
    # Marker traces last, in a fixed order, so frames can address them by index.
    specs = [(1, "acc", 100.0, MERGED), (2, "loss_raw", 1.0, MERGED if raw_main else GREY)]
    if temp_mode != "none":
        specs.append((2, "loss_cal", 1.0, CAL))
    specs.append((3, "temperature_cal", 1.0, CAL))
    first_marker = len(fig.data)
    for c, col, scale, color in specs:
        add(_marker(point["lam"], scale * point[col], color, f"current λ ({col})"), c)
    if manual and point.get("loss_manual") is not None:
        add(_marker(point["lam"], point["loss_manual"], MANUAL, "current λ (manual T)"), 2)
    marker_idx = list(range(first_marker, first_marker + len(specs)))
    frames = [go.Frame(name=f"lam{i}", traces=marker_idx,
                       data=[go.Scatter(x=[row["lam"]], y=[scale * row[col]]) for _, col, scale, _ in specs])
              for i, row in t.iterrows()]
    sliders = [_slider(
        [readout(row, "calibrated") for _, row in t.iterrows()], [f"lam{i}" for i in range(len(t))],
        int(np.argmin(np.abs(lams - point["lam"]))), "drag for a preview: ", y=-0.32)]
    if manual and manual_sweep is not None:
        temps = sorted(manual_sweep["temperature"].unique())
        frames += [go.Frame(name=f"T{j}", traces=[manual_idx],
                            data=[go.Scatter(x=list(lams), y=manual_sweep_curve(manual_sweep, temp))])
                   for j, temp in enumerate(temps)]
        labels = [f"T={temp:.3f}" for temp in temps]
        active = int(np.argmin(np.abs(np.log(temps) - math.log(manual_temperature))))
        sliders.append(_slider(labels, [f"T{j}" for j in range(len(temps))], active, "manual temperature preview: ",
                               y=-0.55))
    fig.frames = frames
    _lam_axis(fig)
    fig.update_yaxes(rangemode="tozero", row=1, col=3)
    fig.update_layout(height=470 if not manual else 540, margin=dict(l=40, r=20, t=40, b=10), sliders=sliders,
                      hovermode="x unified", uirevision="keep",
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0))
    return fig


def manual_sweep_curve(sweep: pd.DataFrame, temperature: float) -> list[float]:
    """Return the loss-vs-lam curve of a temperature sweep at the grid temperature nearest ``temperature``."""
    temps = np.array(sorted(sweep["temperature"].unique()))
    nearest = temps[int(np.argmin(np.abs(np.log(temps) - math.log(temperature))))]
    sub = sweep[sweep["temperature"] == nearest].sort_values("lam")
    return [float(v) for v in sub["loss"]]


def _slider(labels: list[str], frames: list[str], active: int, prefix: str, y: float) -> dict:
    """A Plotly slider animating to named frames instantly; the current step's label is the readout."""
    steps = [dict(label=lab, method="animate",
                  args=[[fr], dict(mode="immediate", frame=dict(duration=0, redraw=False), transition=dict(duration=0))])
             for lab, fr in zip(labels, frames)]
    return dict(active=active, steps=steps, x=0.0, len=1.0, y=y, yanchor="top", pad=dict(t=10, b=0),
                currentvalue=dict(prefix=prefix, visible=True, font=dict(size=13, color="#262730")),
                font=dict(color="rgba(0,0,0,0)"), ticklen=3, minorticklen=0)


# ----------------------------------------------------------------------------- widths
def width_colors(widths: list[int], scale: str = "Viridis") -> dict[int, str]:
    """Return one colour per width on a log2 scale (narrow = dark, wide = bright)."""
    ws = sorted(set(int(w) for w in widths)) or [1]
    lo, hi = math.log2(ws[0]), math.log2(ws[-1])
    pos = [0.0 if hi == lo else 0.9 * (math.log2(w) - lo) / (hi - lo) for w in ws]
    return dict(zip(ws, sample_colorscale(scale, pos)))


def _metric_scale(col: str) -> float:
    return 100.0 if col.startswith("acc") else 1.0


def width_overlay(curves: pd.DataFrame, cols: tuple[str, ...] = ("acc", "loss_cal"),
                  titles: tuple[str, ...] = ("Accuracy (%)", "Calibrated loss"), lam: float | None = None) -> go.Figure:
    """Return curves vs lam for every width overlaid (one colour per width); ``curves`` has a width column."""
    colors = width_colors(list(curves["width"]))
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=titles, horizontal_spacing=0.08)
    for w, sub in curves.sort_values(["width", "lam"]).groupby("width"):
        for c, col in enumerate(cols, start=1):
            fig.add_trace(_line(sub["lam"], _metric_scale(col) * sub[col], f"width {w}", colors[int(w)],
                                group=f"w{w}", show=c == 1), row=1, col=c)
    if lam is not None:
        fig.add_vline(x=lam, line_dash="dot", line_color=GREY)
    _lam_axis(fig)
    fig.update_layout(height=380, margin=dict(l=40, r=20, t=40, b=10), uirevision="keep", hovermode="x unified")
    return fig


def width_small_multiples(curves: pd.DataFrame, cols: tuple[str, ...] = ("acc", "loss_raw", "loss_cal"),
                          names: tuple[str, ...] = ("accuracy (%)", "raw loss", "calibrated loss")) -> go.Figure:
    """Return one column of panels per width (rows: the given metrics), y axes shared per row."""
    widths = sorted(int(w) for w in curves["width"].unique())
    colors = width_colors(widths)
    fig = make_subplots(rows=len(cols), cols=len(widths), shared_yaxes=True, shared_xaxes=True,
                        column_titles=[f"width {w}" for w in widths], row_titles=list(names),
                        horizontal_spacing=0.02, vertical_spacing=0.06)
    for c, w in enumerate(widths, start=1):
        sub = curves[curves["width"] == w].sort_values("lam")
        for r, col in enumerate(cols, start=1):
            fig.add_trace(_line(sub["lam"], _metric_scale(col) * sub[col], f"width {w}", colors[w], show=False),
                          row=r, col=c)
            chord = {"acc": "acc_chord", "loss_raw": "loss_chord"}.get(col)
            if chord in sub:
                fig.add_trace(_line(sub["lam"], _metric_scale(col) * sub[chord], "straight line A–B", GREY, "dot",
                                    1.0, show=False), row=r, col=c)
    # No explicit x range here: with matched x axes it freezes the y autorange in plotly.js (seen with plotly 7.1).
    fig.update_xaxes(tickvals=[0, 0.5, 1], ticktext=["B", "0.5", "A"])
    fig.update_layout(height=160 * len(cols) + 60, margin=dict(l=40, r=30, t=40, b=10), uirevision="keep")
    return fig


def _log2_width_axis(fig: go.Figure, widths: list[int]) -> None:
    ws = sorted(set(int(w) for w in widths))
    fig.update_xaxes(type="log", tickvals=ws, ticktext=[str(w) for w in ws], title_text="width multiplier (log2 axis)")


def barrier_vs_width(barriers: pd.DataFrame) -> go.Figure:
    """Return barrier vs width (log2 axis): accuracy (pp) and loss (raw vs calibrated), midpoint and max.

    ``barriers`` columns: width, definition, metric, value (accuracy in fraction units, as the engine gives).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy barrier (pp)", "Loss barrier"),
                        horizontal_spacing=0.1)
    styles = {"midpoint": "solid", "max over grid": "dash"}
    colors = {"accuracy": MERGED, "loss (raw)": GREY, "loss (calibrated)": CAL}
    for (definition, metric), sub in barriers.sort_values("width").groupby(["definition", "metric"]):
        scale = 100.0 if metric == "accuracy" else 1.0
        fig.add_trace(go.Scatter(x=sub["width"], y=scale * sub["value"], mode="lines+markers",
                                 name=f"{metric}, {definition}",
                                 line=dict(color=colors.get(metric, "black"), dash=styles.get(definition, "dot"))),
                      row=1, col=1 if metric == "accuracy" else 2)
    fig.add_hline(y=0, line_color="black", line_width=0.5)
    _log2_width_axis(fig, list(barriers["width"]))
    fig.update_layout(height=380, margin=dict(l=40, r=20, t=40, b=10), uirevision="keep")
    return fig


def permutation_comparison(table: pd.DataFrame, metric_label: str) -> go.Figure:
    """Return one barrier-vs-width line per condition (columns width, condition, value) on a log2 axis."""
    fig = go.Figure()
    palette = {"no permutation, raw": GREY, "no permutation, calibrated": CAL, "weight matching": "#2ca02c",
               "activation matching": "#17becf", "random permutation": "#ff7f0e"}
    for cond, sub in table.sort_values("width").groupby("condition", sort=False):
        fig.add_trace(go.Scatter(x=sub["width"], y=sub["value"], mode="lines+markers", name=str(cond),
                                 line=dict(color=palette.get(str(cond)))))
    fig.add_hline(y=0, line_color="black", line_width=0.5)
    _log2_width_axis(fig, list(table["width"]))
    fig.update_layout(height=380, yaxis_title=metric_label, margin=dict(l=40, r=20, t=30, b=10), uirevision="keep")
    return fig


# ----------------------------------------------------------------------------- layers
def layer_labels(df: pd.DataFrame) -> list[str]:
    """Return 'l=1 · name' labels in layer order."""
    pairs = df[["layer", "name"]].drop_duplicates().sort_values("layer")
    return [f"l={int(l)} · {n}" for l, n in zip(pairs["layer"], pairs["name"])]


def layer_heatmap(df: pd.DataFrame, col: str, title: str, lam: float | None = None, zmin: float | None = None,
                  zmax: float | None = None, colorscale: str = "Viridis") -> go.Figure:
    """Return a layer x lam heatmap of ``col`` (rows l = 1..L from the input), current lam outlined."""
    grid = df.pivot_table(index="layer", columns="lam", values=col).sort_index()
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=layer_labels(df), zmin=zmin, zmax=zmax,
                               colorscale=colorscale, colorbar=dict(thickness=12),
                               hovertemplate="%{y}<br>λ=%{x:.3f}<br>" + col + "=%{z:.4f}<extra></extra>"))
    if lam is not None:
        fig.add_vline(x=lam, line_dash="dot", line_color="white", line_width=2)
    fig.update_layout(title=title, height=120 + 28 * grid.shape[0], margin=dict(l=10, r=10, t=40, b=10),
                      uirevision="keep")
    _lam_axis(fig)
    return fig


def layer_coefficients(df: pd.DataFrame, lam: float | None = None) -> go.Figure:
    """Return per-layer panels: fitted a, b of merged ~ a f_l(A) + b f_l(B) against lam^l and (1-lam)^l."""
    layers = sorted(int(l) for l in df["layer"].unique())
    ncol = min(4, len(layers))
    nrow = math.ceil(len(layers) / ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=layer_labels(df), shared_yaxes=True,
                        vertical_spacing=0.12 if nrow > 1 else 0.1, horizontal_spacing=0.03)
    for k, l in enumerate(layers):
        sub, r, c = df[df["layer"] == l].sort_values("lam"), k // ncol + 1, k % ncol + 1
        first = k == 0
        fig.add_trace(_line(sub["lam"], sub["coef_a"], "a (fitted, on A)", MERGED, show=first, group="a"), row=r, col=c)
        fig.add_trace(_line(sub["lam"], sub["coef_b"], "b (fitted, on B)", CAL, show=first, group="b"), row=r, col=c)
        fig.add_trace(_line(sub["lam"], sub["lam_pow"], "λ^l (LEWC)", MERGED, "dash", 1.2, show=first, group="la"),
                      row=r, col=c)
        fig.add_trace(_line(sub["lam"], sub["one_minus_lam_pow"], "(1−λ)^l (LEWC)", CAL, "dash", 1.2, show=first,
                            group="lb"), row=r, col=c)
        fig.add_trace(_line(sub["lam"], sub["lam"], "λ (LLFC)", GREY, "dot", 1.0, show=first, group="ll"),
                      row=r, col=c)
    if lam is not None:
        fig.add_vline(x=lam, line_dash="dot", line_color=GREY)
    fig.update_xaxes(range=[-0.03, 1.03], tickvals=[0, 0.5, 1], ticktext=["B", "0.5", "A"])
    fig.update_layout(height=230 * nrow + 60, margin=dict(l=30, r=10, t=50, b=10), uirevision="keep",
                      legend=dict(orientation="h", y=-0.08))
    return fig


def layer_profile(df: pd.DataFrame, lam: float) -> go.Figure:
    """Return per-layer diagnostics at the grid lam nearest ``lam``: cosines (left), ratios (right)."""
    lams = np.array(sorted(df["lam"].unique()))
    near = float(lams[int(np.argmin(np.abs(lams - lam)))])
    sub = df[df["lam"] == near].sort_values("layer")
    x = [f"l={int(l)}" for l in sub["layer"]]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"Cosines at λ={near:.3f}", f"Ratios at λ={near:.3f}"))
    for col, name, color, dash in (("cos_lewc", "cos(merged, LEWC)", MERGED, "solid"),
                                   ("cos_llfc", "cos(merged, LLFC)", GREY, "dash"),
                                   ("cos_endpoints", "cos(f_l(A), f_l(B))", "#ff7f0e", "dot"),
                                   ("weak_additivity", "weak additivity of ReLU", "#2ca02c", "solid")):
        fig.add_trace(go.Scatter(x=x, y=sub[col], name=name, mode="lines+markers", line=dict(color=color, dash=dash)),
                      row=1, col=1)
    fig.add_hline(y=GAUSSIAN_WEAK_ADDITIVITY, line_dash="dot", line_color="#2ca02c", row=1, col=1,
                  annotation_text="0.9304 (independent Gaussian)", annotation_position="bottom right")
    for col, name, color, dash in (("norm_ratio", "|merged| / |LEWC prediction|", MERGED, "solid"),
                                   ("recip_orth_ab", "|W_l(B) h(A)| / |W_l(A) h(A)|", CAL, "dash"),
                                   ("recip_orth_ba", "|W_l(A) h(B)| / |W_l(B) h(B)|", MANUAL, "dot")):
        fig.add_trace(go.Scatter(x=x, y=sub[col], name=name, mode="lines+markers", line=dict(color=color, dash=dash)),
                      row=1, col=2)
    fig.add_hline(y=1.0, line_dash="dot", line_color=GREY, row=1, col=2)
    fig.update_layout(height=380, margin=dict(l=30, r=10, t=40, b=10), uirevision="keep",
                      legend=dict(orientation="h", y=-0.15))
    return fig
