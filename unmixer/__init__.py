"""Unmixer: pull the repeating loops out of finished songs.

The library's face is small, like librosa's::

    import unmixer

    audio = unmixer.load_audio("song.ogg")        # float32, shape (2, samples), 44.1 kHz
    result = unmixer.extract_loops(audio, 5)       # an Extraction: loops, loop map, grid
    for loop in result.loops:
        unmixer.write_wav(f"loop_{loop.index}.wav", loop.clip)

Everything else lives in sub-packages by product (see README, "Layout"): ``unmixer.core``
(audio, STFT and Wiener masks, metrics), ``unmixer.loops`` (the loop engine), ``unmixer.mashup``,
``unmixer.lab`` (NMF Lab), ``unmixer.drums`` (Drum Splitter), ``unmixer.datasets`` (generated
songs). The names below are imported lazily, so ``import unmixer`` stays fast; the library
never imports Streamlit.
"""

from __future__ import annotations

import importlib

from unmixer.errors import UnmixerError

__version__ = "0.1.0"

_LAZY = {
    "load_audio": "unmixer.core.audio",
    "write_wav": "unmixer.core.audio",
    "extract_loops": "unmixer.loops.pipeline",
    "Extraction": "unmixer.loops.pipeline",
    "LoopResult": "unmixer.loops.pipeline",
    "make_song": "unmixer.datasets.synth",
}

__all__ = ["UnmixerError", *_LAZY]


def __getattr__(name: str):
    """Import the face's functions on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unmixer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
