"""Time of the purification starts and of the template refits on the 4-minute song's cube.

    bench/prio.sh .venv/bin/python bench/refine_time.py [SONG]   # default bench/out/vibe_ace_x4.wav

(bench/engine.py stages writes bench/out/vibe_ace_x4.wav.) K = 5, 2-bar segments, madmom's
downbeats, 30 NTD iterations; each refit timed twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from unmixer.core.audio import load_audio
    from unmixer.core.spectrum import stft
    from unmixer.loops.beats import track_beats
    from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube
    from unmixer.loops.masks import loop_templates
    from unmixer.loops.ntd import loop_ranks, ntd_hals, purify_core, refine_loop_tails, refine_loop_templates

    path = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "bench" / "out" / "vibe_ace_x4.wav")
    audio = load_audio(path, max_duration_s=900)
    grid_beats = track_beats(audio)
    grid = make_grid(segment_boundaries_s(grid_beats.downbeats_s, 2), 44100)
    cube = spectral_cube(np.abs(stft(audio)).mean(axis=0), grid)
    cube /= cube.max()
    model = ntd_hals(cube, loop_ranks(cube.shape, 5), n_iter=30, tol=1e-4)
    print(f"cube {cube.shape}, ranks {tuple(model.core.shape)}")
    for starts in (1, 16):
        t = time.perf_counter()
        core, D = purify_core(model, 5, sparsity=6.0, n_starts=starts)
        print(f"purify_core, {starts} start(s): {time.perf_counter() - t:.3f} s")
    P = loop_templates(core, *[np.asarray(f, np.float32) for f in model.factors[:2]])
    for _ in range(2):
        t = time.perf_counter()
        refine_loop_tails(cube, P, D, n_iter=10)
        print(f"refine_loop_tails, 10 HALS sweeps: {time.perf_counter() - t:.3f} s")
        t = time.perf_counter()
        refine_loop_templates(cube, P, D, n_iter=20, beta=2.0)
        print(f"refine_loop_templates, 20 Euclidean updates: {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
