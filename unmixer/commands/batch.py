"""``python -m unmixer batch FOLDER --out DIR``: the loops of every song of a music library.

Each song found under FOLDER (recursively) gets the ``extract`` contract in ``DIR/<song>/``
(``loops/``, ``tracks/``, ``loop_map.json``, ``loop_map.png``; two songs with the same name
get ``<song>`` and ``<song> (2)``), and ``DIR/manifest.csv`` lists every song: its path,
sha256, status (done / error / skipped), the one-line error, K, BPM, meter, key, bars and
stage times (:data:`unmixer.batch.COLUMNS`). One Dask task per song, on a LocalCluster of
``--workers`` processes started here, or on the cluster at ``--scheduler``
(:mod:`unmixer.batch`). A rerun skips what is done; an interrupted batch resumes.

Exit status: 0 when the batch ran, even if some songs failed (they are listed); 2 for bad
arguments (no such folder, no audio in it, an unreachable scheduler...); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from unmixer.commands.extract import parse_loop_bars, parse_loops
from unmixer.errors import UnmixerError


def add_parser(subparsers) -> None:
    """Register the ``batch`` sub-command."""
    p = subparsers.add_parser(
        "batch", help="extract the loops of every song in a folder, on Dask",
        description="Extract the loops of every song under FOLDER into DIR/<song>/ (as "
                    "'extract' does), with DIR/manifest.csv listing each song. Resumable: a "
                    "rerun does only what is not done yet.")
    p.add_argument("folder", help="folder of songs, searched recursively (WAV, FLAC, OGG, "
                                  "OPUS, MP3, M4A/AAC, AIFF)")
    p.add_argument("--out", "-o", required=True, help="output folder (DIR)")
    p.add_argument("--loops", "-k", default="5", metavar="K",
                   help="loops per song, 1 to 12, or 'auto' (default 5)")
    p.add_argument("--loop-bars", default="auto", metavar="BARS",
                   help="loop length in bars: 1, 2, 4 or 'auto' (default auto, as extract)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="longest song accepted, in minutes (default 15)")
    p.add_argument("--workers", "-w", type=int, metavar="N",
                   help="worker processes of the cluster started here (default: one per core, "
                        "at most one per 3 GiB of memory)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="use the Dask cluster at this address (tcp://host:8786) instead; its "
                        "workers must see FOLDER and DIR at the same paths")
    p.add_argument("--memory-limit", default="auto", metavar="BYTES",
                   help="memory per worker of the cluster started here, e.g. 4GB; a worker "
                        "above it is restarted and its song tried once more (default: the "
                        "machine's memory / N)")
    p.add_argument("--retry-errors", action="store_true",
                   help="also try again the songs listed as errors (a rerun skips them)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _rate(done: int, seconds: float) -> float:
    """Songs per hour."""
    return 3600.0 * done / seconds if seconds > 0 and done else 0.0


class _SongBar:
    """One progress bar over the songs (done / total, songs per hour, time left) on stderr,
    and one line per failure or retry (an :class:`unmixer.batch.Reporter`)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.hash_bar = None
        self.t0 = time.perf_counter()

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def hashing(self, done: int, total: int) -> None:
        if self.quiet or total < 50:
            return
        from tqdm import tqdm

        if self.hash_bar is None:
            self.hash_bar = tqdm(total=total, desc="reading songs", file=sys.stderr, leave=False,
                                 unit="song")
        self.hash_bar.update(done + 1 - self.hash_bar.n)

    def planned(self, report, todo: int) -> None:
        if self.hash_bar is not None:
            self.hash_bar.close()
            self.hash_bar = None
        before = [f"{n} {what}" for n, what in ((report.already_done, "already done"),
                                                (report.already_failed, "listed as errors"),
                                                (report.skipped, "skipped (same audio as another)"))
                  if n]
        print(f"{report.found} songs: {todo} to analyse" + "".join(f", {b}" for b in before),
              file=sys.stderr)
        for path, error in report.failures:  # files that could not even be read
            self._write(f"error: {path}: {error}")
        self.t0 = time.perf_counter()
        if todo and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=todo, desc="songs", file=sys.stderr, leave=True,
                            bar_format="{desc} {bar} {n_fmt}/{total_fmt}{postfix}")
            self.bar.set_postfix_str("  starting the workers…", refresh=True)

    def finished(self, path: str, row: dict) -> None:
        if row["status"] != "done":
            self._write(f"error: {path}: {row['error']}")
        if self.bar is None:
            return
        self.bar.update(1)
        elapsed = time.perf_counter() - self.t0
        rate = _rate(self.bar.n, elapsed)
        left = (self.bar.total - self.bar.n) * 3600.0 / rate if rate else 0.0
        self.bar.set_postfix_str(f"  {rate:.0f} songs/h  {_duration(elapsed)} elapsed, "
                                 f"{_duration(left)} left", refresh=True)

    def retrying(self, path: str, why: str) -> None:
        self._write(f"retry: {path}: {why}; Dask runs it once more")

    def close(self) -> None:
        for bar in (self.hash_bar, self.bar):
            if bar is not None:
                bar.close()
        self.hash_bar = self.bar = None


def run(args: argparse.Namespace) -> int:
    """Run ``batch``; returns 0 (130 when interrupted). Raises UnmixerError for bad arguments
    (exit 2 in the CLI)."""
    n_loops = parse_loops(args.loops)
    loop_bars = parse_loop_bars(args.loop_bars)
    if args.workers is not None and args.workers < 1:
        raise UnmixerError(f"--workers must be at least 1, not {args.workers}.")
    if args.workers is not None and args.scheduler:
        raise UnmixerError("Give --workers (a cluster started here) or --scheduler (an existing "
                           "one), not both.")
    if args.max_minutes <= 0:
        raise UnmixerError(f"--max-minutes must be positive, not {args.max_minutes:g}.")
    memory_limit = args.memory_limit
    if memory_limit != "auto":
        from dask.utils import parse_bytes

        try:
            memory_limit = parse_bytes(memory_limit)
        except (ValueError, TypeError):
            raise UnmixerError(f"--memory-limit must be like 4GB or 'auto', not "
                               f"{args.memory_limit!r}.") from None
    if not os.environ.get("UNMIXER_DEBUG"):  # our lines say what matters (also for workers)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    from unmixer.batch import Settings, run_batch

    settings = Settings(n_loops, loop_bars, args.seed, args.max_minutes)
    bar = _SongBar(args.quiet)
    try:
        report = run_batch(args.folder, args.out, settings, workers=args.workers,
                           scheduler=args.scheduler, memory_limit=memory_limit,
                           retry_errors=args.retry_errors, reporter=bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {Path(args.out) / 'manifest.csv'} lists the songs that finished; "
              "run the same command again to resume.", file=sys.stderr)
        return 130
    manifest = report.manifest
    if not report.submitted:
        hint = (f" ({report.already_failed} listed as errors: --retry-errors tries them again)"
                if report.already_failed else "")
        print(f"Nothing to do: the {report.found} songs are done or listed in {manifest}{hint}.")
        return 0
    parts = [f"{report.done} done", f"{report.errors} error{'s' * (report.errors != 1)}"]
    if report.skipped:
        parts.append(f"{report.skipped} skipped (same audio as another song)")
    if report.not_run:
        parts.append(f"{report.not_run} not run (the cluster stopped; run again to resume)")
    print(f"{', '.join(parts)} in {_duration(report.seconds)} "
          f"({_rate(report.done + report.errors, report.seconds):.0f} songs/h) -> {manifest}")
    return 0
