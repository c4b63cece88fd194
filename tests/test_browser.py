"""End to end, in a real headless Chromium (Debian's, driven by Playwright): the app as a
person uses it, on a real song, with the real engine.

Links: each page's URL is the first request of a freshly started server, and looks as it
does when reached from the app.

The session: starts ``streamlit run streamlit_app.py`` on a free port with an empty cache, uploads
``../shared/audio/choice_drum_bass.ogg`` together with a corrupt file, waits for the rough
loops (the engine's quick first result), puts two of them in the mix by clicking the live
deck while it plays, lets the refinement finish and checks that the deck went on playing
the same loops with their refined clips; then changes the tempo, and checks the mix player,
the mix download and a loop download (which must decode, at the new tempo's length).
Screenshots go to ``test-artifacts/`` (git-ignored).

The engine is the real one; only its refinement (madmom's downbeats, which the rough loops on
a quick beat grid do not wait for) is held until the test opens a gate, so the rough state
can be seen on any machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.served import CHROMIUM, CHROMIUM_ARGS, serve
from unmixer import mashup
from unmixer.cache import ResultCache

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT.parent / "shared" / "audio" / "choice_drum_bass.ogg"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]
needs_song = pytest.mark.skipif(not SONG.exists(),
                                reason="needs ../shared/audio/choice_drum_bass.ogg")


# Wraps the pipeline before Streamlit starts, so that the refinement after the quick first
# result waits for the file $UNMIXER_TEST_GATE to exist: madmom's downbeat tracking (the
# rough loops come from a quick beat grid while it runs) and an NTD run that continues
# from an earlier state (the rough loops on madmom's grid, where the quick grid finds none).
_GATE_PRELUDE = """
import os, time
import unmixer.loops.pipeline as pipeline
from unmixer.loops.ntd import NTDResult
def wait_for_gate():
    deadline = time.time() + 300
    while not os.path.exists(os.environ["UNMIXER_TEST_GATE"]) and time.time() < deadline:
        time.sleep(0.1)
solve = pipeline.ntd_hals
def gated(*args, init="svd", **kwargs):
    if isinstance(init, NTDResult):
        wait_for_gate()
    return solve(*args, init=init, **kwargs)
pipeline.ntd_hals = gated
track = pipeline.track_grid
def gated_track(*args, **kwargs):
    wait_for_gate()
    return track(*args, **kwargs)
pipeline.track_grid = gated_track
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app's URL and its refinement gate (a path: the refinement waits until it exists)."""
    gate = tmp_path_factory.mktemp("gate") / "open"
    env = {"UNMIXER_CACHE_DIR": str(tmp_path_factory.mktemp("unmixer-cache")),
           "UNMIXER_TEST_GATE": str(gate)}
    with serve(tmp_path_factory.mktemp("logs"), env=env, prelude=_GATE_PRELUDE) as served:
        yield served.url, gate


@pytest.fixture()
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 2400},
                                      accept_downloads=True)
        yield context.new_page()
        context.close()
        browser.close()


NAVIGATION = ["Unmixer", "NMF Lab", "Drum Splitter"]


@pytest.mark.parametrize("path, heading, tab_title", [
    ("/nmf_lab", "NMF Lab", "NMF Lab · Unmixer"),
    ("/drum_splitter", "Drum Splitter", "Drum Splitter · Unmixer"),
    ("/", "Unmixer", "Unmixer"),
])
def test_a_page_opened_first_on_a_fresh_server_looks_as_from_the_app(path, heading, tab_title,
                                                                    page, tmp_path):
    """A shared link or a bookmark is the first request a fresh server gets: its sidebar is
    the app's navigation (not Streamlit's file names from a pages/ folder), with this page
    marked, the tab has the page's title, and the page renders without an error."""
    expect = pytest.importorskip("playwright.sync_api").expect
    with serve(tmp_path, env={"UNMIXER_CACHE_DIR": str(tmp_path / "cache")}) as served:
        page.set_viewport_size({"width": 1300, "height": 900})
        page.goto(served.url + path)
        links = page.locator("[data-testid=stSidebarNavLink]")
        expect(links).to_have_count(3, timeout=60_000)
        expect(page.locator("h1").first).to_have_text(heading, timeout=60_000)
        assert [t.strip().splitlines()[-1] for t in links.all_inner_texts()] == NAVIGATION
        expect(page.locator("[data-testid=stSidebarNavLink][aria-current=page]")
               ).to_contain_text(heading)
        expect(page).to_have_title(tab_title)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"cold_{path.strip('/') or 'root'}.png"))


