"""How well "auto" chooses the number of loops (unmixer.loops.loopcount.estimate_loop_count).

    nice -n 19 .venv/bin/python bench/loopcount.py count   # hit rates, true and madmom's downbeats
    nice -n 19 .venv/bin/python bench/loopcount.py sdr     # separation with the chosen K vs the true K
    nice -n 19 .venv/bin/python bench/loopcount.py real    # the two real songs and a 4-minute song

Songs: bench/quality.py's ``song_specs`` (6 per family: composed and factorial K = 4,
sparse and dense K = 10) and 20 more songs from :func:`unmixer.datasets.synth.make_song` with other
counts (composed K = 3, 5, 6, 8; factorial K = 3, 5; sparse and dense K = 6). "true
downbeats": the generator's bar lines. "estimated": madmom's grid (cached in
``bench/out/loopcount_cache``), with the bar phase chosen as ``extract_loops`` does
(estimate on the tracker's grid, choose the phase with it, estimate again if it moved).
A count can only be told apart when the loops' layouts differ: "rank" is the rank of the
true layout at segment resolution (loops that always play together count once).
Writes its tables to ``bench/out/loopcount_<command>.md``; RESULTS_loopcount.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from quality import FAMILIES, GM_TONAL, SYNTH_TONAL, extraction_separation, score, song_key, song_specs  # noqa: E402

from bench import baselines  # noqa: E402
from unmixer.core.audio import load_audio  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.errors import UnmixerError  # noqa: E402
from unmixer.loops.bargrid import search_grid  # noqa: E402
from unmixer.loops.beats import grid_from_downbeats, track_beats  # noqa: E402
from unmixer.loops.loopcount import estimate_loop_count  # noqa: E402
from unmixer.loops.pipeline import extract_loops  # noqa: E402

CACHE = REPO / "bench" / "out" / "loopcount_cache"
OUT = REPO / "bench" / "out"
REAL = REPO.parent / "shared" / "audio"


def other_counts(family: str, K: int, n: int) -> list[dict]:
    """``n`` make_song argument sets with K loops (the instruments and lengths drawn as in
    bench/quality.py's ``song_specs``)."""
    specs = []
    for i in range(n):
        rng = np.random.default_rng([77, K, i, len(family)])
        L = (1, 2, 4)[i % 3] if family == "composed" else (1, 2)[i % 2]
        bars = [L if rng.random() < 0.7 or L == 1 else 1 for _ in range(K)]
        bars[0] = L
        instruments = [str(rng.choice(["drums", "gm_drums"])), str(rng.choice(["bass", "gm_bass", "gm_synthbass"]))]
        instruments += [str(x) for x in rng.choice(list(SYNTH_TONAL + GM_TONAL), K - 2, replace=False)]
        spec = dict(seed=int(90_000 + 100 * K + i), n_loops=K, bpm=float(rng.integers(80, 171)),
                    meter=3 if i % 2 else 4, loop_bars=bars, family=family, instruments=instruments,
                    swing=float(rng.choice([0.0, 0.25])))
        if family == "composed":
            spec["block_bars"] = max(2, L)
            spec["n_bars"] = spec["block_bars"] * (K + int(rng.integers(3, 6)))
        elif family == "factorial":
            spec["block_bars"], spec["n_bars"] = L, (2 ** K - 1) * L
        else:
            spec["block_bars"], spec["n_bars"] = 2, 24
        specs.append(spec)
    return specs


def all_songs() -> list[tuple[str, dict]]:
    songs = [(f, s) for f in FAMILIES for s in song_specs(f, 6)]
    songs += [("composed", s) for K in (3, 5, 6, 8) for s in other_counts("composed", K, 3)]
    songs += [("factorial", s) for K in (3, 5) for s in other_counts("factorial", K, 2)]
    songs += [(f, s) for f in ("sparse", "dense") for s in other_counts(f, 6, 2)]
    return songs


def tracked_grid(song, spec):
    """madmom's downbeats and meter for a song (cached), or None if it found none."""
    path = CACHE / f"grid_{song_key(spec)}.json"
    if not path.exists():
        try:
            g = track_beats(song.mix)
            value = {"downbeats_s": [float(x) for x in g.downbeats_s], "meter": int(g.meter)}
        except UnmixerError as err:
            value = {"failed": str(err)}
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    value = json.loads(path.read_text())
    return None if "failed" in value else grid_from_downbeats(np.asarray(value["downbeats_s"]), value["meter"])


def auto_on_estimated(magnitude, grid, L, duration_s) -> int:
    """The count as ``extract_loops(n_loops="auto")`` chooses it on a tracked grid."""
    k = estimate_loop_count(magnitude, grid.downbeats_s, grid.meter, L)
    moved = search_grid(magnitude, grid, k, L, duration_s=duration_s).grid
    same = np.array_equal(moved.downbeats_s, grid.downbeats_s)
    return k if same else estimate_loop_count(magnitude, moved.downbeats_s, moved.meter, L)


def layout_rank(song, L: int) -> int:
    lay = song.layout[:, : (song.layout.shape[1] // L) * L]
    return int(np.linalg.matrix_rank(lay.reshape(lay.shape[0], -1, L).max(axis=2).astype(float)))


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, under load (nice 19)"


def hit_table(rows: list[dict], field: str) -> str:
    lines = ["| family | true K | songs | exact | within ±1 | mean chosen − true | exact vs layout rank |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    groups = sorted({(r["family"], r["K"]) for r in rows}, key=lambda g: (FAMILIES.index(g[0]), g[1]))
    for fam, K in groups + [("all", None)]:
        sel = [r for r in rows if (fam == "all" or (r["family"], r["K"]) == (fam, K)) and r[field] is not None]
        if not sel:
            continue
        d = np.array([r[field] - r["K"] for r in sel])
        exact_rank = np.mean([r[field] == r["rank"] for r in sel])
        lines.append(f"| {fam} | {K if K else 'all'} | {len(sel)} | {np.mean(d == 0):.0%} | {np.mean(np.abs(d) <= 1):.0%} "
                     f"| {d.mean():+.2f} | {exact_rank:.0%} |")
    return "\n".join(lines)


def cmd_count(args) -> None:
    rows = []
    for family, spec in all_songs():
        song = make_song(**spec)
        L = max(spec["loop_bars"])
        magnitude = np.abs(stft(song.mix)).mean(axis=0)
        t0 = time.perf_counter()
        k_true_db = estimate_loop_count(magnitude, song.downbeats_s, song.meter, L)
        t_est = time.perf_counter() - t0
        grid = tracked_grid(song, spec)
        k_est_db = None if grid is None else auto_on_estimated(magnitude, grid, L, song.mix.shape[1] / 44100)
        row = dict(family=family, K=spec["n_loops"], rank=layout_rank(song, L), L=L,
                   n_segments=int(song.layout.shape[1] // L), true_db=k_true_db, est_db=k_est_db, time_s=t_est)
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = ["#### Loop count chosen, true downbeats\n", hit_table(rows, "true_db"),
            "\n#### Loop count chosen, madmom's downbeats (bar phase chosen as in extract_loops)\n",
            hit_table(rows, "est_db"),
            f"\nEstimation time per song (true downbeats): median {np.median([r['time_s'] for r in rows]):.2f} s, "
            f"max {max(r['time_s'] for r in rows):.2f} s. {machine()}.",
            "\n<details><summary>every song</summary>\n\n| family | K | layout rank | L | segments | chosen (true db) | chosen (madmom) |\n|---|---:|---:|---:|---:|---:|---:|"]
    text += [f"| {r['family']} | {r['K']} | {r['rank']} | {r['L']} | {r['n_segments']} | {r['true_db']} | {r['est_db']} |" for r in rows]
    text.append("\n</details>")
    _write("count", "\n".join(text))


def _pad(tracks: np.ndarray, K: int) -> np.ndarray:
    """Tracks padded with near-silent ones to K (a loop the count missed is not separated)."""
    if len(tracks) >= K:
        return tracks
    pad = 1e-6 * np.random.default_rng(0).standard_normal((K - len(tracks),) + tracks.shape[1:]).astype(np.float32)
    return np.concatenate([tracks, pad])


def cmd_sdr(args) -> None:
    rows = []
    for family, spec in all_songs()[: args.songs]:
        song = make_song(**spec)
        K, L = spec["n_loops"], max(spec["loop_bars"])
        out = {"family": family, "K": K}
        for name, n in (("true", K), ("auto", "auto")):
            path = CACHE / f"sdr_{name}_{song_key(spec)}.json"
            if not path.exists():
                t0 = time.perf_counter()
                result = extract_loops(song.mix, n, loop_bars=L, downbeats_s=song.downbeats_s, meter=song.meter)
                elapsed = time.perf_counter() - t0
                tracks = _pad(extraction_separation(result).tracks, K)
                sdr = score(song, baselines.Separation(tracks), two=False, sir_sar=False)["sdr"]
                path.write_text(json.dumps({"k": len(result.loops), "sdr": sdr, "time_s": elapsed}))
            r = json.loads(path.read_text())
            out[name] = r
        rows.append(out)
        print(family, K, out["auto"]["k"], f"{np.mean(out['true']['sdr']):.2f} {np.mean(out['auto']['sdr']):.2f}", flush=True)
    lines = ["| family | songs | K chosen = true | mean SDR, true K (dB) | mean SDR, auto K (dB) | time, true K (s) | time, auto (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for fam in list(FAMILIES) + ["all"]:
        sel = [r for r in rows if fam in ("all", r["family"])]
        if not sel:
            continue
        lines.append(f"| {fam} | {len(sel)} | {np.mean([r['auto']['k'] == r['K'] for r in sel]):.0%} | "
                     f"{np.mean([np.mean(r['true']['sdr']) for r in sel]):.2f} | {np.mean([np.mean(r['auto']['sdr']) for r in sel]):.2f} | "
                     f"{np.mean([r['true']['time_s'] for r in sel]):.1f} | {np.mean([r['auto']['time_s'] for r in sel]):.1f} |")
    _write("sdr", "#### Separation with the chosen K against the true K (true downbeats; SDR per true loop, "
                  "missing loops count as silent estimates)\n\n" + "\n".join(lines) + f"\n\n{machine()}.")


def cmd_real(args) -> None:
    lines = ["| song | duration (s) | loop bars | K chosen | estimation (s) | extract_loops('auto') total (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    songs = [(name, load_audio(REAL / f"{name}.ogg")) for name in ("vibe_ace", "choice_drum_bass")]
    songs.append(("vibe_ace × 4", np.concatenate([songs[0][1]] * 4, axis=1)))
    for name, audio in songs:
        grid = track_beats(audio)
        magnitude = np.abs(stft(audio)).mean(axis=0)
        for L in (1, 2):
            t0 = time.perf_counter()
            k = auto_on_estimated(magnitude, grid, L, audio.shape[1] / 44100)
            t_est = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = extract_loops(audio, "auto", loop_bars=L, tracks=False)
            total = time.perf_counter() - t0
            lines.append(f"| {name} | {audio.shape[1] / 44100:.0f} | {L} | {len(result.loops)} | {t_est:.1f} | {total:.1f} |")
            print(lines[-1], flush=True)
    _write("real", "#### Real songs (no ground truth)\n\n" + "\n".join(lines) +
           "\n\nestimation: both estimates and the bar phase choice between them, as in extract_loops; "
           f"total: the whole extraction (clips only, as the app runs it). {machine()}.")


def _write(name: str, text: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"loopcount_{name}.md").write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("count").set_defaults(func=cmd_count)
    p = sub.add_parser("sdr")
    p.add_argument("--songs", type=int, default=24, help="the first N songs (default: bench/quality.py's 24)")
    p.set_defaults(func=cmd_sdr)
    sub.add_parser("real").set_defaults(func=cmd_real)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
