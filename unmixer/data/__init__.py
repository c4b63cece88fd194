"""Data shipped with Unmixer: the demo song and its licence.

``vibe_ace.ogg``: "Vibe Ace" by Kevin MacLeod (incompetech.com), licensed under Creative
Commons Attribution 3.0 (https://creativecommons.org/licenses/by/3.0/), from the Free Music
Archive; see ``vibe_ace.LICENSE.txt``. A 61-second excerpt.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
"""The directory of the shipped data files."""

DEMO_SONG = DATA_DIR / "vibe_ace.ogg"
"""Path of the demo song (Ogg Vorbis, 44.1 kHz stereo, 61 s)."""

DEMO_TITLE = "Vibe Ace"
"""Title of the demo song."""

DEMO_ATTRIBUTION = (
    '"Vibe Ace" by Kevin MacLeod (incompetech.com), licensed under '
    "[CC BY 3.0](https://creativecommons.org/licenses/by/3.0/), via the "
    "[Free Music Archive](https://freemusicarchive.org/music/Kevin_MacLeod/Jazz_Sampler/Vibe_Ace)."
)
"""Credit line (Markdown) to show wherever the demo song is offered."""
