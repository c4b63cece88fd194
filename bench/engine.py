"""Benchmarks of the loop extraction engine; prints Markdown tables for BENCHMARKS.md.

    .venv/bin/python bench/engine.py stages [--before DIR]  # time per stage, 4-minute song, and loopextractor
    .venv/bin/python bench/engine.py ntd       # the decomposition on log bands, 4-minute song
    .venv/bin/python bench/engine.py quality   # SI-SDR, SDR/SIR/SAR, layout on 8 generated songs

``stages`` runs the app's and the CLI's pipeline on a 4-minute real recording: Vibe Ace
(Kevin MacLeod, CC BY, 61 s) played four times in a row (../shared/audio), side by side with
the public loopextractor configuration (and, with ``--before DIR``, another checkout). ``quality`` generates 8 songs
(unmixer.datasets.synth, seeds 101-108) and scores the full-length loop tracks against the true
stems, with the true downbeats and with madmom's.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("PYTHONPATH"):  # the stages benchmark runs other checkouts through PYTHONPATH
    sys.path.insert(0, str(REPO))

from unmixer.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from unmixer.core.metrics import bss_eval, layout_scores, si_sdr  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.loops.pipeline import extract_loops  # noqa: E402

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


def run_with_peak_memory(cmd: list[str], cwd: Path = REPO, env: dict | None = None) -> tuple[str, float, float]:
    """Run a command; return its stdout, wall time (s) and the peak memory (MiB, PSS) of its
    whole process tree (worker processes included), sampled every 20 ms."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.02)
    return proc.stdout.read(), time.perf_counter() - t0, peak / 1024


SONG = REPO.parent / "shared" / "audio" / "vibe_ace.ogg"
WAV = REPO / "bench" / "out" / "vibe_ace_x4.wav"
OGG = REPO / "bench" / "out" / "vibe_ace_x4.ogg"
FIRST = "first rough loops (since the upload, incl. decoding)"
FINAL = "final loops (since the upload)"


def four_minute_song() -> np.ndarray:
    """Vibe Ace (61 s) four times in a row, written to ``bench/out/vibe_ace_x4.wav`` (16-bit,
    what the CLI reads) and ``bench/out/vibe_ace_x4.ogg`` (Ogg Vorbis, what a user uploads)."""
    from unmixer.core.audio import ogg_bytes, write_wav

    audio = np.concatenate([load_audio(SONG)] * 4, axis=1)
    WAV.parent.mkdir(parents=True, exist_ok=True)
    write_wav(WAV, audio, SAMPLE_RATE)
    OGG.write_bytes(ogg_bytes(audio))
    return audio


def run_app_path(warm: bool = False) -> None:
    """``engine.py app``: what the app does with an upload of the 4-minute song, in this
    process, with the code found first on ``sys.path`` (PYTHONPATH picks another checkout):
    :func:`ui.engine.analyse` on the OGG file's bytes (decoding, with the engine's warm-up, and
    ``extract_loops(..., preview=..., tracks=False)``, loop count 5 and loop length "auto", the
    app's defaults), with an empty result cache; the app's modules are imported first, as in
    a running server. With ``warm``, the engine's warm-up (:func:`unmixer.loops.pipeline.warm_up`:
    imports, librosa's beat tracker's numba code, madmom's networks, the key CNN) is done
    before the upload, as in a server whose page has been drawn (the app starts it then).
    Prints one JSON line: the stages (s), the first rough loops and the final loops (s since
    the upload)."""
    import json
    import tempfile

    from ui import engine
    from ui.state import Song, song_id
    from unmixer.cache import ResultCache

    if warm:  # a server whose page was open before the upload: the engine's warm-up done
        import threading

        from unmixer.loops import pipeline

        pipeline.warm_up()
        for thread in threading.enumerate():
            if thread.name == "unmixer-warm-up":
                thread.join()
    data = OGG.read_bytes()
    rough = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = engine.analyse(Song(song_id(data), OGG.name, data), 5, "auto", cache=ResultCache(Path(tmp)),
                                preview=rough.append)
        final = time.perf_counter() - t0
    if result.error:
        raise SystemExit(result.error)
    timings = dict(result.extraction.timings_s)
    timings.pop("first_result", None)
    print(json.dumps({**timings, FIRST: rough[0].seconds if rough else None, FINAL: final,
                      "loop bars": result.extraction.loop_bars, "bars": result.extraction.n_bars}))


