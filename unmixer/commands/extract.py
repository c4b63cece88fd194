"""``python -m unmixer extract SONG --loops K --out DIR``: a song in, loops out.

Writes, in DIR:

* ``loops/loop_01.wav …``: the loop clips (``loop_bars`` bars each, seamless);
* ``tracks/loop_01.wav …``: the full-length loop tracks (they sum to the song), nothing else;
  with ``--foreground`` also ``tracks/foreground.wav`` (what no loop explains; the loop tracks
  and it sum to the song);
* ``loop_map.json``: ``bpm``, ``meter``, ``key`` ("A minor"), ``key_camelot`` ("8A"),
  ``key_confidence``, ``downbeats_s``, ``loop_bars`` (``loop_bars_auto``, ``grid``: how the
  bar grid was corrected), ``explained`` (the share of each bar its loops predict from the
  others, null if unmeasured), ``barely_repeats``, ``activations`` (K lists, one value per
  bar), ``chosen_bar``, ``labels``, ``pitched`` (K booleans), ``timings_s``;
* ``loop_map.png``: a picture of the loop map.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from unmixer.errors import UnmixerError
from unmixer.loops import AUTO, LOOP_BARS, MAX_LOOPS, MIN_LOOPS  # constants only: the engine loads when used

ORDER = ("decoding", "downbeats", "cube", "decomposition", "loops", "writing")


def add_parser(subparsers) -> None:
    """Register the ``extract`` sub-command."""
    p = subparsers.add_parser(
        "extract", help="extract the repeating loops of a song",
        description="Extract the repeating loops of a song (Smith, Kawasaki & Goto, ISMIR 2019).")
    p.add_argument("song", help="audio file: WAV, FLAC, OGG, MP3, M4A/AAC or AIFF")
    p.add_argument("--loops", "-k", default="5", metavar="K",
                   help=f"number of loops, {MIN_LOOPS} to {MAX_LOOPS}, or 'auto': chosen from the "
                        "song, 2 to 10 (default 5)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--loop-bars", default="auto", metavar="BARS",
                   help="loop length in bars: 1, 2, 4, or 'auto': chosen from the song, with "
                        "the bar grid (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="longest song accepted, in minutes (default 15)")
    p.add_argument("--foreground", action="store_true",
                   help="also separate what no loop explains (a melody that changes every bar, "
                        "vocals, fills) into tracks/foreground.wav, so the loop tracks hold less of it")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


class _Bars:
    """One tqdm progress bar per stage, on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.stage = None
        self.done: set[str] = set()

    def __call__(self, stage: str, fraction: float) -> None:
        if self.quiet or stage in self.done:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=f"{stage:<13}", file=sys.stderr, leave=True,
                            bar_format="{desc} {bar} {percentage:3.0f}% {elapsed}")
        self.bar.n = int(round(100 * fraction))
        self.bar.refresh()
        if fraction >= 1.0:
            self.done.add(stage)
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


