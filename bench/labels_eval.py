"""Loop labels on SEPARATED loops: a labelled set, the labeller's fit, its held-out accuracy.

    nice -n 19 .venv/bin/python bench/labels_eval.py build            # songs -> loops (cached)
    nice -n 19 .venv/bin/python bench/labels_eval.py fit              # fit the classifier, print its numbers
    nice -n 19 .venv/bin/python bench/labels_eval.py eval             # held-out confusion, before/after
    nice -n 19 .venv/bin/python bench/labels_eval.py real DIR ...     # label the clips of `unmixer extract` outputs

The labelled set: songs from :func:`unmixer.datasets.synth.make_song` (4-5 loops: one drum loop, one
bass line and 2-3 tonal loops drawn from the generator's and the General MIDI instruments),
run through :func:`unmixer.loops.pipeline.extract_loops` with the true downbeats. Each extracted
loop is matched one-to-one to a true stem by the SI-SDR of the full-length tracks
(:func:`unmixer.core.metrics.match_sources`), and takes the matched instrument's class
(:data:`unmixer.datasets.synth.LABEL_OF`: drums; bass; chords = pad, piano, organ, strings playing
chords; lead = plucks, leads, e-piano, guitar, marimba, brass, flute playing single-note
melodies; vocal-like = the formant "vocal" synth and the choir). So the set holds what the
app labels: loops with the other instruments' leakage. The clip's SI-SDR against its matched
stem over the same samples is kept, and loops below ``PURE_DB`` (mostly another instrument,
or a bar where the loop is silent) are left out of fit and score: no label is right for them.

Songs with an even seed are fitted, odd seeds are held out. Clips (mono float16) and labels
are cached in ``bench/out/labels_set``; features are recomputed from them on every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.datasets.synth import LABEL_OF  # noqa: E402
from unmixer.loops import labels  # noqa: E402

SR = 44100
CACHE = REPO / "bench" / "out" / "labels_set"
N_SONGS = 36
PURE_DB = 0.0
CLASSES = labels.CLASSES

SYNTH_TONAL = ("pad", "pluck", "lead", "vocal")
GM_TONAL = ("gm_piano", "gm_organ", "gm_strings", "gm_epiano", "gm_guitar", "gm_marimba",
            "gm_brass", "gm_flute", "gm_choir")


def song_spec(i: int) -> dict:
    """make_song arguments of song ``i`` (seeded; every tonal class appears often)."""
    rng = np.random.default_rng([7031, i])
    K = int(rng.choice([4, 5]))
    drums = str(rng.choice(["drums", "gm_drums"]))
    bass = str(rng.choice(["bass", "gm_bass", "gm_synthbass"]))
    tonal = [str(x) for x in rng.choice(SYNTH_TONAL + GM_TONAL, K - 2, replace=False)]
    L = int(rng.choice([1, 2, 2]))
    bars = [L if rng.random() < 0.7 else 1 for _ in range(K)]
    bars[0] = L
    meter = 3 if rng.random() < 0.25 else 4
    return dict(seed=int(50_000 + i), n_loops=K, bpm=float(rng.integers(80, 161)), meter=meter,
                loop_bars=bars, block_bars=2, n_bars=int(2 * rng.integers(8, 12)),
                family=str(rng.choice(["composed", "dense"])), instruments=[drums, bass] + tonal,
                swing=float(rng.choice([0.0, 0.0, 0.25])))


def build_song(i: int) -> dict:
    """Extract the loops of song ``i``, match them to the stems; cache clips and labels."""
    from unmixer.core.metrics import match_sources, si_sdr, si_sdr_matrix
    from unmixer.datasets.synth import make_song
    from unmixer.loops.pipeline import extract_loops

    meta_path = CACHE / f"song_{i:03d}.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    spec = song_spec(i)
    t0 = time.perf_counter()
    song = make_song(**spec)
    result = extract_loops(song.mix, spec["n_loops"], loop_bars=max(spec["loop_bars"]),
                           downbeats_s=song.downbeats_s, meter=song.meter)
    tracks = np.stack([loop.track for loop in result.loops])
    match = match_sources(si_sdr_matrix(song.stems, tracks))  # stem k -> loop match[k]
    stem_of = {int(m): k for k, m in enumerate(match) if m >= 0}
    starts = np.round(song.downbeats_s * SR).astype(np.int64)
    loops, clips = [], {}
    for m, loop in enumerate(result.loops):
        k = stem_of[m]
        a = int(starts[loop.chosen_bar])
        b = a + loop.clip.shape[-1]
        refs = song.stems[:, :, a:b]
        scores = si_sdr(refs, np.repeat(loop.clip[None], len(refs), axis=0))
        loops.append(dict(instrument=song.instruments[k], label=LABEL_OF[song.instruments[k]],
                          clip_si_sdr=float(scores[k]), si_sdr_all=[float(s) for s in scores],
                          built_label=loop.label))
        clips[f"clip_{m}"] = loop.clip.mean(axis=0).astype(np.float16)
    meta = dict(song=i, spec=spec, loops=loops, time_s=time.perf_counter() - t0)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE / f"song_{i:03d}.npz", **clips)
    meta_path.write_text(json.dumps(meta))
    return meta


def load_set(n_songs: int = N_SONGS):
    """Rows of the cached set: (song, clip (samples,) float32, label, instrument, clip SI-SDR, old label)."""
    rows = []
    for i in range(n_songs):
        meta = build_song(i)
        with np.load(CACHE / f"song_{i:03d}.npz") as z:
            for m, info in enumerate(meta["loops"]):
                rows.append(dict(song=i, clip=z[f"clip_{m}"].astype(np.float32), **info))
    return rows


def rules_label(clip: np.ndarray, sr: int) -> str:
    """The labeller before this study (unmixer/loops/masks.py at commit 425110e): hand-set rules.

    1. percussive share (HPSS) >= 0.15 and median frequency >= 2.5 kHz -> drums; 2. median
    frequency < 300 Hz or >= 75% of the energy below 300 Hz -> bass; 3. >= 2.4 active pitch
    classes -> chords; 4. YIN pitch steps of 3-60 cents -> vocal-like; 5. else lead.
    """
    import librosa

    y = np.asarray(clip, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if not np.any(y):
        return "lead"
    spec = np.abs(librosa.stft(y, n_fft=2048, hop_length=1024))
    power = spec**2
    total = float(power.sum()) + 1e-20
    harmonic, percussive = librosa.decompose.hpss(spec, kernel_size=(9, 17), margin=1.0)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=2048)
    magnitude = spec.sum(axis=1)
    median_hz = float(freqs[np.searchsorted(np.cumsum(magnitude) / magnitude.sum(), 0.5)])
    if float((percussive**2).sum()) / total >= 0.15 and median_hz >= 2500:
        return "drums"
    if median_hz < 300 or float(power[freqs < 300].sum()) / total >= 0.75:
        return "bass"
    chroma = librosa.feature.chroma_stft(S=harmonic**2, sr=sr)
    loud = power.sum(axis=0) > 0.05 * power.sum(axis=0).max()
    if loud.any():
        active = (chroma[:, loud] >= 0.5 * chroma[:, loud].max(axis=0, keepdims=True)).sum(axis=0)
        if float(active.mean()) >= 2.4:
            return "chords"
    f0 = librosa.yin(y, fmin=80, fmax=1000, sr=sr, frame_length=2048, hop_length=1024)
    frame_power = power.sum(axis=0)[: len(f0)]
    voiced = frame_power > 0.1 * frame_power.max()
    cents = 1200 * np.log2(f0[voiced] / 440.0)
    if len(cents) > 8:
        steps = np.abs(np.diff(cents))
        steps = steps[steps < 300]  # ignore note changes and octave errors
        if len(steps) > 4 and 3.0 < float(np.median(steps)) < 60.0:
            return "vocal-like"
    return "lead"


def features_of(rows) -> np.ndarray:
    return np.stack([labels.loop_features(r["clip"], SR) for r in rows])


def split(rows):
    pure = [r for r in rows if r["clip_si_sdr"] >= PURE_DB]
    return [r for r in pure if r["song"] % 2 == 0], [r for r in pure if r["song"] % 2 == 1]


def confusion(truth, pred, names) -> str:
    cols = list(CLASSES) + (["loop"] if "loop" in pred else [])
    lines = ["| true \\ predicted | " + " | ".join(cols) + " | n |",
             "|---|" + "---|" * (len(cols) + 1)]
    for c in CLASSES:
        idx = [i for i, t in enumerate(truth) if t == c]
        counts = [sum(pred[i] == p for i in idx) for p in cols]
        lines.append(f"| {c} | " + " | ".join(str(n) for n in counts) + f" | {len(idx)} |")
    return "\n".join(lines)


def summary(truth, pred) -> str:
    n = len(truth)
    right = sum(t == p for t, p in zip(truth, pred))
    said = [i for i, p in enumerate(pred) if p != "loop"]
    wrong = sum(truth[i] != pred[i] for i in said)
    return (f"accuracy {right}/{n} = {right / n:.0%}; labelled {len(said)}/{n}, "
            f"wrong {wrong}/{n} = {wrong / n:.0%}")


def cmd_build(args) -> None:
    for i in range(args.songs):
        meta = build_song(i)
        print(i, f"{meta['time_s']:.0f} s", [(l["instrument"], round(l["clip_si_sdr"], 1))
                                              for l in meta["loops"]], flush=True)


def cmd_fit(args) -> None:
    fit_rows, _ = split(load_set(args.songs))
    X = features_of(fit_rows)
    y = np.array([CLASSES.index(r["label"]) for r in fit_rows])
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=args.C, max_iter=5000, class_weight="balanced").fit((X - mean) / std, y)
    print("n fit:", len(fit_rows), "per class:", np.bincount(y, minlength=len(CLASSES)))

    def listed(v, digits):
        return "[" + ", ".join(f"{float(x):.{digits}f}" for x in v) + "]"

    print("# paste into unmixer/loops/labels.py")
    print(f"FEATURE_MEAN = np.array({listed(mean, 4)}, dtype=np.float32)")
    print(f"FEATURE_STD = np.array({listed(std, 4)}, dtype=np.float32)")
    print("WEIGHTS = np.array([\n" + "\n".join(f"    {listed(w, 3)},  # {c}" for w, c in zip(clf.coef_, CLASSES))
          + "\n], dtype=np.float32)")
    print(f"BIAS = np.array({listed(clf.intercept_, 3)}, dtype=np.float32)")
    pred = clf.predict((X - mean) / std)
    print("fit accuracy", float(np.mean(pred == y)))


def cmd_eval(args) -> None:
    rows = load_set(args.songs)
    fit_rows, held = split(rows)
    truth = [r["label"] for r in held]
    old = [rules_label(r["clip"], SR) for r in held]
    t0 = time.perf_counter()
    probs = [labels.label_probabilities(r["clip"], SR) for r in held]
    per_clip = (time.perf_counter() - t0) / len(held)
    new = [labels.choose_label(p) for p in probs]
    forced = [max(p, key=p.get) for p in probs]
    print(f"songs {args.songs}; loops {len(rows)}, pure (clip SI-SDR >= {PURE_DB} dB) "
          f"{len(fit_rows) + len(held)}: fit {len(fit_rows)}, held out {len(held)}")
    print(f"labelling time {per_clip * 1000:.0f} ms per clip")
    for name, pred in (("before (rules)", old), ("after, forced to a class", forced),
                       ("after, with the 'loop' fallback", new)):
        print(f"\n### {name}: {summary(truth, pred)}\n")
        print(confusion(truth, pred, CLASSES))
    print("\n### the fallback threshold: loops labelled (not 'loop') and wrong, of n\n")
    print("| min_confidence | fit: labelled | fit: wrong | held out: labelled | held out: wrong |"
          " impure: said 'loop' |\n|---|---|---|---|---|---|")
    fit_probs = [labels.label_probabilities(r["clip"], SR) for r in fit_rows]
    impure = [r for r in rows if r["clip_si_sdr"] < PURE_DB]
    impure_probs = [labels.label_probabilities(r["clip"], SR) for r in impure]
    for thr in (0.0, 0.4, 0.5, 0.6, 0.7):
        cells = []
        for rs, ps in ((fit_rows, fit_probs), (held, probs)):
            pred = [labels.choose_label(p, thr) for p in ps]
            said = [i for i, q in enumerate(pred) if q != "loop"]
            cells += [f"{len(said)}/{len(rs)}", f"{sum(pred[i] != rs[i]['label'] for i in said)}/{len(rs)}"]
        unsure = sum(labels.choose_label(p, thr) == "loop" for p in impure_probs)
        print(f"| {thr:.1f} | " + " | ".join(cells) + f" | {unsure}/{len(impure)} |")
    if args.verbose:
        for r, p, o in zip(held, probs, old):
            best = max(p, key=p.get)
            mark = "" if best == r["label"] else "  <-- wrong"
            print(f"{r['song']:3d} {r['instrument']:<13} {r['label']:<10} old {o:<10} new {best:<10} "
                  f"{p[best]:.2f}  si-sdr {r['clip_si_sdr']:5.1f}{mark}")


def cmd_real(args) -> None:
    import soundfile as sf

    for d in args.dirs:
        d = Path(d)
        print(f"\n{d.name}")
        for path in sorted((d / "loops").glob("loop_*.wav")):
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
            p = labels.label_probabilities(audio.T, sr)
            f = labels.loop_features(audio.T, sr)
            desc = ", ".join(f"{n} {v:.2f}" for n, v in zip(labels.FEATURES, f))
            ranked = sorted(p, key=p.get, reverse=True)
            print(f"  {path.stem}: {labels.choose_label(p):<10} ({ranked[0]} {p[ranked[0]]:.2f}, "
                  f"{ranked[1]} {p[ranked[1]]:.2f})  [{desc}]")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("build", "fit", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--songs", type=int, default=N_SONGS)
        if name == "fit":
            p.add_argument("--C", type=float, default=0.3)
        if name == "eval":
            p.add_argument("--verbose", "-v", action="store_true")
    p = sub.add_parser("real")
    p.add_argument("dirs", nargs="+")
    args = parser.parse_args(argv)
    {"build": cmd_build, "fit": cmd_fit, "eval": cmd_eval, "real": cmd_real}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
