"""Loop labels and seamless loop cutting, on generated instruments with known identity."""

from __future__ import annotations

import numpy as np
import pytest

from unmixer.loops import cut_loop, label_loop
from unmixer.synth import LABEL_OF, make_song


@pytest.mark.parametrize("seed", [11, 13, 101])
def test_labels_of_each_instrument_family(seed):
    song = make_song(seed=seed, n_loops=6, n_bars=16, family="dense",
                     instruments=["drums", "bass", "pad", "lead", "pluck", "vocal"])
    bar = int(song.meter * 60 / song.bpm * song.sr)
    for k, instrument in enumerate(song.instruments):
        first = int(np.flatnonzero(song.layout[k])[0])
        clip = song.stems[k][:, first * bar:(first + 2) * bar]
        assert label_loop(clip, song.sr) == LABEL_OF[instrument], instrument


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
