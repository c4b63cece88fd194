"""The short load and fault test (bench/load.py with the fake engine): three browser
sessions at once against 127.0.0.1, every fault but the madmom worker's (the real engine's:
tests/test_shared.py kills one), bounded in count and in time."""

from __future__ import annotations

import os
import time

import pytest

from bench.served import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
    # Not yet passing (issue 18 open): after the server restart some pages keep Streamlit's
    # "Failed to fetch dynamically imported module" or never show their songs' cards again
    # within the time bound. Run it with UNMIXER_LOAD_TEST=1 (and UNMIXER_LOAD_DEBUG=1 to
    # watch each session's rounds).
    pytest.mark.skipif(not os.environ.get("UNMIXER_LOAD_TEST"),
                       reason="the short load test does not pass yet: set UNMIXER_LOAD_TEST=1"),
]


def test_three_sessions_with_faults_lose_nothing(tmp_path):
    pytest.importorskip("playwright.async_api")
    from bench.load import Options, run

    started = time.time()
    report = run(Options(sessions=3, engine="fake", stage_s=1.0,
                         faults=("corrupt", "crash", "reload", "reconnect", "restart"),
                         timeout_s=150.0, workdir=tmp_path,
                         screenshots=tmp_path / "screens"))
    print(report.markdown())
    assert report.faults == {"corrupt": 1, "crash": 1, "reload": 1, "reconnect": 1,
                             "restart": 1}
    assert report.songs == 5 and report.good_songs == 3
    assert report.songs_lost == 0, [s.problems for s in report.per_session]
    assert report.choices_lost == 0, [s.problems for s in report.per_session]
    assert all(t is not None for t in report.seconds_to_loops)
    # the sessions behind the first analysis were told their place
    assert any(s.queue_lines for s in report.per_session)
    assert time.time() - started < 180