def plot_loop_map(extraction, path: Path, title: str = "") -> None:
    """Save the loop map (loops x bars, one colour per loop) as a PNG with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    act = extraction.activations
    K, n_bars = act.shape
    fig, ax = plt.subplots(figsize=(max(6.0, min(18.0, 0.18 * n_bars + 3)), 0.45 * K + 1.4), dpi=100)
    cmap = plt.get_cmap("tab10")
    rgba = np.zeros((K, n_bars, 4))
    for k in range(K):
        rgba[k, :, :3] = cmap(k % 10)[:3]
        rgba[k, :, 3] = np.clip(act[k], 0, 1)
    ax.imshow(rgba, aspect="auto", interpolation="nearest",
              extent=(0.5, n_bars + 0.5, K + 0.5, 0.5))
    for k, loop in enumerate(extraction.loops):
        b = loop.chosen_bar + 1
        ax.add_patch(plt.Rectangle((b - 0.5, k + 0.5), extraction.loop_bars, 1, fill=False, lw=1.5,
                                   ec="black"))
    ax.set_yticks(range(1, K + 1), [f"{l.index:02d} {l.label}" for l in extraction.loops])
    ax.set_xlabel("bar")
    ax.set_title(title or f"Loop map ({extraction.bpm:.0f} BPM, {extraction.meter}/4); boxes: chosen bars")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _clear(out: Path) -> None:
    """Remove an earlier run's ``loops`` and ``tracks`` folders (they hold exactly one run's files)."""
    for sub in ("loops", "tracks"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)


class _TrackWriter:
    """Writes the full-length tracks as 16-bit WAV files while the engine computes them.

    Called by :func:`unmixer.loops.pipeline.extract_loops` (``on_track_chunk``) with each
    finished stretch of samples of every track, in the song's order; one background thread
    appends them to ``DIR/tracks/loop_NN.wav`` (the foreground, if extracted, last, to
    ``DIR/tracks/foreground.wav``; soundfile releases the GIL while it writes).
    The folders of an earlier run are removed at the first chunk, once the song has passed
    every check, so bad input leaves an earlier run's files alone.
    """

    def __init__(self, out: Path, sr: int, foreground: bool = False):
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.sr, self.foreground = out, sr, foreground
        self.files: list = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="unmixer-wav")
        self.jobs: list = []

    def __call__(self, start: int, stop: int, block) -> None:
        if not self.files:
            self._open(block.shape[0], block.shape[1])
        self.jobs.append(self.pool.submit(self._write, block))

    def _open(self, n_tracks: int, channels: int) -> None:
        import soundfile as sf

        _clear(self.out)
        (self.out / "tracks").mkdir(parents=True)
        names = [f"loop_{k + 1:02d}.wav" for k in range(n_tracks)]
        if self.foreground:
            names[-1] = "foreground.wav"
        self.files = [sf.SoundFile(self.out / "tracks" / name, "w", samplerate=self.sr,
                                   channels=channels, subtype="PCM_16", format="WAV")
                      for name in names]

    def _write(self, block) -> None:
        import numpy as np

        for f, track in zip(self.files, block):
            f.write(np.clip(track.T, -1.0, 1.0))

    def close(self) -> bool:
        """Wait for the writes and close the files; True if any track was written."""
        try:
            for job in self.jobs:
                job.result()
        finally:
            self.pool.shutdown()
            for f in self.files:
                f.close()
        return bool(self.files)


def parse_loops(value: str) -> int | str:
    """``--loops``: "auto" or a count from MIN_LOOPS to MAX_LOOPS. Raises UnmixerError."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and MIN_LOOPS <= int(text) <= MAX_LOOPS:
        return int(text)
    raise UnmixerError(f"--loops must be 'auto' or a number from {MIN_LOOPS} to {MAX_LOOPS}, not {value!r}.")


