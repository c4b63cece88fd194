"""β-NMF, convolutive NMF (NMFD) and complex NMF on the same generated clip with stems.

    .venv/bin/python bench/nmf_models.py [--seconds 16] [--components 4] [--frames 8]
                                         [--iterations 100] [--seed 0]

The clip is ``unmixer.datasets.synth.make_song`` (drums, bass, pad; 120 BPM, 4/4) cut to
``--seconds`` (16 s: the whole song, every stem playing in some of it), with its three stems. Every model factorises the channel-mean magnitude (or,
for complex NMF, the complex STFT) for the same number of iterations without early
stopping; NMF and NMFD run KL (β = 1), complex NMF its squared error. Components are grouped
into the three stems by the oracle rule used for NMF separation scores (each component goes
to the stem it has the highest SI-SDR against), summed, and scored with BSS Eval
(:func:`unmixer.core.metrics.bss_eval`): mean SDR/SIR/SAR over the stems. Time per iteration
is the solver's own clock (``times_s``), all models in one run.

If libnmfd (``pip install --no-deps libnmfd==1.0.0``; a bench reference only) imports, our
NMFD and its ``nmfd`` start from the same factors on the same unit-sum spectrogram and their
KL divergences after the same iterations are compared (libnmfd renormalises W to unit sum
without rescaling H, so its model is compared after the best overall gain).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unmixer.core.metrics import bss_eval, si_sdr_matrix  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.lab import complex_nmf, nmf, nmfd  # noqa: E402


def clip(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mix (2, n), stems (3, 2, n)) of a generated drums + bass + pad song."""
    song = make_song(seed, n_loops=3, n_bars=8, loop_bars=1, family="dense",
                     instruments=["drums", "bass", "pad"])
    n = int(seconds * song.sr)
    return song.mix[:, :n].astype(np.float32), song.stems[:, :, :n].astype(np.float32)


def score(stems: np.ndarray, components: np.ndarray) -> tuple[float, float, float]:
    """Mean SDR, SIR, SAR (dB) after the oracle grouping of components into stems."""
    owner = np.argmax(si_sdr_matrix(stems, components), axis=0)  # (K_est,)
    est = np.stack([components[owner == j].sum(axis=0) if np.any(owner == j)
                    else np.zeros_like(stems[0]) for j in range(stems.shape[0])])
    s = bss_eval(stems, est, match=np.arange(stems.shape[0]))
    return float(np.mean(s.sdr)), float(np.mean(s.sir)), float(np.mean(s.sar))


def per_iteration_ms(times_s: np.ndarray, n_iter: int) -> float:
    return 1000.0 * float(times_s[-1] - times_s[0]) / max(n_iter, 1)


def run_models(mix, stems, K, T, n_iter):
    spec = stft(mix)
    V = np.abs(spec).mean(axis=0)
    rows = []
    for k in (K, K * T):
        t0 = time.perf_counter()
        res = nmf.beta_nmf(V, k, beta=1.0, n_iter=n_iter, tol=0.0)
        comps = nmf.resynthesise_components(mix, res.W, res.H, spec=spec)
        rows.append(("β-NMF, KL, Wiener masks", k, per_iteration_ms(res.times_s, res.n_iter),
                     time.perf_counter() - t0, *score(stems, comps)))
    t0 = time.perf_counter()
    res = nmfd.nmfd(V, K, T, beta=1.0, n_iter=n_iter)
    comps = np.stack(list(nmfd.iter_components(mix, res, spec=spec)))
    rows.append((f"NMFD (T = {T}), KL, Wiener masks", K, per_iteration_ms(res.times_s, res.n_iter),
                 time.perf_counter() - t0, *score(stems, comps)))
    t0 = time.perf_counter()
    res = complex_nmf.complex_nmf(spec, K, n_iter=n_iter)
    own = complex_nmf.resynthesise(res, mix.shape[-1])
    total = time.perf_counter() - t0
    ms = per_iteration_ms(res.times_s, res.n_iter)
    rows.append(("complex NMF, own phases", K, ms, total, *score(stems, own)))
    wiener = complex_nmf.wiener_components(mix, res, spec=spec)
    rows.append(("complex NMF's W, H, Wiener masks", K, ms, total, *score(stems, wiener)))
    return rows, V


