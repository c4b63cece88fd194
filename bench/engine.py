"""Benchmarks of the loop extraction engine; prints Markdown tables for BENCHMARKS.md.

    .venv/bin/python bench/engine.py stages    # time per stage, 4-minute song
    .venv/bin/python bench/engine.py quality   # SI-SDR, SDR/SIR/SAR, layout on 8 generated songs

``stages`` runs the CLI's pipeline on a 4-minute real recording: Vibe Ace (Kevin MacLeod,
CC BY, 61 s) played four times in a row (../shared/audio). ``quality`` generates 8 songs
(unmixer.datasets.synth, seeds 101-108) and scores the full-length loop tracks against the true
stems, with the true downbeats and with madmom's.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from unmixer.core.metrics import bss_eval, layout_scores, si_sdr  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.loops.pipeline import extract_loops, warm_up  # noqa: E402

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


def _tree_rss_kib(pid: int) -> int:
    """Memory (KiB) of a process and all its descendants, from /proc: the sum of their
    proportional set sizes (PSS: each shared page counted once across the processes that map
    it, so the shared libraries of the worker processes are not counted three times)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


def run_with_peak_memory(cmd: list[str]) -> tuple[str, float, float]:
    """Run a command; return its stdout, wall time (s) and the peak memory (MiB, PSS) of its
    whole process tree (the madmom worker processes included), sampled every 20 ms."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.02)
    return proc.stdout.read(), time.perf_counter() - t0, peak / 1024


def bench_stages(repeats: int) -> None:
    """The 4-minute song two ways: as the app runs it (clips only, with the quick first
    result) in this process, and as ``python -m unmixer extract`` (full-length tracks,
    WAV files) in a subprocess whose whole process tree's memory is sampled."""
    from unmixer.loops import beats

    song = REPO.parent / "shared" / "audio" / "vibe_ace.ogg"
    audio = np.concatenate([load_audio(song)] * 4, axis=1)
    wav = REPO / "bench" / "out" / "vibe_ace_x4.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    from unmixer.core.audio import write_wav

    write_wav(wav, audio, SAMPLE_RATE)
    print(f"Song: vibe_ace.ogg x4 = {audio.shape[1] / SAMPLE_RATE:.0f} s; K = 5 loops, 2-bar loops; "
          f"{machine()}; madmom worker processes: {beats.WORKERS}\n")
    first = "first rough loops (since start, incl. decoding)"
    app_rows, cli_rows, peaks = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        warm_up()
        decoded = np.concatenate([load_audio(song)] * 4, axis=1)
        decode = time.perf_counter() - t0
        rough = []
        result = extract_loops(decoded, 5, preview=rough.append, tracks=False)
        app_rows.append({"decoding": decode, **result.timings_s,
                         first: decode + rough[0].timings_s["first_result"]})
        out, wall, peak = run_with_peak_memory(
            [sys.executable, "-m", "unmixer", "extract", str(wav), "--loops", "5",
             "--out", str(wav.parent / "extract_out"), "-q"])
        line = next(ln for ln in out.splitlines() if ln.startswith("time:"))
        cli = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)s", line)}
        cli["wall (process start to exit)"] = wall
        cli_rows.append(cli)
        peaks.append(peak)
    stages = [s for s in app_rows[0] if s != first] + ["total", first]
    print("| stage | " + " | ".join(f"app, run {i + 1} (s)" for i in range(repeats)) + " | "
          + " | ".join(f"CLI, run {i + 1} (s)" for i in range(repeats)) + " |")
    print("|---|" + "---|" * (2 * repeats))
    for stage in stages + ["writing", "wall (process start to exit)"]:
        app = [sum(v for k, v in r.items() if k != first) if stage == "total" else r.get(stage) for r in app_rows]
        cli = [r.get(stage) for r in cli_rows]
        cells = ["–" if v is None else f"{v:.1f}" for v in app + cli]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbars: {result.n_bars}, BPM {result.bpm:.1f}, cube segments: {result.n_bars // 2}; peak "
          f"memory: app path {own:.0f} MiB (peak RSS of this process, without its workers), CLI "
          + ", ".join(f"{p:.0f}" for p in peaks) + " MiB (peak PSS of the whole process tree)")


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
    parser.add_argument("--inner-sweeps", type=int, default=None,
                        help="HALS sweeps per NTD iteration (default: the engine's, 8)")
    args = parser.parse_args()
    if args.what == "stages":
        bench_stages(args.repeats)
    else:
        if args.inner_sweeps:  # a variant of the engine's NTD, for BENCHMARKS.md's NTD section
            import functools

            import unmixer.loops.pipeline
            from unmixer.loops.ntd import ntd_hals

            unmixer.loops.pipeline.ntd_hals = functools.partial(ntd_hals, inner_sweeps=args.inner_sweeps)
        bench_quality(args.songs)


if __name__ == "__main__":
    main()
