"""Seamless loop cutting and loop tracks (the loop labels are tested in test_labels.py)."""

from __future__ import annotations

import numpy as np
import pytest

from unmixer.datasets.synth import make_song
from unmixer.errors import UnmixerError
from unmixer.loops.masks import cut_loop


def test_cut_loop_is_seamless_and_exact():
    sr = 44100
    t = np.arange(3 * sr) / sr
    track = np.stack([np.sin(2 * np.pi * 97.3 * t)] * 2).astype(np.float32)  # not periodic in the cut
    start, end = 10_000, 10_000 + sr
    clip = cut_loop(track, start, end)
    assert clip.shape == (2, sr)
    raw_jump = np.abs(track[:, end - 1] - track[:, start]).max()
    seam = np.abs(clip[:, -1] - clip[:, 0]).max()
    step = np.abs(np.diff(track, axis=1)).max()
    assert raw_jump > 5 * step  # cutting raw would click
    assert seam <= 1.01 * step  # the cross-faded clip does not
    assert np.array_equal(clip[:, 1000:], track[:, start + 1000:end])
    # at the very end of the song the fade is taken from before the start
    clip = cut_loop(track, 3 * sr - sr, 3 * sr)
    assert np.abs(clip[:, -1] - clip[:, 0]).max() <= 1.01 * step


def _random_model(seed: int = 3):
    from unmixer.core.spectrum import stft
    from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube

    song = make_song(seed=seed, n_loops=3, n_bars=8, bpm=120)
    spec = stft(song.mix)
    grid = make_grid(segment_boundaries_s(song.downbeats_s, 1), song.sr)
    cube = spectral_cube(np.abs(spec).mean(axis=0), grid)
    rng = np.random.default_rng(0)
    templates = rng.random((3,) + cube.shape[:2]).astype(np.float32)
    activations = rng.random((cube.shape[2], 3)).astype(np.float32)
    return song, spec, grid, templates, activations


def _whole_song_tracks(spec, templates, activations, grid, length, tails=None):
    """Reference: every loop's mask over the whole song at once, one inverse STFT each
    (the loop models written out cell by cell, as the module docstring defines them)."""
    from unmixer.core.spectrum import istft
    from unmixer.loops.cube import cube_to_frames

    K, F, T = templates.shape
    top = max(templates.max(), 0 if tails is None else tails.max())
    d = activations / activations.max()
    d_prev = np.vstack([np.zeros((1, K)), d[:-1]])
    models = np.stack([(templates[k].reshape(-1, 1) * d[None, :, k]
                        + (0 if tails is None else tails[k].reshape(-1, 1) * d_prev[None, :, k])) / top
                       for k in range(K)]) ** 2  # (K, F·T, S)
    denom = models.sum(axis=0) + np.float32(1e-9)
    masks = [cube_to_frames(((models[k] + 1e-9 / K) / denom).reshape(F, T, -1).astype(np.float32),
                            grid, spec.shape[-1]) for k in range(K)]
    return np.stack([istft(spec * m, length) for m in masks])


def test_stft_frames_and_the_lazy_stft_equal_the_whole_song_stft():
    """Frames recomputed from the samples they cover equal the whole song's STFT bit for bit,
    at the song's edges (zero padding) and inside; the lazy STFT's magnitude and tracks too."""
    from unmixer.core.spectrum import LazySTFT, stft, stft_frames

    rng = np.random.default_rng(3)
    audio = rng.standard_normal((2, 50_000)).astype(np.float32)
    whole = stft(audio)
    n = whole.shape[-1]
    for a, b in [(0, 1), (0, 7), (3, 40), (50, n), (0, n), (n - 1, n)]:
        assert np.array_equal(stft_frames(audio, a, b), whole[..., a:b])
    lazy = LazySTFT(audio)
    assert lazy.shape == whole.shape
    assert np.array_equal(lazy.magnitude(block=13), np.abs(whole).mean(axis=0))
    for a, b in [(0, 0), (-1, 3), (5, n + 1)]:
        with pytest.raises(UnmixerError):
            stft_frames(audio, a, b)


