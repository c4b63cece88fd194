"""The Unmixer page's logic, driven by Streamlit's AppTest (no browser).

The engine is replaced by a fast fake that returns a real ``Extraction`` (so the disk cache,
the deck, the mix and the downloads all run for real); audio decoding is real, so a corrupt
upload fails as it would in the app. The real engine runs in ``test_browser.py``.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

import ui.engine
import ui.songs
from bench import fake_engine as fake
from unmixer.loops.pipeline import STAGES, Extraction

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
SR = fake.SR
BAR = fake.BAR                 # one 4/4 bar at 120 BPM, samples
CALLS: list[tuple[int, int]] = []
REQUESTED: list = []  # the n_loops the page asked for ("auto" or a count)
FAKE_AUTO_COUNT = fake.AUTO_COUNT
FAKE_AUTO_BARS = fake.AUTO_BARS


def fake_extract_loops(audio, n_loops=5, **kwargs):
    """bench.fake_engine's loops (120 BPM, 4/4, loop k at bar 2k, a rough first result),
    with each call recorded in CALLS and REQUESTED."""
    REQUESTED.append(n_loops)
    CALLS.append((FAKE_AUTO_COUNT if n_loops == "auto" else int(n_loops),
                  FAKE_AUTO_BARS if kwargs.get("loop_bars", 2) == "auto"
                  else int(kwargs.get("loop_bars", 2))))
    return fake.extract_loops(audio, n_loops, **kwargs)


@pytest.fixture
def held(monkeypatch):
    """The fake engine, held halfway through the decomposition until the yielded event is
    set (at the latest when the test ends), and a page that shows running analyses at once."""
    import threading

    release = threading.Event()

    def extract(audio, n_loops=5, *, progress=None, **kw):
        def at_stage(stage, fraction):
            progress(stage, fraction)
            if stage == "decomposition" and fraction == 0.0:
                progress(stage, 0.5)
                release.wait(30)
        return fake_extract_loops(audio, n_loops, progress=at_stage, **kw)

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", extract)
    monkeypatch.setattr(ui.songs, "QUICK_WAIT_S", 0.2)
    yield release
    release.set()


def _wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(seconds * SR)) / SR
    tone = (0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone, tone]).T.astype(np.float32), SR, format="WAV")
    return buf.getvalue()


GOOD = _wav(24.0, 220.0)
OTHER = _wav(20.0, 330.0)
CORRUPT = b"ID3 this is not an mp3 " * 200


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch, tmp_path):
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", fake_extract_loops)
    monkeypatch.setattr(ui.engine, "_JOBS", {})  # no finished job from another test
    monkeypatch.setenv("UNMIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNMIXER_PASSWORD", raising=False)  # no shared password (the default)
    # the page waits this long for an analysis before it shows it as running; the fake one
    # takes well under a second, but a loaded CI machine must not turn results into spinners
    # (tests of the running state set a short wait themselves)
    monkeypatch.setattr(ui.songs, "QUICK_WAIT_S", 60.0)
    CALLS.clear()
    yield


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _checkboxes(at: AppTest, song_id: str | None = None):
    return [c for c in at.checkbox if c.key.startswith("w:in_mix:")
            and (song_id is None or c.key.startswith(f"w:in_mix:{song_id}"))]


def _has(elements, predicate) -> bool:
    return any(predicate(e.value) for e in elements)


def _add_upload(at: AppTest, name: str, data: bytes, mime: str) -> AppTest:
    """Add a file beside those already in the uploader, keeping their file ids, as a browser
    does (AppTest's set_value/upload would give every file a new id)."""
    uploader = at.file_uploader[0]
    kept = [(f.file_id, f.name, f.getvalue(), f.type)
            for f in (at.session_state["uploader"] or [])]
    uploader.set_value((name, data, mime))
    uploader._files = kept + uploader._files
    return at


def _deck_data(at: AppTest) -> dict:
    """What the live deck gets, its clips (from the hidden clip store) put back in."""
    parts = {e.key: json.loads(e.proto.json) for e in at.get("bidi_component")}
    deck, clips = parts["deck"], parts["deck_clips"]["clips"]
    assert sorted(clips) == sorted([loop["clipKey"] for loop in deck["loops"]]
                                   + [loop["picKey"] for loop in deck["loops"]])
    for loop in deck["loops"]:
        loop["wav"] = clips[loop["clipKey"]]
        loop["picture"] = clips[loop["picKey"]]  # a data: URI of a PNG
    return deck


def _song_ids(at: AppTest) -> list[str]:
    return list(at.session_state["songs"].keys())


def test_no_legacy_pages_folder_beside_the_entrypoint():
    """Streamlit serves a ``pages/`` folder beside the entrypoint as a legacy multipage app
    until a session runs st.navigation: a link opened first on a fresh server would show
    file names instead of the app's navigation (tests/test_browser.py shows it in Chromium)."""
    assert not (Path(APP).parent / "pages").exists()


def test_empty_page_offers_upload_and_demo():
    at = _app()
    assert at.title[0].value == "Unmixer"
    assert at.file_uploader[0].accept_multiple_files
    assert any(b.label == "Try the demo song" for b in at.button)
    assert any("Kevin MacLeod" in c.value and "CC BY 3.0" in c.value for c in at.caption)
    assert "Your loops will appear here" in at.info[0].value
    # no deck yet; the one component is the tab's id (ui.sessions), which draws nothing
    assert [c.key for c in at.get("bidi_component")] == ["tab"]


def test_demo_button_works_without_upload():
    at = _app()
    next(b for b in at.button if b.label == "Try the demo song").click().run()
    assert not at.exception and not at.error
    (song,) = at.session_state["songs"].values()
    assert song.source == "demo" and song.title == "Vibe Ace (demo)"
    assert len(_checkboxes(at)) == 5
    assert _has(at.markdown, lambda v: "**120.0 BPM** · **4/4**" in v)  # tempo and meter
    deck = _deck_data(at)
    assert deck["bpm"] == 120.0 and deck["meter"] == 4 and len(deck["loops"]) == 5


def test_upload_shows_named_stages_then_tempo_meter_map_and_tiles(held):
    release = held
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert not at.exception and not at.error
    (status,) = at.status                      # the analysis runs in the background
    assert status.label == "Unmixing groove: decomposing the cube (Tucker)…"
    assert status.state == "running"                   # a spinner, not a tick
    lines = [m.value for m in status.markdown]
    assert lines == [":white_check_mark: Decoding the audio",
                     ":white_check_mark: Finding the beats and downbeats",
                     ":white_check_mark: Stacking the bars into a spectral cube",
                     ":hourglass_flowing_sand: Decomposing the cube (Tucker) (50%)"]
    assert not _checkboxes(at)
    release.set()
    (job,) = ui.engine._JOBS.values()
    job.future.result(timeout=30)
    at.run()
    assert not at.exception and not at.error and not at.status
    assert _has(at.markdown, lambda v: "**120.0 BPM** · **4/4** · 12 bars" in v)
    assert len(at.get("plotly_chart")) == 1
    assert len(_checkboxes(at)) == 5
    assert len([s for s in at.slider if s.key.startswith("w:gain:")]) == 5
    names = [d.label for d in at.get("download_button")]
    assert names.count("At the song's tempo (120 BPM)") == 5
    assert "Download all 5 loops (ZIP)" in names


def test_loop_count_and_length_per_song():
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    sid = _song_ids(at)[0]
    at.selectbox(key=f"w:n_loops:{sid}").set_value(7).run()
    assert CALLS[-1] == (7, 2) and len(_checkboxes(at)) == 7
    at.button_group(key=f"w:loop_bars:{sid}").set_value(1).run()
    assert not at.exception
    assert CALLS[-1] == (7, 1) and len(_checkboxes(at)) == 7
    assert at.session_state["results"][sid].extraction.loops[0].clip.shape == (2, BAR)
    at.button_group(key=f"w:loop_bars:{sid}").set_value(4).run()
    assert CALLS[-1] == (7, 4) and at.session_state["results"][sid].extraction.loops[0].clip.shape == (2, 4 * BAR)
    assert _has(at.markdown, lambda v: "7 loops of 4 bars" in v and "(auto)" not in v)
    # Back to 5 loops of an automatic length: that analysis is kept, the engine is not called again.
    n_calls = len(CALLS)
    at.selectbox(key=f"w:n_loops:{sid}").set_value(5)
    at.button_group(key=f"w:loop_bars:{sid}").set_value("auto").run()
    assert len(CALLS) == n_calls and len(_checkboxes(at)) == 5


def test_a_new_session_gets_the_analysis_from_the_disk_cache(monkeypatch):
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert CALLS == [(5, 2)]
    monkeypatch.setattr(ui.engine, "_JOBS", {})        # as after a server restart
    other = _app()                                      # another user, same song
    other.file_uploader[0].set_value(("my copy.wav", GOOD, "audio/wav")).run()
    assert CALLS == [(5, 2)] and len(_checkboxes(other)) == 5
    (result,) = other.session_state["results"].values()
    assert result.from_cache
    assert _has(other.markdown, lambda v: "analysed earlier (from the cache)" in v)


def test_corrupt_upload_beside_a_good_one_keeps_the_good_loops_and_choices():
    at = _app()
    at.file_uploader[0].set_value([("good.wav", GOOD, "audio/wav")]).run()
    boxes = _checkboxes(at)
    boxes[0].check()
    boxes[2].check()
    at.run()
    _add_upload(at, "broken.mp3", CORRUPT, "audio/mpeg").run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("broken.mp3 is not a readable audio file")
    assert "\n" not in error.value
    boxes = _checkboxes(at)
    assert len(boxes) == 5 and [b.value for b in boxes] == [True, False, True, False, False]
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 2 loops"))
    assert len(_deck_data(at)["loops"]) == 5


def test_mix_follows_the_selection_the_tempo_and_the_length():
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    a, b = _song_ids(at)
    assert _has(at.caption, lambda v: "The mix is empty" in v)
    _checkboxes(at, a)[0].check()
    _checkboxes(at, b)[1].check()
    at.number_input(key="w:deck_bpm").set_value(100.0)
    at.selectbox(key="w:deck_bars").set_value(4).run()
    assert not at.exception
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 2 loops, 4 bars at 100.0 BPM"))
    deck = _deck_data(at)
    assert deck["bpm"] == 100.0 and len(deck["loops"]) == 10
    assert sorted(deck["selection"]) == sorted([f"{a}-5xauto:1", f"{b}-5xauto:2"])
    assert deck["barSeconds"] == pytest.approx(2.4, abs=1e-4)   # 4 beats at 100 BPM
    # Each deck clip is 2 bars at 100 BPM: 4.8 s, as a mono 22.05 kHz WAV.
    clip = deck["loops"][0]
    assert clip["seconds"] == pytest.approx(4.8, abs=1e-4)
    import base64

    audio, sr = sf.read(io.BytesIO(base64.b64decode(clip["wav"])))
    assert sr == 22050 and audio.ndim == 1 and len(audio) == int(4.8 * 22050)
    names = [d.label for d in at.get("download_button")]
    assert names.count("At the deck's tempo (100 BPM)") == 10


def test_a_song_removed_from_the_uploader_leaves_and_others_stay():
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    assert len(_song_ids(at)) == 2
    at.file_uploader[0].set_value([("b.wav", OTHER, "audio/wav")]).run()
    # set_value gives new file ids: the uploader now holds one file; both were seen, so
    # "b" stays (re-added content is the same song) and "a" is gone.
    titles = [s.title for s in at.session_state["songs"].values()]
    assert "a" not in titles and "b" in titles


def test_remove_button_forgets_the_song_and_its_choices():
    at = _app()
    next(b for b in at.button if b.label == "Try the demo song").click().run()
    sid = _song_ids(at)[0]
    _checkboxes(at)[0].check().run()
    at.button(key=f"remove_{sid}").click().run()
    assert not at.exception
    assert _song_ids(at) == [] and not _checkboxes(at)
    assert not [k for k in at.session_state.keys() if sid in str(k)]


def test_deck_selection_is_applied_to_the_checkboxes():
    def script():
        import streamlit as st

        from ui import state

        state.init()
        if "primed" not in st.session_state:
            st.session_state["primed"] = True
            st.session_state["in_mix:s-5xauto:1"] = True
            st.session_state["in_mix:s-5xauto:2"] = True
            state.set_selection(["s-5xauto:2", "s-5xauto:3"], seq=4)
        st.write(sorted(state.selection()), st.session_state["deck_seq"])

    at = AppTest.from_function(script)
    at.run()
    assert not at.exception
    assert at.session_state["in_mix:s-5xauto:1"] is False
    assert at.session_state["in_mix:s-5xauto:3"] is True
    assert at.session_state["deck_seq"] == 4


def test_a_tempo_too_far_for_one_song_leaves_only_that_song_out(monkeypatch):
    import unmixer.mashup.stretch

    monkeypatch.setattr(unmixer.mashup.stretch, "MAX_STRETCH", 1.5)  # 120 -> 70 BPM is x1.7
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    _checkboxes(at)[0].check().run()
    at.number_input(key="w:deck_bpm").set_value(70.0).run()
    assert not at.exception
    (warning,) = at.warning
    assert warning.value.startswith("groove is left out of the deck: The tempo change is too large")
    assert _deck_data(at)["loops"] == []
    assert _has(at.caption, lambda v: "The mix is empty" in v)
    assert len(_checkboxes(at)) == 5 and _checkboxes(at)[0].value   # the choice is kept
    assert not [d for d in at.get("download_button") if "deck's tempo" in d.label]


def test_the_same_analysis_is_one_background_job_with_named_stages():
    from ui.state import Song, song_id

    song = Song(song_id(GOOD), "groove.wav", GOOD)
    first = ui.engine.submit(song, 5, 2)
    assert ui.engine.submit(song, 5, 2) is first          # a rerun re-attaches to it
    result = first.future.result(timeout=60)
    assert result.error is None and len(result.extraction.loops) == 5
    assert first.stages == list(STAGES) and first.fraction == 1.0
    assert CALLS == [(5, 2)]
    other = ui.engine.submit(song, 6, 2)                   # other parameters, other job
    assert other is not first and other.future.result(timeout=60).params == (6, 2)


def test_toggling_loops_does_not_resend_the_clips():
    def store(at):
        (clips,) = [e for e in at.get("bidi_component") if e.key == "deck_clips"]
        return clips.proto.json

    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    before = store(at)
    _checkboxes(at)[3].check()
    at.slider(key=[s.key for s in at.slider if s.key.startswith("w:gain:")][3]).set_value(-6.0)
    at.run()
    deck = _deck_data(at)
    assert deck["selection"] == [deck["loops"][3]["id"]] and deck["loops"][3]["gainDb"] == -6.0
    assert store(at) == before  # same message: Streamlit sends a reference to it, not 1 MB


def test_choices_survive_a_visit_to_another_page():
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    sid = _song_ids(at)[0]
    _checkboxes(at)[1].check()
    at.selectbox(key="w:deck_bars").set_value(16)
    at.number_input(key="w:deck_bpm").set_value(110.0).run()
    n_calls = len(CALLS)
    at.switch_page("app_pages/nmf_lab.py").run()
    assert not at.exception
    at.switch_page("app_pages/unmixer_page.py").run()
    assert not at.exception
    assert _song_ids(at) == [sid] and len(CALLS) == n_calls
    assert [b.value for b in _checkboxes(at)] == [False, True, False, False, False]
    assert at.number_input(key="w:deck_bpm").value == 110.0
    assert at.selectbox(key="w:deck_bars").value == 16


def _app_held_at_the_rough_loops(monkeypatch, edit=lambda rough: rough):
    """An app with one uploaded song whose analysis stops after its rough loops (passed
    through ``edit``) until the returned event is set; returns (AppTest, event)."""
    import threading

    previewed, release = threading.Event(), threading.Event()

    def refining_extract(audio, n_loops=5, *, preview=None, **kw):
        def held(rough):
            preview(edit(rough))
            previewed.set()
            release.wait(30)
        return fake_extract_loops(audio, n_loops, preview=held, **kw)

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", refining_extract)
    monkeypatch.setattr(ui.songs, "QUICK_WAIT_S", 0.2)
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert previewed.wait(30)
    at.run()
    return at, release


@pytest.mark.parametrize("changed_by_the_person", [False, True])
def test_the_deck_tempo_follows_the_refined_loops_unless_changed(monkeypatch,
                                                                  changed_by_the_person):
    """The deck's tempo starts at the first song's rough loops' tempo (their quick beat grid:
    120.2 BPM here) and follows the refined loops' (120.0), in the Tempo box too; a tempo the
    person typed meanwhile stays."""
    import dataclasses

    at, release = _app_held_at_the_rough_loops(monkeypatch, lambda rough: dataclasses.replace(rough, bpm=120.2))
    tempo = at.number_input(key="w:deck_bpm")
    assert tempo.value == pytest.approx(120.2)
    if changed_by_the_person:
        tempo.set_value(128.0).run()
    release.set()
    (job,) = ui.engine._JOBS.values()
    job.future.result(timeout=30)
    at.run()
    at.run()
    assert not at.exception and not at.error
    want = 128.0 if changed_by_the_person else 120.0
    assert at.number_input(key="w:deck_bpm").value == pytest.approx(want)
    assert at.session_state["deck_bpm"] == pytest.approx(want)


def test_rough_loops_play_first_then_the_refined_ones_replace_them(monkeypatch, tmp_path):
    """Quick first result: the rough loops show (marked "refining…") and can be put in the
    mix; the refined loops then replace them under the same loop ids, so the choice stays;
    only the refined result reaches the disk cache."""
    import base64
    import threading

    import ui.songs
    from ui.songs import REFINING_BADGE
    from unmixer.cache import ResultCache

    previewed, release = threading.Event(), threading.Event()

    def refining_extract(audio, n_loops=5, *, preview=None, **kw):
        def held(rough):            # the engine refines for a while after the rough loops
            preview(rough)
            previewed.set()
            release.wait(30)
        return fake_extract_loops(audio, n_loops, preview=held, **kw)

    def deck_clip(deck, index):
        (loop,) = [lp for lp in deck["loops"] if lp["index"] == index]
        return sf.read(io.BytesIO(base64.b64decode(loop["wav"])))[0]

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", refining_extract)
    monkeypatch.setattr(ui.songs, "QUICK_WAIT_S", 0.2)
    cache = ResultCache(tmp_path / "cache")
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert previewed.wait(30)
    at.run()
    assert not at.exception and not at.error
    (sid,) = _song_ids(at)
    (job,) = ui.engine._JOBS.values()
    assert not job.future.done()

    # The rough loops, marked as such on the card, in the status box and on the deck.
    (status,) = at.status
    assert status.label == "Refining the loops of groove: decomposing the cube (Tucker)…"
    assert status.state == "running"
    assert status.markdown[0].value.startswith(f"{REFINING_BADGE} Rough loops ready after")
    assert _has(at.markdown, lambda v: "**120.0 BPM**" in v and v.endswith(REFINING_BADGE))
    rough = at.session_state["results"][sid]
    assert rough.refining and rough.extraction.loops[1].chosen_bar == 3   # the rough one
    assert len(_checkboxes(at)) == 5
    zip_button = next(d for d in at.get("download_button") if "(ZIP)" in d.label)
    assert zip_button.proto.disabled                                  # final loops only
    deck = _deck_data(at)
    assert len(deck["loops"]) == 5 and all(lp["refining"] for lp in deck["loops"])
    assert deck["loops"][1]["clipKey"] == f"{sid}-5xauto~rough:2@120.00"
    assert cache.entries() == []                          # the rough result is not cached

    # Loop 2 into the mix, with a gain, while the song is being refined.
    _checkboxes(at)[1].check()
    at.slider(key=f"w:gain:{sid}-5xauto:2").set_value(-6.0).run()
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 1 loop"))
    rough_clip = deck_clip(_deck_data(at), 2)

    release.set()
    job.future.result(timeout=30)
    at.run()
    assert not at.exception and not at.error and not at.status
    final = at.session_state["results"][sid]
    assert not final.refining and final.extraction.loops[1].chosen_bar == 2
    assert not _has(at.markdown, lambda v: REFINING_BADGE in v)
    assert _has(at.markdown, lambda v: "analysed in" in v)
    assert [b.value for b in _checkboxes(at)] == [False, True, False, False, False]
    assert at.slider(key=f"w:gain:{sid}-5xauto:2").value == -6.0
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 1 loop"))
    deck = _deck_data(at)
    assert deck["selection"] == [f"{sid}-5xauto:2"] and deck["loops"][1]["gainDb"] == -6.0
    assert not any(lp["refining"] for lp in deck["loops"])
    assert deck["loops"][1]["clipKey"] == f"{sid}-5xauto:2@120.00"
    final_clip = deck_clip(deck, 2)
    assert final_clip.shape == rough_clip.shape
    assert np.abs(final_clip - rough_clip).max() > 0.05    # the deck got the refined sound
    zip_button = next(d for d in at.get("download_button") if "(ZIP)" in d.label)
    assert not zip_button.proto.disabled

    # The disk cache holds the final result, and only it.
    ((entry, _used, _size),) = cache.entries()
    cached = Extraction.load(entry)
    for mine, kept in zip(final.extraction.loops, cached.loops):
        np.testing.assert_array_equal(kept.clip, mine.clip)
    assert not np.array_equal(cached.loops[1].clip, job.rough.extraction.loops[1].clip)


def test_a_tick_whose_write_back_is_cut_short_by_the_next_rerun_stays(monkeypatch):
    """Issue 18: Streamlit looks for a newer rerun request on every session-state access,
    in a widget's callback too; one already waiting (a second click, a reconnect, the tab
    id) stops the callback there, and Streamlit takes it for a callback that asked for a
    rerun. The "In the mix" write-back (ui.state.kept) then never wrote the choice, and the
    next run saw the box unchanged: the box ticked, the loop not in the mix. Here a second
    full rerun request is queued as the callbacks of the tick's run start."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData
    from streamlit.runtime.state.session_state import SessionState

    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert len(_checkboxes(at)) == 5
    original, queued = SessionState._call_callbacks, []

    def call_callbacks(self, **kwargs):
        if not queued:                      # once: the run of the tick
            queued.append(True)
            get_script_run_ctx().script_requests.request_rerun(
                RerunData(widget_states=self._current_interaction_widget_states))
        return original(self, **kwargs)

    monkeypatch.setattr(SessionState, "_call_callbacks", call_callbacks)
    _checkboxes(at)[2].check().run()
    assert queued and not at.exception
    sid = _song_ids(at)[0]
    assert [b.value for b in _checkboxes(at)] == [False, False, True, False, False]
    assert at.session_state[f"in_mix:{sid}-5xauto:3"] is True
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 1 loop"))
    assert _deck_data(at)["selection"] == [f"{sid}-5xauto:3"]


def _widget_paths(at: AppTest, prefix: str) -> dict[str, tuple[int, ...]]:
    """Widget key -> its delta path (the indices from the page's root down to it, as the
    browser places it), for each widget whose key starts with ``prefix``."""
    found: dict[str, tuple[int, ...]] = {}

    def walk(node, path: tuple[int, ...]) -> None:
        for index, child in getattr(node, "children", {}).items():
            key = getattr(child, "key", None)
            if isinstance(key, str) and key.startswith(prefix):
                found[key] = path + (index,)
            walk(child, path + (index,))

    walk(at._tree, ())
    return found


def test_the_loop_tiles_keep_their_place_when_the_refined_loops_replace_the_rough_ones(
        monkeypatch):
    """Issue 18: the browser draws a run's elements one by one over the last run's, each at
    its delta path, and clears what is left only when the run ends. While the rough loops
    showed, the card held the progress box above them, so the refined loops' tiles came one
    place higher: over the loop map, with the rough tiles still below them until the run
    ended. A click in that window hit a stale copy ("In the mix" of loop 3 by place was
    loop 2's), and the page's boxes and the mix could disagree. The tiles, their widgets and
    the loop map keep their paths from the rough loops to the refined ones."""
    at, release = _app_held_at_the_rough_loops(monkeypatch)
    assert at.session_state["results"][_song_ids(at)[0]].refining and at.status
    rough = _widget_paths(at, "w:")
    (sid,) = _song_ids(at)
    rough["map"] = _widget_paths(at, f"map_{sid}")[f"map_{sid}"]
    assert sum(k.startswith("w:in_mix:") for k in rough) == 5

    release.set()
    (job,) = ui.engine._JOBS.values()
    job.future.result(timeout=30)
    at.run()
    assert not at.exception and not at.status
    assert not at.session_state["results"][sid].refining
    final = _widget_paths(at, "w:")
    final["map"] = _widget_paths(at, f"map_{sid}")[f"map_{sid}"]
    assert final == rough


def test_a_drums_loop_opens_in_the_drum_splitter():
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    buttons = [b for b in at.button if b.key and b.key.startswith("split_")]
    assert [b.label for b in buttons] == ["Split its drums"]  # only the loop labelled drums
    buttons[0].click().run()
    assert not at.exception
    name, data = at.session_state["drums_source"]
    assert name == "groove - loop 1.wav"
    clip, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SR and clip.shape == (2 * BAR, 2)  # the 2-bar clip of loop 1
    assert [h.value for h in at.subheader][:1] == ["groove - loop 1.wav"]  # the Drum Splitter ran on it


def test_a_bad_file_says_so_at_once_while_another_song_is_analysed(held):
    at = _app()
    at.file_uploader[0].set_value(("good.wav", GOOD, "audio/wav")).run()
    _add_upload(at, "broken.mp3", CORRUPT, "audio/mpeg").run()
    deadline = time.time() + 10  # the page redraws on its own; here: rerun until the line shows
    while not at.error and time.time() < deadline:
        time.sleep(0.1)
        at.run()
    assert not at.exception
    (error,) = at.error                 # the bad file's line is there...
    assert error.value.startswith("broken.mp3 is not a readable audio file")
    good = [j for j in ui.engine._JOBS.values() if not j.future.done()]
    assert len(good) == 1 and "decomposition" in good[0].stages  # ...while good.wav is held


def test_auto_loop_count_is_offered_first_and_the_facts_say_it():
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    sid = _song_ids(at)[0]
    box = at.selectbox(key=f"w:n_loops:{sid}")
    assert box.options[0] == "Auto" and box.value == 5   # 5 by default (auto measured no better)
    assert REQUESTED[-1] == 5
    box.set_value("auto").run()
    assert REQUESTED[-1] == "auto"                      # the engine chose the count
    assert _has(at.markdown, lambda v: f"{FAKE_AUTO_COUNT} loops (auto) of 2 bars (auto)" in v)
    assert len(_checkboxes(at)) == FAKE_AUTO_COUNT
    at.selectbox(key=f"w:n_loops:{sid}").set_value(7).run()  # a count of one's own: no "(auto)"
    assert REQUESTED[-1] == 7 and len(_checkboxes(at)) == 7
    assert _has(at.markdown, lambda v: "7 loops of 2 bars (auto)" in v)
    assert not _has(at.markdown, lambda v: "loops (auto)" in v)


def test_the_loop_length_is_chosen_by_default_and_the_card_says_it_and_the_grid():
    """Auto is the first and default loop length; the facts say the length the song got
    and how its bar grid was corrected; forcing a length shows no "(auto)"."""
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    sid = _song_ids(at)[0]
    control = at.button_group(key=f"w:loop_bars:{sid}")
    assert control.options[0] == "Auto" and control.value == "auto"
    assert REQUESTED and CALLS[-1] == (5, FAKE_AUTO_BARS)
    assert _has(at.markdown, lambda v: f"5 loops of {FAKE_AUTO_BARS} bars (auto)" in v)
    assert _has(at.markdown, lambda v: "grid corrected: bar lines moved half a beat" in v)
    control.set_value(1).run()
    assert CALLS[-1] == (5, 1)
    assert _has(at.markdown, lambda v: "5 loops of 1 bar" in v and "(auto)" not in v and "grid corrected" not in v)


# ------------------------------------------------------------------ hostile input (issue 18)
def _titles(at: AppTest) -> list[str]:
    return [s.title for s in at.session_state["songs"].values()]


def test_a_name_with_a_path_keeps_only_its_last_part_and_downloads_stay_safe():
    import re
    import zipfile

    from unmixer import mashup

    at = _app()
    at.file_uploader[0].set_value(("../../x.wav", GOOD, "audio/wav")).run()
    assert not at.exception and _titles(at) == ["x"]
    (song,) = at.session_state["songs"].values()
    assert song.name == "x.wav"
    ext = at.session_state["results"][song.id].extraction
    archive = zipfile.ZipFile(io.BytesIO(mashup.loops_archive(song.title, ext)))
    for member in archive.namelist():   # a ZIP that unpacks where it is opened, nowhere else
        assert re.fullmatch(r"([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+", member), member
        assert ".." not in member.split("/")
    assert mashup.loop_filename(song.title, 1, "drums", 120.0) == "x_loop01_drums_120bpm.wav"


def test_a_name_that_is_not_utf8_is_shown_with_a_replacement_character():
    """Streamlit's upload route decodes names itself (tests/test_browser.py uploads a file
    whose name is not UTF-8); a name from anywhere else (bytes, or a str holding the
    surrogates of undecodable bytes) must not break the page either: Streamlit refuses to
    send such a str (UnicodeEncodeError, and the page stops there)."""
    def script():
        import streamlit as st

        from tests.test_app import GOOD
        from ui import songs, state

        state.init()
        if not state.songs():
            state.add_song("caf\udce9 groove.wav", GOOD)
            state.add_song(b"na\xefve.wav", GOOD[:-4000])
        for song in state.songs().values():
            songs.song_card(song, None)
        st.write("end of page")

    at = AppTest.from_function(script, default_timeout=120)
    at.run()
    assert not at.exception
    assert _titles(at) == ["caf\ufffd groove", "na\ufffdve"]
    assert at.markdown[-1].value == "end of page" and len(_checkboxes(at)) == 10


def test_a_300_character_name_is_cut_for_the_page_and_the_downloads():
    from unmixer import mashup

    at = _app()
    long_name = "a very long name " * 17 + "x" * 7 + ".wav"        # 300 characters
    assert len(long_name) == 300
    at.file_uploader[0].set_value((long_name, GOOD, "audio/wav")).run()
    assert not at.exception
    (song,) = at.session_state["songs"].values()
    assert len(song.name) <= 80 and song.name.endswith("….wav")
    assert len(mashup.loop_filename(song.title, 10, "vocal-like", 120.0)) < 80


def test_markdown_in_a_name_is_shown_as_text():
    at = _app()
    at.file_uploader[0].set_value(("[win](https:evil.example) **now** :red[x].wav", GOOD,
                                   "audio/wav")).run()
    assert not at.exception
    heads = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert heads == [r"### \[win\](https\:evil.example) \*\*now\*\* \:red\[x\]"]


def test_500_uploads_in_one_session_add_twelve_songs_and_say_why_not_the_rest():
    from ui.state import MAX_SONGS

    at = _app()
    files = [(f"song {i:03d}.wav", b"not audio %d " % i * 40, "audio/wav") for i in range(500)]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    assert len(at.session_state["songs"]) == MAX_SONGS == 12
    (warning,) = at.warning
    assert warning.value.startswith("488 files not added (song 012.wav, song 013.wav, "
                                    "song 014.wav and 485 more): This page holds at most "
                                    "12 songs at once. Remove a song to add another.")
    assert not at.file_uploader[0].value              # emptied: the refused files are freed
    # Room again after a removal, and the message goes.
    sid = _song_ids(at)[0]
    at.button(key=f"remove_{sid}").click().run()
    assert not at.warning and len(at.session_state["songs"]) == 11
    at.file_uploader[0].set_value(("late.wav", OTHER, "audio/wav")).run()
    assert len(at.session_state["songs"]) == 12 and "late" in _titles(at)


def test_songs_over_the_session_size_limit_are_refused(monkeypatch):
    import ui.state

    monkeypatch.setattr(ui.state, "MAX_SESSION_MB", (len(GOOD) + len(OTHER) // 2) / 2**20)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    assert not at.exception and _titles(at) == ["a"]
    (warning,) = at.warning
    assert "1 file not added (b.wav): This page holds at most" in warning.value


def test_a_refused_upload_moves_no_loop_tile(monkeypatch):
    """The line about refused files comes and goes above the deck and the songs: the
    widgets below keep their places (see
    test_the_loop_tiles_keep_their_place_when_the_refined_loops_replace_the_rough_ones)."""
    import ui.state

    monkeypatch.setattr(ui.state, "MAX_SONGS", 1)
    at = _app()
    at.file_uploader[0].set_value(("a.wav", GOOD, "audio/wav")).run()
    before = _widget_paths(at, "w:")
    assert sum(k.startswith("w:in_mix:") for k in before) == 5 and not at.warning
    _add_upload(at, "b.wav", OTHER, "audio/wav").run()
    assert not at.exception and _titles(at) == ["a"]
    (warning,) = at.warning
    assert "1 file not added (b.wav)" in warning.value
    assert _widget_paths(at, "w:") == before


# ------------------------------------------------------------------ sharing (issue 18)
def _wait_status(at: AppTest, song_title: str, contains: str, timeout_s: float = 30.0):
    """Rerun the page until the status box of a song says ``contains``; returns its label."""
    deadline = time.time() + timeout_s
    while True:
        labels = [s.label for s in at.status if song_title in s.label]
        if any(contains in label for label in labels):
            return next(label for label in labels if contains in label)
        assert time.time() < deadline, f"{song_title}: {labels}"
        time.sleep(0.2)
        at.run()


def test_each_session_sees_its_place_in_the_shared_queue_and_the_wait(held, monkeypatch):
    """One analysis at a time (held in its decomposition); a second song of the same
    session and a song of another session wait behind it, each told how many songs are
    ahead of it and about how long it will wait."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ui.engine, "_ANALYSIS_WORKERS", 1)
    monkeypatch.setattr(ui.engine, "_POOL", ThreadPoolExecutor(1))
    monkeypatch.setattr(ui.engine, "_ANALYSES", 0)
    mine, theirs = _app(), _app()
    mine.file_uploader[0].set_value(("first.wav", GOOD, "audio/wav")).run()
    _wait_status(mine, "first", "decomposing the cube")
    _add_upload(mine, "second.wav", OTHER, "audio/wav").run()
    label = _wait_status(mine, "second", "waiting")
    assert re.fullmatch(r"Unmixing second: waiting, 1 song ahead of yours, about \d+ s…", label)
    theirs.file_uploader[0].set_value(("third.wav", _wav(30.0, 440.0), "audio/wav")).run()
    label = _wait_status(theirs, "third", "waiting")
    assert re.fullmatch(r"Unmixing third: waiting, 2 songs ahead of yours, about \d+ s…", label)
    (box,) = [s for s in theirs.status if "third" in s.label]
    assert box.markdown[-1].value.startswith(":hourglass_flowing_sand: Waiting: 2 songs ahead")
    assert not any("waiting" in s.label for s in mine.status if "first" in s.label)
    held.set()                                   # all three go through, in order
    for at in (mine, theirs):
        deadline = time.time() + 60
        while at.status and time.time() < deadline:
            time.sleep(0.2)
            at.run()
        assert not at.status and not at.error
    assert len(_checkboxes(mine)) == 10 and len(_checkboxes(theirs)) == 5


def test_the_wait_estimate_learns_this_servers_speed(monkeypatch):
    from concurrent.futures import Future

    from ui.engine import Job, queue_place
    from ui.state import SongResult

    monkeypatch.setattr(ui.engine, "_SECONDS_PER_AUDIO_S", [0.1])
    monkeypatch.setattr(ui.engine, "_ANALYSES", 1)
    done = Future()
    done.set_result(SongResult(5, 2, extraction=object()))
    ui.engine._finished(Job(Future(), started=time.time() - 30, audio_s=100.0), done)
    rate = ui.engine._SECONDS_PER_AUDIO_S[0]
    assert rate == pytest.approx(0.7 * 0.1 + 0.3 * 0.3, rel=0.02)   # 30 s for 100 s of audio
    now = time.time()
    running = Job(Future(), queued=now - 20, started=now - 10, audio_s=240.0)
    waiting = Job(Future(), queued=now - 5, audio_s=120.0)
    mine = Job(Future(), queued=now, audio_s=60.0)
    ui.engine._JOBS.update({"a": running, "b": waiting, "c": mine})
    ahead, wait = queue_place(mine)
    assert ahead == 2
    expected = (max(0.1 * 240 * rate, 240 * rate - 10) + max(5, 120 * rate))
    assert wait == pytest.approx(expected / ui.engine._ANALYSIS_WORKERS, rel=0.05)
    assert queue_place(running) is None             # running: no place, a time left
    assert ui.engine.time_left(running) == pytest.approx(max(0.1 * 240 * rate,
                                                             240 * rate - 10), rel=0.05)


def test_the_wait_estimate_follows_an_analysis_slower_than_learned(monkeypatch):
    """Issue 18: on a loaded machine the learned rate (from earlier, quieter analyses) was far
    too short ("3 songs ahead of yours, about 10 s" while one analysis took minutes): an
    analysis running now that has taken longer per second of audio sets the rate."""
    from concurrent.futures import Future

    from ui.engine import Job, queue_place

    monkeypatch.setattr(ui.engine, "_SECONDS_PER_AUDIO_S", [0.1])
    monkeypatch.setattr(ui.engine, "_JOBS", {})
    now = time.time()
    running = Job(Future(), queued=now - 200, started=now - 120, audio_s=240.0)  # 0.5 s/s so far
    mine = Job(Future(), queued=now, audio_s=240.0)
    ui.engine._JOBS.update({"a": running, "b": mine})
    ahead, wait = queue_place(mine)
    assert ahead == 1
    assert wait == pytest.approx(0.1 * 120 / ui.engine._ANALYSIS_WORKERS, rel=0.05)  # not 0
    assert ui.engine.time_left(running) == pytest.approx(12, rel=0.05)
    queued = Job(Future(), queued=now - 1, audio_s=120.0)   # waits behind the slow one
    ui.engine._JOBS["c"] = queued
    _, wait = queue_place(mine)
    assert wait == pytest.approx((12 + 0.5 * 120) / ui.engine._ANALYSIS_WORKERS, rel=0.05)


def test_another_sessions_failing_analysis_takes_nothing_from_this_one():
    """The engine raises (a bug) on another user's song: that user gets one line, this
    session keeps its songs, loops in the mix and tempo, and the next analysis works."""
    mine, theirs = _app(), _app()
    mine.file_uploader[0].set_value(("good.wav", GOOD, "audio/wav")).run()
    _checkboxes(mine)[1].check()
    mine.number_input(key="w:deck_bpm").set_value(110.0).run()
    theirs.file_uploader[0].set_value(("crash.wav", _wav(fake.FAULT_DURATION_S, 300.0),
                                       "audio/wav")).run()
    (error,) = theirs.error
    assert "injected engine fault" in error.value and "\n" not in error.value
    mine.run()
    assert not mine.exception and not mine.error
    assert [b.value for b in _checkboxes(mine)] == [False, True, False, False, False]
    assert mine.number_input(key="w:deck_bpm").value == 110.0
    _add_upload(mine, "other.wav", OTHER, "audio/wav").run()
    assert not mine.error and len(_checkboxes(mine)) == 10


def test_a_song_that_barely_repeats_says_so_on_its_card(monkeypatch):
    """Issue 14, item 3: one line on the song card when the loops explain little of it; none
    for a song that repeats (the fake's extraction leaves ``explained`` unmeasured)."""
    at = _app()
    at.file_uploader[0].set_value(("groove.wav", GOOD, "audio/wav")).run()
    assert not any("barely repeats" in w.value for w in at.warning)

    def barely(audio, n_loops=5, **kw):
        ext = fake_extract_loops(audio, n_loops, **kw)
        ext.explained = 0.3
        return ext

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", barely)
    at = _app()
    at.file_uploader[0].set_value(("other.wav", OTHER, "audio/wav")).run()
    (line,) = [w.value for w in at.warning if "barely repeats" in w.value]
    assert "30%" in line and len(line.splitlines()) == 1


# ------------------------------------------------------------------- who may use it
UPLOADERS = ["Add songs", "A mashup saved by Unmixer (.unmixer)"]


def _uploaders(at: AppTest) -> list[str]:
    """The labels of the page's file uploaders (the songs', then Open mashup's)."""
    return [u.label for u in at.file_uploader]


def test_with_a_shared_password_nothing_runs_before_it_is_given(monkeypatch):
    monkeypatch.setenv("UNMIXER_PASSWORD", "loops for all")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    assert not at.file_uploader
    assert [b.label for b in at.button] == ["Enter"]    # no demo button, no page at all
    assert [t.value for t in at.text_input] == [""] and at.text_input[0].label == "Password"
    at.text_input[0].set_value("loops for everyone")
    at.button[0].click().run()                       # the form's Enter
    (error,) = at.error
    assert error.value.startswith("Wrong password")
    assert not at.file_uploader
    at.text_input[0].set_value("loops for all")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Unmixer" and _uploaders(at) == UPLOADERS
    assert "access_password" not in at.session_state or not at.session_state["access_password"]


def test_the_password_can_come_from_streamlit_secrets():
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["UNMIXER_PASSWORD"] = "from secrets"
    at.run()
    assert not at.file_uploader and at.text_input[0].label == "Password"
    at.text_input[0].set_value("from secrets")
    at.button[0].click().run()
    assert _uploaders(at) == UPLOADERS


def test_without_a_password_the_app_opens_at_once():
    at = _app()
    assert not at.text_input and _uploaders(at) == UPLOADERS


# ------------------------------------------------------ a tab's songs, kept (issue 18)
def test_a_new_session_of_the_same_tab_gets_its_songs_and_choices_back(monkeypatch):
    """What a reload or a restarted server does: a new session whose browser tab sends the
    same id gets its songs (analysed again, here from the disk cache), loops in the mix,
    loop counts, deck tempo, key and transpositions back; another tab gets nothing of it."""
    import ui.sessions

    monkeypatch.setattr(ui.sessions, "tab_id", lambda: "ab" * 16)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    a, b = _song_ids(at)
    at.selectbox(key=f"w:n_loops:{b}").set_value(7).run()
    _checkboxes(at, a)[2].check()
    at.number_input(key="w:deck_bpm").set_value(100.0)
    at.selectbox(key="w:deck_bars").set_value(16)
    at.selectbox(key="w:deck_key").set_value("D major")
    at.toggle(key="w:deck_match_keys").set_value(True)
    at.selectbox(key=f"w:semitones:{b}").set_value(-2).run()
    n_calls = len(CALLS)

    again = _app()                                      # the same tab, a new session
    assert not again.exception
    assert _song_ids(again) == [a, b] and _titles(again) == ["a", "b"]
    assert [c.value for c in _checkboxes(again, a)] == [False, False, True, False, False]
    assert len(_checkboxes(again, b)) == 7
    assert again.number_input(key="w:deck_bpm").value == 100.0
    assert again.selectbox(key="w:deck_bars").value == 16
    assert again.selectbox(key="w:deck_key").value == "D major"     # the keys too (issue 16)
    assert again.toggle(key="w:deck_match_keys").value is True
    assert again.selectbox(key=f"w:semitones:{b}").value == -2
    assert again.selectbox(key=f"w:semitones:{a}").value == "auto"
    assert len(CALLS) == n_calls                        # from the disk cache
    monkeypatch.setattr(ui.sessions, "tab_id", lambda: "cd" * 16)
    other = _app()
    assert _song_ids(other) == []


def test_a_damaged_song_file_of_a_kept_tab_is_left_out(monkeypatch, tmp_path):
    import ui.sessions

    monkeypatch.setattr(ui.sessions, "tab_id", lambda: "ef" * 16)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    a, b = _song_ids(at)
    (ui.sessions.root() / ("ef" * 16) / "songs" / a).write_bytes(b"not the song")
    again = _app()
    assert not again.exception and _song_ids(again) == [b]


def test_kept_tabs_go_after_some_days_and_over_the_size_cap(monkeypatch):
    import ui.sessions

    monkeypatch.setattr(ui.sessions, "KEEP_MAX_MB", 1.0)
    now = time.time()
    for tab, days, size in (("1" * 32, 5, 1000), ("2" * 32, 1, 600_000), ("3" * 32, 0, 600_000)):
        ui.sessions.write(tab, {"songs": []}, {"0" * 16: b"x" * size})
        changed = now - days * 86400
        os.utime(ui.sessions.root() / tab / "state.json", (changed, changed))
    removed = ui.sessions.prune(now)
    assert sorted(p.name for p in removed) == ["1" * 32, "2" * 32]    # too old; over the cap
    assert [p.name for p in ui.sessions.root().iterdir()] == ["3" * 32]


# ---------------------------------------------------------------------------- keys (issue 16)
FAKE_KEYS = {len(GOOD): "A minor", len(OTHER): "C# minor"}
"""The fake engine's key of each test song (told apart by their length)."""


def keyed_extract_loops(audio, n_loops=5, **kw):
    """The fake engine, with a key per song and pitched flags (drums unpitched)."""
    ext = fake_extract_loops(audio, n_loops, **kw)
    seconds = audio.shape[-1] / SR
    ext.key = "A minor" if seconds > 22 else "C# minor"  # GOOD lasts 24 s, OTHER 20 s
    ext.key_confidence = 0.7
    for loop in ext.loops:
        loop.pitched = loop.label != "drums"
    return ext


def _peak_hz(b64_wav: str) -> float:
    import base64

    audio, sr = sf.read(io.BytesIO(base64.b64decode(b64_wav)))
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sr / len(audio))


