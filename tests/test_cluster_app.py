"""The app's analyses on a Dask cluster (UNMIXER_SCHEDULER), driven by Streamlit's AppTest.

A LocalCluster of one worker process runs the real engine on a short generated song; the
app process's own engine is replaced by one that fails, so a result can only come from the
cluster. Without UNMIXER_SCHEDULER the app keeps its in-process pool (tests/test_app.py).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import soundfile as sf
from conftest import synth_song
from streamlit.testing.v1 import AppTest

import ui.engine
import ui.songs
from ui import cluster as app_cluster
from ui.state import DEFAULT_LOOP_BARS, Song, song_id
from unmixer.cache import ResultCache
from unmixer.loops import pipeline

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def _wav(song) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, song.mix.T, song.sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def scheduler():
    from unmixer.batch import local_cluster

    with local_cluster(1) as cluster:
        yield cluster.scheduler_address
        app_cluster.close()


@pytest.fixture
def on_cluster(scheduler, monkeypatch, tmp_path):
    def in_process_engine(*args, **kwargs):
        raise AssertionError("the app ran the engine itself")

    monkeypatch.setenv("UNMIXER_SCHEDULER", scheduler)
    monkeypatch.setenv("UNMIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", None)
    monkeypatch.setattr(ui.engine, "_JOBS", {})
    monkeypatch.setattr(pipeline, "extract_loops", in_process_engine)
    monkeypatch.setattr(pipeline, "warm_up", in_process_engine)
    monkeypatch.setattr(ui.songs, "QUICK_WAIT_S", 0.2)
    yield scheduler


def test_the_app_analyses_a_song_on_the_cluster(on_cluster, tmp_path):
    data = _wav(synth_song(seed=301, n_bars=8, bpm=160))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.file_uploader[0].set_value(("cluster song.wav", data, "audio/wav")).run()
    assert not at.exception and not at.error
    (job,) = ui.engine._JOBS.values()
    seen = set()
    deadline = time.time() + 300
    while not job.future.done() and time.time() < deadline:
        seen.update(job.stages)                      # progress as the worker reports it
        time.sleep(0.05)
    result = job.future.result(timeout=1)
    assert result.error is None, result.error
    assert {"downbeats", "cube", "decomposition"} <= set(job.stages) | seen
    assert job.stages[-1] == "loops" and job.fraction == 1.0
    assert job.rough is not None and job.rough.refining   # the rough loops came back too
    assert len(job.rough.extraction.loops) == 5
    at.run()
    assert not at.exception and not at.error and not at.status
    (shown,) = at.session_state["results"].values()
    assert shown is result and not shown.refining and len(shown.extraction.loops) == 5
    assert abs(shown.extraction.bpm - 160) < 3
    assert all(loop.clip.shape[0] == 2 and loop.clip.shape[1] > 0
               for loop in shown.extraction.loops)
    assert len([c for c in at.checkbox if c.key.startswith("w:in_mix:")]) == 5
    # the app's disk cache got it: a second user (a restarted server) gets it without the cluster
    assert len(ResultCache().entries()) == 1
    song = Song(song_id(data), "again.wav", data)
    ui.engine._JOBS.clear()
    again = ui.engine.analyse(song, 5, DEFAULT_LOOP_BARS)  # the settings the page used
    assert again.from_cache and again.error is None


def test_a_bad_song_on_the_cluster_gives_its_one_line_error(on_cluster):
    import numpy as np

    quiet = io.BytesIO()
    t = np.arange(12 * 44100) / 44100
    sf.write(quiet, np.stack([np.sin(2 * np.pi * 220 * t)] * 2).T * 0.3, 44100, format="WAV")
    song = Song("sine", "sine.wav", quiet.getvalue())
    result = ui.engine.submit(song, 5, 2).future.result(timeout=300)
    assert result.error is not None and "\n" not in result.error
    assert "beat" in result.error                   # the engine's own message, from the worker


def test_a_dask_worker_killed_during_an_analysis_runs_it_again_and_the_app_goes_on(on_cluster):
    """Issue 18, worker faults: the Dask worker analysing a song is SIGKILLed once the song's
    downbeats are being tracked. Its nanny starts another worker, the scheduler gives it the
    task again (allowed-failures 1: a song that kills its worker twice is one line, as the
    batch's test shows), the song gets its loops, and the next user's song is analysed too."""
    import os
    import signal

    data = _wav(synth_song(seed=302, n_bars=8, bpm=150))
    job = ui.engine.submit(Song(song_id(data), "killed.wav", data), 5, DEFAULT_LOOP_BARS)
    deadline = time.time() + 300
    while "downbeats" not in job.stages and not job.future.done() and time.time() < deadline:
        time.sleep(0.05)
    assert "downbeats" in job.stages and not job.future.done()
    (pid,) = app_cluster.client().run(os.getpid).values()
    os.kill(pid, signal.SIGKILL)
    result = job.future.result(timeout=300)
    assert result.error is None, result.error
    assert len(result.extraction.loops) == 5 and abs(result.extraction.bpm - 150) < 3
    (new_pid,) = app_cluster.client().run(os.getpid).values()
    assert new_pid != pid                          # a new worker did the work
    other = _wav(synth_song(seed=303, n_bars=8, bpm=140))
    again = ui.engine.submit(Song(song_id(other), "next.wav", other), 4, DEFAULT_LOOP_BARS)
    nxt = again.future.result(timeout=300)
    assert nxt.error is None and len(nxt.extraction.loops) == 4


def test_an_unreachable_scheduler_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("UNMIXER_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setenv("UNMIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", None)
    monkeypatch.setattr(ui.engine, "_JOBS", {})
    monkeypatch.setattr(app_cluster, "CONNECT_TIMEOUT_S", 1.0)
    data = _wav(synth_song(seed=301, n_bars=8, bpm=160))
    result = ui.engine.submit(Song("x", "x.wav", data), 5, 2).future.result(timeout=120)
    assert result.error.startswith("The Dask scheduler at tcp://127.0.0.1:9 (UNMIXER_SCHEDULER) "
                                   "does not answer")
    assert "\n" not in result.error


def test_without_the_variable_the_app_keeps_its_own_engine(monkeypatch):
    monkeypatch.delenv("UNMIXER_SCHEDULER", raising=False)
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", None)
    assert not app_cluster.enabled() and app_cluster.analysis_slots() is None
    assert ui.engine._extract_fn() is pipeline.extract_loops