def parse_loop_bars(value: str) -> int | str:
    """``--loop-bars``: "auto" or 1, 2, 4. Raises UnmixerError."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) in LOOP_BARS:
        return int(text)
    raise UnmixerError(f"--loop-bars must be 'auto', 1, 2 or 4, not {value!r}.")


def extract_song(source, n_loops: int | str, *, loop_bars: int | str = AUTO, seed: int = 0,
                 max_minutes: float = 15.0, name: str | None = None, progress=None,
                 foreground: bool = False, on_track_chunk=None):
    """Decode a song and extract its loops: what ``extract`` (and each task of ``batch``) runs.

    Parameters
    ----------
    source : path or bytes of an audio file (WAV, FLAC, OGG, MP3, M4A/AAC, AIFF)
    n_loops : int (1 to 12) or "auto"
    loop_bars : int (1, 2, 4) or "auto", bars per loop
    seed : int, seed of every random choice
    max_minutes : float, longest song accepted, minutes
    name : str, optional, the file name for error messages (with bytes)
    progress : callable(stage, fraction), optional; stages ``decoding`` and
        :data:`unmixer.loops.pipeline.STAGES`
    foreground : bool, also the foreground track (``extract_loops(..., foreground=True)``)
    on_track_chunk : callable(start, stop, block), optional; handed each finished stretch
        of the full-length tracks (:func:`unmixer.loops.pipeline.extract_loops`), e.g. a
        :class:`_TrackWriter` that writes them while the rest is computed; the tracks are
        then streamed (``tracks="stream"``): not kept, each loop's ``track`` empty

    Returns
    -------
    unmixer.loops.pipeline.Extraction, with full-length tracks; ``timings_s`` starts with
    ``decoding`` (s)

    Raises
    ------
    UnmixerError
        For bad input (unreadable, too short or long, no beat...) or parameters.
    """
    from unmixer.core.audio import load_audio
    from unmixer.loops import pipeline

    progress = progress or (lambda stage, fraction: None)
    t0 = time.perf_counter()
    progress("decoding", 0.0)
    audio = load_audio(source, name=name, max_duration_s=max_minutes * 60)
    pipeline.warm_up(quick_grid=False)  # librosa's parts and madmom's networks load (after a good decode only)
    progress("decoding", 1.0)
    decode_s = time.perf_counter() - t0
    extraction = pipeline.extract_loops(audio, n_loops, loop_bars=loop_bars, seed=seed,
                                        progress=progress, foreground=foreground,
                                        tracks="stream" if on_track_chunk is not None else True,
                                        on_track_chunk=on_track_chunk)
    extraction.timings_s = {"decoding": decode_s, **extraction.timings_s}
    return extraction


def write_outputs(extraction, out: str | Path, title: str = "", tracks_written: bool = False) -> Path:
    """Write the ``extract`` contract of one song into folder ``out`` (module docstring):
    ``loops/``, ``tracks/`` (emptied first: they hold exactly this extraction's files),
    ``loop_map.png`` (titled ``title``) and ``loop_map.json``, whose ``timings_s`` gains
    ``writing`` (s; also added to ``extraction.timings_s``). With ``tracks_written`` the
    tracks are already in ``out/tracks`` (a :class:`_TrackWriter` wrote them while they were
    computed, and emptied both folders first) and only the rest is written. Returns ``out``.

    Raises OSError if the folder cannot be written.
    """
    from unmixer.core.audio import write_wav

    t1 = time.perf_counter()
    out = Path(out)
    if not tracks_written:
        _clear(out)
    for loop in extraction.loops:
        write_wav(out / "loops" / f"loop_{loop.index:02d}.wav", loop.clip, extraction.sr)
        if not tracks_written:
            write_wav(out / "tracks" / f"loop_{loop.index:02d}.wav", loop.track, extraction.sr)
    if getattr(extraction, "foreground", None) is not None and not tracks_written:
        write_wav(out / "tracks" / "foreground.wav", extraction.foreground, extraction.sr)
    plot_loop_map(extraction, out / "loop_map.png", title=title)
    extraction.timings_s["writing"] = extraction.timings_s.get("writing", 0.0) + time.perf_counter() - t1
    (out / "loop_map.json").write_text(json.dumps(extraction.summary(), indent=1))
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``extract``; returns 0. Raises UnmixerError on bad input (exit 2 in the CLI)."""
    from unmixer.core.audio import SAMPLE_RATE

    n_loops = parse_loops(args.loops)
    loop_bars = parse_loop_bars(args.loop_bars)
    song = Path(args.song)
    if not song.is_file():
        raise UnmixerError(f"No such file: {song}")
    bars = _Bars(args.quiet)
    out = Path(args.out)
    # the tracks are written while they are computed
    writer = _TrackWriter(out, SAMPLE_RATE, foreground=args.foreground)
    try:
        extraction = extract_song(song, n_loops, loop_bars=loop_bars, seed=args.seed,
                                  max_minutes=args.max_minutes, progress=bars,
                                  foreground=args.foreground, on_track_chunk=writer)
    finally:
        t1 = time.perf_counter()
        written = writer.close()
    extraction.timings_s["writing"] = time.perf_counter() - t1  # waiting for the last track writes
    write_outputs(extraction, out, title=f"{song.name}: loop map", tracks_written=written)

    total = sum(extraction.timings_s.values())
    chosen = " (auto)" if n_loops == AUTO else ""
    length = f"{extraction.loop_bars} bar{'s' if extraction.loop_bars > 1 else ''}"
    length += " (auto)" if extraction.loop_bars_auto else ""
    grid = "" if extraction.grid_note in ("", "as tracked") else f"; grid: {extraction.grid_note}"
    key = ""
    if extraction.key:
        from unmixer.loops.key import Key

        key = f"{Key.parse(extraction.key).label} ({extraction.key_confidence:.0%} sure), "
    print(f"{song.name}: {len(extraction.loops)} loops{chosen} of {length}, {extraction.bpm:.1f} BPM, "
          f"{extraction.meter}/4, {key}{extraction.n_bars} bars{grid} -> {out}/")
    note = extraction.repetition_note()
    if note:
        print(f"  {note}")
    if args.foreground:  # its track was written while computed (streamed, not kept)
        print(f"  foreground: {extraction.foreground_energy:.0%} of the song -> {out}/tracks/foreground.wav")
    for loop in extraction.loops:
        pitch = "pitched" if loop.pitched else "unpitched"
        print(f"  loop {loop.index:02d}  {loop.label:<10}  {pitch:<9}  from bar {loop.chosen_bar + 1}")
    stages = "  ".join(f"{k} {extraction.timings_s[k]:.1f}s" for k in ORDER if k in extraction.timings_s)
    print(f"time: {stages}  total {total:.1f}s")
    return 0
