"""The app shared on a network (issue 18): worker faults, a restarted server, reconnects,
who may use it, and a short load test with injected faults.

The browser tests start real servers (``bench/served.py``) and drive Debian's Chromium;
the engine is bench/fake_engine.py's unless a test says otherwise.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import ui.engine
from bench.served import CHROMIUM
from ui.state import Song, song_id

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT.parent / "shared" / "audio" / "choice_drum_bass.ogg"
ARTIFACTS = ROOT / "test-artifacts"

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
needs_song = pytest.mark.skipif(not SONG.exists(), reason="needs ../shared/audio/choice_drum_bass.ogg")


# ------------------------------------------------------------------------ worker faults
def _madmom_workers() -> list[int]:
    from unmixer.loops import beats

    pool = beats._pool
    return list(pool._processes) if pool else []


@pytest.fixture
def real_engine(monkeypatch, tmp_path):
    """The real engine with a fresh pool of madmom workers and an empty cache."""
    from unmixer.loops import beats

    if beats.WORKERS < 2:
        pytest.skip("madmom runs without worker processes here (UNMIXER_WORKERS=1)")
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", None)
    monkeypatch.setattr(ui.engine, "_JOBS", {})
    monkeypatch.setenv("UNMIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(beats, "_pool", None)
    yield beats
    if beats._pool:
        beats._pool.shutdown(wait=False, kill_workers=True)  # loky's pool


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_a_song_decodes_after_a_madmom_worker_was_killed_between_analyses(real_engine):
    """A worker killed while idle broke the pool, and the next song's warm-up raised
    BrokenProcessPool: 'Unmixer could not read ...' for a good file."""
    real_engine.warm_up()
    (pid, *_) = _madmom_workers()
    _kill(pid)
    time.sleep(0.5)                         # the pool notices: it is broken now
    data = SONG.read_bytes() if SONG.exists() else None
    if data is None:
        pytest.skip("needs ../shared/audio/choice_drum_bass.ogg")
    audio = ui.engine._decode(Song(song_id(data), SONG.name, data), None)
    assert audio.shape[0] == 2 and audio.shape[1] > 20 * 44100


@pytest.mark.slow
@needs_song
def test_a_madmom_worker_killed_during_an_analysis_and_the_app_goes_on(real_engine):
    """SIGKILL to one of madmom's worker processes while the song's downbeats are tracked:
    the analysis is run again without the workers (its loops come), and the next analysis
    (another user's) works too."""
    data = SONG.read_bytes()
    song = Song(song_id(data), SONG.name, data)
    killed = []

    def progress(stage, fraction):
        if stage == "downbeats" and fraction == 0.0 and not killed:
            workers = _madmom_workers()
            if workers:
                killed.append(workers[0])
                threading.Timer(0.3, _kill, args=(workers[0],)).start()

    result = ui.engine.analyse(song, 5, 2, progress=progress)
    assert killed, "no worker process to kill"
    assert result.error is None and len(result.extraction.loops) == 5
    other = ui.engine.submit(song, 4, 2).future.result(timeout=600)
    assert other.error is None and len(other.extraction.loops) == 4
