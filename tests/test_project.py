"""A mashup saved to one file and opened again: the same deck, every clip, and one clear
line for a file that is not ours, damaged, or from a newer version."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from unmixer import mashup
from unmixer.errors import UnmixerError
from unmixer.loops.pipeline import Extraction, LoopResult

SR = 44100


def _extraction(seed: int, key: str | None, n_loops: int = 3) -> Extraction:
    rng = np.random.default_rng(seed)
    bar = 2 * SR
    loops = [LoopResult(k + 1, ("drums", "bass", "chords")[k % 3],
                        (0.3 * rng.standard_normal((2, 2 * bar))).astype(np.float32),
                        np.zeros((2, 0), np.float32), rng.random(8).astype(np.float32), 2 * k,
                        1.0 / n_loops, k % 3 != 0) for k in range(n_loops)]
    loops[1].clip[0, 100] = 1.7  # louder than full scale: kept too
    return Extraction(SR, 16.0, 120.0 + seed, 4, np.arange(32) * 0.5, np.arange(9) * 2.0, 2,
                      loops, {"downbeats": 1.0}, key=key, key_confidence=0.61)


def _mashup() -> mashup.Mashup:
    return mashup.Mashup(104.5, 16, "A minor", True, [
        mashup.MashupSong("a1b2c3d4e5f60718", "First song.mp3", 3, _extraction(1, "C# minor"),
                          {1: -3.0, 2: 0.0, 3: 2.0}, [1, 3], None),
        mashup.MashupSong("ffee001122334455", "Second.wav", "auto", _extraction(2, None, 2),
                          {1: 0.0, 2: -6.0}, [2], -2, loop_bars="auto")])


def test_save_then_open_gives_the_same_deck_and_clips():
    saved = mashup.save_mashup(_mashup())
    opened = mashup.open_mashup(saved, "my.unmixer")
    assert (opened.bpm, opened.n_bars, opened.key, opened.match_keys) == (104.5, 16, "A minor", True)
    assert opened.n_in_mix == 3
    for mine, theirs in zip(_mashup().songs, opened.songs):
        assert (theirs.id, theirs.name, theirs.n_loops, theirs.in_mix, theirs.semitones) == \
            (mine.id, mine.name, mine.n_loops, mine.in_mix, mine.semitones)
        assert theirs.gains_db == mine.gains_db
        # the loop-length choice: the extraction's length, or "auto" as chosen (loop ids use it)
        assert theirs.loop_bars == (mine.extraction.loop_bars if mine.loop_bars is None
                                    else mine.loop_bars)
        a, b = mine.extraction, theirs.extraction
        assert (b.bpm, b.meter, b.loop_bars, b.key, b.key_confidence) == \
            (a.bpm, a.meter, a.loop_bars, a.key, a.key_confidence)
        np.testing.assert_array_equal(b.downbeats_s, a.downbeats_s)
        for la, lb in zip(a.loops, b.loops):
            assert (lb.index, lb.label, lb.chosen_bar, lb.pitched) == \
                (la.index, la.label, la.chosen_bar, la.pitched)
            np.testing.assert_array_equal(lb.clip, la.clip)  # bit for bit
            assert lb.clip.dtype == np.float32
            np.testing.assert_allclose(lb.activation, la.activation, atol=1e-4)
    # unzipped, it is a folder of loops any audio program opens
    with zipfile.ZipFile(io.BytesIO(saved)) as archive:
        assert "songs/01_a1b2c3d4e5f60718/loop_02.wav" in archive.namelist()


def test_a_reopened_pitched_loop_transposes_to_the_very_same_clip():
    """What the reopened deck plays: Rubber Band's pitch shift of the reopened clip equals
    the saved one's (a 24-bit FLAC copy, one quantisation step away, came out of the same
    shift up to 0.3 apart: its transient detector resets phases where the input differs)."""
    from unmixer.datasets.synth import make_song

    song = make_song(62, n_bars=6, bpm=120, key="C# minor", instruments=["pad"])
    bar = mashup.bar_samples(120, 4)
    start = int(round(song.downbeats_s[2] * SR))
    ext = _extraction(3, "C# minor")
    chords = ext.loops[2]  # pitched
    chords.clip = np.ascontiguousarray(song.mix[:, start:start + 2 * bar])
    saved = mashup.save_mashup(mashup.Mashup(120.0, 8, "A minor", True, [
        mashup.MashupSong("a1b2c3d4e5f60718", "song.wav", 3, ext, {}, [3])]))
    reopened = mashup.open_mashup(saved).songs[0].extraction.loops[2]
    assert reopened.label == "chords" and reopened.pitched
    before = mashup.stretch_to_bpm(chords.clip, 2, 4, 120.0, semitones=-4)
    after = mashup.stretch_to_bpm(reopened.clip, 2, 4, 120.0, semitones=-4)
    np.testing.assert_array_equal(after, before)


def _rezip(saved: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(saved)) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    change(files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _manifest_edit(edit):
    def change(files):
        manifest = json.loads(files["mashup.json"])
        edit(manifest)
        files["mashup.json"] = json.dumps(manifest).encode()
    return change


@pytest.mark.parametrize("make,message", [
    (lambda s: b"RIFF not a zip at all", "is not an Unmixer mashup file"),
    (lambda s: _rezip(s, lambda f: f.pop("mashup.json")), "is not an Unmixer mashup file"),
    (lambda s: _rezip(s, _manifest_edit(lambda m: m.update(format="ableton"))),
     "is not an Unmixer mashup file"),
    (lambda s: _rezip(s, _manifest_edit(lambda m: m.update(version=7))),
     "was saved by a newer Unmixer (mashup format 7); this one opens format 1"),
    (lambda s: _rezip(s, lambda f: f.update({"mashup.json": b"{ not json"})), "is damaged"),
    (lambda s: _rezip(s, _manifest_edit(lambda m: m["deck"].pop("bpm"))),
     "is damaged and cannot be opened (the field 'bpm' is missing)"),
    (lambda s: _rezip(s, lambda f: f.pop("songs/02_ffee001122334455/loop_01.wav")),
     "is damaged and cannot be opened (the clip songs/02_ffee001122334455/loop_01.wav is missing)"),
    (lambda s: _rezip(s, lambda f: f.update({"songs/01_a1b2c3d4e5f60718/loop_01.wav": b"RIFF junk"})),
     "cannot be decoded"),
    (lambda s: _rezip(s, _manifest_edit(lambda m: m["songs"][0].update(id="../../etc"))),
     "is damaged"),
    (lambda s: s[: len(s) // 2], "is not an Unmixer mashup file"),
])
def test_a_bad_file_is_refused_in_one_line(make, message):
    bad = make(mashup.save_mashup(_mashup()))
    with pytest.raises(UnmixerError) as err:
        mashup.open_mashup(bad, "mix.unmixer")
    text = str(err.value)
    assert text.startswith("mix.unmixer ") and message in text and "\n" not in text


def test_nothing_to_save():
    with pytest.raises(UnmixerError, match="nothing to save"):
        mashup.save_mashup(mashup.Mashup(120, 8, None, False, []))


def test_extraction_keeps_key_and_pitched_flags(tmp_path):
    ext = _extraction(3, "F# major")
    assert ext.summary()["key"] == "F# major" and ext.summary()["key_camelot"] == "2B"
    assert ext.summary()["pitched"] == [False, True, True]
    ext.save(tmp_path)
    back = Extraction.load(tmp_path)
    assert (back.key, back.key_confidence) == ("F# major", 0.61)
    assert [lp.pitched for lp in back.loops] == [False, True, True]
