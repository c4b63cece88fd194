"""Unmixer's Streamlit app: ``streamlit run streamlit_app.py`` (or ``bash scripts/app.sh``).

Navigation only; each page lives in ``pages/`` and calls the ``unmixer`` library.
"""

import streamlit as st

st.set_page_config(page_title="Unmixer", page_icon=":material/graphic_eq:", layout="wide")

page = st.navigation([
    st.Page("pages/unmixer_page.py", title="Unmixer", icon=":material/graphic_eq:",
            default=True),
    st.Page("pages/nmf_lab.py", title="NMF Lab", icon=":material/science:"),
    st.Page("pages/drum_splitter.py", title="Drum Splitter", icon=":material/album:"),
])
page.run()
