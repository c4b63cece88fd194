"""App-side helpers of the Streamlit pages (they import Streamlit; the library never does).

``state``: what the user chose, in session state. ``engine``: analysis with the disk cache,
stretched clips cached in memory. ``songs``: uploader, demo button, one card per song.
``deck``: the live deck component and the rendered mix. ``loop_map``: the plotly loop map.
"""
