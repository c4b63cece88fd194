"""Shared test fixtures: paths to the real songs, and a cache of generated songs."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = REPO.parent / "shared" / "audio"


def shared_song(name: str) -> Path:
    """Path of a real song in ../shared/audio; skips the test when it is absent."""
    path = SHARED_AUDIO / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path


@functools.lru_cache(maxsize=None)
def synth_song(**kwargs):
    """A generated song (cached per argument set, so tests share them)."""
    from unmixer.datasets.synth import make_song

    return make_song(**kwargs)
