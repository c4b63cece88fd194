"""Grid benchmark (issue 13): separation with the true bar grid, madmom's, and perturbed ones.

    .venv/bin/python bench/grid.py run                        # every family, grid and setting
    .venv/bin/python bench/grid.py run --settings L2 L1 --grids true madmom --songs 2
    .venv/bin/python bench/grid.py choice                     # which hypothesis the search picks

Songs (:func:`unmixer.datasets.synth.make_song`, seeded, made like ``bench/quality.py``'s but
shorter, as issue 13's held-out set: 16 to 32 bars, 100 to 135 BPM, 3 to 5 loops, layouts in
4-bar blocks) in five families:

* ``short``: 4/4, loops of 1 and 2 bars mixed;
* ``one_bar``: 4/4, every loop 1 bar;
* ``two_in_one``: 4/4, one 2-bar loop among 1-bar loops;
* ``four_long``: 4/4, 4-bar loops (and a 2-bar one) in long songs (48 to 64 bars, 8-bar blocks);
* ``waltz``: 3/4, loops of 1 and 2 bars.

Grids handed to the engine as if the tracker had found them (``extract_loops(beat_grid=...)``,
so the engine corrects them as it corrects madmom's): ``true``; ``madmom`` (the tracker's,
what users get); and perturbations of the true grid: ``half_beat`` (every beat half a beat
late: bar lines on the off-beats), ``one_beat`` (bar lines one beat late), ``double`` (twice
the tempo: every "bar" is half a bar), ``half`` (half the tempo: every "bar" is two),
``meter`` (3/4 taken for 4/4, or 4/4 for 3/4), ``drop_first`` (the first bar left out of the
grid). ``known`` is the true grid as known downbeats (``downbeats_s=``: nothing is corrected).

Settings: ``L1``, ``L2``, ``L4`` (loop length forced) and ``auto`` (the engine chooses).
K is the true loop count. Score: the mean over the true loops of the SI-SDR improvement of
the matched full-length track over the mixture (best one-to-one assignment by SI-SDR).
Scores are cached in ``bench/out/grid_cache`` per song, grid, setting and the engine's code
version (:func:`unmixer.cache.package_code_version`), so an engine change recomputes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.cache import package_code_version  # noqa: E402
from unmixer.core.metrics import match_sources, si_sdr, si_sdr_matrix  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.errors import UnmixerError  # noqa: E402
from unmixer.loops.beats import BeatGrid, grid_from_beats, grid_from_downbeats, track_beats  # noqa: E402
from unmixer.loops.pipeline import extract_loops  # noqa: E402

CACHE = REPO / "bench" / "out" / "grid_cache"
FAMILIES = ("short", "one_bar", "two_in_one", "four_long", "waltz")
GRIDS = ("known", "true", "madmom", "half_beat", "one_beat", "double", "half", "meter", "drop_first")
SETTINGS = {"L1": 1, "L2": 2, "L4": 4, "auto": "auto"}
TONAL = ("pad", "pluck", "lead", "vocal", "gm_piano", "gm_organ", "gm_strings", "gm_epiano",
         "gm_guitar", "gm_marimba", "gm_brass", "gm_flute", "gm_choir")


# ----------------------------------------------------------------------------- songs

def song_specs(family: str, n: int) -> list[dict]:
    """``n`` reproducible make_song argument sets of a family."""
    specs = []
    for i in range(n):
        rng = np.random.default_rng([13, FAMILIES.index(family), i])
        K = int(rng.integers(3, 6))
        meter = 3 if family == "waltz" else 4
        if family == "one_bar":
            bars = [1] * K
        elif family == "two_in_one":
            bars = [1] * K
            bars[int(rng.integers(0, K))] = 2
        elif family == "four_long":
            bars = [4 if rng.random() < 0.6 else 2 for _ in range(K)]
            bars[int(rng.integers(0, K))] = 4
        else:
            bars = [int(rng.choice([1, 2])) for _ in range(K)]
        drums = str(rng.choice(["drums", "gm_drums"]))
        bass = str(rng.choice(["bass", "gm_bass", "gm_synthbass"]))
        tonal = [str(x) for x in rng.choice(TONAL, K - 2, replace=False)]
        long = family == "four_long"
        spec = dict(seed=int(130_000 + 1000 * FAMILIES.index(family) + i), n_loops=K,
                    bpm=float(rng.integers(100, 136)), meter=meter, loop_bars=bars,
                    family=str(rng.choice(["composed", "composed", "dense", "sparse"])),
                    instruments=[drums, bass] + tonal,
                    swing=float(rng.choice([0.0, 0.0, 0.25])),
                    block_bars=8 if long else 4,
                    n_bars=int(rng.choice([48, 56, 64])) if long else int(rng.choice([16, 20, 24, 28, 32])))
        specs.append(spec)
    return specs


def load_song(spec: dict):
    """``make_song(**spec)``, kept in bench/out/grid_songs as npz (rendering the General MIDI
    instruments with fluidsynth is slow on a busy machine)."""
    from unmixer.datasets.synth import SynthSong

    path = CACHE.parent / "grid_songs" / f"{song_key(spec)}.npz"
    if path.exists():
        with np.load(path) as z:
            return SynthSong(z["mix"], z["stems"], z["layout"], z["downbeats_s"], float(z["bpm"]),
                             int(z["meter"]), list(z["loop_bars"]), list(z["instruments"]))
    song = make_song(**spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mix=song.mix, stems=song.stems, layout=song.layout, downbeats_s=song.downbeats_s,
             bpm=song.bpm, meter=song.meter, loop_bars=np.asarray(song.loop_bars),
             instruments=np.asarray(song.instruments))
    return song


def song_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def describe(spec: dict) -> str:
    lengths = "/".join(str(b) for b in sorted(set(spec["loop_bars"])))
    return (f"{spec['bpm']:.0f} BPM {spec['meter']}/4, {spec['n_bars']} bars, K={spec['n_loops']}, "
            f"loops of {lengths} bars, {spec['family']}")


# ----------------------------------------------------------------------------- grids

def _true_grid(song) -> BeatGrid:
    return grid_from_downbeats(song.downbeats_s, song.meter)


def perturbed_grid(song, name: str, madmom: BeatGrid | None = None) -> BeatGrid:
    """The grid ``name`` (see the module docstring) for a song, as the tracker would give it.

    Raises
    ------
    UnmixerError
        If the grid has too few bars (as the tracker's would).
    """
    true = _true_grid(song)
    beats, m = np.asarray(true.beats_s), true.meter
    duration = song.mix.shape[-1] / song.sr
    numbers = np.arange(len(beats)) % m + 1
    period = float(np.median(np.diff(beats)))
    if name == "true":
        return true
    if name == "madmom":
        return madmom
    if name == "half_beat":
        return grid_from_beats(beats + period / 2, numbers, duration)
    if name == "one_beat":
        return grid_from_beats(beats, (np.arange(len(beats)) - 1) % m + 1, duration)
    if name == "double":
        doubled = np.sort(np.concatenate([beats, beats + period / 2]))
        return grid_from_beats(doubled, np.arange(len(doubled)) % m + 1, duration)
    if name == "half":
        halved = beats[::2]
        return grid_from_beats(halved, np.arange(len(halved)) % m + 1, duration)
    if name == "meter":
        other = 3 if m == 4 else 4
        return grid_from_beats(beats, np.arange(len(beats)) % other + 1, duration)
    if name == "drop_first":
        return grid_from_beats(beats[m:], numbers[m:], duration)
    raise ValueError(name)


# ----------------------------------------------------------------------------- scoring

def si_sdr_improvement(song, tracks: np.ndarray) -> tuple[float, list[float]]:
    """Mean SI-SDR improvement (dB) of the matched tracks over the mixture, and per loop."""
    K = len(song.stems)
    mix = np.repeat(song.mix[None], K, axis=0)
    base = si_sdr(song.stems, mix)
    match = match_sources(si_sdr_matrix(song.stems, tracks))
    gains = si_sdr(song.stems, tracks[match]) - base
    return float(np.mean(gains)), [float(g) for g in gains]


def _cached(key: dict, compute):
    path = CACHE / (hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def madmom_grid(song, spec) -> BeatGrid:
    """madmom's grid of a song (cached: it does not depend on the engine)."""
    def compute():
        g = track_beats(song.mix, song.sr)
        return {"beats_s": list(map(float, g.beats_s)), "downbeats_s": list(map(float, g.downbeats_s)),
                "meter": g.meter, "bpm": g.bpm}

    d = _cached({"madmom": song_key(spec)}, compute)
    return BeatGrid(np.asarray(d["beats_s"]), np.asarray(d["downbeats_s"]), int(d["meter"]), float(d["bpm"]))


def shipped_grid(magnitude: np.ndarray, tracked: BeatGrid, n_loops: int, duration_s: float) -> BeatGrid:
    """The grid correction the engine shipped before issue 13 (2-bar loops): every beat phase
    of the bar line and bar offset of the segments scored by a rank-K NMF fit of a small cube
    (the tracker's grid kept unless another fits 5% better). Kept here, and only here, for
    the before/after table."""
    from unmixer.lab.nmf import beta_nmf
    from unmixer.loops.bargrid import _band_pool, extend_back, shifted_grid
    from unmixer.loops.cube import make_grid, segment_boundaries_s, spectral_cube

    L = 2

    def fit_error(bands, db, meter):
        boundaries = segment_boundaries_s(db, L)
        cube = spectral_cube(bands, make_grid(boundaries, 44100, 512, n_steps=8 * meter * L))
        X = cube.reshape(-1, cube.shape[2]).T
        X = X / max(float(X.max()), 1e-30)
        fit = beta_nmf(X, int(min(n_loops, *X.shape)), beta=2.0, n_iter=200, init="nndsvda", tol=0.0,
                       loss_every=200)
        return float(np.linalg.norm(X - fit.W @ fit.H) / max(float(np.linalg.norm(X)), 1e-30))

    candidates = []
    for shift in range(tracked.meter):
        try:
            g = tracked if shift == 0 else shifted_grid(tracked, shift, duration_s)
        except UnmixerError:
            continue
        candidates += [(g, g.downbeats_s[offset:]) for offset in range(L)]
    n_seg = min((len(db) - 1) // L for _, db in candidates)
    if n_seg < max(2, n_loops + 2):
        return tracked
    bands = _band_pool(magnitude)
    errors = [fit_error(bands, db[: n_seg * L + 1], g.meter) for g, db in candidates]
    best = int(np.argmin(errors))
    if errors[best] > 0.95 * errors[0]:
        return tracked
    g, db = candidates[best]
    return BeatGrid(g.beats_s, extend_back(db, g.meter, L), g.meter, g.bpm)


def segmentation(song, spec, grid_name: str, setting: str, mode: str, magnitude=None) -> dict:
    """The segments a configuration cuts (cached): bar lines, meter, loop length.

    ``mode``: "search" (today's engine, :func:`unmixer.loops.pipeline.choose_grid`),
    "shipped" (:func:`shipped_grid`, 2-bar loops), or "known" (the true bar lines, as given).
    """
    from unmixer.loops.pipeline import choose_grid

    def compute():
        if grid_name == "known":
            db, meter = song.downbeats_s, song.meter
            L = SETTINGS[setting]
            if L == "auto":
                mag = np.abs(stft(song.mix)).mean(axis=0) if magnitude is None else magnitude
                sg = choose_grid(mag, grid_from_downbeats(db, meter), spec["n_loops"], "auto",
                                 move_bar_lines=False, duration_s=song.mix.shape[-1] / song.sr)
                L = sg.loop_bars
            return {"downbeats_s": list(map(float, db)), "meter": int(meter), "loop_bars": int(L), "note": "given"}
        mag = np.abs(stft(song.mix)).mean(axis=0) if magnitude is None else magnitude
        try:
            tracked = perturbed_grid(song, grid_name, madmom_grid(song, spec))
            duration = song.mix.shape[-1] / song.sr
            if mode == "shipped":
                g = shipped_grid(mag, tracked, spec["n_loops"], duration)
                return {"downbeats_s": list(map(float, g.downbeats_s)), "meter": g.meter, "loop_bars": 2,
                        "note": "shipped"}
            t0 = time.perf_counter()
            sg = choose_grid(mag, tracked, spec["n_loops"], SETTINGS[setting], duration_s=duration)
            return {"downbeats_s": list(map(float, sg.beats.downbeats_s)), "meter": sg.beats.meter,
                    "loop_bars": sg.loop_bars, "note": sg.note, "bpm": sg.beats.bpm,
                    "search_s": time.perf_counter() - t0}
        except UnmixerError as err:
            return {"failed": str(err)}

    key = {"segmentation": song_key(spec), "grid": grid_name, "setting": setting, "mode": mode,
           "engine": package_code_version("unmixer.loops") if mode == "search" or setting == "auto" else "shipped"}
    return _cached(key, compute)


def separation(song, spec, seg: dict, engine: str) -> dict:
    """The engine's SI-SDR improvement on a segmentation (cached per rounded bar lines, so
    configurations that cut the same segments share one run)."""
    if "failed" in seg:
        return {"si_sdri": 0.0, "failed": seg["failed"]}
    db = np.asarray(seg["downbeats_s"])

    def compute():
        t0 = time.perf_counter()
        result = extract_loops(song.mix, spec["n_loops"], loop_bars=seg["loop_bars"],
                               downbeats_s=db, meter=seg["meter"])
        tracks = np.stack([loop.track for loop in result.loops])
        mean, per_loop = si_sdr_improvement(song, tracks)
        return {"si_sdri": mean, "per_loop": per_loop, "time_s": time.perf_counter() - t0}

    key = {"separation": song_key(spec), "db": [round(float(x), 2) for x in db],
           "meter": seg["meter"], "L": seg["loop_bars"], "engine": engine}
    return _cached(key, compute)


def same_segments(a: dict, b: dict, tol_s: float = 0.05) -> bool:
    """Whether two segmentations cut the song at the same places (loop starts within tol)."""
    if "failed" in a or "failed" in b:
        return False
    sa = np.asarray(a["downbeats_s"])[:: a["loop_bars"]]
    sb = np.asarray(b["downbeats_s"])[:: b["loop_bars"]]
    if abs(np.median(np.diff(sa)) - np.median(np.diff(sb))) > tol_s:
        return False
    return float(np.min(np.abs(sa[len(sa) // 2] - sb))) < tol_s


# ----------------------------------------------------------------------------- tables

def cmd_run(args) -> None:
    engine = args.separation_engine or package_code_version("unmixer.loops")
    print(f"engine {engine}; modes {args.modes}; grids {args.grids}\n")
    rows: dict[tuple, list[float]] = {}
    oracle: dict[str, list[float]] = {}
    hits, total, cliffs = 0, 0, []
    for family in args.families:
        for spec in song_specs(family, args.songs):
            song = load_song(spec)
            mag = np.abs(stft(song.mix)).mean(axis=0)
            print(f"{family} {song_key(spec)}: {describe(spec)}", flush=True)
            true = {L: separation(song, spec, segmentation(song, spec, "known", f"L{L}", "known"), engine)["si_sdri"]
                    for L in (1, 2, 4) if spec["n_bars"] // L >= 4}
            best_L = max(true, key=true.get)
            oracle.setdefault(family, []).append(true[best_L])
            print("    true grid: " + ", ".join(f"L{L} {v:.1f}" for L, v in true.items()), flush=True)
            best_seg = segmentation(song, spec, "known", f"L{best_L}", "known")
            for mode, setting in args.modes:
                for grid_name in args.grids:
                    seg = segmentation(song, spec, grid_name, setting, mode, mag)
                    r = separation(song, spec, seg, engine)
                    rows.setdefault((family, mode, setting, grid_name), []).append(r["si_sdri"])
                    if mode == "search":
                        total += 1
                        hit = same_segments(seg, best_seg) or r["si_sdri"] >= true[best_L] - 0.5
                        hits += hit
                        if true[best_L] >= 10 and r["si_sdri"] < 3:
                            cliffs.append(f"{family} {song_key(spec)} {grid_name} {setting}: {r['si_sdri']:.1f}")
                    what = seg.get("failed") or (f"L={seg['loop_bars']} {seg['meter']}/4 {seg.get('note', '')}")
                    print(f"    {mode:>7} {setting:>4} {grid_name:>10}: {r['si_sdri']:5.1f}  ({what})", flush=True)
    labels = [f"{m} {s}" for m, s in args.modes]
    print("\n| family | grid | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    for family in args.families:
        print(f"| {family} | true bar lines, better of 1/2/4 bars | " + " | ".join(
            f"{np.mean(oracle[family]):.1f}" for _ in labels) + " |")
        for grid_name in args.grids:
            cells = [f"{np.mean(rows[(family, m, s, grid_name)]):.1f}" for m, s in args.modes]
            print(f"| {family} | {grid_name} | " + " | ".join(cells) + " |")
    if total:
        print(f"\nsearch: same segments as the oracle (or within 0.5 dB of it) in {hits} of {total} runs "
              f"({100 * hits / total:.0f}%)")
    print("songs >= 10 dB on the true grid that fell below 3 dB: " + ("; ".join(cliffs) if cliffs else "none"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    run.add_argument("--grids", nargs="*", default=[g for g in GRIDS if g != "known"], choices=GRIDS)
    run.add_argument("--modes", nargs="*", default=["shipped:L2", "search:L2", "search:auto"],
                     help="MODE:SETTING pairs; modes shipped, search; settings L1 L2 L4 auto")
    run.add_argument("--songs", type=int, default=2, help="songs per family")
    run.add_argument("--separation-engine", default=None,
                     help="reuse the separations cached under this engine version (they get known "
                          "bar lines, so a change to the grid search alone does not touch them)")
    args = parser.parse_args()
    args.modes = [tuple(m.split(":")) for m in args.modes]
    if args.cmd == "run":
        cmd_run(args)


if __name__ == "__main__":
    main()
