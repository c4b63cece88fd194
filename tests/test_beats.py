"""Downbeats, meter and tempo with madmom, on generated songs with known bars."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synth_song

from unmixer.errors import UnmixerError
from unmixer.loops.beats import grid_from_downbeats, track_beats


@pytest.mark.parametrize("bpm,meter,loop_bars", [(120.0, 4, 2), (100.0, 3, 1)])
def test_tempo_meter_and_beats_of_a_generated_song(bpm, meter, loop_bars):
    song = synth_song(seed=21 if meter == 4 else 22, bpm=bpm, meter=meter, loop_bars=loop_bars,
                      n_bars=16, instruments=("drums", "bass", "pad", "lead"))
    grid = track_beats(song.mix)
    assert abs(grid.bpm - bpm) / bpm < 0.02
    assert grid.meter == meter
    beat_s = 60.0 / bpm
    true_beats = np.arange(0, song.mix.shape[1] / song.sr, beat_s)
    # every tracked downbeat lies on a true beat (the bar phase of drum loops can be ambiguous)
    err = np.abs(grid.downbeats_s[:-1, None] - true_beats[None, :]).min(axis=1)
    assert np.median(err) < 0.05
    assert np.allclose(np.diff(grid.downbeats_s), meter * beat_s, rtol=0.05)
    assert grid.n_bars >= 13


@pytest.mark.parametrize("kind", ["sine", "noise"])
def test_no_beat_raises(kind):
    sr = 44100
    t = np.arange(20 * sr) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) if kind == "sine" else \
        0.1 * np.random.default_rng(0).standard_normal(len(t))
    with pytest.raises(UnmixerError, match="beat"):
        track_beats(np.stack([x, x]).astype(np.float32))


def test_grid_from_known_downbeats():
    grid = grid_from_downbeats(np.arange(9) * 2.0, 4)
    assert grid.n_bars == 8 and grid.bpm == pytest.approx(120.0)
    assert len(grid.beats_s) == 32
    with pytest.raises(UnmixerError):
        grid_from_downbeats(np.array([0.0, 2.0, 4.0]), 4)


def _madmom_features(mono: np.ndarray) -> np.ndarray:
    """madmom's own pre-processing of RNNDownBeatProcessor (its processors, frame by frame)."""
    from madmom.audio.signal import FramedSignalProcessor, Signal
    from madmom.audio.spectrogram import (FilteredSpectrogramProcessor, LogarithmicSpectrogramProcessor,
                                          SpectrogramDifferenceProcessor)
    from madmom.audio.stft import ShortTimeFourierTransformProcessor

    sig = Signal(mono, sample_rate=44100, num_channels=1)
    out = []
    for size, bands in zip((1024, 2048, 4096), (3, 6, 12)):
        x = ShortTimeFourierTransformProcessor()(FramedSignalProcessor(frame_size=size, fps=100)(sig))
        x = FilteredSpectrogramProcessor(num_bands=bands, fmin=30, fmax=17000, norm_filters=True)(x)
        x = LogarithmicSpectrogramProcessor(mul=1, add=1)(x)
        out.append(SpectrogramDifferenceProcessor(diff_ratio=0.5, positive_diffs=True, stack_diffs=np.hstack)(x))
    return np.hstack(out)


def _song():
    return synth_song(seed=21, bpm=120.0, meter=4, loop_bars=2, n_bars=8,
                      instruments=("drums", "bass", "pad", "lead"))


def test_vectorised_features_and_activations_equal_madmoms():
    """One vectorised pass gives madmom's features, and the threaded networks its activations."""
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import RNNDownBeatProcessor

    from unmixer.loops import beats

    song = _song()
    mono = song.mix.mean(axis=0)
    ours, theirs = beats.downbeat_features(mono), _madmom_features(mono)
    assert ours.shape == theirs.shape == (int(np.ceil(len(mono) / 441)), 314)
    assert np.abs(ours - theirs).max() < 1e-5 * np.abs(theirs).max()
    act = beats.downbeat_activations(song.mix)
    ref = RNNDownBeatProcessor()(Signal(mono, sample_rate=44100, num_channels=1))
    assert act.shape == ref.shape and np.abs(act - ref).max() < 1e-4
    assert act.max() > 0.5  # a real beat, not two empty arrays


