"""Permutations: barrier vs width with and without Git Re-Basin alignment (read the paper's Table 1 off the zoo)."""
import streamlit as st

from lmcdash import explore, plots
from ui import cache, context, widgets

widgets.require_frame()

st.title("Permutations: do we need them?")
st.caption("Ito et al. (ICLR 2026) argue that wide models are linearly connected without permutations once the "
           "temperature is calibrated. Compare, per width: no permutation (raw and calibrated loss), weight matching "
           "and a random permutation (a control that changes no function). Permutations are computed once per pair "
           "and cached; next to each permuted result is max |B(x) − permuted B(x)| on the evaluation batch.")

sources, _ = widgets.zoo_and_uploads()
fams = explore.families(sources)
if not fams:
    st.info("No checkpoint families found. Set the checkpoint folder in the sidebar.")
    st.stop()
c = st.columns([3, 2, 2, 2])
family = c[0].selectbox("Family", fams, key="p_family", persist_state=widgets.KEEP)
definition = c[1].selectbox("Barrier definition", ["midpoint", "max over grid"], key="p_def")
metric = c[2].selectbox("Show", ["loss barrier", "accuracy barrier (pp)"], key="p_metric")
split = widgets.split_select(c[3])
methods = st.multiselect("Alignments", ["weight", "random", "activation"], default=["weight", "random"],
                         format_func=widgets.PERM_LABELS.get, key="p_methods")
bn_mode = widgets.bn_select(context.family_has_bn(sources, family))
pairs = explore.width_pairs(sources, family, 0, 1) or explore.width_pairs(sources, family)
if not pairs:
    st.warning(f"{family} has no width with two checkpoints.")
    st.stop()

barriers, diffs = {}, {}
for method in ["none", *methods]:
    curves, d = context.family_curves(pairs, method, split, bn_mode, cache.grid())
    barriers.update({(w, method): r.barriers for w, r in curves.items()})
    diffs.update({(w, method): v for w, v in d.items()})
table = explore.permutation_table(barriers, definition, diffs)
if table.empty:
    st.stop()
col = "loss_barrier" if metric == "loss barrier" else "acc_barrier_pp"
shown = table if col == "loss_barrier" else table[table["condition"] != "no permutation, calibrated"]
st.plotly_chart(plots.permutation_comparison(shown.rename(columns={col: "value"}), f"{metric} ({definition})"),
                key="p_chart", width="stretch")
st.markdown(f"**Table 1 for {family}** ({definition} barriers on the {split} split; 'loss_barrier' is the raw loss "
            "except in the calibrated row)")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"max_output_diff": st.column_config.NumberColumn("max |B − permuted B|", format="%.1e"),
                            "acc_barrier_pp": st.column_config.NumberColumn("accuracy barrier (pp)", format="%.2f"),
                            "loss_barrier": st.column_config.NumberColumn(format="%.4f"),
                            "loss_barrier_calibrated": st.column_config.NumberColumn(format="%.4f")})
st.download_button("Download (CSV)", table.to_csv(index=False).encode(), f"table1_{family}.csv".replace("/", "_"),
                   "text/csv")
