"""Page-wide styling that Streamlit's theme (``.streamlit/config.toml``) does not cover."""

from __future__ import annotations

import streamlit as st

_CSS = """
<style>
.loop-tile-head { display: flex; align-items: center; gap: 8px; white-space: nowrap;
                  overflow: hidden; text-overflow: ellipsis; line-height: 1.6; }
.loop-swatch { display: inline-block; width: 14px; height: 14px; border-radius: 4px;
               flex: none; }
[class*="st-key-tile_"] audio { width: 100%; }
</style>
"""


def inject() -> None:
    """Add the page's CSS (it takes no room on the page)."""
    st.html(_CSS)