def run_loopextractor(wav: str, out: str) -> None:
    """``engine.py loopextractor WAV OUT``: the public loopextractor configuration end to end
    (jblsmith/loopextractor's ``run_algorithm``): the song decoded, madmom's downbeat tracker
    as it calls it (``RNNDownBeatProcessor()`` and ``DBNDownBeatTrackingProcessor(beats_per_bar=
    [3, 4], fps=100)``, one process), then :func:`bench.baselines.loopextractor` (bar STFTs
    zero-padded into a cube, TensorLy's multiplicative-update NTD, 500 iterations, K = 5, its
    clips and full-length tracks) and every clip and track written as a WAV file."""
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

    from bench.baselines import loopextractor
    from unmixer.core.audio import write_wav

    times = {}
    t0 = time.perf_counter()
    audio = load_audio(wav)
    times["decoding"] = time.perf_counter() - t0
    t = time.perf_counter()
    act = RNNDownBeatProcessor()(Signal(audio.mean(axis=0), sample_rate=SAMPLE_RATE, num_channels=1))
    beats = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)(act)
    downbeats = beats[beats[:, 1] == 1, 0]
    times["downbeats"] = time.perf_counter() - t
    t = time.perf_counter()
    sep = loopextractor(audio, 5, np.append(downbeats, audio.shape[1] / SAMPLE_RATE))
    times["separation"] = time.perf_counter() - t
    t = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    for k, (clip, track) in enumerate(zip(sep.clips, sep.tracks)):
        write_wav(Path(out) / f"loop_{k + 1:02d}.wav", clip)
        write_wav(Path(out) / f"track_{k + 1:02d}.wav", track)
    times["writing"] = time.perf_counter() - t
    print("time: " + "  ".join(f"{k} {v:.1f}s" for k, v in times.items()))


def _subprocess(cmd: list[str], code: Path = REPO) -> tuple[str, float, float]:
    env = dict(os.environ, PYTHONPATH=str(code))
    return run_with_peak_memory(cmd, cwd=code, env=env)


def _cli(code: Path) -> dict:
    out, wall, peak = _subprocess([sys.executable, "-m", "unmixer", "extract", str(WAV), "--loops", "5",
                                   "--out", str(WAV.parent / "extract_out"), "-q"], code)
    line = next(ln for ln in out.splitlines() if ln.startswith("time:"))
    row = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)s", line)}
    return {**row, "wall (process start to exit)": wall, "peak memory (MiB, process tree PSS)": peak}


def _app(code: Path, warm: bool = False) -> dict:
    import json

    out, wall, peak = _subprocess([sys.executable, str(REPO / "bench" / "engine.py"), "app"]
                                  + (["--warm"] if warm else []), code)
    row = json.loads(out.strip().splitlines()[-1])
    return {**row, "wall (process start to exit)": wall, "peak memory (MiB, process tree PSS)": peak}


def _loopextractor() -> dict:
    out, wall, peak = _subprocess([sys.executable, str(REPO / "bench" / "engine.py"), "loopextractor", str(WAV),
                                   str(WAV.parent / "loopextractor_out")])
    line = next(ln for ln in out.splitlines() if ln.startswith("time:"))
    row = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)s", line)}
    return {**row, "wall (process start to exit)": wall, "peak memory (MiB, process tree PSS)": peak}


def bench_stages(repeats: int, before: Path | None, with_loopextractor: bool, warm: bool = False) -> None:
    """The 4-minute song, every configuration in a subprocess (its whole process tree's
    memory sampled), interleaved: per repeat the app path (clips only, with the quick first
    result) and the CLI (``python -m unmixer extract``: every full-length track, the WAV
    files), ours and, with ``before``, the same of another checkout (e.g. the engine before
    this work), then the public loopextractor configuration (:func:`run_loopextractor`).
    Prints the stage tables, and the ratio loopextractor / ours (CLI wall time) per repeat.
    ``warm``: the app path with the engine warmed up before the upload (``engine.py app --warm``)."""
    audio = four_minute_song()
    configs = {"ours": REPO} if before is None else {"before": before, "ours": REPO}
    print(f"Song: vibe_ace.ogg x4 = {audio.shape[1] / SAMPLE_RATE:.0f} s; K = 5 loops, loop length auto; "
          f"{machine()}; repeats interleaved: " + ", ".join(f"{n} app, {n} CLI" for n in configs)
          + (", loopextractor" if with_loopextractor else "") + "\n")
    rows: dict[str, list[dict]] = {}
    for r in range(repeats):
        for name, code in configs.items():
            rows.setdefault(f"{name} app", []).append(_app(code, warm))
            rows.setdefault(f"{name} CLI", []).append(_cli(code))
            print(f"repeat {r + 1}: {name} app {rows[f'{name} app'][-1]}\n  {name} CLI {rows[f'{name} CLI'][-1]}",
                  file=sys.stderr, flush=True)
        if with_loopextractor:
            rows.setdefault("loopextractor", []).append(_loopextractor())
            print(f"repeat {r + 1}: loopextractor {rows['loopextractor'][-1]}", file=sys.stderr, flush=True)
    for name, runs in rows.items():
        keys = list(dict.fromkeys(k for run in runs for k in run))
        print(f"\n{name}:\n\n| stage | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
              + " | best | median |\n|---|" + "---:|" * (len(runs) + 2))
        for k in keys:
            vals = [run.get(k) for run in runs]
            ok = [v for v in vals if v is not None]
            cells = ["–" if v is None else f"{v:.1f}" if v < 100 else f"{v:.0f}" for v in vals]
            stats = [f"{min(ok):.1f}", f"{float(np.median(ok)):.1f}"] if ok else ["–", "–"]
            print(f"| {k} | " + " | ".join(cells + stats) + " |")
    names = list(rows)
    keys = list(dict.fromkeys(k for runs in rows.values() for run in runs for k in run))
    print("\nSide by side (median of the repeats, s; memory MiB):\n\n| stage | " + " | ".join(names)
          + " |\n|---|" + "---:|" * len(names))
    for k in keys:
        cells = []
        for name in names:
            ok = [run[k] for run in rows[name] if run.get(k) is not None]
            cells.append(f"{float(np.median(ok)):.1f}" if ok else "–")
        print(f"| {k} | " + " | ".join(cells) + " |")
    wall = "wall (process start to exit)"

    def ratios(num: str, den: str, key: str) -> str:
        return ", ".join(f"{a[key] / b[key]:.2f}x" for a, b in zip(rows[num], rows[den]))

    print()
    if with_loopextractor:
        print(f"- loopextractor / ours (CLI, process start to exit), per repeat: {ratios('loopextractor', 'ours CLI', wall)}")
    if before is not None:
        print(f"- before / ours (CLI, process start to exit), per repeat: {ratios('before CLI', 'ours CLI', wall)}")
        print(f"- before / ours (app, first rough loops), per repeat: {ratios('before app', 'ours app', FIRST)}")
        print(f"- before / ours (app, final loops), per repeat: {ratios('before app', 'ours app', FINAL)}")