def test_networks_on_one_thread_give_the_same_activations(monkeypatch):
    from unmixer.loops import beats

    song = _song()
    threaded = beats.downbeat_activations(song.mix)
    monkeypatch.setenv("UNMIXER_THREADS", "1")
    assert np.array_equal(beats.downbeat_activations(song.mix), threaded)
    assert beats.downbeat_activations(song.mix, n_networks=2).shape == threaded.shape
    with pytest.raises(UnmixerError):
        beats.downbeat_activations(song.mix, n_networks=9)


def test_the_networks_run_without_onnxruntimes_memory_arena():
    """The downbeat networks and the key CNN are loaded without onnxruntime's CPU memory
    arena (it kept 300+ MiB for the process's life), their predictions equal those of
    madmom's own sessions (arena on), and madmom's session options are left as they were."""
    import onnxruntime
    from madmom.ml.nn import NeuralNetwork, onnx_runtime
    from madmom.models import DOWNBEATS_BLSTM

    from unmixer.loops import beats, key

    with beats._networks_lock:
        ours = beats._load_networks()
    processor, _ = key._processor()
    def networks(processor) -> list:  # madmom's processors nest in .processors lists
        if isinstance(processor, NeuralNetwork):
            return [processor]
        return [nn for p in getattr(processor, "processors", []) for nn in networks(p)]

    runtimes = [nn._runtime for nn in ours + networks(processor)]
    assert len(runtimes) > len(ours)  # the key CNN's too
    assert all(rt.session_options.enable_cpu_mem_arena is False for rt in runtimes)
    assert onnx_runtime._create_session_options(onnxruntime).enable_cpu_mem_arena is True
    features = beats.downbeat_features(_song().mix.mean(axis=0))
    theirs = NeuralNetwork.load(DOWNBEATS_BLSTM[0], intra_op_num_threads=1)
    assert theirs._runtime.session_options.enable_cpu_mem_arena is True
    assert np.array_equal(ours[0](features), theirs(features))


def test_bar_state_space_of_given_tempi_is_madmoms():
    from madmom.features.beats_hmm import BarStateSpace

    from unmixer.loops import beats

    full = beats._beat_intervals(100)
    ours = beats._bar_hmm(3, full).transition_model.state_space
    theirs = BarStateSpace(3, 6000 / beats.MAX_BPM, 6000 / beats.MIN_BPM, beats.NUM_TEMPI)
    assert np.array_equal(ours.state_positions, theirs.state_positions)
    assert np.array_equal(ours.state_intervals, theirs.state_intervals)
    assert all(np.array_equal(a, b) for a, b in zip(ours.first_states, theirs.first_states))
    assert all(np.array_equal(a, b) for a, b in zip(ours.last_states, theirs.last_states))


def test_compact_viterbi_is_madmoms(monkeypatch):
    """The Viterbi with back-pointers for the multi-predecessor states only finds madmom's
    path and log probability, bit for bit, on both meters of the full model and on a
    narrowed one, also decoding the meters on one thread; it keeps pointers for 1 state in
    40 or fewer (one per tempo and beat)."""
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor

    from unmixer.loops import beats

    act = beats.downbeat_activations(_song().mix)
    hmms = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100).hmms
    hmms = hmms + [beats._bar_hmm(4, beats._beat_intervals(100)[20:30])]
    for hmm in hmms:
        path, log_probability = hmm.viterbi(act)
        ours, ours_log_probability = beats.viterbi(hmm, act)
        assert np.array_equal(ours, path) and ours_log_probability == log_probability
        assert len(np.unique(path)) > 100  # a real path through the bar
        multi = np.count_nonzero(np.diff(hmm.transition_model.pointers.astype(np.int64)) > 1)
        assert multi <= hmm.transition_model.num_states / 40
    ref = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    assert np.array_equal(beats.decode_downbeats(act, tempo_window=None), ref)
    monkeypatch.setenv("UNMIXER_THREADS", "1")
    assert np.array_equal(beats.decode_downbeats(act, tempo_window=None), ref)


