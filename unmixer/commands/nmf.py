"""``python -m unmixer nmf`` and ``python -m unmixer mosaic``.

nmf CLIP [--model nmf|nmfd|complex] --components K --beta B [--iterations N] [--frames T]
        [--init nndsvda] [--l1 X] --out DIR
    writes DIR/components/component_01.wav ... (summing to the input: Wiener-masked with the
    mixture's phase for nmf and nmfd, each with its own phase for complex),
    DIR/W.npy ((n_freq, K); nmfd: (K, n_freq, T)), DIR/H.npy (K, n_frames), DIR/loss.csv
    (iteration, loss, seconds) and DIR/decomposition.png.
mosaic SOURCE TARGET --out DIR
    writes DIR/mosaic.wav (the target played with the source's sounds), DIR/H.npy and
    DIR/loss.csv.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from unmixer.errors import UnmixerError

MIN_CLIP_S = 1.0
"""Shortest clip the two commands accept (s)."""

MODELS = {"nmf": "β-NMF", "nmfd": "convolutive NMF (NMFD)", "complex": "complex NMF"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``nmf`` and ``mosaic`` sub-commands."""
    p = subparsers.add_parser(
        "nmf", help="β-divergence NMF of a clip's spectrogram; writes each component as audio",
        description="Factorise the magnitude spectrogram of CLIP as W @ H (β-divergence, "
                    "multiplicative updates) and write each component, Wiener-masked with the "
                    "mixture's phase, plus W.npy, H.npy, loss.csv and decomposition.png.")
    p.add_argument("clip", help="audio file (WAV, FLAC, OGG, MP3, M4A ...)")
    p.add_argument("--model", "-m", choices=list(MODELS), default="nmf",
                   help="nmf: β-NMF (default); nmfd: convolutive NMF with T-frame templates; "
                        "complex: complex NMF (a phase per component; squared error, --beta "
                        "is ignored)")
    p.add_argument("--frames", "-t", type=int, default=8,
                   help="NMFD template length T in STFT frames (default 8; --model nmfd)")
    p.add_argument("--components", "-k", type=int, default=8, help="number of components K (default 8)")
    p.add_argument("--beta", "-b", type=float, default=1.0,
                   help="β of the divergence: 2 Euclidean, 1 Kullback-Leibler (default), 0 Itakura-Saito")
    p.add_argument("--iterations", "-n", type=int, default=200, help="maximum iterations (default 200)")
    p.add_argument("--init", choices=["nndsvda", "nndsvd", "random"], default="nndsvda",
                   help="initialisation (default nndsvda)")
    p.add_argument("--l1", type=float, default=0.0, help="L1 sparsity weight on H (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.set_defaults(func=run_nmf)

    m = subparsers.add_parser(
        "mosaic", help="audio mosaicing: TARGET re-played with the sounds of SOURCE (Let it Bee)",
        description="Learn which frames of SOURCE best rebuild TARGET (KL-NMF with the source "
                    "frames as fixed templates and Driedger et al.'s diagonal-continuity, "
                    "repetition and polyphony restrictions) and write DIR/mosaic.wav.")
    m.add_argument("source", help="clip whose sounds are used (the timbre)")
    m.add_argument("target", help="clip whose rhythm and melody are rebuilt")
    m.add_argument("--iterations", "-n", type=int, default=20, help="iterations L (default 20)")
    m.add_argument("--repetition", type=int, default=3, help="repetition restriction r, frames (default 3)")
    m.add_argument("--polyphony", type=int, default=10, help="polyphony restriction p (default 10)")
    m.add_argument("--continuity", type=int, default=3, help="diagonal half-length c, frames (default 3)")
    m.add_argument("--griffin-lim", type=int, default=10, help="phase refinement iterations (default 10)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    m.add_argument("--out", "-o", required=True, help="output folder")
    m.set_defaults(func=run_mosaic)


def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UnmixerError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UnmixerError(f"cannot create the output folder {out}: {err.strerror or err}") from None
    return out


def _write_loss(path: Path, loss: np.ndarray, times_s: np.ndarray) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iteration", "loss", "seconds"])
        for i, (value, t) in enumerate(zip(loss, times_s)):
            writer.writerow([i, f"{value:.9g}", f"{t:.6f}"])


def plot_decomposition(path: Path, V: np.ndarray, W: np.ndarray, H: np.ndarray, sr: int,
                       hop_length: int, title: str, recon: np.ndarray | None = None) -> None:
    """Six-panel PNG: spectrogram, reconstruction, W, H, contributions, error over time.

    The panel layout of seed 001's ``plot_decomposition``, in dB where it is a spectrogram.
    ``recon`` is the model (default W @ H; NMFD passes its convolutive model and the
    templates summed over their frames as W).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recon = W @ H if recon is None else recon
    ref = max(float(V.max()), 1e-12)

    def db(x: np.ndarray) -> np.ndarray:
        return 20 * np.log10(np.maximum(x, ref * 1e-5) / ref)

    duration = V.shape[1] * hop_length / sr
    extent = [0, duration, 0, sr / 2000]
    fig, ax = plt.subplots(3, 2, figsize=(12, 10))
    for a, data, name in ((ax[0, 0], V, "Spectrogram |X| (dB)"), (ax[0, 1], recon, "Reconstruction W·H (dB)")):
        im = a.imshow(db(data), aspect="auto", origin="lower", extent=extent, vmin=-80, vmax=0, cmap="magma")
        a.set(title=name, xlabel="time (s)", ylabel="frequency (kHz)")
        fig.colorbar(im, ax=a)
    K = W.shape[1]
    ax[1, 0].imshow(db(W / max(float(W.max()), 1e-12) * ref), aspect="auto", origin="lower",
                    interpolation="nearest", extent=[0.5, K + 0.5, 0, sr / 2000], vmin=-60,
                    vmax=0, cmap="magma")
    ax[1, 0].set(title="Templates W (dB)", xlabel="component", ylabel="frequency (kHz)")
    ax[1, 1].imshow(H, aspect="auto", origin="lower", interpolation="nearest",
                    extent=[0, duration, 0.5, K + 0.5], cmap="magma")
    ax[1, 1].set(title="Activations H", xlabel="time (s)", ylabel="component")
    energy = np.sum((W.T[:, :, None] * H[:, None, :]) ** 2, axis=(1, 2)) if V.size * K < 5e7 else \
        np.sum(W**2, axis=0) * np.sum(H**2, axis=1)
    ax[2, 0].bar(np.arange(1, K + 1), 100 * energy / max(float(energy.sum()), 1e-30))
    ax[2, 0].set(title="Component contributions (% of model energy)", xlabel="component", ylabel="%")
    err = np.mean((V - recon) ** 2, axis=0)
    ax[2, 1].plot(np.arange(V.shape[1]) * hop_length / sr, err)
    ax[2, 1].set(title="Reconstruction error over time", xlabel="time (s)", ylabel="MSE")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _factorise(args: argparse.Namespace, audio: np.ndarray, spec: np.ndarray, V: np.ndarray):
    """(W, H for the picture (n_freq, K), model magnitude, result, components iterator)."""
    if args.model == "nmfd":
        from unmixer.lab import nmfd

        res = nmfd.nmfd(V, args.components, args.frames, beta=args.beta,
                        n_iter=args.iterations, random_state=args.seed,
                        init="random" if args.init == "random" else "nndsvda")
        return (res.W.sum(axis=2).T, res.H, nmfd.convolve(res.W, res.H), res,
                nmfd.iter_components(audio, res, spec=spec))
    if args.model == "complex":
        from unmixer.lab import complex_nmf

        res = complex_nmf.complex_nmf(spec, args.components, n_iter=args.iterations,
                                      random_state=args.seed)
        return (res.W, res.H, res.W @ res.H, res,
                iter(complex_nmf.resynthesise(res, audio.shape[-1])))
    from unmixer.lab.nmf import beta_nmf, iter_components

    res = beta_nmf(V, args.components, beta=args.beta, n_iter=args.iterations, init=args.init,
                   l1_H=args.l1, random_state=args.seed)
    return res.W, res.H, res.W @ res.H, res, iter_components(audio, res.W, res.H, spec=spec)


def run_nmf(args: argparse.Namespace) -> int:
    """Run ``nmf``; returns 0 (UnmixerError for bad input)."""
    from unmixer.core.audio import SAMPLE_RATE, load_audio, write_wav
    from unmixer.core.spectrum import HOP_LENGTH, stft
    from unmixer.lab.nmf import _check_beta

    _check_beta(args.beta)  # bad values exit 2 before the clip is decoded
    if args.model == "nmfd" and not 1 <= args.frames <= 64:
        raise UnmixerError(f"--frames must be between 1 and 64 STFT frames, got {args.frames}")
    audio = load_audio(args.clip, min_duration_s=MIN_CLIP_S)
    spec = stft(audio)
    V = np.abs(spec).mean(axis=0)
    W2, H, recon, res, components = _factorise(args, audio, spec, V)
    out = _out_dir(args.out)  # only once the input is known to be good
    (out / "components").mkdir(exist_ok=True)
    n = 0
    for n, comp in enumerate(components, start=1):
        write_wav(out / "components" / f"component_{n:02d}.wav", comp, SAMPLE_RATE, subtype="FLOAT")
    np.save(out / "W.npy", res.W)
    np.save(out / "H.npy", res.H)
    _write_loss(out / "loss.csv", res.loss, res.times_s)
    what = {"nmf": f"β={args.beta:g}", "nmfd": f"NMFD, T={args.frames}, β={args.beta:g}",
            "complex": "complex NMF"}[args.model]
    plot_decomposition(out / "decomposition.png", V, W2, H, SAMPLE_RATE, HOP_LENGTH,
                       f"{Path(args.clip).name}: K={args.components}, {what}, "
                       f"{res.n_iter} iterations", recon=recon)
    print(f"{MODELS[args.model]}: {n} components, loss {res.loss[0]:.4g} -> {res.loss[-1]:.4g} "
          f"in {res.n_iter} iterations ({res.times_s[-1]:.1f} s); wrote {out}")
    return 0


def run_mosaic(args: argparse.Namespace) -> int:
    """Run ``mosaic``; returns 0 (UnmixerError for bad input)."""
    from unmixer.core.audio import SAMPLE_RATE, load_audio, write_wav
    from unmixer.lab.mosaic import mosaic

    source = load_audio(args.source, min_duration_s=MIN_CLIP_S)
    target = load_audio(args.target, min_duration_s=MIN_CLIP_S)
    res = mosaic(source, target, n_iter=args.iterations, r=args.repetition, p=args.polyphony,
                 c=args.continuity, griffin_lim_iter=args.griffin_lim, random_state=args.seed)
    out = _out_dir(args.out)
    write_wav(out / "mosaic.wav", res.audio, SAMPLE_RATE)
    np.save(out / "H.npy", res.H)
    _write_loss(out / "loss.csv", res.loss, res.times_s)
    print(f"mosaic of {res.audio.shape[-1] / SAMPLE_RATE:.1f} s from {res.H.shape[0]} source "
          f"frames; wrote {out / 'mosaic.wav'}")
    return 0