def bench_ntd_bands(bands: list[int], repeats: int) -> None:
    """``engine.py ntd``: the decomposition stage on the 4-minute song with the cube at full
    resolution and pooled into log bands (``extract_loops(ntd_bands=...)``), interleaved in
    this process: madmom's grid, the grid search and the cube once, then per repeat
    :func:`unmixer.loops.pipeline.decompose` for each setting. Prints the time (s, best of
    the repeats), the pooled cube's size and the relative error of each model against the
    full-resolution cube (the pooled ones after their sound templates are refitted)."""
    from dataclasses import replace

    from unmixer.core.spectrum import stft
    from unmixer.loops import pipeline

    audio = np.concatenate([load_audio(SONG)] * 4, axis=1)
    magnitude = np.abs(stft(audio)).mean(axis=0)
    tracked = pipeline.track_grid(audio)
    grid = pipeline.choose_grid(magnitude, tracked, 5, "auto", duration_s=audio.shape[1] / SAMPLE_RATE)
    cube = pipeline.build_cube(magnitude, grid)
    del magnitude
    settings = {n: replace(pipeline.EngineSettings(), ntd_bands=n) for n in [None, *bands]}
    best: dict = {}
    errors: dict = {}
    for _ in range(repeats):
        for n, s in settings.items():
            t0 = time.perf_counter()
            model = pipeline.decompose(cube, grid.n_loops, s)
            best[n] = min(best.get(n, np.inf), time.perf_counter() - t0)
            errors[n] = float(np.linalg.norm(model.reconstruct() - cube) / np.linalg.norm(cube))
    print(f"cube {cube.shape} (frequency bins x frames per segment x segments), {grid.n_loops} loops, "
          f"{grid.loop_bars}-bar segments; best of {repeats}, {machine()}\n")
    print("| NTD on | decomposition (s) | speed-up | relative error vs the full cube |\n|---|---:|---:|---:|")
    for n in settings:
        print(f"| {'full resolution' if n is None else f'{n} log bands'} | {best[n]:.2f} | "
              f"{best[None] / best[n]:.2f}x | {errors[n]:.4f} |")


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
    parser.add_argument("what", choices=("stages", "quality", "app", "loopextractor", "ntd"))
    parser.add_argument("--bands", type=int, nargs="*", default=[256, 128, 64], help="ntd: log-band counts")
    parser.add_argument("paths", nargs="*", help="loopextractor: WAV and output folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None,
                        help="stages: also time this checkout (e.g. a snapshot of the engine before a change)")
    parser.add_argument("--no-loopextractor", action="store_true", help="stages: skip the public configuration")
    parser.add_argument("--warm", action="store_true",
                        help="app, stages: the engine warmed up before the upload, as in a server whose page was drawn")
    parser.add_argument("--songs", type=int, nargs="*", help="song numbers (1-8) to run")
    parser.add_argument("--inner-sweeps", type=int, default=None,
                        help="HALS sweeps per NTD iteration (default: the engine's, 8)")
    args = parser.parse_args()
    if args.what == "stages":
        bench_stages(args.repeats, args.before, not args.no_loopextractor, args.warm)
    elif args.what == "ntd":
        bench_ntd_bands(args.bands, args.repeats)
    elif args.what == "app":
        run_app_path(args.warm)
    elif args.what == "loopextractor":
        run_loopextractor(*args.paths)
    else:
        if args.inner_sweeps:  # a variant of the engine's NTD, for BENCHMARKS.md's NTD section
            import functools

            import unmixer.loops.pipeline
            from unmixer.loops.ntd import ntd_hals

            unmixer.loops.pipeline.ntd_hals = functools.partial(ntd_hals, inner_sweeps=args.inner_sweeps)
        bench_quality(args.songs)


if __name__ == "__main__":
    main()
