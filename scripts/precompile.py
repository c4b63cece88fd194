"""Compile the numba code Unmixer runs into numba's on-disk cache, once, in one process.

Run by setup.sh after the packages are installed (and again whenever they change).

Why: numba's cache is not safe against several processes compiling new signatures of the
same function at once (numba issue #10128, open): two processes may each pick the same data
file for different signatures, and the index can then name the other signature's machine
code, so that every later process that loads it crashes with a segmentation fault. A fresh
install runs the app's server, Dask workers and CLI runs side by side; compiling everything
here first leaves them only reading the cache.

The calls below cover the signatures (dtype, number of dimensions) the engine, the Drum
Splitter and the NMF Lab use: librosa's STFT and inverse STFT (overlap-add, window
sum-square) on mono and stereo float32 and float64, its beat tracker and onset/pitch
helpers, madmom's tracking through :func:`unmixer.loops.beats.viterbi`, and one short
extraction with a preview. Takes 20-60 s on 2 cores.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # short test signals, by design
    t0 = time.perf_counter()
    import librosa
    import librosa.beat
    import librosa.feature
    import librosa.onset

    rng = np.random.default_rng(0)
    sr = 44100
    for dtype in (np.float32, np.float64):
        for shape in ((sr,), (1, sr), (2, sr)):
            x = rng.standard_normal(shape).astype(dtype)
            for n_fft, hop in ((2048, 512), (4096, 1024), (1024, 256)):
                spec = librosa.stft(x, n_fft=n_fft, hop_length=hop)
                librosa.istft(spec, hop_length=hop, n_fft=n_fft, length=shape[-1])
        mono = rng.standard_normal(4 * sr).astype(dtype)
        envelope = librosa.onset.onset_strength(y=mono, sr=sr)
        librosa.beat.beat_track(onset_envelope=envelope, sr=sr)
        librosa.beat.beat_track(onset_envelope=envelope.astype(np.float32), sr=sr)
        librosa.onset.onset_detect(onset_envelope=envelope, sr=sr)
        librosa.yin(mono[: sr], fmin=60, fmax=1000, sr=sr)
        librosa.feature.chroma_stft(y=mono, sr=sr)
        librosa.feature.chroma_cqt(y=mono[: 2 * sr], sr=sr)  # the browser test's key check
        librosa.feature.mfcc(y=mono, sr=sr)
        librosa.feature.spectral_flatness(y=mono)
        librosa.util.softmask(np.abs(mono[:100]), np.abs(mono[100:200]), power=2)

    from unmixer.core.spectrum import istft, stft
    from unmixer.datasets.synth import make_song
    from unmixer.loops import beats
    from unmixer.loops.pipeline import extract_loops

    for channels in (1, 2):
        x = rng.standard_normal((channels, sr)).astype(np.float32)
        istft(stft(x), x.shape[-1])
    beats.warm_up()
    song = make_song(0, n_loops=3, n_bars=8, bpm=120)
    extract_loops(song.mix, 3, loop_bars=2, preview=lambda result: None, preview_iter=2)
    extract_loops(song.mix, 3, loop_bars=1, tracks="stream", on_track_chunk=lambda *chunk: None)

    from unmixer.drums.separate import split_drums
    from unmixer.lab.hpss import hpss_nmf

    split_drums(song.mix[:, : 4 * sr], n_iter=2, n_refine=1)
    hpss_nmf(np.abs(librosa.stft(song.mix[0, : 4 * sr])), n_iter=2)
    print(f"setup: numba's cache is ready ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