def libnmfd_check(V: np.ndarray, K: int, T: int, n_iter: int) -> list[str]:
    """Our NMFD and libnmfd's from the same start: KL after n_iter, time per iteration."""
    try:
        import libnmfd.core.nmfconv as ref
    except Exception as err:  # noqa: BLE001 - a bench reference that may be missing
        return [f"libnmfd does not import here ({type(err).__name__}: {err}); no reference run."]
    ref.tnrange = lambda n, **kwargs: range(n)  # its notebook progress bar needs ipywidgets
    ref_nmfd = ref.nmfd
    Vn = (V / V.sum()).astype(np.float64)
    rng = np.random.default_rng(0)
    W0 = rng.uniform(0.5, 1.5, (K, V.shape[0], T))
    W0 /= W0.sum(axis=(1, 2), keepdims=True)
    H0 = rng.uniform(0.5, 1.5, (K, V.shape[1]))
    H0 *= Vn.mean() / nmfd.convolve(W0, H0).mean()
    t0 = time.perf_counter()
    ours = nmfd.nmfd(Vn.astype(np.float32), K, T, beta=1.0, n_iter=n_iter, W=W0, H=H0)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    W_ref, H_ref, _, _, tensor_W = ref_nmfd(Vn, num_comp=K, num_iter=n_iter,
                                            num_template_frames=T, init_W=[w for w in W0],
                                            init_H=H0.copy())
    t_ref = time.perf_counter() - t0
    ref_model = nmfd.convolve(np.stack(W_ref), H_ref)
    ref_model *= Vn.sum() / ref_model.sum()  # its W is renormalised without rescaling H
    kl_ours = nmf.beta_divergence(Vn, nmfd.convolve(ours.W, ours.H), 1.0)
    kl_ref = nmf.beta_divergence(Vn, ref_model, 1.0)
    kl_start = nmf.beta_divergence(Vn, nmfd.convolve(W0, H0), 1.0)
    return [f"libnmfd 1.0.0 reference (same start, KL, K = {K}, T = {T}, {n_iter} iterations, "
            f"unit-sum spectrogram): KL at the start {kl_start:.4g}; ours {kl_ours:.4g} in "
            f"{1000 * t_ours / n_iter:.1f} ms / iteration; libnmfd {kl_ref:.4g} in "
            f"{1000 * t_ref / n_iter:.1f} ms / iteration (ratio of times "
            f"{t_ref / t_ours:.1f}x)."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mix, stems = clip(args.seconds, args.seed)
    rows, V = run_models(mix, stems, args.components, args.frames, args.iterations)
    cmd = ".venv/bin/python bench/nmf_models.py " + " ".join(sys.argv[1:])
    lines = [f"Command: `{cmd.strip()}`", "",
             f"Clip: generated drums + bass + pad, {args.seconds:g} s, stereo 44.1 kHz "
             f"({V.shape[0]} bins x {V.shape[1]} frames); {args.iterations} iterations each. "
             f"Machine: {os.cpu_count()} logical CPUs shared with other jobs (load "
             f"{os.getloadavg()[0]:.1f}), numpy {np.__version__}, Python "
             f"{platform.python_version()}.", "",
             "| model | components | ms / iteration | total s (with resynthesis) | SDR (dB) | "
             "SIR (dB) | SAR (dB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, k, ms, total, sdr, sir, sar in rows:
        lines.append(f"| {name} | {k} | {ms:.1f} | {total:.1f} | {sdr:.1f} | {sir:.1f} | "
                     f"{sar:.1f} |")
    print("\n".join(lines), flush=True)
    print("\n" + "\n".join(libnmfd_check(V, args.components, args.frames,
                                          min(args.iterations, 30))))


if __name__ == "__main__":
    main()
