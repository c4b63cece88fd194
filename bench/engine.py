"""Benchmarks of the loop extraction engine; prints Markdown tables for BENCHMARKS.md.

    .venv/bin/python bench/engine.py stages    # time per stage, 4-minute song
    .venv/bin/python bench/engine.py quality   # SI-SDR, SDR/SIR/SAR, layout on 8 generated songs

``stages`` runs the CLI's pipeline on a 4-minute real recording: Vibe Ace (Kevin MacLeod,
CC BY, 61 s) played four times in a row (../shared/audio). ``quality`` generates 8 songs
(unmixer.synth, seeds 101-108) and scores the full-length loop tracks against the true
stems, with the true downbeats and with madmom's.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.audio import SAMPLE_RATE, load_audio  # noqa: E402
from unmixer.metrics import bss_eval, layout_scores, si_sdr  # noqa: E402
from unmixer.pipeline import extract_loops  # noqa: E402
from unmixer.synth import make_song  # noqa: E402

SONGS = [  # tempo, meter, loop length, layout family, instruments: one line each
    dict(seed=101, bpm=120, meter=4, loop_bars=2, n_bars=32, family="composed"),
    dict(seed=102, bpm=96, meter=4, loop_bars=1, n_bars=24, family="composed"),
    dict(seed=103, bpm=150, meter=4, loop_bars=(1, 2, 2, 1), n_bars=32, family="composed",
         instruments=("drums", "bass", "vocal", "pluck")),
    dict(seed=104, bpm=105, meter=3, loop_bars=1, n_bars=24, family="composed"),
    dict(seed=105, bpm=88, meter=3, loop_bars=2, n_bars=32, family="composed", swing=0.3),
    dict(seed=106, bpm=128, meter=4, loop_bars=2, family="factorial", block_bars=2),
    dict(seed=107, bpm=170, meter=4, loop_bars=2, n_bars=40, family="composed",
         instruments=("drums", "pad", "lead", "bass")),
    dict(seed=108, bpm=80, meter=4, loop_bars=1, n_bars=24, family="composed",
         instruments=("drums", "bass", "pluck", "vocal")),
]


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def bench_stages(repeats: int) -> None:
    song = REPO.parent / "shared" / "audio" / "vibe_ace.ogg"
    one = load_audio(song)
    audio = np.concatenate([one] * 4, axis=1)
    print(f"Song: vibe_ace.ogg x4 = {audio.shape[1] / SAMPLE_RATE:.0f} s; K = 5 loops, 2-bar loops; {machine()}\n")
    rows = []
    for r in range(repeats):
        t0 = time.perf_counter()
        decoded = np.concatenate([load_audio(song)] * 4, axis=1)
        decode = time.perf_counter() - t0
        rough = []
        result = extract_loops(decoded, 5, preview=rough.append)
        rows.append({"decoding": decode, **result.timings_s,
                     "first rough loops (since start, incl. decoding)": decode + rough[0].timings_s["first_result"]})
    stages = list(rows[0])
    print("| stage | " + " | ".join(f"run {i + 1} (s)" for i in range(repeats)) + " |")
    print("|---|" + "---|" * repeats)
    first = "first rough loops (since start, incl. decoding)"
    for stage in [s for s in stages if s != first] + ["total", first]:
        vals = [sum(v for k, v in r.items() if k != first) if stage == "total" else r[stage] for r in rows]
        print(f"| {stage} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbars: {result.n_bars}, BPM {result.bpm:.1f}, cube segments: {result.n_bars // 2}; "
          f"peak resident memory of the process: {peak:.0f} MiB")


def bench_quality(songs: list[int] | None) -> None:
    print(f"{machine()}\n")
    header = ("| song | setting | K | downbeats | SI-SDR mix (dB) | SI-SDR ours (dB) | SDR | SIR | SAR "
              "| layout acc. | time (s) |")
    print(header)
    print("|" + "---|" * 11)
    summary: dict[str, list] = {"true": [], "estimated": []}
    for i, cfg in enumerate(SONGS):
        if songs and i + 1 not in songs:
            continue
        song = make_song(**cfg)
        loop_bars = 1 if cfg.get("loop_bars") == 1 else 2
        K = len(song.stems)
        mix_est = np.repeat(song.mix[None], K, axis=0)
        floor = float(si_sdr(song.stems, mix_est).mean())
        for which in ("true", "estimated"):
            t0 = time.perf_counter()
            kwargs = dict(downbeats_s=song.downbeats_s, meter=song.meter) if which == "true" else {}
            result = extract_loops(song.mix, K, loop_bars=loop_bars, **kwargs)
            elapsed = time.perf_counter() - t0
            est = np.stack([loop.track for loop in result.loops])
            scores = bss_eval(song.stems, est)
            layout = _layout_on_true_bars(song, result)
            row = [float(np.mean(scores.si_sdr)), float(np.mean(scores.sdr)), float(np.mean(scores.sir)),
                   float(np.mean(scores.sar)), layout, elapsed, floor]
            summary[which].append(row)
            desc = f"{cfg['bpm']} BPM {cfg['meter']}/4, {cfg.get('family')}, loops {cfg.get('loop_bars')} bars"
            print(f"| {i + 1} | {desc} | {K} | {which} | {floor:.1f} | {row[0]:.1f} | {row[1]:.1f} | "
                  f"{row[2]:.1f} | {row[3]:.1f} | {layout:.2f} | {elapsed:.1f} |", flush=True)
    print("\n| downbeats | mean SI-SDR mix (dB) | mean SI-SDR ours (dB) | gain (dB) | mean SDR | mean SIR "
          "| mean SAR | mean layout acc. | mean time (s) |")
    print("|" + "---|" * 9)
    for which, rows in summary.items():
        a = np.asarray(rows)
        if len(a):
            print(f"| {which} | {a[:, 6].mean():.2f} | {a[:, 0].mean():.2f} | {a[:, 0].mean() - a[:, 6].mean():.2f} "
                  f"| {a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} | {a[:, 3].mean():.2f} | {a[:, 4].mean():.3f} "
                  f"| {a[:, 5].mean():.1f} |")


def _layout_on_true_bars(song, result) -> float:
    """Layout accuracy after mapping each true bar to the estimated bar holding its middle."""
    mids = 0.5 * (song.downbeats_s[:-1] + song.downbeats_s[1:])
    idx = np.clip(np.searchsorted(result.downbeats_s, mids, side="right") - 1, 0, result.n_bars - 1)
    return layout_scores(song.layout, result.activations[:, idx]).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("stages", "quality"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--songs", type=int, nargs="*", help="song numbers (1-8) to run")
    args = parser.parse_args()
    if args.what == "stages":
        bench_stages(args.repeats)
    else:
        bench_quality(args.songs)


if __name__ == "__main__":
    main()
