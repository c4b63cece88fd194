"""Downbeat accuracy and speed of the downbeat tracker and its faster variants.

    .venv/bin/python bench/downbeats.py                  # every variant, every song (Markdown)
    .venv/bin/python bench/downbeats.py --quick          # the generated tempo sweep only

Songs: generated ones with their true downbeats (:func:`unmixer.datasets.synth.make_song`:
bench/quality.py's 9 songs, bench/engine.py's 8 and a tempo sweep of 14, 70-190 BPM in 3/4
and 4/4) and the two real songs in ../shared/audio, whose reference is madmom's own full
model (its RNNDownBeatProcessor and DBNDownBeatTrackingProcessor as they are).

Scores: downbeat and beat F-measure (``mir_eval.beat.f_measure``, ±70 ms) against the truth
(generated songs) and against madmom's full model (every song), the share of songs whose
beats equal madmom's exactly, and the time of each part. The networks' predictions are
cached per song in ``bench/out/downbeats_cache`` (each of the 8 separately, so every subset
of the ensemble is an average of cached predictions); the timings come from a separate,
uncached pass over the real songs.

Variants: ``n_networks`` (the first 1, 2, 4 of madmom's 8 networks), the DBN's tempo states
(every tempo, or narrowed around a quick pass: :func:`unmixer.loops.beats.decode_downbeats`),
and the DBN's frame rate (activations max-pooled to 50 frames/s, the beats then moved to the
largest 100-frames/s activation within a frame).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from unmixer.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from unmixer.loops import beats  # noqa: E402

CACHE = REPO / "bench" / "out" / "downbeats_cache"
SHARED = REPO.parent / "shared" / "audio"
WINDOW_S = 0.07


@dataclass
class Song:
    name: str
    mix: np.ndarray
    downbeats_s: np.ndarray | None  # true bar lines (generated songs)
    meter: int | None


def generated_specs() -> list[tuple[str, dict]]:
    """make_song arguments: bench/quality.py's 9, bench/engine.py's 8, a tempo sweep of 14."""
    from engine import SONGS
    from quality import DEFAULT_SONGS, FAMILIES, song_specs

    specs = []
    for family, n in zip(FAMILIES, DEFAULT_SONGS):
        specs += [(f"quality {family} {i + 1}", s) for i, s in enumerate(song_specs(family, n))]
    specs += [(f"engine {i + 1}", s) for i, s in enumerate(SONGS)]
    for i, bpm in enumerate((70, 90, 110, 130, 150, 170, 190)):
        for meter in (3, 4):
            specs.append((f"sweep {bpm} BPM {meter}/4", dict(
                seed=500 + 10 * i + meter, bpm=float(bpm), meter=meter, n_bars=16, loop_bars=2,
                instruments=("drums", "bass", "pad", "lead"))))
    return specs


def load_songs(quick: bool) -> list[Song]:
    from unmixer.datasets.synth import make_song

    songs = []
    for name, spec in generated_specs():
        if quick and not name.startswith("sweep"):
            continue
        s = make_song(**spec)
        songs.append(Song(name, s.mix, np.asarray(s.downbeats_s), int(s.meter)))
    if not quick:
        for file in ("vibe_ace.ogg", "choice_drum_bass.ogg"):
            if (SHARED / file).is_file():
                songs.append(Song(file, load_audio(SHARED / file), None, None))
    return songs


def _key(song: Song) -> str:
    import hashlib

    return hashlib.sha1(song.mix[:, ::97].tobytes()).hexdigest()[:16]


def network_predictions(song: Song) -> np.ndarray:
    """The 8 networks' predictions on the song, shape=(8, n_frames, 3), cached."""
    path = CACHE / f"{_key(song)}.npy"
    if path.exists():
        return np.load(path)
    features = beats.downbeat_features(song.mix.mean(axis=0))
    with beats._networks_lock:
        preds = np.stack([nn(features) for nn in beats._load_networks()])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, preds)
    return preds