@pytest.mark.parametrize("bpm,meter", [(120.0, 4), (100.0, 3), (165.0, 4)])
def test_narrowed_dbn_finds_madmoms_downbeats(bpm, meter):
    """On three 4-s excerpts the full DBN picks the tempi; the narrowed one decodes the whole
    song with a fraction of the states and finds exactly madmom's beats and downbeats."""
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor

    from unmixer.loops import beats

    song = synth_song(seed=31 + meter, bpm=bpm, meter=meter, loop_bars=1, n_bars=12,
                      instruments=("drums", "bass", "pluck", "lead"))
    act = beats.downbeat_activations(song.mix)
    ref = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    ours = beats.decode_downbeats(act, excerpt_s=4.0, narrow_from_s=10.0)
    assert np.array_equal(ours, ref)
    assert ref[:, 1].max() == meter


def _beat_activations(bpms: list[float], seconds: float) -> np.ndarray:
    """Synthetic activations: a downbeat peak every 4 beats, beat peaks between, the tempo
    stepping through ``bpms`` in equal parts of the song."""
    n = int(seconds * 100)
    act = np.full((n, 2), 0.01, dtype=np.float32)
    t, k, part = 0.0, 0, n / len(bpms)
    while t < n - 1:
        i = int(round(t))
        act[i, 1 if k % 4 == 0 else 0] = 0.9
        t += 6000.0 / bpms[min(int(t // part), len(bpms) - 1)]
        k += 1
    return act


def test_narrowed_dbn_keeps_a_tempo_change_that_an_excerpt_shows(monkeypatch):
    """The first two thirds at 100 BPM, the last at 150: the last excerpt shows the faster
    tempo, its states are kept, and the narrowed DBN finds madmom's beats with fewer states;
    a tempo between the excerpts that the kept states miss sends the path to their edge: the
    kept range grows on that side and the song is decoded again (without widening, by the
    full model)."""
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor

    from unmixer.loops import beats

    states = []
    original = beats._Decoder

    class Counting(original):
        def __init__(self, meters, fps, hmms=None):
            super().__init__(meters, fps, hmms)
            states.append(sum(h.transition_model.num_states for h in self.dbn.hmms))

    monkeypatch.setattr(beats, "_Decoder", Counting)
    act = _beat_activations([100.0, 100.0, 150.0], 60.0)
    ref = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    assert np.array_equal(beats.decode_downbeats(act, excerpt_s=10.0, narrow_from_s=30.0), ref)
    assert len(states) == 4 and states[-1] < states[0] / 2  # 3 excerpts, then the narrowed decoding
    states.clear()
    steady = _beat_activations([100.0], 60.0)
    ref = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(steady)
    assert np.array_equal(beats.decode_downbeats(steady, excerpt_s=10.0, narrow_from_s=30.0), ref)
    assert states[-1] < states[0] / 5
    # 97 BPM from 16 to 24 s, between the excerpts (5-15, 25-35, 45-55 s); with a 1% window
    # only the intervals 60 and 61 frames are kept, the path sits on 61, the edge
    states.clear()
    act = _beat_activations([100.0] * 8 + [97.0] * 4 + [100.0] * 18, 60.0)
    ref = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    ours = beats.decode_downbeats(act, excerpt_s=10.0, narrow_from_s=30.0, tempo_window=0.01)
    assert np.array_equal(ours, ref)
    # the kept range grew on the side the path reached and the song was decoded again,
    # still with far fewer states than the full model
    assert len(states) in (5, 6) and states[4] > states[3] and states[-1] < states[0] / 2
    states.clear()  # with no widening allowed: decoded again with every tempo
    monkeypatch.setattr(beats, "WIDENINGS", 0)
    ours = beats.decode_downbeats(act, excerpt_s=10.0, narrow_from_s=30.0, tempo_window=0.01)
    assert np.array_equal(ours, ref)
    assert len(states) == 5 and states[-1] == states[0]