def test_keys_are_shown_and_match_keys_transposes_only_pitched_loops(monkeypatch):
    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", keyed_extract_loops)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    assert not at.exception
    a, b = _song_ids(at)
    # the key on each card and on the deck, with how it goes with the deck's key (the first
    # song's) before anything plays
    assert _has(at.markdown, lambda v: "**120.0 BPM** · **4/4** · **A minor · 8A** · 12 bars" in v)
    assert _has(at.markdown, lambda v: "**C# minor · 12A**" in v)
    assert at.selectbox(key="w:deck_key").value == "A minor"
    assert _has(at.markdown, lambda v: v.startswith("**b** · C# minor · 12A :orange-badge[clashes]"))
    assert _has(at.markdown, lambda v: v.startswith("**a** · A minor · 8A :green-badge[same key]"))
    before = {lp["id"]: lp for lp in _deck_data(at)["loops"]}
    assert {lp["songRelation"] for lp in before.values() if lp["song"] == b} == {"clash"}
    assert all(lp["shift"] == 0 for lp in before.values())
    names = [d.label for d in at.get("download_button")]
    assert "At the song's tempo (120 BPM)" in names

    # Match keys: b's pitched loops go down 4 semitones (C# minor -> A minor); its drums and
    # every loop of a stay as they were
    at.toggle(key="w:deck_match_keys").set_value(True).run()
    assert not at.exception
    assert at.selectbox(key=f"w:semitones:{b}").value == "auto"
    assert _has(at.markdown, lambda v: v.startswith("**b** · C# minor · 12A :orange-badge[clashes]"
                                                    " · :violet-badge[plays -4 st]"))
    after = {lp["id"]: lp for lp in _deck_data(at)["loops"]}
    for lid, lp in after.items():
        moved = lp["song"] == b and lp["label"] != "drums"
        assert lp["shift"] == (-4 if moved else 0), lp["label"]
        assert lp["clipKey"] == before[lid]["clipKey"] + ("-4st" if moved else "")
        if not moved:
            assert lp["wav"] == before[lid]["wav"]          # the very same clip
    bass = f"{b}-5xauto:2"
    assert abs(_peak_hz(before[bass]["wav"]) - 330.0) < 4
    assert abs(_peak_hz(after[bass]["wav"]) - 330.0 * 2 ** (-4 / 12)) < 4     # 262 Hz
    # a song's own shift wins over the automatic one
    at.selectbox(key=f"w:semitones:{b}").set_value(3).run()
    assert not at.exception
    own = {lp["id"]: lp for lp in _deck_data(at)["loops"]}
    assert own[bass]["shift"] == 3 and own[f"{a}-5xauto:2"]["shift"] == 0
    assert abs(_peak_hz(own[bass]["wav"]) - 330.0 * 2 ** (3 / 12)) < 5
    _checkboxes(at, b)[1].check().run()
    assert _has(at.markdown, lambda v: v.startswith("**Your mix** · 1 loop, 8 bars at 120.0 BPM, "
                                                    "in A minor · 8A"))
    assert "Export for a DAW" in [d.label for d in at.get("download_button")]


