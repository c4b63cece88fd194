"""The loop map: loops x bars, one colour per loop, as a plotly figure."""

from __future__ import annotations

import numpy as np
# pandas before any figure: plotly's validators take pandas from sys.modules as soon as
# some thread has *started* importing it (``get_module("pandas", should_load=False)``), so a
# figure made while another script thread imported pandas for the first time failed with
# "partially initialized module 'pandas' has no attribute 'Series'" (sessions reconnecting
# at once to a restarted server: their pages stopped there, without their songs' cards).
import pandas  # noqa: F401
import plotly.graph_objects as go

PALETTE = ("#4E79A7", "#F28E2B", "#E15759", "#59A14F", "#B07AA1",
           "#EDC948", "#76B7B2", "#FF9DA7", "#9C755F", "#8C8C8C")
"""One colour per loop (Tableau 10, reordered so the first five differ the most)."""


def loop_caption(label: str) -> str:
    """" · drums" after a loop's number; nothing for the neutral label "loop" (unsure)."""
    from unmixer.loops.labels import FALLBACK

    return "" if label == FALLBACK else f" · {label}"


def loop_color(index: int) -> str:
    """The colour of loop ``index`` (1-based)."""
    return PALETTE[(int(index) - 1) % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def loop_map_figure(extraction, title: str = "") -> go.Figure:
    """A heat map of the loop activations, one row (and one colour) per loop.

    Parameters
    ----------
    extraction : unmixer.loops.pipeline.Extraction
        Uses ``activations`` (K, n_bars), ``loops[k].label``, ``loops[k].chosen_bar``,
        ``loop_bars`` and ``downbeats_s`` (bar start times, s).
    title : str

    Returns
    -------
    plotly.graph_objects.Figure: x = bar number (1-based), y = loop; hovering a cell shows
    the bar, its start time and the activation (0-1); an outline marks the bars the
    loop's clip was cut from.
    """
    acts = np.asarray(extraction.activations, dtype=np.float32)  # (K, n_bars)
    n_loops, n_bars = acts.shape
    bars = np.arange(1, n_bars + 1)
    starts = np.asarray(extraction.downbeats_s, dtype=float)[:n_bars]
    names = [f"{loop.index}{loop_caption(loop.label)}" for loop in extraction.loops]
    fig = go.Figure()
    for k, loop in enumerate(extraction.loops):
        z = np.full((n_loops, n_bars), np.nan, dtype=np.float32)
        z[k] = acts[k]
        color = loop_color(loop.index)
        custom = np.broadcast_to(starts, (n_loops, n_bars))
        fig.add_trace(go.Heatmap(
            z=z, x=bars, y=names, customdata=custom, zmin=0.0, zmax=1.0,
            colorscale=[[0.0, _rgba(color, 0.04)], [1.0, _rgba(color, 1.0)]],
            showscale=False, xgap=1, ygap=3, name=names[k],
            hovertemplate=(f"<b>Loop {names[k]}</b><br>bar %{{x}} (at %{{customdata:.1f}} s)"
                           "<br>activation %{z:.2f}<extra></extra>"),
        ))
        first = loop.chosen_bar + 1
        fig.add_shape(type="rect", x0=first - 0.5, x1=first - 0.5 + extraction.loop_bars,
                      y0=k - 0.5, y1=k + 0.5, line=dict(color="#1E1B2E", width=2))
    fig.update_layout(
        title=dict(text=title, x=0, font=dict(size=14)) if title else None,
        height=70 + 34 * n_loops, margin=dict(l=10, r=10, t=30 if title else 8, b=36),
        xaxis=dict(title="bar", showgrid=False, zeroline=False, tickmode="auto"),
        yaxis=dict(autorange="reversed", showgrid=False, type="category"),
        plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)",
    )
    return fig