@pytest.mark.slow
@needs_song
def test_upload_mix_two_loops_change_tempo_and_download(app, page, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    app_url, gate = app
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"this is not audio at all " * 400)
    js_errors: list[str] = []
    page.on("pageerror", lambda err: js_errors.append(str(err)))
    page.goto(app_url)
    page.get_by_role("button", name="Try the demo song").wait_for(timeout=60_000)

    # A good song and a corrupt file at once. The rough loops come first, marked.
    page.locator("input[type=file]").set_input_files([str(SONG), str(broken)])
    tiles = page.locator(".deck-tile")
    expect(tiles).to_have_count(5, timeout=240_000)  # 5 rough loops of the good song
    refining = page.locator(".deck-song-refining")
    expect(refining).to_have_text("rough loops, refining…")
    expect(page.get_by_text("Refining the loops of choice drum bass")).to_be_visible()
    expect(page.locator("[data-testid=stMarkdownContainer]", has_text="rough loops after")
           .first).to_contain_text("refining…")  # the badge on the card
    expect(page.get_by_role("button", name="Download all 5 loops (ZIP)")).to_be_disabled()
    expect(page.get_by_label("In the mix")).to_have_count(5)

    # Two rough loops into the mix, on the live deck (playing: on the next bar line).
    page.locator(".deck-play").click()
    tiles.nth(0).click()
    tiles.nth(1).click()
    expect(page.get_by_text("Your mix · 2 loops")).to_be_visible(timeout=60_000)
    deck = page.locator(".deck")
    expect(deck).to_have_attribute("data-voices", "2", timeout=20_000)  # both decoded, playing
    rough_clips = re.compile(r"^\S+~rough:1@\S+ \S+~rough:2@\S+$")
    expect(deck).to_have_attribute("data-voice-clips", rough_clips)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_e2e_refining.png"), full_page=True)

    # The refinement ends: the refined loops replace the rough ones while the deck plays.
    gate.touch()
    expect(refining).to_have_count(0, timeout=240_000)
    refined_clips = re.compile(r"^\S+-5x\w+:1@\S+ \S+-5x\w+:2@\S+$")  # no ~rough
    expect(deck).to_have_attribute("data-voice-clips", refined_clips, timeout=20_000)
    expect(deck).to_have_attribute("data-voices", "2")
    bar = int(deck.get_attribute("data-bar"))
    expect(deck).not_to_have_attribute("data-bar", str(bar), timeout=20_000)  # still playing
    expect(page.get_by_text("Refining the loops of")).to_have_count(0)
    expect(page.get_by_role("button", name="Download all 5 loops (ZIP)")).to_be_enabled()
    expect(page.get_by_text("broken.mp3 is not a readable audio file")).to_be_visible(
        timeout=60_000)  # it was analysed after the good song
    expect(tiles.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_label("In the mix").nth(0)).to_be_checked()
    expect(page.get_by_label("In the mix").nth(1)).to_be_checked()
    expect(page.get_by_label("In the mix").nth(2)).not_to_be_checked()

    # A new tempo: the deck and the mix follow.
    tempo = page.get_by_label("Tempo (BPM)", exact=True)
    tempo.fill("120")
    tempo.press("Enter")
    expect(page.locator(".deck-tempo")).to_have_text("120.0 BPM · 4/4", timeout=60_000)
    expect(page.get_by_text("8 bars at 120.0 BPM")).to_be_visible(timeout=60_000)
    expect(deck).to_have_attribute("data-grid-bar", "2", timeout=20_000)  # 4 beats x 0.5 s
    expect(deck).to_have_attribute("data-voices", "2")  # still playing, now at 120 BPM

    # A loop out and back in while playing.
    tiles.nth(0).click()
    expect(page.get_by_text("Your mix · 1 loop,")).to_be_visible(timeout=60_000)
    expect(deck).to_have_attribute("data-voices", "1", timeout=20_000)
    expect(page.get_by_label("In the mix").nth(0)).not_to_be_checked()
    tiles.nth(0).click()
    expect(page.get_by_text("Your mix · 2 loops")).to_be_visible(timeout=60_000)
    expect(deck).to_have_attribute("data-voices", "2", timeout=20_000)
    mix_player = page.locator("[data-testid='stAudio']").first
    expect(mix_player).to_be_visible()

    # The mix download: 8 bars of 4 beats at 120 BPM.
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Download the mix (WAV)").click()
    mix_path = tmp_path / info.value.suggested_filename
    info.value.save_as(mix_path)
    mix, sr = sf.read(mix_path)
    assert sr == 44100 and mix.shape == (8 * mashup.bar_samples(120, 4), 2)
    assert abs(mix).max() > 0.01

    # A loop download at the deck's tempo: 2 bars at 120 BPM, and it decodes.
    # (the first loop card's Download popover: the deck's "Open mashup" is a popover too)
    page.locator("[data-testid='stPopover'] button", has_text="Download").first.click()
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="At the deck's tempo (120 BPM)").click()
    name = info.value.suggested_filename
    assert name.startswith("choice-drum-bass_loop01_") and name.endswith("_120bpm.wav")
    loop_path = tmp_path / name
    info.value.save_as(loop_path)
    loop, sr = sf.read(loop_path)
    assert sr == 44100 and loop.shape == (mashup.loop_samples(2, 120, 4), 2)
    page.keyboard.press("Escape")

    # The corrupt file's error sits beside it only; the good song's loops are all there.
    expect(page.get_by_text("broken.mp3 is not a readable audio file")).to_have_count(1)
    expect(tiles).to_have_count(5)
    assert js_errors == []
    page.screenshot(path=str(ARTIFACTS / "app_e2e.png"), full_page=True)