def _saved_mashup(at: AppTest) -> bytes:
    """The file "Save mashup" downloads, made from the app's session as the page makes it."""
    from ui.deck import ReadySong, current_mashup

    ss = at.session_state
    ready = [ReadySong(song, ss["results"][sid]) for sid, song in ss["songs"].items()]
    from unmixer import mashup

    return mashup.save_mashup(current_mashup(ready, ss))


def test_an_opened_mashup_restores_the_deck_without_analysing(monkeypatch):
    from unmixer import mashup

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", keyed_extract_loops)
    mixes, render_mix = [], mashup.render_mix

    def rendered(*args, **kwargs):  # the mix the page plays and downloads
        mixes.append(render_mix(*args, **kwargs))
        return mixes[-1]

    monkeypatch.setattr(mashup, "render_mix", rendered)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    a, b = _song_ids(at)
    _checkboxes(at, a)[0].check()
    _checkboxes(at, b)[2].check()
    at.slider(key=f"w:gain:{b}-5xauto:3").set_value(-4.0)
    at.toggle(key="w:deck_match_keys").set_value(True)
    at.number_input(key="w:deck_bpm").set_value(108.0)
    at.selectbox(key="w:deck_bars").set_value(16).run()
    saved = _saved_mashup(at)
    deck = _deck_data(at)
    mix = mixes[-1]

    monkeypatch.setattr(ui.engine, "_JOBS", {})
    n_calls = len(CALLS)
    fresh = _app()                    # another user, another machine: nothing analysed here
    uploader = next(u for u in fresh.file_uploader if u.key == "mashup_uploader")
    uploader.set_value(("my mix.unmixer", saved, "application/zip")).run()
    assert not fresh.exception and not fresh.error and not fresh.status
    assert len(CALLS) == n_calls and not ui.engine._JOBS       # no analysis ran
    assert _has(fresh.success, lambda v: v.startswith("Opened my mix.unmixer: 2 songs, 2 loops "
                                                     "in the mix, 108.0 BPM, A minor · 8A"))
    again = _deck_data(fresh)
    assert again["bpm"] == 108.0 and again["key"] == "A minor · 8A" and again["matchKeys"]
    assert sorted(again["selection"]) == sorted(deck["selection"])
    assert [lp["shift"] for lp in again["loops"]] == [lp["shift"] for lp in deck["loops"]]
    assert [lp["gainDb"] for lp in again["loops"]] == [lp["gainDb"] for lp in deck["loops"]]
    assert fresh.selectbox(key="w:deck_bars").value == 16
    assert _has(fresh.markdown, lambda v: "opened from a mashup file" in v)
    assert fresh.selectbox(key=f"w:n_loops:{a}").disabled     # no audio: no new analysis
    assert _has(fresh.markdown, lambda v: v.startswith("**Your mix** · 2 loops, 16 bars at 108.0 BPM"))
    np.testing.assert_array_equal(mixes[-1], mix)    # the very same mix, bit for bit

    # a file that is not a mashup: one line, and the deck stays as it is
    uploader = next(u for u in fresh.file_uploader if u.key == "mashup_uploader")
    uploader.set_value(("other.unmixer", b"PK\x03\x04 broken", "application/zip")).run()
    assert not fresh.exception
    (error,) = fresh.error
    assert error.value == ("other.unmixer is not an Unmixer mashup file (save one with "
                           "“Save mashup”: a .unmixer file).")
    assert sorted(_deck_data(fresh)["selection"]) == sorted(deck["selection"])
    assert len(_song_ids(fresh)) == 2


