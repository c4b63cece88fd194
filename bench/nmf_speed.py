"""Speed of our β-NMF multiplicative updates against scikit-learn's ``mu`` and ``cd`` solvers.

    .venv/bin/python bench/nmf_speed.py [--repeats 3] [--out bench/RESULTS_nmf.md]

Input: the magnitude spectrogram (channel mean, n_fft 2048, hop 1024) of the first 2600
frames (60.4 s) of the shipped demo song: a 1025 x 2600 matrix. For K in {8, 32}, every
solver starts from the same NNDSVDa factors (ours, W columns at unit norm) and runs without
early stopping. Loss curves are exact (scikit-learn's are traced by warm restarts, which
for these solvers is the same as one run); wall times come from one uninterrupted timed run
per solver (best of ``--repeats``), so scikit-learn's time to iteration n is n times its
time per iteration plus its set-up. "Time to the same loss" is the time each solver needs to
reach the loss that scikit-learn's ``mu`` has after 50 and after 200 iterations, and 1.01 x
the best loss any solver reached.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unmixer.core.audio import load_audio  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.data import DEMO_SONG  # noqa: E402
from unmixer.lab.nmf import beta_nmf, sklearn_nmf_curve  # noqa: E402

N_FRAMES = 2600
HOP = 1024


def spectrogram() -> np.ndarray:
    """(1025, 2600) float32 channel-mean magnitude of the demo song at hop 1024."""
    audio = load_audio(DEMO_SONG)[:, : (N_FRAMES - 1) * HOP]
    V = np.abs(stft(audio, hop_length=HOP)).mean(axis=0)
    return np.ascontiguousarray(V[:, :N_FRAMES], dtype=np.float32)


def time_sklearn(V, W0, H0, beta, solver, n_iter, repeats):
    """Best wall time (s) of one uninterrupted scikit-learn run of ``n_iter`` iterations."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    best = np.inf
    for _ in range(repeats):
        model = NMF(W0.shape[1], init="custom", solver=solver, beta_loss=beta, max_iter=n_iter,
                    tol=0.0, shuffle=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            model.fit_transform(V, W=W0.copy(), H=H0.copy())
            best = min(best, time.perf_counter() - t0)
        assert model.n_iter_ == n_iter
    return best


def time_ours(V, W0, H0, beta, n_iter, repeats, loss_every):
    """Per-iteration cumulative times (best run by total) and the loss curve of ours."""
    best = None
    for _ in range(repeats):
        res = beta_nmf(V, W0.shape[1], beta=beta, W=W0, H=H0, n_iter=n_iter, tol=0.0,
                       loss_every=loss_every)
        if best is None or res.times_s[-1] < best.times_s[-1]:
            best = res
    return best


def first_reach(iters, loss, target):
    """Smallest iteration count whose loss is <= target (None if never)."""
    hit = np.flatnonzero(np.asarray(loss) <= target)
    return None if hit.size == 0 else int(np.asarray(iters)[hit[0]])


def bench(V, K, beta, n_mu, n_cd, repeats):
    start = beta_nmf(V, K, beta=beta, n_iter=0, init="nndsvda")
    W0, H0 = start.W, start.H
    rows = {}
    ours = time_ours(V, W0, H0, beta, n_mu, repeats, loss_every=1)
    rows["ours MU (loss every iteration)"] = dict(
        iters=np.arange(n_mu + 1), loss=ours.loss, time_at=lambda n, t=ours.times_s: t[n],
        n=n_mu, total=ours.times_s[-1])
    ours10 = time_ours(V, W0, H0, beta, n_mu, repeats, loss_every=10)
    t10 = ours10.times_s
    rows["ours MU (loss every 10)"] = dict(
        iters=np.arange(n_mu + 1), loss=ours.loss,  # same iterates, fewer evaluations
        time_at=lambda n, t=t10: t[n], n=n_mu, total=t10[-1])
    solvers = [("mu", n_mu)] + ([("cd", n_cd)] if beta == 2.0 else [])
    for solver, n in solvers:
        dense = list(range(1, 21)) + list(range(25, n + 1, 5))
        curve = sklearn_nmf_curve(V, W0, H0, beta=beta, solver=solver, n_iter=n,
                                  checkpoints=dense)
        total = time_sklearn(V, W0, H0, beta, solver, n, repeats)
        setup = time_sklearn(V, W0, H0, beta, solver, 1, repeats)
        per_iter = (total - setup) / max(n - 1, 1)
        rows[f"scikit-learn {solver}"] = dict(
            iters=curve.iterations, loss=curve.loss,
            time_at=lambda m, s=setup, p=per_iter: s + p * (m - 1) if m > 0 else 0.0,
            n=n, total=total)
    sk_mu = rows["scikit-learn mu"]
    targets = {
        "mu@50": float(sk_mu["loss"][list(sk_mu["iters"]).index(50)]),
        "mu@200": float(sk_mu["loss"][list(sk_mu["iters"]).index(200)]),
    }
    best = min(float(np.nanmin(r["loss"])) for r in rows.values())
    targets["1.01 x best"] = 1.01 * best
    table = []
    for name, r in rows.items():
        cells = []
        for target in targets.values():
            it = first_reach(r["iters"], r["loss"], target * (1 + 1e-5))  # float32 ties
            cells.append("not reached" if it is None else f"{r['time_at'](it):.2f} s ({it} it)")
        final = float(r["loss"][np.flatnonzero(np.isfinite(r["loss"]))[-1]])
        table.append((name, r["n"], r["total"], r["total"] / r["n"] * 1000, final, cells))
    return targets, table


def markdown(results, cmd, machine):
    lines = ["# NMF speed: our multiplicative updates vs scikit-learn", "",
             f"Command: `{cmd}`", "", machine, "",
             "Input: 1025 x 2600 magnitude spectrogram (demo song, n_fft 2048, hop 1024, "
             "60.4 s), float32. All solvers start from the same NNDSVDa factors and run "
             "without early stopping. Time to a loss: wall seconds (including set-up) until "
             "the solver's loss first falls to the target; targets are the loss of "
             "scikit-learn `mu` after 50 and 200 iterations, and 1.01 x the best loss any "
             "solver reached. scikit-learn's times come from one uninterrupted run "
             "(its per-iteration time x iterations + set-up); its loss curve from warm "
             "restarts (exact for these solvers).", ""]
    for (K, beta), (targets, table) in results.items():
        name = {2.0: "Euclidean (β = 2)", 1.0: "Kullback-Leibler (β = 1)"}[beta]
        lines += [f"## K = {K}, {name}", "",
                  "targets: " + ", ".join(f"{k} = {v:.6g}" for k, v in targets.items()), "",
                  "| solver | iterations | total (s) | ms / iteration | final loss | "
                  + " | ".join(f"time to {k}" for k in targets) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(targets)]
        for solver, n, total, ms, final, cells in table:
            lines.append(f"| {solver} | {n} | {total:.2f} | {ms:.1f} | {final:.6g} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mu-iterations", type=int, default=400)
    parser.add_argument("--cd-iterations", type=int, default=150)
    parser.add_argument("--components", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--betas", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_nmf.md"))
    args = parser.parse_args()
    V = spectrogram()
    results = {}
    for beta in args.betas:
        for K in args.components:
            print(f"K={K} beta={beta} ...", flush=True)
            results[(K, beta)] = bench(V, K, beta, args.mu_iterations, args.cd_iterations,
                                       args.repeats)
    import sklearn

    machine = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
               f"logical CPUs (shared with other jobs: load average "
               f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end), numpy "
               f"{np.__version__}, scikit-learn {sklearn.__version__}, Python "
               f"{platform.python_version()}.")
    cmd = "nice -n 19 .venv/bin/python bench/nmf_speed.py " + " ".join(sys.argv[1:])
    text = markdown(results, cmd.strip(), machine)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
