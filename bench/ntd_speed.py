"""NTD speed: our HALS solver against TensorLy's, side by side in one run.

    .venv/bin/python bench/ntd_speed.py [--tl-iter 20] [--our-iter 200]

The cube is real music: Vibe Ace (Kevin MacLeod, CC BY, ../shared/audio) played four times
in a row (4 min), cut at madmom's downbeats into 1-bar segments resampled to 173 steps, the
first 120 segments: 1025 x 173 x 120 = 21.3 M cells, ranks (50, 40, 30), float32, all three
solvers from the same HOSVD start. The target error is the one TensorLy's HALS reaches after
``--tl-iter`` iterations; the speed-up is the ratio of the times to reach it. Peak memory is
the peak of Python's allocation tracer (numpy reports its buffers to it) during each solver.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.core.audio import load_audio  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.loops.beats import track_beats  # noqa: E402
from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube  # noqa: E402
from unmixer.loops.ntd import NTDResult, initialise, ntd_hals  # noqa: E402

RANKS = (50, 40, 30)


def build_cube() -> np.ndarray:
    one = load_audio(REPO.parent / "shared" / "audio" / "vibe_ace.ogg")
    audio = np.concatenate([one] * 4, axis=1)
    grid_beats = track_beats(audio)
    boundaries = segment_boundaries_s(grid_beats.downbeats_s, 1)[:121]
    magnitude = np.abs(stft(audio)).mean(axis=0)
    cube = spectral_cube(magnitude, make_grid(boundaries, n_steps=173))
    return cube / cube.max()


def timed(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, elapsed, peak


def time_to(errors: list[float], times: list[float], target: float) -> float | None:
    """Seconds at which an error curve first reaches ``target`` (None if never)."""
    for e, t in zip(errors, times):
        if e <= target:
            return t
    return None


def main() -> None:
    import tensorly as tl
    from tensorly.decomposition import non_negative_tucker, non_negative_tucker_hals

    parser = argparse.ArgumentParser()
    parser.add_argument("--tl-iter", type=int, default=20)
    parser.add_argument("--our-iter", type=int, default=200)
    parser.add_argument("--inner-sweeps", type=int, default=8, help="our HALS sweeps per iteration")
    args = parser.parse_args()

    X = build_cube()
    print(f"cube {X.shape} = {X.size / 1e6:.1f} M cells, {X.dtype}, {X.nbytes / 2**20:.0f} MiB; ranks {RANKS}")
    print(f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
          f"tensorly {tl.__version__}, numpy {np.__version__}\n")
    initialise(X, RANKS, "svd")  # warm-up: first-touch page faults, BLAS thread start
    starts = []
    for _ in range(3):  # the start's time without the allocation tracer, median of 3
        t0 = time.perf_counter()
        init = initialise(X, RANKS, "svd")
        starts.append(time.perf_counter() - t0)
    init_s = float(np.median(starts))
    _, _, init_peak = timed(lambda: initialise(X, RANKS, "svd"))

    def our_run():
        return ntd_hals(X, RANKS, n_iter=args.our_iter, tol=0, inner_sweeps=args.inner_sweeps,
                        init=NTDResult(init.core.copy(), [f.copy() for f in init.factors]))

    ours, our_s, our_peak = timed(our_run)
    our_times = [init_s + t for t in ours.times_s]

    def run_tl(fn, dtype):
        start = tl.tucker_tensor.TuckerTensor((init.core.astype(dtype), [f.astype(dtype) for f in init.factors]))
        (core, factors), errors = fn(X.astype(dtype), list(RANKS), n_iter_max=args.tl_iter, init=start,
                                     tol=0, return_errors=True)
        return errors

    def tl_times(errors, seconds):  # one error per iteration; its iterations cost the same each
        return [init_s + seconds * (i + 1) / len(errors) for i in range(len(errors))]

    tl_hals, tl_hals_s, tl_hals_peak = timed(lambda: run_tl(non_negative_tucker_hals, np.float32))
    tl_mu, tl_mu_s, tl_mu_peak = timed(lambda: run_tl(non_negative_tucker, np.float32))
    hals_times, mu_times = tl_times(tl_hals, tl_hals_s), tl_times(tl_mu, tl_mu_s)
    tl_hals64, tl_hals64_s, tl_hals64_peak = timed(lambda: run_tl(non_negative_tucker_hals, np.float64))
    hals64_times = tl_times(tl_hals64, tl_hals64_s)

    target = float(tl_hals[-1])
    t_ours = time_to(ours.errors, our_times, target)
    t_hals = time_to(tl_hals, hals_times, target)
    t_mu = time_to(tl_mu, mu_times, target)
    t_hals64 = time_to(tl_hals64, hals64_times, target)
    print(f"target: relative error {target:.4f} (TensorLy HALS after {len(tl_hals)} iterations)\n")
    print("| solver | iterations run | s / iteration | final rel. error | time to target (s) | "
          "after the start (s) | speed-up vs TensorLy HALS float32: with the start / after it | "
          "peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|")

    def row(name, n, seconds, err, t, peak):
        ratio = f"{t_hals / t:.1f}x / {(t_hals - init_s) / (t - init_s):.1f}x" if t and t_hals else "n/a"
        reach = f"{t:.2f} | {t - init_s:.2f}" if t else "not reached | –"
        print(f"| {name} | {n} | {seconds / max(n, 1):.3f} | {err:.4f} | {reach} | {ratio} | {peak / 2**20:.0f} |")

    row("ours (`ntd_hals`, float32)", ours.n_iter, our_s, ours.errors[-1], t_ours, our_peak)
    row("TensorLy `non_negative_tucker_hals`, float32", len(tl_hals), tl_hals_s, tl_hals[-1], t_hals, tl_hals_peak)
    row("TensorLy `non_negative_tucker_hals`, float64 (its default dtype)", len(tl_hals64), tl_hals64_s,
        tl_hals64[-1], t_hals64, tl_hals64_peak)
    row("TensorLy `non_negative_tucker` (MU), float32", len(tl_mu), tl_mu_s, tl_mu[-1], t_mu, tl_mu_peak)
    print(f"\nHOSVD start (shared): {init_s:.2f} s, median of {len(starts)} "
          f"({', '.join(f'{t:.2f}' for t in starts)}), peak {init_peak / 2**20:.0f} MiB; counted in every "
          f"solver's time to target. Our iterations also include the loss from Gram matrices; "
          f"TensorLy's rebuild the tensor for theirs.")
    for it in (5, 10, 20, 50):
        if it < len(ours.errors):
            print(f"ours after {it} iterations: error {ours.errors[it]:.4f} at {our_times[it]:.1f} s")


if __name__ == "__main__":
    main()
