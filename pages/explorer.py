"""Explorer: one pair along λ: accuracy, raw and calibrated loss, fitted temperature, barriers, recipe."""
import streamlit as st

from lmcdash import explore, plots
from ui import cache, context, widgets

widgets.require_frame()

st.title("Explorer")
st.caption("θ(λ) = λ·θ_A + (1 − λ)·θ_B: λ = 1 is model A, λ = 0 is model B. "
           "The temperature is fitted per λ on the held-out calibration split, never on the reported split.")

ctx = context.selected_pair()


@st.fragment
def view(ctx: context.PairContext) -> None:
    """Controls and everything that depends on them; reruns alone when a control changes."""
    c = st.columns(4)
    split = widgets.split_select(c[0])
    temp_mode = c[1].selectbox("Temperature", list(widgets.TEMP_LABELS), format_func=widgets.TEMP_LABELS.get,
                               key=widgets.TEMP_MODE, persist_state=widgets.KEEP)
    method = widgets.perm_select(c[2])
    bn_mode = widgets.bn_select(ctx.has_bn, c[3])
    lam = widgets.lam_slider()
    temperature = None
    if temp_mode == "manual":
        temperature = float(st.slider("Manual temperature T (logits / T)", 0.05, 2.0, 1.0, 0.01,
                                      key=widgets.TEMPERATURE, persist_state=widgets.KEEP))
    pair = ctx.pair
    if method != "none":
        al = context.aligned(ctx, method, split)
        if al is None:
            return
        pair = al.pair
        st.caption(f"B permuted by **{widgets.PERM_LABELS[method]}** ({al.result.seconds:.2f} s). "
                   f"Max |B(x) − permuted B(x)| on 1000 {split} images: **{al.max_output_diff:.2e}** "
                   "(0 up to rounding: the permutation changes no function).")
    lams = cache.grid()
    h, res = context.evaluate(pair, ctx, split, bn_mode, lams)
    if res is None:
        return
    pt = context.guarded("Could not evaluate this λ", cache.point, h.key, round(lam, 4), split, temperature, _h=h)
    if pt is None:
        return
    cols = st.columns(5 if temperature is not None else 4)
    for col, (label, value) in zip(cols, explore.fmt_metrics(pt).items()):
        col.metric(label, value)
    sweep = (cache.temperature_sweep(h.key, lams, split, explore.temperature_grid(), _h=h, _data=ctx.data)
             if temperature is not None else None)
    fig = plots.explorer_figure(res.table, pt, temp_mode, sweep, temperature)
    st.plotly_chart(fig, key="explorer_chart", width="stretch")
    st.caption(f"L = {res.num_layers} weight layers; LEWC predicts T(λ) = λ^L + (1−λ)^L "
               f"({2 ** (1 - res.num_layers):.3g} at λ = 1/2). Split: {split}; BN: {bn_mode}; permutation: {method}.")
    st.markdown("**Barriers**, each with its definition (accuracy in percentage points; negative: the merged "
                "model beats the endpoints)")
    st.dataframe(explore.barrier_display(res.barriers), hide_index=True, width="stretch")
    st.download_button("Download per-λ table (CSV)", res.table.to_csv(index=False).encode(),
                       file_name=f"lmc_{ctx.source_a.label}_{ctx.source_b.label}_{split}_{method}.csv"
                       .replace("/", "_").replace(" ", ""), mime="text/csv", key="csv")
    with st.expander("Per-λ table"):
        st.dataframe(res.table, hide_index=True)

if ctx is not None:
    main, side = st.columns([2.4, 1.6])
    with side:
        st.markdown("**Training recipe** (whether LMC holds depends on it)")
        st.dataframe(explore.recipe_table(ctx.pair.meta_a, ctx.pair.meta_b), hide_index=True, width="stretch",
                     height=530)
    with main:
        view(ctx)