def test_an_opened_mashup_comes_back_after_a_reload(monkeypatch):
    """A reload (a new session of the same tab, ui.sessions) gives an opened mashup's songs
    back with their loops, the mix and the deck, though they have no audio to analyse."""
    import ui.sessions

    monkeypatch.setattr(ui.engine, "EXTRACT_LOOPS", keyed_extract_loops)
    at = _app()
    at.file_uploader[0].set_value([("a.wav", GOOD, "audio/wav"),
                                   ("b.wav", OTHER, "audio/wav")]).run()
    a, b = _song_ids(at)
    _checkboxes(at, b)[2].check()
    at.slider(key=f"w:gain:{b}-5xauto:3").set_value(-4.0)
    at.toggle(key="w:deck_match_keys").set_value(True).run()
    saved = _saved_mashup(at)

    monkeypatch.setattr(ui.engine, "_JOBS", {})
    monkeypatch.setattr(ui.sessions, "tab_id", lambda: "9a" * 16)
    n_calls = len(CALLS)
    fresh = _app()
    uploader = next(u for u in fresh.file_uploader if u.key == "mashup_uploader")
    uploader.set_value(("my mix.unmixer", saved, "application/zip")).run()
    fresh.slider(key=f"w:gain:{a}-5xauto:1").set_value(2.0).run()    # a change after opening
    deck = _deck_data(fresh)

    again = _app()                                        # the same tab, a new session
    assert not again.exception and not again.error
    assert _song_ids(again) == [a, b] and len(CALLS) == n_calls   # no analysis ran
    assert _has(again.markdown, lambda v: "opened from a mashup file" in v)
    back = _deck_data(again)
    assert sorted(back["selection"]) == sorted(deck["selection"]) == [f"{b}-5xauto:3"]
    assert [lp["gainDb"] for lp in back["loops"]] == [lp["gainDb"] for lp in deck["loops"]]
    assert [lp["shift"] for lp in back["loops"]] == [lp["shift"] for lp in deck["loops"]]
    assert [lp["wav"] for lp in back["loops"]] == [lp["wav"] for lp in deck["loops"]]
    assert back["matchKeys"] and again.session_state[f"gain:{a}-5xauto:1"] == 2.0
