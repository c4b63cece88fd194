"""The app shared on a network (issue 18): a restarted server, reconnects,
who may use it, and a short load test with injected faults.

The browser tests start real servers (``bench/served.py``) and drive Debian's Chromium;
the engine is bench/fake_engine.py's unless a test says otherwise.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.served import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")


# Worker faults: madmom runs on threads in the app's process since issue 15 (no worker
# processes left to kill); the workers that remain are Dask's, on a cluster
# (tests/test_cluster_app.py::test_a_dask_worker_killed_during_an_analysis_...).


# ------------------------------------------------------------- in the browser, served
def _wav_file(path: Path, seconds: float, freq: float) -> Path:
    import numpy as np
    import soundfile as sf

    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2
    sf.write(path, np.stack([x, x]).T.astype(np.float32), sr)
    return path


@pytest.fixture
def browser():
    pytest.importorskip("playwright.sync_api")
    from bench.served import chromium

    with chromium() as b:
        yield b


def _new_page(browser):
    page = browser.new_context(viewport={"width": 1300, "height": 1800}).new_page()
    page.set_default_timeout(120_000)  # a shared 2-core machine can be very busy
    pytest.importorskip("playwright.sync_api").expect.set_options(timeout=120_000)
    return page


def _mix(page, n_loops: int, checked: list[int], bpm: str | None = None) -> None:
    """Waits until the page shows n_loops tiles with exactly ``checked`` (0-based) in the
    mix (and the deck's tempo)."""
    from playwright.sync_api import expect

    boxes = page.get_by_label("In the mix")
    expect(boxes).to_have_count(n_loops, timeout=180_000)
    for i in range(n_loops):
        (expect(boxes.nth(i)).to_be_checked if i in checked
         else expect(boxes.nth(i)).not_to_be_checked)()
    if bpm is not None:
        expect(page.get_by_label("Tempo (BPM)", exact=True)).to_have_value(bpm)


def _choose(page, loop: int, bpm: str) -> None:
    from playwright.sync_api import expect

    page.get_by_text("In the mix", exact=True).nth(loop).click()
    expect(page.get_by_text("Your mix · 1 loop,")).to_be_visible()
    tempo = page.get_by_label("Tempo (BPM)", exact=True)
    tempo.fill(bpm)
    tempo.press("Enter")
    expect(page.locator(".deck-tempo")).to_have_text(f"{float(bpm):.1f} BPM · 4/4")


import contextlib


@contextlib.contextmanager
def _diagnosed(page, app, name: str):
    """On a failure: a screenshot (test-artifacts/failed_<name>.png) and the end of the
    server's log in the error."""
    try:
        yield
    except Exception as err:
        with contextlib.suppress(Exception):
            _shot(page, f"failed_{name}.png")
        raise AssertionError(f"{err}\n--- server log ---\n{app.log_tail(4000)}") from err


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


@needs_chromium
def test_a_server_restarted_while_a_song_is_analysed_gives_the_tab_its_songs_back(
        tmp_path, browser):
    """Kill -9 the server while a second song is analysed; start it again on the same port:
    the tab reconnects by itself, gets both songs back, the first from the cache with its
    loop in the mix and the deck's tempo, the second analysed again (no spinner forever)."""
    from playwright.sync_api import expect

    from bench.fake_engine import PRELUDE
    from bench.served import free_port, start

    gate = tmp_path / "gate"
    gate.touch()
    env = {"UNMIXER_CACHE_DIR": str(tmp_path / "cache"), "UNMIXER_TEST_GATE": str(gate)}
    port = free_port()
    first, second = _wav_file(tmp_path / "first.wav", 24, 220), _wav_file(tmp_path / "second.wav", 20, 330)
    app = start(tmp_path, env=env, prelude=PRELUDE, port=port)
    try:
        page = _new_page(browser)
        page.goto(app.url)
        page.locator("input[type=file]").set_input_files([str(first)])
        _mix(page, 5, [])
        _choose(page, 1, "110")
        gate.unlink()                                    # the next analysis is held
        page.locator("input[type=file]").set_input_files([str(second)])
        expect(page.get_by_text("Unmixing second")).to_be_visible()
        _shot(page, "restart_before.png")
        app.stop(signal.SIGKILL)
        gate.touch()
        app = start(tmp_path, env=env, prelude=PRELUDE, port=port)
        _mix(page, 10, [1], "110.0")
        expect(page.get_by_text("Unmixing")).to_have_count(0)
        expect(page.get_by_text("Your mix · 1 loop,")).to_be_visible()
        _shot(page, "restart_after.png")
    finally:
        app.stop()


@needs_chromium
def test_a_reload_gives_the_tab_its_songs_back_and_another_tab_does_not_see_them(
        tmp_path, browser):
    from playwright.sync_api import expect

    from bench.fake_engine import PRELUDE
    from bench.served import serve

    song = _wav_file(tmp_path / "groove.wav", 24, 220)
    with serve(tmp_path, env={"UNMIXER_CACHE_DIR": str(tmp_path / "cache")},
               prelude=PRELUDE) as app:
        page = _new_page(browser)
        with _diagnosed(page, app, "reload"):
            page.goto(app.url)
            page.locator("input[type=file]").set_input_files([str(song)])
            _mix(page, 5, [])
            _choose(page, 3, "100")
            page.reload()
            _mix(page, 5, [3], "100.0")
            other = _new_page(browser)                   # another user, or another tab
            other.goto(app.url)
            expect(other.get_by_text("Your loops will appear here")).to_be_visible()
            expect(other.get_by_label("In the mix")).to_have_count(0)


@needs_chromium
@pytest.mark.xfail(strict=False, reason=(
    "known bug (issue 18, BENCHMARKS.md 'Load and faults'): a loop ticked just as the "
    "connection comes back is sometimes lost (1 fresh-clone run in 3 on 2026-12-02; the "
    "same class as the load test's moved choices); not understood yet"))
def test_a_dropped_connection_loses_nothing(tmp_path, browser):
    """Every connection between the browser and the server is cut (a network blip); the
    page reconnects to the same session: songs, loops in the mix and tempo are there, and
    the deck still answers."""
    from playwright.sync_api import expect

    from bench.fake_engine import PRELUDE
    from bench.served import Proxy, serve

    song = _wav_file(tmp_path / "groove.wav", 24, 220)
    with serve(tmp_path, env={"UNMIXER_CACHE_DIR": str(tmp_path / "cache")},
               prelude=PRELUDE) as app:
        proxy = Proxy(int(app.url.rsplit(":", 1)[1]))
        try:
            page = _new_page(browser)
            page.goto(proxy.url, wait_until="domcontentloaded")
            page.locator("input[type=file]").set_input_files([str(song)])
            _mix(page, 5, [])
            _choose(page, 0, "125")
            assert proxy.cut() >= 1
            _mix(page, 5, [0], "125.0")
            page.get_by_text("In the mix", exact=True).nth(2).click()  # it answers after
            expect(page.get_by_text("Your mix · 2 loops,")).to_be_visible()
        finally:
            proxy.close()


@needs_chromium
def test_a_page_left_broken_by_a_restart_reloads_itself_and_gets_its_songs_back(
        tmp_path, browser):
    """Streamlit's page loads each kind of element's code when it first draws one and keeps
    a failed load failed: drawn as the server went down, the element shows "Failed to fetch
    dynamically imported module" for good. Here the server is killed and that line put on
    the page as Streamlit does; the page waits while the server is down, reloads itself
    once it answers, and shows its song with its loop in the mix."""
    from playwright.sync_api import expect

    from bench.fake_engine import PRELUDE
    from bench.served import free_port, start

    env = {"UNMIXER_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    song = _wav_file(tmp_path / "groove.wav", 24, 220)
    app = start(tmp_path, env=env, prelude=PRELUDE, port=port)
    try:
        page = _new_page(browser)
        with _diagnosed(page, app, "heal"):
            page.goto(app.url)
            page.locator("input[type=file]").set_input_files([str(song)])
            _mix(page, 5, [])
            _choose(page, 2, "100")
            app.stop(signal.SIGKILL)
            page.evaluate("""(url) => {
              window.__beforeTheReload = true;
              const box = document.createElement("div");
              box.setAttribute("data-testid", "stAlertContentError");
              box.textContent = "TypeError: Failed to fetch dynamically imported module: "
                + url + "/static/js/NumberInput.fUK7ifRa.js";
              document.querySelector("[data-testid=stMain]").appendChild(box);
            }""", f"http://127.0.0.1:{port}")
            time.sleep(4)  # the server is down: the page waits
            assert page.evaluate("window.__beforeTheReload === true")
            app = start(tmp_path, env=env, prelude=PRELUDE, port=port)
            page.wait_for_function("window.__beforeTheReload === undefined", timeout=120_000)
            _mix(page, 5, [2], "100.0")
            expect(page.get_by_text("Failed to fetch dynamically imported module")).to_have_count(0)
    finally:
        app.stop()


@needs_chromium
def test_an_upload_over_the_size_limit_gets_one_line_and_the_other_songs_stay(
        tmp_path, browser):
    """server.maxUploadSize (200 MB in .streamlit/config.toml; 1 MB here through its
    environment variable): a bigger file gets one line in the uploader, never reaches the
    server, and the song already there keeps its loops and its place in the mix. (The line
    is Streamlit's, on the file's red chip: the app never sees a refused file.)"""
    import numpy as np
    import soundfile as sf
    from playwright.sync_api import expect

    from bench.fake_engine import PRELUDE
    from bench.served import serve

    t = np.arange(10 * 22050) / 22050
    small = tmp_path / "small groove.wav"   # 10 s, mono, 22.05 kHz, 16 bits: 441 kB
    sf.write(small, (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0))
             .astype(np.float32), 22050, subtype="PCM_16")
    big = _wav_file(tmp_path / "big song.wav", 12, 330)  # 2.1 MB
    env = {"UNMIXER_CACHE_DIR": str(tmp_path / "cache"), "STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "1"}
    with serve(tmp_path, env=env, prelude=PRELUDE) as app:
        page = _new_page(browser)
        with _diagnosed(page, app, "upload_size"):
            page.goto(app.url)
            expect(page.get_by_text("1MB per file")).to_be_visible()
            page.locator("input[type=file]").set_input_files([str(small)])
            _mix(page, 5, [])
            _choose(page, 0, "100")
            page.locator("input[type=file]").set_input_files([str(big)])
            expect(page.get_by_text("File must be 1.0MB or smaller.")).to_have_count(1)
            expect(page.get_by_text("big song", exact=False)).to_have_count(1)  # its chip only
            _shot(page, "upload_too_big.png")
            _mix(page, 5, [0], "100.0")
            expect(page.get_by_text("Your mix · 1 loop,")).to_be_visible()
            expect(page.locator("[class*=st-key-song_]")).to_have_count(1)
    assert "big song" not in app.log_tail(20000)


# ------------------------------------------------------------------- who may use it
def test_xsrf_protection_and_cors_are_on_in_the_effective_config():
    """What `streamlit run` in the repository root reads (.streamlit/config.toml over the
    defaults): uploads need the page's XSRF token, and only the app's origin is allowed.
    And no full garbage collection after every script run: with five sessions' progress
    fragments rerunning every second, Streamlit's gc.collect(2) held the GIL for 81% of the
    server's time (py-spy) and no song was analysed within 15 minutes (bench/load.py)."""
    import subprocess
    import sys

    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('server.enableXsrfProtection'), "
            "config.get_option('server.enableCORS'), config.get_option('server.maxUploadSize'), "
            "config.get_option('runner.postScriptGC'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[:2] == ["True", "True"] and int(out[2]) <= 200
    assert out[3] == "False"


@needs_chromium
def test_a_shared_password_comes_before_any_page_and_any_upload(tmp_path, browser):
    """A link straight to a page asks for the password first: no navigation, no uploader;
    a wrong one says so; the right one opens the page. An upload without the page's XSRF
    token is refused by the server (403)."""
    import urllib.error
    import urllib.request

    from playwright.sync_api import expect

    from bench.served import serve

    env = {"UNMIXER_CACHE_DIR": str(tmp_path / "cache"), "UNMIXER_PASSWORD": "bar lines"}
    with serve(tmp_path, env=env) as app:
        page = _new_page(browser)
        page.goto(app.url + "/drum_splitter")
        password = page.get_by_label("Password", exact=True)
        expect(password).to_be_visible()
        expect(page.locator("[data-testid=stSidebarNavLink]")).to_have_count(0)
        expect(page.locator("input[type=file]")).to_have_count(0)
        _shot(page, "password_asked.png")
        password.fill("downbeats")
        page.get_by_role("button", name="Enter").click()
        expect(page.get_by_text("Wrong password.")).to_be_visible()
        expect(page.locator("input[type=file]")).to_have_count(0)
        page.get_by_label("Password", exact=True).fill("bar lines")
        page.get_by_role("button", name="Enter").click()
        expect(page.locator("h1").first).to_have_text("Drum Splitter")
        expect(page.locator("[data-testid=stSidebarNavLink]")).to_have_count(3)
        request = urllib.request.Request(f"{app.url}/_stcore/upload_file/some-session/some-file",
                                         data=b"--x--", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403


_FIGURES_WHILE_PANDAS_LOADS = """
import sys, threading
import numpy as np
from bench.fake_engine import fake_extraction
from ui.loop_map import loop_map_figure
ext = fake_extraction(np.zeros((2, 44100 * 20), np.float32), 5, 2, 0)
errors, start = [], threading.Barrier(4)
def first_import():
    start.wait()
    import pandas
def figures():
    start.wait()
    for _ in range(20):
        try:
            loop_map_figure(ext)
        except Exception as err:
            errors.append(repr(err))
            return
threads = [threading.Thread(target=first_import)] + [threading.Thread(target=figures)
                                                     for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(errors), errors[:1])
"""


def test_loop_maps_drawn_while_another_thread_first_imports_pandas():
    """Sessions reconnecting at once to a restarted server run their pages in threads of a
    fresh process: one imported pandas (Streamlit does on first use) while another drew a
    loop map, and plotly's validators took the half-imported module ("partially initialized
    module 'pandas' has no attribute 'Series'": that page stopped before its songs' cards).
    A fresh interpreter does the same, three threads drawing while a fourth imports pandas
    for the first time."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FIGURES_WHILE_PANDAS_LOADS], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("0 "), out.stdout
