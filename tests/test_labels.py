"""Loop labels on generated instruments with known class, clean and with leakage."""

from __future__ import annotations

import numpy as np
import pytest

from unmixer.datasets.synth import LABEL_OF, make_song
from unmixer.loops import labels
from unmixer.loops import masks as loops

SR = 44100


@pytest.fixture(scope="module")
def song():
    """Six synthesised loops, each playing alone somewhere (dense layout, 16 bars at 120 BPM)."""
    return make_song(seed=11, n_loops=6, n_bars=16, family="dense",
                     instruments=["drums", "bass", "pad", "lead", "pluck", "vocal"])


def two_bars(song, k: int, leak: float = 0.0) -> np.ndarray:
    """Stem k over two bars where it plays, plus ``leak`` times the other stems there."""
    bar = int(round(song.meter * 60 / song.bpm * song.sr))
    first = int(np.flatnonzero(song.layout[k])[0])
    span = slice(first * bar, (first + 2) * bar)
    others = song.stems[:, :, span].sum(axis=0) - song.stems[k][:, span]
    return song.stems[k][:, span] + leak * others


@pytest.fixture(scope="module")
def clean_features(song):
    """Features of each clean stem of ``song``, keyed by instrument."""
    return {inst: labels.loop_features(two_bars(song, k), SR) for k, inst in enumerate(song.instruments)}


@pytest.mark.parametrize("k", [0, 1, 2, 3])  # drums, bass, pad (chords), lead
def test_clean_and_leaky_loops_get_their_class(song, clean_features, k):
    instrument = song.instruments[k]
    clean = labels.class_probabilities(clean_features[instrument])
    assert labels.choose_label(dict(zip(labels.CLASSES, clean))) == LABEL_OF[instrument]
    assert labels.label_loop(two_bars(song, k, leak=0.1), SR) == LABEL_OF[instrument]


def test_every_instrument_family_is_ranked_first(song, clean_features):
    """Without the fallback, each clean stem's most probable class is its own (two songs)."""
    other = make_song(seed=13, n_loops=6, n_bars=16, family="dense",
                      instruments=["drums", "bass", "pad", "lead", "pluck", "vocal"])
    for k, instrument in enumerate(other.instruments):
        p = labels.label_probabilities(two_bars(other, k), SR)
        assert max(p, key=p.get) == LABEL_OF[instrument], (instrument, p)
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        first = labels.CLASSES[int(np.argmax(labels.class_probabilities(clean_features[instrument])))]
        assert first == LABEL_OF[instrument], instrument


def test_features_order_the_instruments_as_expected(clean_features):
    f = clean_features
    i = labels.FEATURES.index
    assert f["drums"][i("percussive share")] > 3 * f["pad"][i("percussive share")]
    assert f["bass"][i("low share")] > 3 * f["lead"][i("low share")]
    assert f["pad"][i("polyphony")] > f["lead"][i("polyphony")] + 1
    assert f["vocal"][i("pitch wobble")] > f["lead"][i("pitch wobble")] + 1  # vibrato


def test_unsure_silent_and_short_clips_say_loop(song):
    assert labels.FALLBACK in labels.LABELS and set(labels.CLASSES) < set(labels.LABELS)
    assert labels.label_loop(np.zeros((2, SR)), SR) == "loop"
    assert labels.label_loop(np.ones(100, dtype=np.float32), SR) == "loop"
    # drums + bass, or chords + lead, at their own levels: no one class is sure
    for pair in ((0, 1), (2, 3)):
        mix = sum(two_bars(song, k) for k in pair)
        assert labels.label_loop(mix, SR) == "loop", [song.instruments[k] for k in pair]
        p = labels.label_probabilities(mix, SR)
        assert labels.choose_label(p, min_confidence=0.0) in [LABEL_OF[song.instruments[k]] for k in pair]


def test_loops_module_reexports_the_labeller():
    assert loops.label_loop is labels.label_loop
    assert loops.LABELS == labels.LABELS
