"""Unmixer's Streamlit app: ``streamlit run streamlit_app.py`` (or ``bash scripts/app.sh``).

Navigation only, behind the optional shared password (:mod:`ui.access`); each page lives
in ``app_pages/`` and calls the ``unmixer`` library.

The folder is not called ``pages/`` on purpose: Streamlit treats a ``pages/`` folder beside
the entrypoint as a legacy multipage app until some session runs ``st.navigation``, so on a
freshly started server a link straight to ``/nmf_lab`` would run that file on its own, with
a sidebar of file names and no page title (``tests/test_browser.py`` opens every page's URL
first on a fresh server).
"""

import streamlit as st

from ui import access

PAGES = [
    st.Page("app_pages/unmixer_page.py", title="Unmixer", icon=":material/graphic_eq:",
            default=True),
    st.Page("app_pages/nmf_lab.py", title="NMF Lab", icon=":material/science:"),
    st.Page("app_pages/drum_splitter.py", title="Drum Splitter", icon=":material/album:"),
]

# With a shared password (ui.access), no page runs, and no navigation shows, before it is given.
page = st.navigation(PAGES, position="sidebar" if access.granted() else "hidden")
st.set_page_config(page_title=page.title if page.title == "Unmixer" else f"{page.title} · Unmixer",
                   page_icon=page.icon, layout="wide")
if access.gate():
    page.run()