def activations_of(preds: np.ndarray, n: int) -> np.ndarray:
    from madmom.ml.nn import average_predictions

    return np.delete(average_predictions(list(preds[:n])), 0, axis=1).astype(np.float32)


def madmom_reference(song: Song) -> np.ndarray:
    """madmom's full model as it is: RNNDownBeatProcessor + DBNDownBeatTrackingProcessor."""
    path = CACHE / f"{_key(song)}_madmom.npy"
    if path.exists():
        return np.load(path)
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

    act = RNNDownBeatProcessor()(Signal(song.mix.mean(axis=0), sample_rate=SAMPLE_RATE, num_channels=1))
    out = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def decode_at_half_rate(act: np.ndarray) -> np.ndarray:
    """madmom's DBN at 50 frames/s (max-pooled activations), each beat then moved to the
    frame of the larger 100-frames/s activation of the two it pools."""
    n = len(act) // 2 * 2
    half = act[:n].reshape(-1, 2, 2)
    out = beats.decode_downbeats(half.max(axis=1), fps=50.0, tempo_window=None)
    if len(out) == 0:
        return out
    idx = np.round(out[:, 0] * 50).astype(int)
    pick = half[idx].sum(axis=2).argmax(axis=1)
    return np.stack([(2 * idx + pick) / 100.0, out[:, 1]], axis=1)


VARIANTS = {  # name: (networks, decoder)
    "madmom's full model (reference)": None,
    "8 networks, every tempo": (8, lambda a: beats.decode_downbeats(a, tempo_window=None)),
    "8 networks, tempi narrowed (engine)": (8, lambda a: beats.decode_downbeats(a)),
    "8 networks, tempi narrowed on 5-s excerpts, every song": (8, lambda a: beats.decode_downbeats(
        a, excerpt_s=5.0, narrow_from_s=15.0)),
    "8 networks, tempi narrowed ±5% on 5-s excerpts, every song": (8, lambda a: beats.decode_downbeats(
        a, excerpt_s=5.0, narrow_from_s=15.0, tempo_window=0.05)),
    "4 networks, tempi narrowed": (4, lambda a: beats.decode_downbeats(a)),
    "2 networks, tempi narrowed": (2, lambda a: beats.decode_downbeats(a)),
    "1 network, tempi narrowed": (1, lambda a: beats.decode_downbeats(a)),
    "8 networks, every tempo, DBN at 50 fps": (8, decode_at_half_rate),
}


def f_measures(result: np.ndarray, ref_downbeats: np.ndarray, ref_beats: np.ndarray | None):
    import mir_eval

    if len(result) == 0:
        return 0.0, 0.0
    db = result[result[:, 1] == 1, 0]
    f_db = mir_eval.beat.f_measure(np.asarray(ref_downbeats, float), db, f_measure_threshold=WINDOW_S)
    f_b = (mir_eval.beat.f_measure(np.asarray(ref_beats, float), result[:, 0], f_measure_threshold=WINDOW_S)
           if ref_beats is not None else float("nan"))
    return float(f_db), float(f_b)


