"""lmcdash dashboard entry: `streamlit run app.py` (page config, shared sidebar, navigation)."""
import streamlit as st

from ui import widgets

st.set_page_config(page_title="lmcdash: linear mode connectivity", page_icon=":material/timeline:", layout="wide")

PAGES = [
    st.Page("pages/explorer.py", title="Explorer", icon=":material/show_chart:", url_path="explorer", default=True),
    st.Page("pages/layers.py", title="Layers (LEWC fit)", icon=":material/layers:", url_path="layers"),
    st.Page("pages/widths.py", title="Widths", icon=":material/stacked_line_chart:", url_path="widths"),
    st.Page("pages/permutations.py", title="Permutations (Table 1)", icon=":material/shuffle:",
            url_path="permutations"),
    st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:", url_path="upload"),
]

page = st.navigation(PAGES)
widgets.sidebar()
with widgets.app_frame():
    page.run()
