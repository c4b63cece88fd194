"""The baselines of the quality benchmark (bench.baselines), its metric for long signals and
the generator's General MIDI instruments, on small generated songs with ground truth."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import synth_song

from bench import baselines
from bench.blockeval import bss_eval_blocks
from unmixer.core.metrics import bss_eval, si_sdr

# Two loops with different layouts, 1-bar patterns, 10 bars at 140 BPM (17 s).
SMALL = dict(seed=5, n_loops=2, n_bars=10, bpm=140, meter=4, loop_bars=1, block_bars=2,
             family="dense", instruments=("drums", "bass"))


def _mixture_sdr(song):
    return bss_eval(song.stems, np.repeat(song.mix[None], len(song.stems), axis=0)).sdr


def test_bss_eval_blocks_equals_bss_eval():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3, 2, 40_000))
    ref[2, :, :9_000] = 0  # a source silent at first, as loops are
    est = 0.7 * ref[[1, 0, 2]] + 0.2 * ref[[2, 2, 0]] + 0.05 * rng.standard_normal(ref.shape)
    a, b = bss_eval(ref, est), bss_eval_blocks(ref, est, block=7_000)
    assert np.array_equal(a.match, b.match)
    for x, y in ((a.sdr, b.sdr), (a.sir, b.sir), (a.sar, b.sar)):
        np.testing.assert_allclose(x, y, atol=1e-4)
    sdr_only = bss_eval_blocks(ref, est, block=7_000, sir_sar=False)  # K correlations, not K²
    np.testing.assert_allclose(sdr_only.sdr, a.sdr, atol=1e-4)
    assert np.isnan(sdr_only.sir).all()


def test_ideal_ratio_mask_beats_the_mixture():
    song = synth_song(**SMALL)
    sep = baselines.ideal_ratio_mask(song.mix, song.stems)
    assert sep.tracks.shape == song.stems.shape
    np.testing.assert_allclose(sep.tracks.sum(axis=0), song.mix, atol=1e-4)  # masks sum to 1
    assert bss_eval(song.stems, sep.tracks).sdr.mean() > _mixture_sdr(song).mean() + 10


def test_repet_separates_a_repeating_background_from_a_free_foreground():
    # background: a 1-bar drum loop (2 s at 120 BPM) in every bar; foreground: notes of random
    # pitch and length that never repeat
    drums = synth_song(seed=3, n_loops=1, n_bars=8, bpm=120, meter=4, loop_bars=1, block_bars=1,
                       family="composed", instruments=("drums",))
    n = drums.mix.shape[-1]
    rng = np.random.default_rng(0)
    fg = np.zeros(n, dtype=np.float32)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.15, 0.6) * 44100)
        t = np.arange(min(dur, n - pos)) / 44100
        fg[pos:pos + len(t)] = np.sin(2 * np.pi * rng.uniform(300, 1500) * t) * np.hanning(len(t))
        pos += dur
    bg = drums.mix
    fg = np.stack([fg, fg]) * 0.5 * np.abs(bg).max() / np.abs(fg).max()
    mix = (bg + fg).astype(np.float32)
    sep, period = baselines.repet(mix)
    assert round(period / 2.0) >= 1 and abs(period / 2.0 - round(period / 2.0)) < 0.03  # bars
    refs = np.stack([bg, fg])
    ours = bss_eval(refs, sep.tracks, match=np.arange(2)).sdr
    floor = bss_eval(refs, np.stack([mix, mix]), match=np.arange(2)).sdr
    assert np.all(ours > floor + 5), (ours, floor)


def test_loopextractor_ranks_follow_the_original():
    # the example in jblsmith/loopextractor's get_recommended_template_sizes
    assert baselines.recommended_ranks((100, 200, 300)).tolist() == [15, 23, 30]


def test_loopextractor_configuration():
    song = synth_song(**SMALL)
    sep = baselines.loopextractor(song.mix, 2, song.downbeats_s, n_iter=60)
    n_bars = len(song.downbeats_s) - 1
    assert sep.tracks.shape == song.stems.shape and sep.loop_map.shape == (2, n_bars)
    assert np.allclose(sep.loop_map.max(axis=1), 1)
    # each clip is one bar, cut where the loop's activation peaks
    bar = np.diff(np.round(song.downbeats_s * 44100)).astype(int)
    for clip, (a, b) in zip(sep.clips, sep.clip_spans):
        assert clip.shape == (2, b - a) and abs((b - a) - bar[0]) <= 1
    # masks against the mixture never exceed 1: no track is louder than the mixture
    assert np.all(np.sum(sep.tracks**2, axis=(1, 2)) <= np.sum(song.mix**2) * 1.01)
    assert si_sdr(song.stems, sep.tracks[bss_eval(song.stems, sep.tracks).match]).mean() > \
        si_sdr(song.stems, np.repeat(song.mix[None], 2, axis=0)).mean()


def test_nmf_kmeans_separates_two_loops():
    song = synth_song(**SMALL)
    sep = baselines.nmf_kmeans(song.mix, 2, song.downbeats_s, n_components=8)
    assert sep.tracks.shape == song.stems.shape
    assert bss_eval(song.stems, sep.tracks).sdr.mean() > _mixture_sdr(song).mean() + 3


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth is not installed")
def test_general_midi_instruments_follow_the_layout():
    cfg = dict(seed=9, n_loops=2, n_bars=8, bpm=150, meter=3, loop_bars=2, block_bars=2,
               family="dense", instruments=("gm_drums", "gm_piano"))
    song = synth_song(**cfg)
    np.testing.assert_allclose(song.stems.sum(axis=0), song.mix, atol=1e-6)
    bar = int(round(3 * 60 / 150 * 44100))
    for k in range(2):
        energy = np.array([np.sum(song.stems[k][:, b * bar:(b + 1) * bar] ** 2) for b in range(8)])
        on = song.layout[k] > 0
        # bars the loop is off hold at most the ring-out of the bar before
        assert energy[~on].max(initial=0) < 0.2 * energy[on].mean()
