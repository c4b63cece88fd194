"""Why tail templates: oracle loop models of one benchmark song against its ideal ratio mask.

    .venv/bin/python bench/tails_oracle.py composed 1     # family, song index (0-based)

Every model below is built from the true stems and the true layout (no decomposition), on the
engine's cube grid with the true downbeats, and turned into Wiener masks (power 2) on the
mixture; the mean SDR over the loops (BSS Eval, ``bench.blockeval.bss_eval_blocks``) says
what each model of a loop could reach at best:

- the stems' own magnitudes (the ideal ratio mask);
- the stems' cube, segment by segment (what the cube's resampling loses);
- one template per loop, the mean of the loop's segments, times the layout (the loop model
  of Smith & Goto 2018, with perfect templates and activations);
- the same plus a tail template sounding in the segment after each one where the loop plays
  (``unmixer.loops.ntd.refine_loop_tails``' model), fitted per stem by least squares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import quality as q  # noqa: E402
import quality_variants as qv  # noqa: E402

from bench.blockeval import bss_eval_blocks  # noqa: E402
from unmixer.core.spectrum import istft, stft  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.loops.cube import cube_to_frames, spectral_cube  # noqa: E402


def main() -> None:
    family, index = sys.argv[1], int(sys.argv[2])
    spec = q.song_specs(family, index + 1)[index]
    song = make_song(**spec)
    K, L = spec["n_loops"], max(spec["loop_bars"])
    prep = qv.prepare(song.mix, song.downbeats_s, song.meter, L)
    S, N, length = prep.cube.shape[2], prep.mix_spec.shape[-1], song.mix.shape[-1]
    layout = song.layout[:, ::L][:, :S].T.astype(np.float32)  # (S, K)
    mags = np.stack([np.abs(stft(song.stems[k])).mean(axis=0) for k in range(K)])  # (K, F, N)
    cubes = np.stack([spectral_cube(mags[k], prep.grid) for k in range(K)])  # (K, F, T, S)

    def score(name: str, models: np.ndarray) -> None:
        power = models.astype(np.float64) ** 2
        masks = (power / (power.sum(axis=0, keepdims=True) + 1e-12)).astype(np.float32)
        tracks = np.stack([istft(prep.mix_spec * masks[k][None], length) for k in range(K)])
        sdr = bss_eval_blocks(song.stems, tracks, sir_sar=False).sdr
        print(f"| {name} | {np.mean(sdr):.1f} | {', '.join(f'{x:.1f}' for x in sdr)} |", flush=True)

    def frames(cells: np.ndarray) -> np.ndarray:  # (K, F, T, S) -> (K, F, N)
        return np.stack([cube_to_frames(c, prep.grid, N) for c in cells])

    def tail_fit(c: np.ndarray, d: np.ndarray) -> np.ndarray:  # least squares D P + D_prev Q
        A = np.stack([d, np.concatenate([[0.0], d[:-1]])], axis=1)  # (S, 2)
        Y = c.reshape(-1, S).T
        coef = np.maximum(np.linalg.lstsq(A, Y, rcond=None)[0], 0)
        return (A @ coef).T.reshape(c.shape)

    print(f"{family} song {index + 1}: {q.describe(spec)}\n")
    print("| model | mean SDR (dB) | per loop |\n|---|---:|---|")
    score("stems' magnitudes (ideal ratio mask)", mags)
    score("stems' cube, segment by segment", frames(cubes))
    mean = np.stack([cubes[k][:, :, layout[:, k] > 0].mean(axis=2)[:, :, None] * layout[None, None, :, k]
                     for k in range(K)])
    score("one template per loop × layout", frames(mean))
    score("template + tail × layout", frames(np.stack([tail_fit(cubes[k], layout[:, k]) for k in range(K)])))


if __name__ == "__main__":
    main()
