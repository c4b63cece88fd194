"""Drum Splitter benchmark: transcription F-measure, separation SDR/SIR, inference time.

    .venv/bin/python bench/drums_bench.py [--n-onset 20] [--n-sep 10] [--out bench/RESULTS_drums.md]

* Onset F-measure per class (mir_eval, +-50 ms, pooled over the examples) on held-out generated
  10-s patterns: (a) the training GM kits with new patterns, (b) the GM TR-808 kit, never seen
  in training, (c) synthetic kits with held-out seeds, never seen. Augmented as in training
  (re-pitching, levels, EQ, reverb) and half of them with background music.
* Separation SDR/SIR (BSS Eval, fast_bss_eval) per class on held-out 10-s mixes of the unseen
  kits (no background, so the five stems are the whole mix), for
  - ours: CNN transcription -> KL-NMF with H from the onsets -> Wiener masks;
  - ours with the true onsets (upper bound of the NMF stage);
  - plain unsupervised KL-NMF (15 components) with each component assigned to the class whose
    true stem it correlates with best (an oracle assignment, favourable to the baseline);
  - NMFD (libnmfd, Smaragdis 2004 / Dittmar & Müller 2016) with H initialised from the CNN's
    onsets, if libnmfd is installed (``pip install --no-deps libnmfd``).
* Inference time for 30 s of audio: the CNN alone (log-mel + ONNX) and the whole split.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unmixer.core import spectrum  # noqa: E402
from unmixer.core.metrics import bss_eval  # noqa: E402
from unmixer.datasets import drums as data  # noqa: E402
from unmixer.drums import CLASSES  # noqa: E402
from unmixer.drums.features import FRAME_RATE, log_mel  # noqa: E402
from unmixer.drums.separate import split_drums  # noqa: E402
from unmixer.drums.transcribe import Transcription, onset_profiles, transcribe  # noqa: E402
from unmixer.lab.nmf import beta_nmf, component_models, resynthesise_components  # noqa: E402


def pooled_f(pairs) -> dict[str, tuple[float, float, float, int]]:
    """Micro-averaged (F, P, R, n_ref) per class over (reference, estimate) onset dicts."""
    import mir_eval

    out = {}
    for cls in CLASSES:
        hit = n_ref = n_est = 0
        for ref, est in pairs:
            r, e = np.sort(ref[cls]), np.sort(est[cls])
            n_ref += r.size
            n_est += e.size
            if r.size and e.size:
                hit += len(mir_eval.util.match_events(r, e, 0.05))
        p = hit / max(n_est, 1)
        rc = hit / max(n_ref, 1)
        out[cls] = (2 * p * rc / max(p + rc, 1e-12), p, rc, n_ref)
    return out


def onset_sets(n: int) -> dict[str, list]:
    train = [data.render_gm_kit(k) for k in data.TRAIN_GM_KITS]
    sets = {
        "training GM kits, new patterns": [(train[i % len(train)], 7_000_000 + i) for i in range(n)],
        f"unseen GM kit ({data.HELDOUT_GM_KIT})": [(data.render_gm_kit(data.HELDOUT_GM_KIT), 8_000_000 + i) for i in range(n)],
        "unseen synthetic kits": [(data.synth_kit(data.HELDOUT_SEED_BASE + 100 + i), 9_000_000 + i) for i in range(n)],
    }
    return sets


def bench_onsets(n: int) -> tuple[str, dict]:
    lines = ["| set | " + " | ".join(CLASSES) + " | mean |", "|---" * (len(CLASSES) + 2) + "|"]
    results = {}
    for name, items in onset_sets(n).items():
        pairs = []
        for kit, seed in items:
            ex = data.generate_example(kit, seed, 10.0)
            pairs.append((ex.onsets, transcribe(ex.mix).onsets))
        res = pooled_f(pairs)
        results[name] = res
        cells = [f"{res[c][0]:.3f} (n={res[c][3]})" for c in CLASSES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean([res[c][0] for c in CLASSES]):.3f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines), results


def nmf_assigned(audio: np.ndarray, stems: np.ndarray, k: int = 15) -> np.ndarray:
    """Plain KL-NMF, each component given to the class whose true stem |STFT| it matches best
    (``stems``: mono, shape (5, samples))."""
    spec = spectrum.stft(audio)
    mag = np.abs(spec.mean(axis=0))
    fit = beta_nmf(mag, k, beta=1.0, n_iter=100, init="nndsvda", tol=0.0)
    models = component_models(fit.W, fit.H).reshape(k, -1)
    truth = np.abs(spectrum.stft(stems)).reshape(len(CLASSES), -1)
    mn = models / (np.linalg.norm(models, axis=1, keepdims=True) + 1e-12)
    tn = truth / (np.linalg.norm(truth, axis=1, keepdims=True) + 1e-12)
    owner = np.argmax(mn @ tn.T, axis=1)
    groups = [np.flatnonzero(owner == c).tolist() for c in range(len(CLASSES))]
    used = [c for c in range(len(CLASSES)) if groups[c]]
    layers = np.zeros((len(CLASSES),) + audio.shape, dtype=np.float32)
    layers[used] = resynthesise_components(audio, fit.W, fit.H, [groups[c] for c in used], spec=spec)
    return layers


def nmfd_onsets(audio: np.ndarray, tr: Transcription, n_template: int = 20) -> np.ndarray | None:
    """libnmfd's NMFD with H initialised at the CNN's onsets (impulses, 3 frames wide)."""
    try:
        from libnmfd.core.nmfconv import nmfd
    except ImportError:
        return None
    import contextlib
    import io

    spec = spectrum.stft(audio)
    mag = np.abs(spec.mean(axis=0)).astype(np.float64)
    n = mag.shape[1]
    H0 = np.zeros((len(CLASSES), n))
    for c, cls in enumerate(CLASSES):
        f = np.rint(tr.onsets[cls] * FRAME_RATE).astype(int)
        for d in (-2, -1, 0):
            H0[c, np.clip(f + d, 0, n - 1)] = 1.0
    H0 += 1e-9 * (H0.sum(axis=1, keepdims=True) == 0)  # a class with no onset stays ~silent
    rng = np.random.default_rng(0)
    W0 = [rng.random((mag.shape[0], n_template)) for _ in CLASSES]
    with contextlib.redirect_stderr(io.StringIO()):
        _, _, comp_V, _, _ = nmfd(mag, num_comp=len(CLASSES), num_frames=n, num_iter=30,
                                  num_template_frames=n_template, init_W=W0, init_H=H0)
    masks = spectrum.wiener_masks(np.stack(comp_V).astype(np.float32))
    return spectrum.resynthesise(spec, masks, audio.shape[-1])


def bench_separation(n: int) -> tuple[str, dict]:
    kits = [data.render_gm_kit(data.HELDOUT_GM_KIT)] + [data.synth_kit(data.HELDOUT_SEED_BASE + 200 + i)
                                                         for i in range(n)]
    methods = ["ours (CNN onsets)", "ours (true onsets)", "KL-NMF + oracle assignment", "NMFD, CNN-onset H"]
    groups = ("all", f"GM {data.HELDOUT_GM_KIT}", "synthetic")
    scores = {g: {m: {c: {"sdr": [], "sir": []} for c in CLASSES} for m in methods} for g in groups}
    times = {m: [] for m in methods}
    for i in range(n):
        kit = kits[0] if i % 2 == 0 else kits[1 + i]
        group = groups[1] if i % 2 == 0 else groups[2]
        ex = data.generate_example(kit, 9_500_000 + i, 10.0, background=False)
        audio = np.stack([ex.mix, ex.mix])
        t0 = time.perf_counter()
        tr = transcribe(audio)
        split = split_drums(audio, transcription=tr)
        times[methods[0]].append(time.perf_counter() - t0)
        ones = {c: np.ones(ex.onsets[c].size, dtype=np.float32) for c in CLASSES}
        t0 = time.perf_counter()
        oracle = split_drums(audio, transcription=Transcription(ex.onsets, ones, tr.profiles))
        times[methods[1]].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base = nmf_assigned(audio, ex.stems)
        times[methods[2]].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nmfd_layers = nmfd_onsets(audio, tr)
        times[methods[3]].append(time.perf_counter() - t0)
        present = [c for c in range(len(CLASSES)) if ex.onsets[CLASSES[c]].size]
        for m, layers in zip(methods, [split.layers, oracle.layers, base, nmfd_layers]):
            if layers is None:
                continue
            s = bss_eval(ex.stems[present], layers[present].mean(axis=1),
                         match=np.arange(len(present)))
            for g in ("all", group):
                for j, c in enumerate(present):
                    scores[g][m][CLASSES[c]]["sdr"].append(float(s.sdr[j]))
                    scores[g][m][CLASSES[c]]["sir"].append(float(s.sir[j]))
        print(f"  separation example {i + 1}/{n} ({kit.name})", flush=True)
    lines = ["| kits | method | " + " | ".join(CLASSES) + " | mean | s per 10-s mix |",
             "|---" * (len(CLASSES) + 4) + "|"]
    for g in groups:
        for m in methods:
            sc = scores[g][m]
            if not any(sc[c]["sdr"] for c in CLASSES):
                lines.append(f"| {g} | {m} | " + " | ".join("n/a" for _ in CLASSES)
                             + " | n/a | libnmfd not installed |")
                continue
            cells = [f"{np.median(sc[c]['sdr']):.1f} / {np.median(sc[c]['sir']):.1f}"
                     if sc[c]["sdr"] else "-" for c in CLASSES]
            mean_sdr = np.mean([np.median(sc[c]["sdr"]) for c in CLASSES if sc[c]["sdr"]])
            mean_sir = np.mean([np.median(sc[c]["sir"]) for c in CLASSES if sc[c]["sir"]])
            lines.append(f"| {g} | {m} | " + " | ".join(cells) + f" | {mean_sdr:.1f} / {mean_sir:.1f} | "
                         f"{np.median(times[m]):.2f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines), scores


def bench_speed(repeats: int = 5) -> str:
    import os

    load = os.getloadavg()[0]
    audio, _ = data.demo_loop(seed=1, duration_s=30.0)
    mono = audio.mean(axis=0)
    transcribe(audio)  # warm-up (loads the ONNX session)
    t_cnn, t_feat, t_all = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mel = log_mel(mono)
        t1 = time.perf_counter()
        onset_profiles(mel)
        t2 = time.perf_counter()
        split_drums(audio)
        t3 = time.perf_counter()
        t_feat.append(t1 - t0)
        t_cnn.append(t2 - t1)
        t_all.append(t3 - t2)
    return (f"Load average when measured: {load:.1f} on {os.cpu_count()} cores (other jobs).\n\n"
            f"| stage (30 s of stereo audio, median of {repeats}) | seconds |\n|---|---|\n"
            f"| log-mel spectrogram | {np.median(t_feat):.3f} |\n"
            f"| CNN (ONNX Runtime) | {np.median(t_cnn):.3f} |\n"
            f"| transcription total (log-mel + CNN + peak picking) | {np.median(t_feat) + np.median(t_cnn):.3f} |\n"
            f"| whole split (STFT, transcription, KL-NMF 25+10 iterations, 5 masks + iSTFTs) | {np.median(t_all):.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-onset", type=int, default=20, help="examples per onset set")
    parser.add_argument("--n-sep", type=int, default=10, help="separation examples")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS_drums.md"))
    args = parser.parse_args()
    t0 = time.time()
    speed = bench_speed()
    print(speed, flush=True)
    onset_table, _ = bench_onsets(args.n_onset)
    sep_table, _ = bench_separation(args.n_sep)
    cmd = f".venv/bin/python bench/drums_bench.py --n-onset {args.n_onset} --n-sep {args.n_sep}"
    text = f"""# Drum Splitter benchmark

Made by `{cmd}` ({time.time() - t0:.0f} s) on {platform.processor() or platform.machine()},
{len(__import__('os').sched_getaffinity(0))} cores shared with other jobs; weights
`unmixer/drums/weights/drum_cnn.onnx` from `python -m training.drums.train`.

## Transcription: onset F-measure per class (mir_eval, +-50 ms)

{args.n_onset} held-out 10-s patterns per row, augmented as in training (re-pitching, levels, EQ,
reverb, background music under half of them); F pooled over the examples (n = reference onsets).

{onset_table}

## Separation: SDR / SIR (dB) per class, median over {args.n_sep} held-out 10-s mixes

Unseen kits only (TR-808 in the even mixes, held-out synthetic kits in the odd ones), no
background music. A class is scored in the mixes where it plays; "all" pools both kinds of kit.
The time column is over all mixes (the machine is shared, see the load below).

{sep_table}

## Inference time

{speed}
"""
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
