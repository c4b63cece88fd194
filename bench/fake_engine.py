"""A fast stand-in for :func:`unmixer.loops.pipeline.extract_loops`, for the app's tests and
the short load test: it returns a real ``Extraction`` (so the disk cache, the deck, the mix
and the downloads all run for real) of a song at 120 BPM in 4/4, in a chosen time.

Loop k starts at bar 2k (modulo the song's length). Like the engine, it hands a quick first
result to ``preview`` during the decomposition: the rough loop k starts one bar later, at
half the level (so it sounds different).

Served by the app (``bench/served.py``'s prelude :data:`PRELUDE`) it reads:

``UNMIXER_FAKE_STAGE_S``  seconds each of the four stages after decoding takes (default 0)
``UNMIXER_TEST_GATE``     a path: the decomposition waits until it exists (at most 5 min)

and a song lasting :data:`FAULT_DURATION_S` makes it raise a RuntimeError (a bug in the
engine, as the app sees it).
"""

from __future__ import annotations

import os
import time

import numpy as np

from unmixer.loops.pipeline import STAGES, Extraction, LoopResult

SR = 44100
BPM = 120.0
BAR = 2 * SR                    # one 4/4 bar at 120 BPM, samples
LABELS = ("drums", "bass", "chords", "lead", "vocal-like")
AUTO_COUNT = 5
"""The loop count the fake gives for ``n_loops="auto"``."""
AUTO_BARS = 2
"""The loop length (bars) the fake gives for ``loop_bars="auto"``."""
FAULT_DURATION_S = 13.0
"""A song of this duration (s) makes :func:`extract_loops` raise RuntimeError."""

PRELUDE = """
import ui.engine
from bench import fake_engine
ui.engine.EXTRACT_LOOPS = fake_engine.extract_loops
"""
"""Python for ``bench.served.start(prelude=...)``: the served app uses the fake engine."""


def extract_loops(audio, n_loops=5, *, loop_bars=2, seed=0, progress=None, preview=None,
                  **_):
    """Loops of ``audio`` (2, samples) at 44.1 kHz as the engine returns them (see module)."""
    n_loops = AUTO_COUNT if n_loops == "auto" else int(n_loops)
    auto_bars = loop_bars == "auto"
    loop_bars = AUTO_BARS if auto_bars else int(loop_bars)
    if abs(audio.shape[-1] / SR - FAULT_DURATION_S) < 0.01:
        raise RuntimeError("injected engine fault")
    stage_s = float(os.environ.get("UNMIXER_FAKE_STAGE_S", "0") or 0)
    gate = os.environ.get("UNMIXER_TEST_GATE")
    for stage in STAGES[1:]:
        if progress:
            progress(stage, 0.0)
        if stage_s:
            time.sleep(stage_s)
        if stage == "decomposition":
            if gate:
                deadline = time.time() + 300
                while not os.path.exists(gate) and time.time() < deadline:
                    time.sleep(0.1)
            if preview:
                preview(fake_extraction(audio, n_loops, loop_bars, seed, rough=True,
                                        auto_bars=auto_bars))
        if progress:
            progress(stage, 1.0)
    return fake_extraction(audio, n_loops, loop_bars, seed, auto_bars=auto_bars)


def fake_extraction(audio, n_loops, loop_bars, seed, rough=False, auto_bars=False) -> Extraction:
    """The fake's result (or, with ``rough``, its quick first result); with ``auto_bars`` its
    loop length was "chosen" and its grid "corrected" (half a beat)."""
    n_bars = audio.shape[-1] // BAR
    activations = np.random.default_rng(seed + rough).random((n_loops, n_bars)).astype(np.float32)
    starts = [(2 * k + rough) % (n_bars - loop_bars + 1) for k in range(n_loops)]
    level = 0.5 if rough else 1.0
    loops = [LoopResult(k + 1, LABELS[k % 5], level * audio[:, s * BAR:(s + loop_bars) * BAR],
                        np.zeros((2, 0), np.float32), activations[k], s, float(n_loops - k))
             for k, s in enumerate(starts)]
    return Extraction(SR, audio.shape[-1] / SR, BPM, 4, np.arange(4 * n_bars) * 0.5,
                      np.arange(n_bars + 1) * 2.0, loop_bars, loops,
                      {"first_result": 0.1} if rough else {}, auto_bars, False,
                      "bar lines moved half a beat" if auto_bars else "as tracked")
