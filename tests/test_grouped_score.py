"""The grouped SI-SDR improvement (issue 14) on generated signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from unmixer.core.metrics import SI_SDR_CAP_DB, grouped_si_sdri, grouped_si_sdri_from_gram, signal_gram
from unmixer.errors import UnmixerError

N = 22050


def _stems(n_stems: int = 4, seed: int = 0) -> np.ndarray:
    """Independent stereo noise stems of decreasing loudness, shape (n_stems, 2, N)."""
    rng = np.random.default_rng(seed)
    gains = np.linspace(1.0, 0.2, n_stems, dtype=np.float32)[:, None, None]
    return (rng.standard_normal((n_stems, 2, N)).astype(np.float32) * gains)


def _si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """SI-SDR (dB) written out on the concatenated channels, clipped like the library's."""
    r, e = ref.astype(np.float64).ravel(), est.astype(np.float64).ravel()
    target = (e @ r) / (r @ r) * r
    err = e - target
    if err @ err == 0:
        return SI_SDR_CAP_DB
    return float(np.clip(10 * np.log10((target @ target) / (err @ err)), -SI_SDR_CAP_DB, SI_SDR_CAP_DB))


def test_one_track_holding_the_mixture_scores_zero_in_one_group():
    stems = _stems()
    mix = stems.sum(axis=0)
    score = grouped_si_sdri(stems, mix[None], mix)
    assert score.n_groups == 1
    assert score.groups == [((0, 1, 2, 3), (0,))]
    assert score.score_db == 0.0
    assert score.per_group_db[0] == 0.0


def test_the_stems_as_tracks_score_the_ideal_one_group_per_stem():
    stems = _stems()
    mix = stems.sum(axis=0)
    score = grouped_si_sdri(stems, stems, mix)
    assert score.n_groups == 4
    assert score.groups == [((k,), (k,)) for k in range(4)]
    np.testing.assert_array_equal(score.estimate_db, SI_SDR_CAP_DB)  # perfect: clipped to the cap
    ideal = np.mean([SI_SDR_CAP_DB - _si_sdr(s, mix) for s in stems])
    assert score.score_db == pytest.approx(ideal, abs=1e-6)
    assert score.score_db > 60.0  # the quieter stems start far below the mixture


def test_a_planted_partial_separation_gives_its_groups_and_score():
    stems = _stems()
    mix = stems.sum(axis=0)
    rng = np.random.default_rng(1)
    leak = 0.05 * rng.standard_normal((2, N)).astype(np.float32)
    # two tracks, each holding two stems, a little of the other pair leaking in; a third
    # track silent (it belongs to no group)
    tracks = np.stack([stems[0] + stems[3] + leak, stems[1] + stems[2] - leak, np.zeros((2, N), np.float32)])
    score = grouped_si_sdri(stems, tracks, mix)
    assert score.n_groups == 2
    assert score.groups == [((0, 3), (0,)), ((1, 2), (1,))]
    expected = [_si_sdr(stems[list(g)].sum(0), tracks[list(t)].sum(0)) - _si_sdr(stems[list(g)].sum(0), mix)
                for g, t in score.groups]
    np.testing.assert_allclose(score.per_group_db, expected, atol=1e-6)
    assert score.score_db == pytest.approx(np.mean(expected), abs=1e-6)
    assert 10.0 < score.score_db < SI_SDR_CAP_DB


def test_tracks_linked_to_one_stem_form_one_group():
    """Two tracks that both correlate most with stem 0 join its group; stem 1 keeps its own."""
    stems = _stems(2)
    mix = stems.sum(axis=0)
    tracks = np.stack([0.6 * stems[0], 0.4 * stems[0] + 0.1 * stems[1], 0.9 * stems[1]])
    score = grouped_si_sdri(stems, tracks, mix)
    assert score.groups == [((0,), (0, 1)), ((1,), (2,))]


def test_the_gram_in_blocks_gives_the_same_score():
    stems = _stems()
    mix = stems.sum(axis=0)
    tracks = np.stack([stems[0] + stems[1], stems[2] + stems[3]])
    flat = [x.reshape(x.shape[0], -1) for x in (stems, tracks, mix[None])]
    whole = grouped_si_sdri(stems, tracks, mix)
    blocks = grouped_si_sdri_from_gram(signal_gram(*flat, block=1000), 4, 2)
    assert blocks.groups == whole.groups
    assert blocks.score_db == pytest.approx(whole.score_db, abs=1e-9)


@pytest.mark.parametrize("case", ["length", "channels", "silent stem", "silent tracks", "nan"])
def test_bad_input_raises_one_line(case):
    stems = _stems(2)
    mix = stems.sum(axis=0)
    tracks = stems.copy()
    if case == "length":
        tracks = tracks[..., :-1]
    elif case == "channels":
        tracks = tracks[:, :1]
    elif case == "silent stem":
        stems = np.concatenate([stems, np.zeros((1, 2, N), np.float32)])
    elif case == "silent tracks":
        tracks = np.zeros_like(tracks)
    else:
        tracks[0, 0, 5] = np.nan
    with pytest.raises(UnmixerError) as err:
        grouped_si_sdri(stems, tracks, mix)
    assert "\n" not in str(err.value)
