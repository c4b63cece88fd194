"""Songs per hour of `python -m unmixer batch` on Dask, against the library in a loop.

    bench/prio.sh .venv/bin/python bench/batch_bench.py [--songs 6] [--bars 60] [--long 1]
        [--rounds 1] [--configs loop,loop-1cpu,dask-1,dask-2]

One library, one run, the configurations side by side (each in a fresh process, in turn,
``--rounds`` times, so the shared machine's drift hits them alike):

* ``loop``: ``extract_song`` + ``write_outputs`` (what ``extract`` does) for each song in one
  process, the library as a script would use it: madmom's networks on two threads, BLAS threads;
* ``loop-1cpu``: the same with ``UNMIXER_THREADS=1 OMP_NUM_THREADS=1``, the work of one Dask
  worker without Dask (the overhead of Dask is ``dask-1`` against this);
* ``dask-1``, ``dask-2``: :func:`unmixer.batch.run_batch` on an embedded LocalCluster of 1 and
  2 worker processes (cluster start-up included: a user pays it); ``dask-1-notrim``: dask-1
  without the ``MALLOC_TRIM_THRESHOLD_`` that Dask's nanny sets in its workers.

The library: ``--songs`` generated songs (``unmixer.datasets.synth.make_song``, 4 loops,
``--bars`` bars at 100-140 BPM), the two real songs of ../shared/audio and ``--long``
4.1-minute songs (Vibe Ace four times over). Each result: wall
time (s), songs per hour, hours of audio per hour, and peak resident memory: of the loop's
process and of the largest Dask worker (their ``VmHWM``; the workers' from the manifest),
and of all the processes together (sampled every 0.2 s). Prints a Markdown table for
BENCHMARKS.md; each run's figures go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "audio"
CONFIGS = ("loop", "loop-1cpu", "dask-1", "dask-2")
EXTRA = ("dask-1-notrim",)  # dask-1 without Dask's MALLOC_TRIM_THRESHOLD_ in the worker


def make_library(folder: Path, n_songs: int, n_bars: int, n_long: int) -> list[Path]:
    import soundfile as sf

    from unmixer.datasets.synth import make_song

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_songs):
        path = folder / "generated" / f"song_{i:02d}.wav"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            song = make_song(seed=500 + i, n_bars=n_bars, bpm=100 + 8 * (i % 6))
            sf.write(path, song.mix.T, song.sr, subtype="PCM_16")
    for name in ("vibe_ace.ogg", "choice_drum_bass.ogg"):
        if (SHARED / name).exists() and not (folder / name).exists():
            shutil.copy(SHARED / name, folder / name)
    if n_long and (SHARED / "vibe_ace.ogg").exists():
        import numpy as np

        from unmixer.core.audio import load_audio

        four = np.tile(load_audio(SHARED / "vibe_ace.ogg"), 4)  # 4.1 minutes, a real mix
        for i in range(n_long):
            path = folder / "long" / f"vibe_ace_x4_{i}.flac"
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                sf.write(path, (four * (1 - 0.01 * i)).T, 44100, subtype="PCM_16")
    from unmixer.batch import find_songs

    return find_songs(folder)


class TreeMemory:
    """Peak resident memory (MB) of this process and all its descendants together, sampled
    every 0.2 s in a thread."""

    def __init__(self):
        import threading

        import psutil

        self.peak, self._stop = 0.0, threading.Event()
        me = psutil.Process()

        def sample():
            while not self._stop.wait(0.2):
                total = 0
                for p in [me, *me.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total / 2**20)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> float:
        self._stop.set()
        return self.peak


def one(config: str, library: Path, out: Path) -> dict:
    """Run one configuration in this process; returns its figures."""
    from unmixer.batch import Settings, _peak_rss_mb, find_songs, run_batch

    songs = find_songs(library)
    shutil.rmtree(out, ignore_errors=True)
    tree = TreeMemory()
    t0 = time.perf_counter()
    if config.startswith("loop"):
        from unmixer.commands.extract import extract_song, write_outputs

        for path in songs:
            extraction = extract_song(path, 5)
            write_outputs(extraction, out / path.stem, title=path.name)
            del extraction
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "songs": len(songs), "done": len(songs),
                "main_mb": _peak_rss_mb(), "tree_mb": tree.stop()}
    import dask

    trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None} \
        if config.endswith("-notrim") else {}
    with dask.config.set(trim):
        report = run_batch(library, out, Settings(n_loops=5), workers=int(config.split("-")[1]))
    seconds = time.perf_counter() - t0
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"seconds": seconds, "songs": len(songs), "done": report.done,
            "main_mb": _peak_rss_mb(), "tree_mb": tree.stop(),
            "worker_mb": max(float(r["worker_peak_mb"] or 0) for r in rows),
            "song_s": sum(float(r["total_s"] or 0) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=6)
    ap.add_argument("--bars", type=int, default=60)
    ap.add_argument("--long", type=int, default=1,
                    help="4-minute songs (Vibe Ace four times over) in the library")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default=str(REPO / "bench" / "out" / "batch"))
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, from {', '.join(CONFIGS + EXTRA)}")
    ap.add_argument("--one", choices=CONFIGS + EXTRA, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    library = work / "library"
    if args.one:
        print(json.dumps(one(args.one, library, work / f"out-{args.one}")))
        return
    songs = make_library(library, args.songs, args.bars, args.long)
    import soundfile as sf

    minutes = sum(sf.info(p).duration for p in songs) / 60
    configs = tuple(args.configs.split(","))
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for config in configs if r % 2 == 0 else configs[::-1]:
            env = dict(os.environ)
            if config == "loop-1cpu":
                env.update(UNMIXER_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                           MKL_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, __file__, "--one", config, "--work", str(work)],
                                  env=env, capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                sys.exit(f"{config} failed:\n{proc.stderr[-3000:]}")
            results[config].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {config}: {results[config][-1]}", file=sys.stderr)
    print(f"{len(songs)} songs ({minutes:.1f} min of audio: {args.songs} generated of {args.bars} "
          f"bars, the 2 real ones, {args.long} of 4.1 min), K = 5; {platform.machine()}, {os.cpu_count()} cores, "
          f"load average at the end {os.getloadavg()[0]:.1f}; {args.rounds} round(s), the fastest "
          "shown\n")
    print("| configuration | wall (s) | songs/h | audio h per h | time vs loop-1cpu | peak memory |")
    print("|---|---|---|---|---|---|")
    base = min(x["seconds"] for x in results.get("loop-1cpu") or results[configs[0]])
    for config in configs:
        x = min(results[config], key=lambda x: x["seconds"])
        memory = (f"process {x['main_mb']:.0f} MB; all processes {x['tree_mb']:.0f} MB"
                  if "worker_mb" not in x else
                  f"largest worker {x['worker_mb']:.0f} MB; all processes {x['tree_mb']:.0f} MB")
        print(f"| {config} | {x['seconds']:.0f} | {3600 * x['done'] / x['seconds']:.0f} | "
              f"{60 * minutes * x['done'] / len(songs) / x['seconds']:.1f} | "
              f"{x['seconds'] / base:.2f}x | {memory} |")


if __name__ == "__main__":
    main()
