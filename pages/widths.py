"""Widths: one family's curves for every width, barrier vs width (raw vs calibrated, midpoint and max)."""
import streamlit as st

from lmcdash import explore, plots
from ui import cache, context, widgets

widgets.require_frame()

st.title("Widths")
st.caption("One pair (two seeds) per width of a family. Barriers: midpoint = L(1/2) − (L(A)+L(B))/2 (the paper's "
           "Table 1); max over grid = max_λ [L(λ) − (λ·L(A) + (1−λ)·L(B))]. Accuracy barriers in percentage points.")

sources, _ = widgets.zoo_and_uploads()
fams = explore.families(sources)
if not fams:
    st.info("No checkpoint families found. Set the checkpoint folder in the sidebar or upload files.")
    st.stop()
c = st.columns([3, 1, 1, 2, 2])
family = c[0].selectbox("Family", fams, key="w_family", persist_state=widgets.KEEP)
table = explore.family_table(sources, family)
seeds = sorted(s for s in table["seed"].unique() if s >= 0)
if family != explore.UPLOAD_FAMILY and len(seeds) >= 2:
    seed_a = c[1].selectbox("Seed A", seeds, index=0, key="w_seed_a")
    seed_b = c[2].selectbox("Seed B", seeds, index=1, key="w_seed_b")
    pairs = explore.width_pairs(sources, family, int(seed_a), int(seed_b))
else:
    pairs = explore.width_pairs(sources, family)
split = widgets.split_select(c[3])
method = widgets.perm_select(c[4])
bn_mode = widgets.bn_select(context.family_has_bn(sources, family))
if not pairs:
    st.warning(f"{family} has no width with two checkpoints for these seeds; pick other seeds or another family.")
    st.stop()
widths = st.multiselect("Widths to compare", sorted(pairs), default=sorted(pairs), key=f"w_widths_{family}")
if not widths:
    st.info("Pick at least one width.")
    st.stop()

curves, diffs = context.family_curves({w: pairs[w] for w in widths}, method, split, bn_mode, cache.grid())
if not curves:
    st.stop()
per_lam, barriers = explore.stack_curves(curves)
if method != "none":
    st.caption(f"B permuted by {widgets.PERM_LABELS[method]}. Max |B(x) − permuted B(x)| per width: "
               + ", ".join(f"w{w}: {d:.1e}" for w, d in sorted(diffs.items())))
st.plotly_chart(plots.width_overlay(per_lam), key="w_overlay", width="stretch")
st.plotly_chart(plots.width_small_multiples(per_lam), key="w_multiples", width="stretch")
st.plotly_chart(plots.barrier_vs_width(barriers), key="w_barriers", width="stretch")
st.markdown("**Every number** (barriers per width; accuracy in fraction units, × 100 for pp)")
wide = barriers.pivot_table(index="width", columns=["metric", "definition"], values="value")
wide.columns = [f"{m} · {d}" for m, d in wide.columns]
st.dataframe(wide.reset_index(), hide_index=True, width="stretch")
with st.expander("Per-λ table for every width"):
    st.dataframe(per_lam, hide_index=True)
st.download_button("Download per-λ table (CSV)", per_lam.to_csv(index=False).encode(),
                   file_name=f"widths_{family}_{method}.csv".replace("/", "_"), mime="text/csv")