def accuracy(songs: list[Song], variants: dict) -> str:
    rows = {name: {"true_db": [], "true_b": [], "ref_db": [], "ref_b": [], "equal": [], "dbn_s": []}
            for name in variants}
    for song in songs:
        preds = network_predictions(song)
        ref = madmom_reference(song)
        ref_db, ref_b = ref[ref[:, 1] == 1, 0], ref[:, 0]
        for name, variant in variants.items():
            t0 = time.perf_counter()
            out = ref if variant is None else variant[1](activations_of(preds, variant[0]))
            rows[name]["dbn_s"].append(time.perf_counter() - t0)
            if song.downbeats_s is not None:
                true_beats = (song.downbeats_s[:-1, None] + np.diff(song.downbeats_s)[:, None]
                              * (np.arange(song.meter) / song.meter)[None]).ravel()
                f = f_measures(out, song.downbeats_s[:-1], true_beats)
                rows[name]["true_db"].append(f[0])
                rows[name]["true_b"].append(f[1])
            f = f_measures(out, ref_db, ref_b)
            rows[name]["ref_db"].append(f[0])
            rows[name]["ref_b"].append(f[1])
            rows[name]["equal"].append(out.shape == ref.shape and np.allclose(out, ref, atol=1e-6))
        worst = {n: round(rows[n]["ref_db"][-1], 3) for n in variants if rows[n]["ref_db"][-1] < 1}
        print(f"{song.name}: downbeat F vs madmom < 1: {worst or 'none'}", file=sys.stderr, flush=True)
    n_gen = sum(s.downbeats_s is not None for s in songs)
    lines = [f"{len(songs)} songs ({n_gen} generated with true downbeats, {len(songs) - n_gen} real); "
             f"F-measure window ±{WINDOW_S * 1000:.0f} ms (mir_eval.beat.f_measure).\n",
             "| variant | downbeat F vs truth (mean / min) | beat F vs truth (mean) | downbeat F vs madmom's "
             "full model (mean / min) | songs equal to madmom's | DBN time (s, all songs) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        t = "–" if variants[name] is None else f"{sum(r['dbn_s']):.1f}"
        lines.append(f"| {name} | {np.mean(r['true_db']):.3f} / {np.min(r['true_db']):.3f} | "
                     f"{np.mean(r['true_b']):.3f} | {np.mean(r['ref_db']):.3f} / {np.min(r['ref_db']):.3f} | "
                     f"{sum(r['equal'])} / {len(r['equal'])} | {t} |")
    return "\n".join(lines)


def timings(repeats: int) -> str:
    """Each part on the real songs (and the 4-minute Vibe Ace x4), best of ``repeats``,
    madmom's processors and ours interleaved."""
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

    audio = {f: load_audio(SHARED / f) for f in ("vibe_ace.ogg", "choice_drum_bass.ogg") if (SHARED / f).is_file()}
    if "vibe_ace.ogg" in audio:
        audio["vibe_ace.ogg x4"] = np.concatenate([audio["vibe_ace.ogg"]] * 4, axis=1)
    beats.warm_up()
    proc = RNNDownBeatProcessor()
    lines = ["| song | length (s) | madmom: RNN (features + 8 networks) | madmom: DBN | madmom total | "
             "ours: features | ours: 8 networks | ours: DBN | ours total | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, mix in audio.items():
        mono = mix.mean(axis=0)
        best: dict[str, float] = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            act_m = proc(Signal(mono, sample_rate=SAMPLE_RATE, num_channels=1))
            t1 = time.perf_counter()
            DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act_m)
            t2 = time.perf_counter()
            feats = beats.downbeat_features(mono)
            t3 = time.perf_counter()
            act = beats.downbeat_activations(mix)  # features again + networks
            t4 = time.perf_counter()
            beats.decode_downbeats(act)
            t5 = time.perf_counter()
            del feats
            for k, v in {"m_rnn": t1 - t0, "m_dbn": t2 - t1, "m_total": t2 - t0, "features": t3 - t2,
                         "nets": (t4 - t3) - (t3 - t2), "dbn": t5 - t4, "total": t5 - t3}.items():
                best[k] = min(best.get(k, np.inf), v)
        lines.append(f"| {name} | {mix.shape[1] / SAMPLE_RATE:.0f} | {best['m_rnn']:.2f} | {best['m_dbn']:.2f} | "
                     f"{best['m_total']:.2f} | {best['features']:.2f} | {max(best['nets'], 0):.2f} | "
                     f"{best['dbn']:.2f} | {best['total']:.2f} | {best['m_total'] / best['total']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the generated tempo sweep only, no timings")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best kept)")
    parser.add_argument("--no-timings", action="store_true")
    parser.add_argument("--variants", nargs="*", help="run only the variants whose names contain one of these")
    args = parser.parse_args()
    beats._quiet_onnxruntime()
    variants = {n: v for n, v in VARIANTS.items()
                if v is None or not args.variants or any(w in n for w in args.variants)}
    print(accuracy(load_songs(args.quick), variants))
    if not (args.quick or args.no_timings):
        print()
        print(timings(args.repeats))


if __name__ == "__main__":
    main()
