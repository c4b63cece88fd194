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


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's script runner (AppTest) puts the app script's module in
    ``sys.modules["__main__"]`` and leaves it there; a process started later by
    multiprocessing's spawn (Dask's LocalCluster workers) would then re-run streamlit_app.py
    outside Streamlit and die. Each test gets pytest's own ``__main__`` back."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


def pytest_sessionstart(session):
    """On a crash (a segmentation fault in compiled code), print the crashing thread's stack
    only: CI's log keeps its head and its tail, and the stacks of every thread pushed the
    crashing one out of it."""
    import faulthandler

    from _pytest.faulthandler import fault_handler_stderr_fd_key

    fd = session.config.stash.get(fault_handler_stderr_fd_key, None)
    if fd is not None:
        faulthandler.enable(file=fd, all_threads=False)
