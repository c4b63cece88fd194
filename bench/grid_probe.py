"""Probes behind BENCHMARKS.md's "Bar grid and loop length" figures on single songs (issue 13).

    .venv/bin/python bench/grid_probe.py shifts 680371036fdb one_bar --on-off none
    .venv/bin/python bench/grid_probe.py starts 680371036fdb one_bar --on-off none
    .venv/bin/python bench/grid_probe.py steady-cut --families one_bar short waltz

Songs and madmom's grids come from bench/grid.py's caches (``bench/out``). Score: mean SI-SDR
improvement (dB) of the matched full-length tracks, as bench/grid.py's.

* ``shifts``: one song, loop length 1 bar, on the true bar lines, madmom's, the true ones
  shifted by a constant (−24, −12, −6, +12 ms) and jittered (uniform ±4 ms, seeds 100-103).
* ``starts``: one song, 1-bar loops, true bar lines jittered ±4 ms (seed 100): the seed,
  ``ntd_bands=None``, ``n_iter=300``, ``purify_starts=64``; then five NTD starts (the SVD one
  and random ones), each with its NTD fit error and the relative error of the fitted loop
  model on the cube, to see whether a fit error picks the start that separates.
* ``steady-cut``: every song of the families, the grid search's segments on madmom's grid cut
  on madmom's bar lines, or on them steadied (9- and 17-bar Savitzky-Golay, one straight line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import grid as G  # noqa: E402

import unmixer.loops.pipeline as P  # noqa: E402


def _song(key: str, family: str):
    spec = next(s for s in G.song_specs(family, 2) if G.song_key(s) == key)
    return spec, G.load_song(spec)


def _score(song, spec, db, L, meter, **kw) -> float:
    r = P.extract_loops(song.mix, spec["n_loops"], loop_bars=L, downbeats_s=np.asarray(db), meter=meter, **kw)
    return G.si_sdr_improvement(song, np.stack([loop.track for loop in r.loops]))[0]


def _jittered(db: np.ndarray, seed: int, ms: float = 4.0) -> np.ndarray:
    out = db + np.random.default_rng(seed).uniform(-ms / 1000, ms / 1000, len(db))
    out[0] = max(out[0], 0.0)
    return out


def cmd_shifts(args) -> None:
    spec, song = _song(args.song, args.family)
    db = np.asarray(song.downbeats_s)
    mad = G.segmentation(song, spec, "madmom", "auto", "search")
    kw = dict(on_off=args.on_off)
    print(f"true: {_score(song, spec, db, 1, spec['meter'], **kw):.1f}")
    print(f"madmom's bar lines: {_score(song, spec, mad['downbeats_s'], 1, mad['meter'], **kw):.1f}")
    for ms in (-24, -12, -6, 12):
        shifted = np.maximum(db + ms / 1000, 0)
        print(f"true {ms:+d} ms: {_score(song, spec, shifted, 1, spec['meter'], **kw):.1f}")
    for seed in range(100, 104):
        print(f"true ±4 ms, seed {seed}: {_score(song, spec, _jittered(db, seed), 1, spec['meter'], **kw):.1f}")


def cmd_starts(args) -> None:
    spec, song = _song(args.song, args.family)
    db = _jittered(np.asarray(song.downbeats_s), 100)
    m = spec["meter"]
    for kw in (dict(seed=0), dict(seed=1), dict(seed=2), dict(ntd_bands=None), dict(n_iter=300),
               dict(purify_starts=64)):
        print(f"{kw}: {_score(song, spec, db, 1, m, on_off=args.on_off, **kw):.1f}")
    hals, fit, seen = P.ntd_hals, P.fit_loop_model, {}

    def ntd(X, ranks, **kw):
        kw.update(init=seen["init"] if kw.get("init") == "svd" else kw["init"], seed=seen["seed"])
        r = hals(X, ranks, **kw)
        seen["ntd"] = r.errors[-1]
        return r

    def loop_model(model, cube, n_loops, settings, refine=True):
        lm = fit(model, cube, n_loops, settings, refine)
        if refine:
            rec = np.einsum("sk,kft->fts", lm.activations, lm.templates)
            prev = np.vstack([np.zeros_like(lm.activations[:1]), lm.activations[:-1]])
            rec += np.einsum("sk,kft->fts", prev, lm.tails)
            seen["loop"] = float(np.linalg.norm(cube - rec) / np.linalg.norm(cube))
        return lm

    P.ntd_hals, P.fit_loop_model = ntd, loop_model
    try:
        for init, seed in (("svd", 0), ("random", 0), ("random", 1), ("random", 2), ("random", 3)):
            seen.update(init=init, seed=seed)
            s = _score(song, spec, db, 1, m, on_off=args.on_off)
            print(f"start {init} {seed}: NTD error {seen['ntd']:.4f}, loop model error {seen['loop']:.4f}: {s:.1f}")
    finally:
        P.ntd_hals, P.fit_loop_model = hals, fit


def cmd_steady_cut(args) -> None:
    from scipy.signal import savgol_filter

    for family in args.families:
        for spec in G.song_specs(family, 2):
            song = G.load_song(spec)
            seg = G.segmentation(song, spec, "madmom", "auto", "search")
            db, cells = np.asarray(seg["downbeats_s"]), []
            for name in ("raw", "9 bars", "17 bars", "one line"):
                if name == "raw":
                    s = db
                elif name == "one line":
                    n = np.arange(len(db))
                    s = np.polyval(np.polyfit(n, db, 1), n)
                else:
                    s = savgol_filter(db, min(int(name.split()[0]), len(db) // 2 * 2 - 1), 1, mode="interp")
                s = np.maximum(s, 0)
                s[0] = db[0]
                cells.append(f"{name} {_score(song, spec, s, seg['loop_bars'], seg['meter']):.1f}")
            print(f"{family} {G.song_key(spec)} L{seg['loop_bars']}: " + " | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("shifts", "starts"):
        p = sub.add_parser(name)
        p.add_argument("song")
        p.add_argument("family", choices=G.FAMILIES)
        p.add_argument("--on-off", default="default", help="'none' (the engine before) or 'default'")
    p = sub.add_parser("steady-cut")
    p.add_argument("--families", nargs="*", default=["one_bar", "short", "waltz"], choices=G.FAMILIES)
    args = parser.parse_args()
    if getattr(args, "on_off", None) is not None:
        from unmixer.loops.ntd import ON_OFF
        args.on_off = None if args.on_off == "none" else ON_OFF
    {"shifts": cmd_shifts, "starts": cmd_starts, "steady-cut": cmd_steady_cut}[args.cmd](args)


if __name__ == "__main__":
    main()
