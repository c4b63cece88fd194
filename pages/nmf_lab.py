"""NMF Lab (placeholder until its own issue lands)."""

import streamlit as st

st.title("NMF Lab", anchor=False)
st.info("This page is coming soon.")
