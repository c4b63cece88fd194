"""The loop extraction engine on generated songs with ground truth (true downbeats)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synth_song

from unmixer.core.metrics import layout_scores, match_sources, si_sdr, si_sdr_matrix
from unmixer.errors import UnmixerError
from unmixer.loops.labels import LABELS
from unmixer.loops.pipeline import Extraction, extract_loops

# Songs: several instruments, 1- and 2-bar loops, 3/4 and 4/4, layouts in 4-bar blocks.
SONGS = {
    "4/4, 2-bar loops": dict(seed=11, meter=4, loop_bars=2, bpm=120, n_bars=24),
    "3/4, 1-bar loops": dict(seed=12, meter=3, loop_bars=1, bpm=100, n_bars=24),
    "4/4, mixed 1- and 2-bar loops": dict(seed=13, meter=4, loop_bars=(1, 2, 2, 1), bpm=140, n_bars=32,
                                          instruments=("drums", "bass", "vocal", "pluck")),
}

# Measured on these songs (see BENCHMARKS.md); kept as floors so quality cannot silently drop.
SI_SDR_GAIN_FLOOR_DB = 14.0  # measured 17.2, 21.8 and 16.0 dB (13.8, 21.5 and 13.7 without the tail templates and
# purification starts): mean SI-SDR of matched tracks minus the mixture-as-estimate
LAYOUT_ACCURACY_FLOOR = 0.8


@pytest.fixture(scope="module", params=list(SONGS), ids=list(SONGS))
def extracted(request):
    cfg = SONGS[request.param]
    song = synth_song(**cfg)
    loop_bars = 1 if cfg["loop_bars"] == 1 else 2
    result = extract_loops(song.mix, 4, loop_bars=loop_bars, downbeats_s=song.downbeats_s,
                           meter=song.meter)
    return song, result


def test_tracks_sum_to_the_mixture(extracted):
    song, result = extracted
    total = sum(loop.track for loop in result.loops)
    snr = 10 * np.log10(np.sum(song.mix**2) / np.sum((song.mix - total) ** 2))
    assert snr >= 30


def test_streamed_tracks_are_the_kept_tracks(extracted):
    """tracks="stream" (the CLI): every track handed over chunk by chunk, in the song's order,
    equal to the kept tracks; the same clips; nothing of the tracks kept in the result."""
    song, result = extracted
    blocks = []
    streamed = extract_loops(song.mix, 4, loop_bars=result.loop_bars,
                             downbeats_s=song.downbeats_s, meter=song.meter, tracks="stream",
                             on_track_chunk=lambda a, b, block: blocks.append((a, block.copy())))
    assert [a for a, _ in blocks] == sorted(a for a, _ in blocks) and blocks[0][0] == 0
    tracks = np.concatenate([block for _, block in blocks], axis=-1)
    assert np.abs(tracks - np.stack([loop.track for loop in result.loops])).max() < 1e-6
    for ours, kept in zip(streamed.loops, result.loops):
        assert ours.track.shape == (2, 0)
        assert np.abs(ours.clip - kept.clip).max() < 1e-6
    with pytest.raises(UnmixerError):
        extract_loops(song.mix, 4, downbeats_s=song.downbeats_s, meter=song.meter, tracks="stream")


def test_tracks_separate_the_loops(extracted):
    song, result = extracted
    est = np.stack([loop.track for loop in result.loops])
    match = match_sources(si_sdr_matrix(song.stems, est))
    ours = si_sdr(song.stems, est[match]).mean()
    floor = si_sdr(song.stems, np.repeat(song.mix[None], len(song.stems), axis=0)).mean()
    assert ours - floor >= SI_SDR_GAIN_FLOOR_DB, (ours, floor)


def test_loop_map_matches_the_layout(extracted):
    song, result = extracted
    assert result.activations.shape == song.layout.shape
    assert result.activations.min() >= 0 and np.allclose(result.activations.max(axis=1), 1)
    assert layout_scores(song.layout, result.activations).accuracy >= LAYOUT_ACCURACY_FLOOR


def test_clips_are_exact_seamless_loops(extracted):
    song, result = extracted
    bar = int(round(song.meter * 60 / song.bpm * song.sr))
    for loop in result.loops:
        assert loop.clip.shape == (2, result.loop_bars * bar) or \
            abs(loop.clip.shape[1] - result.loop_bars * bar) <= 1
        # repeating the clip adds no click: the jump across the seam is like any other step
        seam = np.abs(loop.clip[:, 0] - loop.clip[:, -1]).max()
        steps = np.abs(np.diff(loop.clip, axis=1))
        assert seam <= np.percentile(steps, 99.9) + 1e-4
        start = int(round(result.downbeats_s[loop.chosen_bar] * song.sr))
        assert np.allclose(loop.clip[:, 2000:-2000], loop.track[:, start + 2000:start + loop.clip.shape[1] - 2000])


def test_loops_are_ordered_by_energy_and_labelled(extracted):
    _, result = extracted
    energies = [loop.energy for loop in result.loops]
    assert energies == sorted(energies, reverse=True)
    assert [loop.index for loop in result.loops] == [1, 2, 3, 4]
    assert {loop.label for loop in result.loops} <= set(LABELS)


def test_drums_and_bass_get_their_labels():
    song = synth_song(**SONGS["4/4, 2-bar loops"])
    result = extract_loops(song.mix, 4, downbeats_s=song.downbeats_s, meter=song.meter)
    est = np.stack([loop.track for loop in result.loops])
    match = match_sources(si_sdr_matrix(song.stems, est))
    labels = {song.instruments[i]: result.loops[j].label for i, j in enumerate(match)}
    assert labels["drums"] == "drums" and labels["bass"] == "bass"


def test_save_and_load_round_trip(tmp_path, extracted):
    _, result = extracted
    result.save(tmp_path / "x")
    back = Extraction.load(tmp_path / "x")
    assert back.summary() == result.summary()
    for a, b in zip(back.loops, result.loops):
        assert np.array_equal(a.clip, b.clip) and np.array_equal(a.track, b.track)


def test_deterministic():
    song = synth_song(**SONGS["3/4, 1-bar loops"])
    a = extract_loops(song.mix, 3, loop_bars=1, downbeats_s=song.downbeats_s, meter=3, seed=3)
    b = extract_loops(song.mix, 3, loop_bars=1, downbeats_s=song.downbeats_s, meter=3, seed=3)
    assert all(np.array_equal(x.track, y.track) for x, y in zip(a.loops, b.loops))


def test_bad_parameters_raise():
    song = synth_song(**SONGS["3/4, 1-bar loops"])
    with pytest.raises(UnmixerError):
        extract_loops(song.mix, 0, downbeats_s=song.downbeats_s, meter=3)
    with pytest.raises(UnmixerError):
        extract_loops(song.mix, 3, loop_bars=3, downbeats_s=song.downbeats_s, meter=3)
    with pytest.raises(UnmixerError, match="bars"):
        extract_loops(song.mix, 3, loop_bars=2, downbeats_s=song.downbeats_s[:4], meter=3)


def test_quick_first_result_then_the_same_final_result():
    song = synth_song(**SONGS["3/4, 1-bar loops"])
    rough = []
    final = extract_loops(song.mix, 4, loop_bars=1, downbeats_s=song.downbeats_s, meter=3,
                          preview=rough.append, preview_iter=5)
    straight = extract_loops(song.mix, 4, loop_bars=1, downbeats_s=song.downbeats_s, meter=3)
    assert len(rough) == 1 and len(rough[0].loops) == 4
    assert 0 < rough[0].timings_s["first_result"]
    assert all(np.array_equal(a.track, b.track) for a, b in zip(final.loops, straight.loops))
    # the rough loops come as clips only, and are already usable: each clip is close to the
    # true stem it matches over the same samples (measured 10.8-32.9 dB SI-SDR)
    for loop in rough[0].loops:
        assert loop.track.shape == (2, 0)
        start = int(round(rough[0].downbeats_s[loop.chosen_bar] * song.sr))
        stems = song.stems[:, :, start:start + loop.clip.shape[1]]
        assert max(float(si_sdr(stem[None], loop.clip[None])[0]) for stem in stems) >= 8


def test_rough_loops_on_the_quick_grid_then_madmoms_final_result():
    """With madmom's downbeats, the rough loops come from the quick grid (librosa's beat
    tracker, while madmom runs on a thread), and the final loops equal those of a run
    without a preview."""
    song = synth_song(**SONGS["4/4, 2-bar loops"])
    rough = []
    final = extract_loops(song.mix, 4, loop_bars=2, preview=rough.append, preview_iter=5)
    straight = extract_loops(song.mix, 4, loop_bars=2)
    assert len(rough) == 1 and len(rough[0].loops) == 4 and rough[0].loops[0].track.shape == (2, 0)
    assert abs(rough[0].bpm - 120) < 3 or abs(rough[0].bpm - 240) < 6  # librosa's tempo (or its octave)
    assert np.array_equal(final.downbeats_s, straight.downbeats_s)
    assert all(np.array_equal(a.track, b.track) for a, b in zip(final.loops, straight.loops))
    tracked = []
    extract_loops(song.mix, 4, loop_bars=2, preview=tracked.append, preview_iter=5, preview_grid="tracked")
    assert np.array_equal(tracked[0].downbeats_s, final.downbeats_s)  # rough loops on madmom's grid
    with pytest.raises(UnmixerError):
        extract_loops(song.mix, 4, preview_grid="fast")


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="thread nice values are Linux's")
def test_madmom_runs_nicer_only_while_the_rough_loops_are_computed(monkeypatch):
    """With a quick first result the downbeat tracker's thread runs TRACKER_NICE nicer than
    the caller (the rough loops get the core), without a preview at the caller's priority;
    the caller's own priority never changes."""
    import os
    import threading

    from unmixer.loops import pipeline

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen, real = [], pipeline.track_grid

    def spying(*args, **kwargs):
        seen.append(nice())
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "track_grid", spying)
    song = synth_song(**SONGS["4/4, 2-bar loops"])
    before = nice()
    extract_loops(song.mix, 4, loop_bars=2, preview=lambda result: None, preview_iter=5, tracks=False)
    extract_loops(song.mix, 4, loop_bars=2, tracks=False)
    assert seen == [min(19, before + pipeline.TRACKER_NICE), before]
    assert nice() == before
