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


def run_one(song, spec, grid_name: str, setting: str, engine: str, extra: dict | None = None) -> dict:
    """Scores of one engine run (cached)."""
    extra = extra or {}

    def compute():
        t0 = time.perf_counter()
        kwargs = dict(loop_bars=SETTINGS[setting], **extra)
        try:
            if grid_name == "known":
                kwargs.update(downbeats_s=song.downbeats_s, meter=song.meter)
            else:
                kwargs["beat_grid"] = perturbed_grid(song, grid_name, madmom_grid(song, spec))
            result = extract_loops(song.mix, spec["n_loops"], **kwargs)
        except UnmixerError as err:
            return {"failed": str(err), "si_sdri": 0.0}
        tracks = np.stack([loop.track for loop in result.loops])
        mean, per_loop = si_sdr_improvement(song, tracks)
        return {"si_sdri": mean, "per_loop": per_loop, "time_s": time.perf_counter() - t0,
                "loop_bars": int(result.loop_bars), "meter": int(result.meter), "bpm": float(result.bpm),
                "n_bars": int(result.n_bars), "first_downbeat_s": float(result.downbeats_s[0]),
                "grid": getattr(result, "grid", None)}

    key = {"song": song_key(spec), "grid": grid_name, "setting": setting, "engine": engine, **extra}
    return _cached(key, compute)


# ----------------------------------------------------------------------------- tables

def cmd_run(args) -> None:
    engine = package_code_version("unmixer.loops")
    print(f"engine {engine}; settings {args.settings}; grids {args.grids}\n")
    rows: dict[tuple[str, str, str], list[float]] = {}
    best_true: dict[str, list[float]] = {}
    per_song = []
    for family in args.families:
        for spec in song_specs(family, args.songs):
            song = load_song(spec)
            line = [f"{family} {song_key(spec)}: {describe(spec)}"]
            true_scores = {}
            for grid_name in args.grids:
                for setting in args.settings:
                    r = run_one(song, spec, grid_name, setting, engine)
                    rows.setdefault((family, grid_name, setting), []).append(r["si_sdri"])
                    if grid_name == "known":
                        true_scores[setting] = r["si_sdri"]
                    tag = "FAIL" if "failed" in r else f"{r['si_sdri']:.1f}"
                    line.append(f"  {grid_name:>10} {setting:>4}: {tag}"
                                + (f" (L={r['loop_bars']}, {r['meter']}/4, {r['bpm']:.0f} BPM)" if "failed" not in r else f" {r['failed']}"))
                    print(line[-1], flush=True)
            fixed = [true_scores[s] for s in ("L1", "L2", "L4") if s in true_scores]
            if fixed:
                best_true.setdefault(family, []).append(max(fixed))
            per_song.append(line)
    print("\n| family | grid | " + " | ".join(args.settings) + " |")
    print("|---|---|" + "---:|" * len(args.settings))
    for family in args.families:
        for grid_name in args.grids:
            cells = [f"{np.mean(rows[(family, grid_name, s)]):.1f}" for s in args.settings]
            print(f"| {family} | {grid_name} | " + " | ".join(cells) + " |")
        if family in best_true:
            print(f"| {family} | true grid, better fixed length per song | {np.mean(best_true[family]):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    run.add_argument("--grids", nargs="*", default=list(GRIDS), choices=GRIDS)
    run.add_argument("--settings", nargs="*", default=["L1", "L2", "auto"], choices=list(SETTINGS))
    run.add_argument("--songs", type=int, default=3, help="songs per family")
    args = parser.parse_args()
    if args.cmd == "run":
        cmd_run(args)


if __name__ == "__main__":
    main()