# ---------------------------------------------------------------------------- keys (issue 16)
KEY_SONGS = (("A minor", 61), ("C# minor", 62))
"""Two generated songs with planted keys (unmixer.datasets.synth), four semitones apart;
the key CNN finds both (seeds checked)."""


def _chroma(path: Path) -> np.ndarray:
    """The mean chroma (12, C first) of a WAV's harmonic part."""
    import librosa

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    harmonic = librosa.effects.harmonic(y.mean(axis=1))
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=sr, fmin=librosa.note_to_hz("C1"),
                                        n_octaves=7)
    return chroma.mean(axis=1)


def _download(page, button_name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name=button_name).click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def _stems(zip_path: Path) -> dict[str, np.ndarray]:
    import io
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        return {n: sf.read(io.BytesIO(archive.read(n)), dtype="float64")[0]
                for n in archive.namelist() if n.endswith(".wav")} | \
            {"README.txt": archive.read("README.txt").decode()}


def test_match_keys_save_open_and_export_for_a_daw(page, tmp_path):
    """Two songs in keys four semitones apart: their keys and how they go together show on
    the deck before anything plays; with Match keys on, the mix of two pitched loops of the
    second song moves to the first song's key and its drums loop stays as it is; the DAW
    export's WAVs are as long as the mix, start on bar 1 and add up to the mix; a saved mashup
    opens on a fresh app instance as the same deck without any analysis."""
    from unmixer.datasets.synth import make_song

    expect = pytest.importorskip("playwright.sync_api").expect
    files = []
    for number, (key, seed) in enumerate(KEY_SONGS, start=1):
        song = make_song(seed, n_bars=16, bpm=120, key=key,
                         instruments=["drums", "bass", "pad", "pluck"])
        files.append(tmp_path / f"song{number}.wav")
        sf.write(files[-1], song.mix.T, song.sr)
    js_errors: list[str] = []
    page.on("pageerror", lambda err: js_errors.append(str(err)))
    with serve(tmp_path / "first", env={"UNMIXER_CACHE_DIR": str(tmp_path / "cache1")}) as app:
        page.goto(app.url)
        page.get_by_role("button", name="Try the demo song").wait_for(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
        tiles = page.locator(".deck-tile")
        # two real analyses, one after the other (20 to 40 s on an idle 2-core machine; the
        # limit leaves room for a machine shared with other jobs)
        expect(tiles).to_have_count(10, timeout=1_500_000)
        expect(page.locator(".deck-song-refining")).to_have_count(0, timeout=600_000)
        rows = page.locator(".deck-song")
        first, second = rows.nth(0), rows.nth(1)
        # before anything plays: each song's key, and how it goes with the deck's key
        expect(first.locator(".deck-song-bpm")).to_contain_text("A minor · 8A")
        expect(first.locator(".deck-song-relation")).to_have_text("same key")
        expect(second.locator(".deck-song-bpm")).to_contain_text("C# minor · 12A")
        expect(second.locator(".deck-song-relation")).to_have_text("clashes with the deck's key")
        expect(page.get_by_text("A minor · 8A").first).to_be_visible()  # on the song card
        pics = page.locator(".deck-tile.has-pic")
        expect(pics).to_have_count(10, timeout=60_000)                  # a picture on every tile
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "keys_deck.png"), full_page=True)

        # two pitched loops of the second song into the mix: their chroma, off and on
        pitched = second.locator(".deck-tile[data-pitched=true]")
        assert pitched.count() >= 2
        drums = second.locator(".deck-tile[data-pitched=false]", has_text="drums")
        assert drums.count() >= 1
        pitched.nth(0).click()
        pitched.nth(1).click()
        expect(page.get_by_text("Your mix · 2 loops")).to_be_visible(timeout=120_000)
        work = tmp_path / "downloads"
        work.mkdir()
        mix_off = _download(page, "Download the mix (WAV)", work / "off")
        match_keys = page.get_by_text("Match keys", exact=True)
        match_keys.click()
        expect(pitched.nth(0)).to_have_attribute("data-shift", "-4", timeout=120_000)
        expect(second.locator(".deck-song-shift")).to_have_text("transposed −4 st")
        expect(page.get_by_text("Your mix · 2 loops, 8 bars at 120.0 BPM, in A minor · 8A")
               ).to_be_visible(timeout=120_000)
        mix_on = _download(page, "Download the mix (WAV)", work / "on")
        c_off, c_on = _chroma(mix_off), _chroma(mix_on)
        lag = int(np.argmax([np.dot(np.roll(c_off, k), c_on) for k in range(12)]))
        assert lag == 12 - 4, (c_off.round(2), c_on.round(2))  # 4 semitones down
        assert int(np.argmax(c_off)) in {1, 4, 8}, c_off.round(2)  # C#, E or G#: C# minor's triad
        assert int(np.argmax(c_on)) in {9, 0, 4}, c_on.round(2)   # A, C or E: A minor's triad

        # the drums loop too: it stays as it is, the pitched ones move (the DAW export with
        # Match keys on, and off)
        drums.first.click()
        expect(drums.first).to_have_attribute("data-shift", "0")
        expect(page.get_by_text("Your mix · 3 loops, 8 bars at 120.0 BPM, in A minor · 8A")
               ).to_be_visible(timeout=120_000)
        mix = _download(page, "Download the mix (WAV)", work)
        daw_on = _stems(_download(page, "Export for a DAW", work / "on"))
        page.screenshot(path=str(ARTIFACTS / "keys_matched.png"), full_page=True)
        match_keys.click()
        expect(pitched.nth(0)).to_have_attribute("data-shift", "0", timeout=120_000)
        expect(page.get_by_text(re.compile(r"^Your mix · 3 loops, 8 bars at 120\.0 BPM$"))
               ).to_be_visible(timeout=120_000)
        daw_off = _stems(_download(page, "Export for a DAW", work / "off"))
        match_keys.click()
        expect(pitched.nth(0)).to_have_attribute("data-shift", "-4", timeout=120_000)
        assert len(daw_on) == len(daw_off) == 4                 # 3 loops and the README
        for name, track in daw_off.items():
            if name == "README.txt":
                continue
            (twin,) = [n for n in daw_on if n[:3] == name[:3]]  # same place in the mix
            other = daw_on[twin]
            gain = float(np.sum(track * other) / np.sum(track * track))
            residual = float(np.sum((other - gain * track) ** 2) / np.sum(other**2))
            if "_drums_" in name:
                assert twin == name and residual < 1e-4, (name, residual)
            else:
                assert name.endswith("_C#m.wav") and twin.endswith("_Am.wav"), (name, twin)
                assert residual > 0.1, (twin, residual)
        # the DAW export: as long as the mix, every loop from bar 1, summing to the mix
        bar = mashup.bar_samples(120.0, 4)
        mix, sr = sf.read(mix, dtype="float64")
        tracks = [t for n, t in daw_on.items() if n != "README.txt"]
        assert {t.shape for t in tracks} == {(8 * bar, 2)} and mix.shape == (8 * bar, 2)
        np.testing.assert_allclose(sum(tracks), mix, atol=2e-3)
        for t in tracks:  # each repeats its 2-bar loop from sample 0
            np.testing.assert_allclose(t[:2 * bar], t[2 * bar:4 * bar], atol=1e-4)
        readme = daw_on["README.txt"]
        assert "Tempo: 120.00 BPM, 4/4" in readme and "Key: A minor · 8A" in readme
        assert "Every file starts at bar 1" in readme

        # save the mashup
        saved = _download(page, "Save mashup", tmp_path)
        assert saved.name.endswith(".unmixer")
        in_mix = sorted(t.get_attribute("data-id") for t in (pitched.nth(0), pitched.nth(1),
                                                             drums.first))

    # a fresh app instance (another machine): open the file, nothing is analysed
    cache = tmp_path / "cache2"
    cache.mkdir()
    with serve(tmp_path / "second", env={"UNMIXER_CACHE_DIR": str(cache)}) as app:
        page.goto(app.url)
        page.get_by_role("button", name="Try the demo song").wait_for(timeout=60_000)
        page.get_by_role("button", name="Open mashup").click()
        page.locator("[data-testid=stPopoverBody] input[type=file]").set_input_files(str(saved))
        tiles = page.locator(".deck-tile")
        expect(tiles).to_have_count(10, timeout=600_000)
        page.keyboard.press("Escape")
        expect(page.get_by_text("Opened " + saved.name)).to_be_visible(timeout=60_000)
        expect(page.locator(".deck-tempo")).to_have_text("120.0 BPM · 4/4")
        expect(page.locator(".deck-key")).to_have_text("in A minor · 8A")
        on_deck = page.locator(".deck-tile[aria-pressed=true]")
        expect(on_deck).to_have_count(3, timeout=60_000)
        assert sorted(t.get_attribute("data-id") for t in on_deck.all()) == in_mix
        expect(page.get_by_text("Your mix · 3 loops, 8 bars at 120.0 BPM, in A minor · 8A")
               ).to_be_visible(timeout=120_000)
        expect(page.get_by_text("opened from a mashup file")).to_have_count(2)
        expect(page.get_by_text("Unmixing")).to_have_count(0)        # no analysis ran
        # and none was cached (the tab's kept songs, ui.sessions, live in .tabs beside them)
        assert ResultCache(cache).entries() == []
        assert all(p.name.startswith(".") for p in cache.iterdir())
        restored = _download(page, "Download the mix (WAV)", tmp_path)
        again, _ = sf.read(restored, dtype="float64")
        np.testing.assert_allclose(again, mix, atol=2e-3)            # the same mix
        page.screenshot(path=str(ARTIFACTS / "keys_opened.png"), full_page=True)
    assert js_errors == []
