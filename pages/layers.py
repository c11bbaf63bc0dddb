"""Layers (LEWC fit): per-layer cosines to the LEWC and LLFC predictions, norms, coefficients, ReLU terms."""
import streamlit as st

from lmcdash import plots
from ui import cache, context, widgets

widgets.require_frame()

st.title("Layers: the LEWC fit")
st.caption("LEWC predicts f_l(θ(λ)) ≈ λ^l·f_l(A) + (1−λ)^l·f_l(B) for layer l = 1..L (L: the logits); LLFC predicts "
           "λ·f_l(A) + (1−λ)·f_l(B). At λ = 1/2 both point the same way, so norms and the coefficients (a, b) "
           "tell them apart, not cosines. Per sample on a batch of the split, then averaged.")

ctx = context.selected_pair()


@st.fragment
def view(ctx: context.PairContext) -> None:
    c = st.columns(4)
    split = widgets.split_select(c[0])
    method = widgets.perm_select(c[1])
    bn_mode = widgets.bn_select(ctx.has_bn, c[2])
    n_samples = c[3].selectbox("Samples", [250, 500, 1000, 2000], index=2, key="layer_samples",
                               persist_state=widgets.KEEP)
    lam = widgets.lam_slider()
    pair = ctx.pair
    if method != "none":
        al = context.aligned(ctx, method, split)
        if al is None:
            return
        pair = al.pair
        st.caption(f"B permuted by {widgets.PERM_LABELS[method]}; max |B(x) − permuted B(x)| = {al.max_output_diff:.2e}.")
    lams = cache.grid(13)
    df = context.guarded("Per-layer diagnostics failed", cache.layer_fit, pair.key, ctx.data_key, lams, split,
                         int(n_samples), widgets.device(), bn_mode, _pair=pair, _data=ctx.data)
    if df is None:
        return
    st.plotly_chart(plots.layer_heatmap(df, "cos_lewc", "cos(merged, LEWC prediction)", lam, 0.0, 1.0),
                    key="hm_lewc", width="stretch")
    l, r = st.columns(2)
    l.plotly_chart(plots.layer_heatmap(df, "cos_llfc", "cos(merged, LLFC prediction)", lam, 0.0, 1.0),
                   key="hm_llfc", width="stretch")
    r.plotly_chart(plots.layer_heatmap(df, "cos_endpoints", "cos(f_l(A), f_l(B)): endpoints", lam, 0.0, 1.0),
                   key="hm_end", width="stretch")
    st.plotly_chart(plots.layer_heatmap(df, "norm_ratio", "norm ratio |merged| / |LEWC prediction| (1: LEWC exact)",
                                        lam, colorscale="RdBu"), key="hm_norm", width="stretch")
    st.markdown("**Fitted coefficients** of merged ≈ a·f_l(A) + b·f_l(B), against λ^l and (1−λ)^l (LEWC) and λ (LLFC)")
    st.plotly_chart(plots.layer_coefficients(df, lam), key="coef", width="stretch")
    st.markdown("**Weak additivity and reciprocal orthogonality per layer** (together they imply LEWC for "
                "bias-free ReLU networks)")
    st.plotly_chart(plots.layer_profile(df, lam), key="profile", width="stretch")
    with st.expander("Table"):
        st.dataframe(df, hide_index=True)
        st.download_button("Download (CSV)", df.to_csv(index=False).encode(), "layers.csv", "text/csv")


if ctx is not None:
    view(ctx)
