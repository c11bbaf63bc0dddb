"""Upload: validate one or two .safetensors files; valid ones become selectable on every page for this session."""
import pandas as pd
import streamlit as st

from lmcdash import uploads
from lmcdash.data import DATASETS
from lmcdash.models import REGISTRY, list_models
from ui import cache, context, widgets

widgets.require_frame()
MAX_SESSION_UPLOADS = 8

st.title("Upload checkpoints")
limit = st.get_option("server.maxUploadSize")
st.caption(f"Up to two .safetensors files, **at most {limit} MB each** (server.maxUploadSize in "
           ".streamlit/config.toml). Uploads stay in memory for this session only: nothing is written to disk, and "
           "the checkpoint folder (the zoo) is never touched. Files are parsed as safetensors only, never unpickled.")
files = st.file_uploader("Checkpoint files", type=["safetensors"], accept_multiple_files=True, key="upload_files")
if len(files or []) > 2:
    st.warning(f"{len(files)} files: the Upload page takes one or two at a time; using the first two.")


def register(name: str, digest: str, data: bytes, dataset: str, spec, kind: str) -> None:
    """Validate against the dataset and keep the upload for the session; show why not otherwise."""
    probe = context.UploadEntry(name, digest, data, dataset, spec, kind, "?", 0, None)
    loaded = context.guarded(f"{name} cannot be used", cache.upload_checkpoint, probe.key, name, dataset, spec,
                             _data=data)
    if loaded is None:
        widgets.uploads().pop(digest, None)
        return
    model, meta, _ = loaded
    entry = context.UploadEntry(name, digest, data, dataset, spec, kind, meta.model.arch, meta.model.width, meta.seed)
    kept = widgets.uploads()
    kept[digest] = entry
    while len(kept) > MAX_SESSION_UPLOADS:  # bytes stay in memory: bound them per session
        dropped = kept.pop(next(iter(kept)))
        st.info(f"Dropped the oldest upload {dropped.name}: a session keeps at most {MAX_SESSION_UPLOADS}.")
    st.success(f"Valid: selectable on every page as **{entry.source.label}** ({meta.model.arch}, width "
               f"{meta.model.width}, evaluated on {dataset}).")


def dataset_choice(digest: str, default: str, disabled: bool = False) -> str:
    options = [d for d in DATASETS]
    return st.selectbox("Evaluation dataset", options, index=options.index(default) if default in options else 0,
                        key=f"ds_{digest}", disabled=disabled,
                        help="From the metadata when the file has it; otherwise your choice. The input shape "
                             "must fit the dataset.")


def describe_form(digest: str) -> tuple | None:
    """Ask for architecture and width of a file without metadata; return (dataset, spec) once submitted."""
    with st.form(f"describe_{digest}"):
        c = st.columns(5)
        arch = c[0].selectbox("Architecture", list_models(), key=f"arch_{digest}", help="From the registry")
        width = c[1].number_input("Width multiplier", 1, 256, 1, key=f"width_{digest}")
        base = c[2].number_input("Base width", 1, 4096, REGISTRY["mlp"].default_base, key=f"base_{digest}",
                                 help="mlp: hidden = base × width; vgg11 default 4; resnet20 default 16")
        depth = c[3].number_input("Hidden layers (mlp)", 1, 16, 1, key=f"depth_{digest}")
        dataset = c[4].selectbox("Dataset", list(DATASETS), key=f"dsd_{digest}")
        if not st.form_submit_button("Use this description"):
            return st.session_state.get(f"spec_{digest}")
    data = context.guarded(f"Dataset {dataset!r} is not available", cache.dataset, dataset,
                           *_calib(dataset))
    if data is None:
        return None
    spec = uploads.describe_spec(arch, width, data.num_classes, data.input_shape, int(base), int(depth))
    st.session_state[f"spec_{digest}"] = (dataset, spec)
    return dataset, spec


def _calib(dataset: str) -> tuple[int, int]:
    from lmcdash.config import CheckpointMeta, ModelSpec
    from lmcdash.explore import dataset_args

    return dataset_args(CheckpointMeta(model=ModelSpec("mlp"), dataset=dataset))[1:]


def panel(f) -> None:
    data = f.getvalue()
    digest = uploads.digest(data)
    st.markdown(f"**{f.name}** · {len(data) / 1e6:.2f} MB · sha256 {digest}")
    insp = context.guarded(f"{f.name} is not a usable checkpoint", cache.inspect_upload, digest, f.name, _data=data)
    if insp is None:
        widgets.uploads().pop(digest, None)
        return
    if insp.kind == "lmcdash":
        m = insp.meta
        st.caption(f"lmcdash checkpoint: {m.model.arch}, width {m.model.width}, seed {m.seed}, trained on "
                   f"{m.dataset} (weight decay {m.train.get('weight_decay', '—')}).")
        register(f.name, digest, data, dataset_choice(digest, m.dataset), None, insp.kind)
    elif insp.kind == "plain-mlp":
        s = insp.meta.model
        st.info(f"No lmcdash metadata, but this is a plain ReLU-MLP state_dict: mapped onto the registry's mlp "
                f"({s.depth} hidden layer(s) of {s.base_width} units, {s.num_classes} outputs, input "
                f"{tuple(s.input_shape)}).")
        st.dataframe(pd.DataFrame(insp.mapping, columns=["key in the file", "registry key"]), hide_index=True)
        default = "fashion-mnist" if tuple(s.input_shape) == (1, 28, 28) else "synthetic"
        register(f.name, digest, data, dataset_choice(digest, default), None, insp.kind)
    else:
        st.warning(insp.note)
        with st.expander("Tensors in the file"):
            st.dataframe(pd.DataFrame([(k, d, str(s)) for k, (d, s) in insp.tensors.items()],
                                      columns=["key", "dtype", "shape"]), hide_index=True)
        described = describe_form(digest)
        if described is not None:
            register(f.name, digest, data, described[0], described[1], insp.kind)


for f in (files or [])[:2]:
    with st.container(border=True):
        panel(f)

st.subheader("This session's uploads")
entries = widgets.uploads()
if not entries:
    st.caption("None yet.")
for digest, e in list(entries.items()):
    c1, c2 = st.columns([6, 1])
    c1.markdown(f"- **{e.source.label}**: {e.arch}, width {e.width}, {e.dataset} ({e.kind})")
    if c2.button("Remove", key=f"rm_{digest}"):
        entries.pop(digest, None)
        st.rerun()

if entries:
    st.subheader("Open a pair")
    sources, _ = widgets.zoo_and_uploads()
    labels = [s.label for s in sources]
    up = [e.source.label for e in entries.values()]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Model A (λ = 1): an upload", up, key="up_a")
    rest = [lab for lab in up if lab != a] + [lab for lab in labels if lab not in up] or labels
    b = c2.selectbox("Model B (λ = 0): another upload or a zoo checkpoint", rest, key="up_b")
    if st.button("Open in Explorer", type="primary"):
        st.session_state[widgets.PAIR_MODE] = widgets.PAIR_MODES[1]
        st.session_state[widgets.ANY_A], st.session_state[widgets.ANY_B] = a, b
        st.switch_page("pages/explorer.py")
