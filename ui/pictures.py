"""Pictures of sound: a small mel spectrogram of each loop clip, in the loop's colour.

Drawn once per loop (cached by the clip's audio key), so that a person sees the kick pattern
(bright blocks at the bottom, one per hit), the hi-hats (thin lines at the top) or the chord
stabs (stacked bands) before clicking a tile. The same PNG goes on the deck's tiles and on
the song cards' loop tiles.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st

from unmixer.core.audio import SAMPLE_RATE

WIDTH, HEIGHT = 240, 64
"""Size of a loop picture (pixels): time across, 64 mel bands up."""

FLOOR_DB = 60.0
"""Levels more than this far below the clip's loudest cell are transparent."""


def clip_picture(clip: np.ndarray, color: str, sr: int = SAMPLE_RATE,
                 width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A PNG of a clip's mel spectrogram: ``color`` where it is loud, transparent where quiet.

    Parameters
    ----------
    clip : np.ndarray, shape=(channels, samples) or (samples,), float
    color : str, "#RRGGBB"
    sr : int, Hz
    width : int, pixels (time columns: the clip is cut into this many frames)
    height : int, pixels (mel bands, 30 Hz to 16 kHz, low at the bottom)

    Returns
    -------
    bytes: an RGBA PNG, ``width`` x ``height``; the alpha is the level in dB, from
    ``-FLOOR_DB`` (0) to the loudest cell (1). A silent clip gives a transparent picture.

    Source: mel scale after Slaney's Auditory Toolbox (librosa's ``melspectrogram``).
    """
    import librosa
    from PIL import Image

    y = np.asarray(clip, dtype=np.float32)
    y = y.mean(axis=0) if y.ndim == 2 else y
    hop = max(1, int(np.ceil(len(y) / width)))
    n_fft = 2048 if len(y) >= 2048 else max(16, 1 << int(np.log2(max(len(y), 16))))
    mel = librosa.feature.melspectrogram(y=np.pad(y, (0, max(0, hop * width - len(y)))), sr=sr,
                                         n_fft=n_fft, hop_length=hop, n_mels=height, fmin=30.0,
                                         fmax=min(16000.0, sr / 2), center=True)[:, :width]
    top = float(mel.max(initial=0.0))
    if top > 0:
        level = librosa.power_to_db(mel, ref=top, top_db=FLOOR_DB)  # -FLOOR_DB..0 dB
        alpha = np.clip(1.0 + level / FLOOR_DB, 0.0, 1.0) ** 1.5
    else:
        alpha = np.zeros_like(mel)
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    image = np.empty((height, alpha.shape[1], 4), dtype=np.uint8)
    image[..., :3] = rgb
    image[..., 3] = np.round(255 * alpha[::-1]).astype(np.uint8)  # low frequencies at the bottom
    buf = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@st.cache_data(max_entries=1024, show_spinner=False)
def loop_picture(audio_key: str, index: int, color: str, _clip: np.ndarray) -> bytes:
    """:func:`clip_picture` of loop ``index`` of an analysis, drawn once (``audio_key``,
    :func:`ui.state.audio_key`, tells rough loops from refined ones)."""
    return clip_picture(_clip, color)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, for an ``<img>`` in the deck."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
