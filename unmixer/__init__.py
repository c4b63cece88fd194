"""Unmixer: pull the repeating loops out of finished songs.

The library never imports Streamlit. Data flows one way:
file -> audio array -> spectrogram -> decomposition -> masks -> audio out.
"""

from unmixer.errors import UnmixerError

__all__ = ["UnmixerError"]
__version__ = "0.1.0"