def test_the_stft_a_channel_per_thread_equals_the_stft():
    """stft_magnitude (each channel on its own thread) gives stft's spectrum and the mean
    magnitude bit for bit, for stereo and mono input of shape (1, samples)."""
    from unmixer.core.spectrum import stft, stft_magnitude

    audio = np.random.default_rng(4).standard_normal((2, 70_001)).astype(np.float32)
    for x in (audio, audio[:1]):
        spec, magnitude = stft_magnitude(x)
        whole = stft(x)
        assert spec.dtype == np.complex64 and np.array_equal(spec, whole)
        assert magnitude.dtype == np.float32 and np.array_equal(magnitude, np.abs(whole).mean(axis=0))
    with pytest.raises(UnmixerError):
        stft_magnitude(audio[0])


@pytest.mark.parametrize("with_tails", [False, True])
def test_chunked_tracks_and_clips_equal_the_whole_song_inverse_stft(with_tails):
    from unmixer.loops.masks import separate_clips, separate_tracks

    song, spec, grid, templates, activations = _random_model()
    tails = np.random.default_rng(1).random(templates.shape).astype(np.float32) if with_tails else None
    length = song.mix.shape[-1]
    ref = _whole_song_tracks(spec, templates, activations, grid, length, tails)
    assert np.abs(ref).max() > 0.05
    if with_tails:  # the tails change the masks
        assert np.abs(ref - _whole_song_tracks(spec, templates, activations, grid, length)).max() > 0.01
    for chunk in (1 << 20, 30011):  # one chunk; chunks whose edges fall anywhere in a frame
        tracks = separate_tracks(spec, templates, activations, grid, length, chunk=chunk, tails=tails)
        assert np.abs(tracks - ref).max() < 1e-5
    # the residual last track: same track, and the tracks sum to the mixture exactly; every
    # chunk is handed over in the song's order, final (all loops in one batch per chunk)
    seen = []
    tracks = separate_tracks(spec, templates, activations, grid, length, mixture=song.mix, chunk=30011,
                             tails=tails, on_chunk=lambda a, b, block: seen.append((a, b, block.copy())))
    assert np.abs(tracks - ref).max() < 1e-5
    assert np.abs(tracks.sum(axis=0) - song.mix).max() < 1e-6
    assert [a for a, _, _ in seen] == list(range(0, length, 30011)) and seen[-1][1] == length
    assert all(np.array_equal(block, tracks[:, :, a:b]) for a, b, block in seen)
    # streamed (the CLI): the same blocks, in order, and no whole-song array is kept, not
    # even the STFT (its frames recomputed per chunk)
    from unmixer.core.spectrum import LazySTFT

    streamed = []
    assert separate_tracks(LazySTFT(song.mix), templates, activations, grid, length, mixture=song.mix, chunk=30011,
                           tails=tails, keep=False,
                           on_chunk=lambda a, b, block: streamed.append((a, b, block))) is None
    assert [(a, b) for a, b, _ in streamed] == [(a, b) for a, b, _ in seen]
    assert all(np.array_equal(x, y) for (_, _, x), (_, _, y) in zip(streamed, seen))
    with pytest.raises(UnmixerError):
        separate_tracks(spec, templates, activations, grid, length, keep=False)
    ranges = np.array([[0, 5000], [100_000, 200_000], [length - 3000, length]])
    clips = separate_clips(spec, templates, activations, grid, ranges, length, tails=tails)
    for k, (start, stop) in enumerate(ranges):
        assert clips[k].shape == (2, stop - start)
        assert np.abs(clips[k] - ref[k][:, start:stop]).max() < 1e-5
    with pytest.raises(UnmixerError):
        separate_clips(spec, templates, activations, grid, np.array([[0, length + 1]] * 3), length)
