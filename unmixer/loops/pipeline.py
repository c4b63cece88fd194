"""The loop extraction pipeline: audio -> downbeats -> cube -> NTD -> purified core -> loops.

Smith & Goto, ICASSP 2018; Smith, Kawasaki & Goto, ISMIR 2019. One call,
:func:`extract_loops`, runs every stage and reports progress by stage name.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from unmixer.core.audio import SAMPLE_RATE
from unmixer.core.spectrum import LazySTFT, istft, stft, stft_magnitude
from unmixer.errors import UnmixerError
from unmixer.loops import AUTO, LOOP_BARS, MAX_LOOPS, MIN_LOOPS
from unmixer.loops import beats as beats_mod
from unmixer.loops import key as key_mod
from unmixer.loops.bargrid import search_grid
from unmixer.loops.beats import BeatGrid
from unmixer.loops.cube import CubeGrid, log_bands, make_grid, pool_cube, segment_boundaries_s, spectral_cube
from unmixer.loops.loopcount import estimate_loop_count
from unmixer.loops.masks import (
    choose_segments,
    cut_loop,
    explained_share,
    foreground_model,
    label_loop,
    loop_templates,
    mask_shares,
    segment_map_to_bars,
    separate_clips,
    separate_tracks,
)
from unmixer.loops.ntd import (
    ON_OFF,
    NTDResult,
    default_ranks,
    lift_sound_factor,
    loop_ranks,
    ntd_hals,
    ntd_tensorly,
    on_off_activations,
    purify_core,
    refit_activations,
    refine_loop_tails,
)

STAGES = ("decoding", "downbeats", "cube", "decomposition", "loops")
"""Stage names, in order, as reported to the progress callback and in ``timings_s``."""

BARELY_REPEATS = 0.5
"""A song whose loop model predicts less than this share of held-out bars
(:attr:`Extraction.explained`) "barely repeats": the app and the CLI say so (BENCHMARKS.md,
"Real music", lists the shares measured on the benchmark)."""


def warm_up(quick_grid: bool = True) -> None:
    """Get ready for :func:`extract_loops` while the caller decodes the song, in a background
    thread: import librosa's parts the engine uses and run its STFT and inverse STFT once
    (3-7 s on a busy 2-core machine, otherwise paid in the cube and loops stages), and load
    madmom's downbeat networks (:func:`unmixer.loops.beats.warm_up`) and its key CNN
    (:func:`unmixer.loops.key.warm_up`).

    ``quick_grid``: also import librosa's beat tracker, which only the quick first result
    (``extract_loops(preview=...)``) uses; its numba code compiles on import, 6-7 s of CPU
    (2026-12-02, idle), so a caller without previews (the CLI, a batch) passes False."""
    import threading

    threading.Thread(target=_warm_up, args=(quick_grid,), name="unmixer-warm-up", daemon=True).start()


def _warm_up(quick_grid: bool = True) -> None:
    import librosa
    import librosa.feature  # noqa: F401  (the labels: 3 s to import on a busy 2-core machine)

    if quick_grid:
        with beats_mod.NUMBA_LOCK:
            import librosa.beat  # noqa: F401  (the quick grid: compiles its numba code)

    x = np.zeros((2, 4096), dtype=np.float32)
    with beats_mod.NUMBA_LOCK:  # never two threads compiling numba code at once
        istft(stft(x), x.shape[-1])  # librosa's first STFT and inverse STFT load their numba code
        # the labels' first call compiles librosa's peak picking (1 s of the rough loops' 2.5 s
        # of labels on a busy 2-core machine): on one second of noise
        clip = np.random.default_rng(0).standard_normal((2, SAMPLE_RATE)).astype(np.float32) * 0.1
        key_mod.is_pitched(clip, SAMPLE_RATE, label_loop(clip, SAMPLE_RATE))
    beats_mod.warm_up()
    key_mod.warm_up()


Progress = Callable[[str, float], None]


@dataclass
class LoopResult:
    """One extracted loop.

    Attributes
    ----------
    index : int, 1-based; loops are ordered by energy, loudest first
    label : str, one of :data:`unmixer.loops.masks.LABELS`
    clip : np.ndarray, shape=(2, samples), float32, 44.1 kHz: exactly ``loop_bars`` bars,
        cut at the downbeats, seamless when repeated
    track : np.ndarray, shape=(2, song samples), float32: the loop over the whole song;
        the tracks of all loops sum to the song. Shape (2, 0) when the extraction was
        asked for clips only (``extract_loops(..., tracks=False)``, and every preview).
    activation : np.ndarray, shape=(n_bars,), float32 in [0, 1]: the loop map row
    chosen_bar : int, 0-based index of the clip's first bar
    energy : float in [0, 1], the share of the song's energy that the loop's Wiener masks
        keep (on the spectral cube; the loops' shares sum to 1)
    pitched : bool, whether the clip has a pitch to transpose (not drums, not noise:
        :func:`unmixer.loops.key.is_pitched`)
    """

    index: int
    label: str
    clip: np.ndarray
    track: np.ndarray
    activation: np.ndarray
    chosen_bar: int
    energy: float
    pitched: bool = True


@dataclass
class Extraction:
    """The loops of one song, with its beat grid and stage timings (s).

    ``loop_bars_auto`` / ``n_loops_auto``: whether the loop length / count were chosen from
    the song; ``grid_note``: how the bar grid differs from the downbeat tracker's ("as
    tracked", "given" for known downbeats, or e.g. "tempo 240 -> 120 BPM; bar lines moved
    0.5 beat"), :func:`unmixer.loops.bargrid.search_grid`.

    ``explained``: the share of held-out bars' energy that the loop model of the other bars
    predicts, 1 − the grid search's bi-cross-validated error (:attr:`SongGrid.heldout_error`;
    NaN when the song is too short to tell); below :data:`BARELY_REPEATS` the song barely
    repeats (:attr:`barely_repeats`).
    ``foreground``: with ``extract_loops(..., foreground=True)``, the foreground track,
    shape=(2, song samples), float32: what no loop explains (the loops' tracks and it sum to
    the song); else None. ``foreground_energy``: its mask share of the song's energy (0
    without it).
    ``key``: the song's key as :meth:`unmixer.loops.key.Key.parse` reads it ("A minor"), and
    ``key_confidence`` its probability (:func:`unmixer.loops.key.detect_key`); None when
    unknown (an Extraction made by other code).
    """

    sr: int
    duration_s: float
    bpm: float
    meter: int
    beats_s: np.ndarray
    downbeats_s: np.ndarray
    loop_bars: int
    loops: list[LoopResult]
    timings_s: dict[str, float] = field(default_factory=dict)
    loop_bars_auto: bool = False
    n_loops_auto: bool = False
    grid_note: str = ""
    explained: float = float("nan")
    foreground: np.ndarray | None = None
    foreground_energy: float = 0.0

    @property
    def barely_repeats(self) -> bool:
        """Whether the loop model explains less than :data:`BARELY_REPEATS` of held-out
        bars (False when that was not measured)."""
        return bool(self.explained < BARELY_REPEATS)

    def repetition_note(self) -> str:
        """One line for the user when the song barely repeats (else ""): what the app's song
        card and the CLI summary show.

        >>> e = Extraction(44100, 30.0, 120.0, 4, np.zeros(0), np.zeros(2), 2, [], explained=0.31)
        >>> e.repetition_note()
        'This song barely repeats: its loops predict only 31% of each bar from the others, so they are rough.'
        """
        if not self.barely_repeats:
            return ""
        return (f"This song barely repeats: its loops predict only {self.explained:.0%} of each bar "
                "from the others, so they are rough.")
    key: str | None = None
    key_confidence: float | None = None

    @property
    def n_bars(self) -> int:
        return len(self.downbeats_s) - 1

    @property
    def activations(self) -> np.ndarray:
        """The loop map, shape=(K, n_bars), each row scaled 0-1."""
        return np.stack([loop.activation for loop in self.loops])

    def summary(self) -> dict:
        """The JSON-serialisable description written as ``loop_map.json`` by the CLI."""
        return {
            "bpm": round(float(self.bpm), 2),
            "meter": int(self.meter),
            "downbeats_s": [round(float(x), 4) for x in self.downbeats_s],
            "loop_bars": int(self.loop_bars),
            "loop_bars_auto": bool(self.loop_bars_auto),
            "n_loops_auto": bool(self.n_loops_auto),
            "grid": self.grid_note,
            "explained": None if np.isnan(self.explained) else round(float(self.explained), 4),
            "barely_repeats": bool(self.barely_repeats),
            "foreground_energy": round(float(self.foreground_energy), 4),
            "activations": [[round(float(v), 4) for v in loop.activation] for loop in self.loops],
            "chosen_bar": [int(loop.chosen_bar) for loop in self.loops],
            "labels": [loop.label for loop in self.loops],
            "timings_s": {k: round(float(v), 3) for k, v in self.timings_s.items()},
            "duration_s": round(float(self.duration_s), 3),
            "sr": int(self.sr),
            "key": self.key,
            "key_camelot": None if self.key is None else key_mod.Key.parse(self.key).camelot,
            "key_confidence": None if self.key_confidence is None
            else round(float(self.key_confidence), 4),
            "pitched": [bool(loop.pitched) for loop in self.loops],
        }

    def metadata(self) -> dict:
        """Everything but the audio, JSON-serialisable and at full precision: :meth:`summary`
        plus the beat times and the loops' energies. With the clips (and tracks, and the
        foreground track) it rebuilds the Extraction (:meth:`from_metadata`)."""
        meta = self.summary()
        meta["beats_s"] = [float(x) for x in self.beats_s]
        meta["downbeats_s"] = [float(x) for x in self.downbeats_s]
        meta["energy"] = [float(loop.energy) for loop in self.loops]
        meta["bpm"] = float(self.bpm)
        meta["key_confidence"] = self.key_confidence
        meta["explained"] = None if np.isnan(self.explained) else float(self.explained)
        meta["foreground_energy"] = float(self.foreground_energy)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict, clips: list[np.ndarray], tracks: list[np.ndarray] | None = None,
                      activations: np.ndarray | None = None,
                      foreground: np.ndarray | None = None) -> "Extraction":
        """The Extraction of :meth:`metadata` and its loops' audio.

        Parameters
        ----------
        meta : dict, from :meth:`metadata`
        clips : list of np.ndarray, each shape=(2, samples), one per loop, in order
        tracks : list of np.ndarray, optional (default: empty tracks, shape (2, 0))
        activations : np.ndarray, shape=(K, n_bars), optional (default: ``meta``'s, rounded)
        foreground : np.ndarray, shape=(2, song samples), optional, the foreground track

        Raises
        ------
        KeyError, ValueError, TypeError
            If ``meta`` misses a field or holds one of the wrong type.
        """
        labels = meta["labels"]
        if len(clips) != len(labels):
            raise ValueError(f"{len(labels)} loops but {len(clips)} clips")
        acts = np.asarray(meta["activations"] if activations is None else activations,
                          dtype=np.float32)
        pitched = meta.get("pitched") or [True] * len(labels)
        empty = np.zeros((2, 0), dtype=np.float32)
        loops = [LoopResult(i + 1, str(label), np.asarray(clips[i], dtype=np.float32),
                            empty if tracks is None else tracks[i], acts[i], int(chosen),
                            float(energy), bool(tonal))
                 for i, (label, chosen, energy, tonal) in enumerate(
                     zip(labels, meta["chosen_bar"], meta["energy"], pitched))]
        confidence = meta.get("key_confidence")
        return cls(int(meta["sr"]), float(meta["duration_s"]), float(meta["bpm"]),
                   int(meta["meter"]), np.asarray(meta["beats_s"], dtype=np.float64),
                   np.asarray(meta["downbeats_s"], dtype=np.float64), int(meta["loop_bars"]),
                   loops, dict(meta.get("timings_s") or {}),
                   loop_bars_auto=bool(meta.get("loop_bars_auto", False)),
                   n_loops_auto=bool(meta.get("n_loops_auto", False)),
                   grid_note=str(meta.get("grid", "")),
                   explained=float("nan") if meta.get("explained") is None else float(meta["explained"]),
                   foreground=foreground, foreground_energy=float(meta.get("foreground_energy", 0.0)),
                   key=meta.get("key"),
                   key_confidence=None if confidence is None else float(confidence))

    def save(self, directory: str | Path) -> None:
        """Store losslessly (float32 npz + json) in ``directory``; see :meth:`load`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "loops.npz",
                 **{f"clip_{i}": loop.clip for i, loop in enumerate(self.loops)},
                 **{f"track_{i}": loop.track for i, loop in enumerate(self.loops)},
                 **({} if self.foreground is None else {"foreground": self.foreground}),
                 activations=self.activations)
        (directory / "extraction.json").write_text(json.dumps(self.metadata()))

    @classmethod
    def load(cls, directory: str | Path) -> "Extraction":
        """Read what :meth:`save` wrote. Raises FileNotFoundError or KeyError if incomplete."""
        directory = Path(directory)
        meta = json.loads((directory / "extraction.json").read_text())
        n = len(meta["labels"])
        with np.load(directory / "loops.npz") as data:
            return cls.from_metadata(meta, [data[f"clip_{i}"] for i in range(n)],
                                     [data[f"track_{i}"] for i in range(n)], data["activations"],
                                     data["foreground"] if "foreground" in data.files else None)


class _Stages:
    """Times the stages and forwards progress to the callback."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0
        self.t_start = time.perf_counter()

    def start(self, stage: str) -> None:
        self.finish()
        self._stage, self._t0 = stage, time.perf_counter()
        if self.progress:
            self.progress(stage, 0.0)

    def update(self, fraction: float) -> None:
        if self.progress and self._stage:
            self.progress(self._stage, float(min(max(fraction, 0.0), 1.0)))

    def finish(self) -> None:
        if self._stage is not None:
            self.timings[self._stage] = time.perf_counter() - self._t0
            if self.progress:
                self.progress(self._stage, 1.0)
        self._stage = None


# ----------------------------------------------------------------------------- what passes between stages

NTD_BANDS = None
"""Log bands of the cube the final NTD runs on (``extract_loops(ntd_bands=)``; None: the
STFT's 1025 bins). Pooled into log bands the NTD is faster (512 bands: the decomposition
stage 1.9x faster on the 4-minute song, with its sound templates refitted at full
resolution) but lands elsewhere on songs with many loops: on bench/quality.py's 9 songs
with estimated downbeats, 512 bands moved single songs by -2.3 to +2.4 dB and the sparse
family by -1.2 dB (BENCHMARKS.md, issue 15, "Decompose small"), beyond the 0.3 dB the final
loops may lose; so only the rough loops use them (:data:`PREVIEW_NTD_BANDS`)."""

PREVIEW_NTD_BANDS = 512
"""Log bands of the quick first result's NTD (the rough loops on the quick grid while madmom
runs), which the final loops replace."""

TRACKER_NICE = 10
"""While the quick first result is computed, madmom's downbeat tracker runs this much nicer
(Linux: the nice value of its own threads, which the threads it starts inherit), so that the
rough loops get most of a core; the tracker keeps it to its end (an unprivileged thread
cannot lower it again), when nothing else of the analysis is left to run beside it. 0: off.
Measured on the 4-minute song, in process, the engine warm (first rough loops / final loops,
s, two runs each): nice 0: 9.9, 8.1 / 20.7, 17.1; 5: 7.7, 8.4 / 18.1, 19.2; 10: 7.6, 7.8 /
17.0, 16.8."""


def _nicer(fn: Callable, nice: int) -> Callable:
    """``fn`` run in a thread made ``nice`` nicer first (Linux only; elsewhere, or where the
    system refuses, unchanged). The calling thread must be one that ends after ``fn`` (a
    pool of its own): its priority is never restored."""
    import os
    import sys
    import threading

    def run(*args, **kwargs):
        if nice > 0 and sys.platform.startswith("linux"):
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            except OSError:
                pass
        return fn(*args, **kwargs)

    return run


@dataclass(frozen=True)
class EngineSettings:
    """The engine's settings that do not depend on the song (see :func:`extract_loops`)."""

    seed: int = 0
    ranks: tuple[int, int, int] | None = None
    solver: str = "hals"
    n_iter: int = 100
    time_budget_s: float | None = None
    mask_power: float = 2.0
    core_sparsity: float = 6.0
    purify_starts: int = 16
    core_l1: float = 0.3
    preview_iter: int = 10
    refine_iter: int = 10
    foreground: bool = False
    foreground_gain: float = 1.0
    ntd_bands: int | None = NTD_BANDS
    on_off: float | None = ON_OFF


@dataclass
class SongGrid:
    """Where the song's segments lie, and how many loops are looked for in them.

    Attributes
    ----------
    beats : BeatGrid, the chosen grid (beats, bar lines, meter, BPM)
    tracked : BeatGrid, the downbeat tracker's grid before any choice (``beats`` itself when
        the bar lines were given or kept)
    loop_bars : int, bars per segment (and per loop clip)
    n_loops : int, K
    auto_count : bool, whether K was chosen from the song
    boundaries_s : np.ndarray, shape=(n_segments + 1,), s, the segment boundaries
    cube_grid : CubeGrid, cube cells <-> STFT frames
    auto_bars : bool, whether the loop length was chosen from the song
    note : str, how the grid differs from the tracker's ("as tracked", "given", or e.g.
        "bar lines moved 0.5 beat")
    heldout_error : float, the relative held-out error of the rank-K loop model of the
        chosen segments (:attr:`unmixer.loops.bargrid.GridChoice.error`, bi-cross-validated:
        how badly held-out bars are predicted from the others); NaN when not scored
    """

    beats: BeatGrid
    tracked: BeatGrid
    loop_bars: int
    n_loops: int
    auto_count: bool
    boundaries_s: np.ndarray
    cube_grid: CubeGrid
    auto_bars: bool = False
    note: str = "as tracked"
    heldout_error: float = float("nan")

    @property
    def n_segments(self) -> int:
        return len(self.boundaries_s) - 1


@dataclass
class Foreground:
    """What the loop model leaves: the share it reconstructs and, when asked for, the foreground.

    Attributes
    ----------
    fit_explained : float in [0, 1], the share of the cube's energy the fitted loop model
        reconstructs (:func:`unmixer.loops.masks.explained_share`; in-sample, so near 1
        even for songs that barely repeat: :attr:`Extraction.explained` is the held-out one)
    track : np.ndarray, shape=(2, song samples), float32, or None (not asked for, or clips only)
    energy : float in [0, 1], the foreground mask's share of the song's energy (0 without it)
    """

    fit_explained: float = 1.0
    track: np.ndarray | None = None
    energy: float = 0.0


@dataclass
class LoopModel:
    """Every loop's model on the cube: segment s of loop k is D′[s, k] P_k + D′[s − 1, k] Q_k.

    Attributes
    ----------
    templates : np.ndarray, float32, shape=(K, n_freq, n_steps), P
    activations : np.ndarray, float32, shape=(n_segments, K), D′
    tails : np.ndarray, float32, shape=(K, n_freq, n_steps), Q, or None (no tail templates)
    """

    templates: np.ndarray
    activations: np.ndarray
    tails: np.ndarray | None = None


# ----------------------------------------------------------------------------- the stages

def _checked_request(audio: np.ndarray, n_loops: int | str, loop_bars: int,
                     settings: EngineSettings) -> np.ndarray:
    """The audio as float32 (2, samples), after checking every argument (raises UnmixerError)."""
    auto = _is_auto(n_loops)
    if not auto and (isinstance(n_loops, str) or not MIN_LOOPS <= int(n_loops) <= MAX_LOOPS):
        raise UnmixerError(f"The number of loops must be 'auto' or between {MIN_LOOPS} and {MAX_LOOPS}, not {n_loops}.")
    if not _is_auto(loop_bars) and loop_bars not in LOOP_BARS:
        raise UnmixerError(f"Loop length must be 'auto' or 1, 2 or 4 bars, not {loop_bars}.")
    if not settings.foreground_gain > 0:
        raise UnmixerError(f"The foreground gain must be positive, not {settings.foreground_gain}.")
    if settings.on_off is not None and not 0 < settings.on_off < 1:
        raise UnmixerError(f"The on/off threshold must lie in (0, 1) or be None, not {settings.on_off}.")
    if settings.solver not in ("hals", "tensorly"):
        raise UnmixerError(f"Unknown NTD solver {settings.solver!r}: use 'hals' or 'tensorly'.")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise UnmixerError("Audio must be stereo, shape (2, samples); use unmixer.load_audio.")
    return audio


def _is_auto(value: int | str) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def track_grid(audio: np.ndarray, sr: int = SAMPLE_RATE, downbeats_s: np.ndarray | None = None,
               meter: int | None = None, beat_grid: BeatGrid | None = None) -> BeatGrid:
    """Stage "downbeats": the song's beats and bar lines, tracked by madmom or given.

    Parameters
    ----------
    audio : np.ndarray, shape=(2, samples), float32 at ``sr`` Hz
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s, optional: known bar lines (then
        ``meter`` is required and the tracker is skipped)
    meter : int, beats per bar of the known bar lines
    beat_grid : BeatGrid, optional: a grid to use as if the tracker had found it (it is
        checked and corrected like the tracker's; benchmarks hand perturbed grids this way)

    Returns
    -------
    BeatGrid

    Raises
    ------
    UnmixerError
        If no usable beat grid is found, or known bar lines come without a meter.

    Source: :func:`unmixer.loops.beats.track_beats` (Böck, Krebs & Widmer, ISMIR 2016).
    """
    if downbeats_s is not None:
        if meter is None:
            raise UnmixerError("Give the meter with known downbeats.")
        return beats_mod.grid_from_downbeats(downbeats_s, meter)
    return beat_grid if beat_grid is not None else beats_mod.track_beats(audio, sr)


def choose_grid(magnitude: np.ndarray, tracked: BeatGrid, n_loops: int | str, loop_bars: int | str, *,
                move_bar_lines: bool = True, seed: int = 0, duration_s: float | None = None,
                sr: int = SAMPLE_RATE) -> SongGrid:
    """Stage "cube", first half: the segments, the loop length and the loop count.

    With ``n_loops="auto"`` K is estimated on the tracker's grid
    (:func:`unmixer.loops.loopcount.estimate_loop_count`); then the bar grid and the loop
    length the song supports best are searched (:func:`unmixer.loops.bargrid.search_grid`:
    beat phase and half-beat offsets, tempo octave, meter, bar offset and, with
    ``loop_bars="auto"``, loop length; with ``move_bar_lines=False`` only the loop length),
    and if the grid moved an automatic K is estimated again on the chosen grid. This
    back-and-forth lives here only.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames), the song's magnitude STFT
        (hop :data:`unmixer.core.spectrum.HOP_LENGTH`)
    tracked : BeatGrid, from :func:`track_grid`
    n_loops : int or "auto"
    loop_bars : 1, 2, 4 or "auto"
    move_bar_lines : bool, whether the bar lines may move (False for known downbeats)
    seed : int
    duration_s : float, optional, the song's length (s)

    Returns
    -------
    SongGrid

    Raises
    ------
    UnmixerError
        If too few segments fit in the song.

    Source: Smith & Goto, ICASSP 2018, §2 (segments cut at the downbeats); the grid and K by
    the loop model's held-out fit (unmixer.loops.bargrid, unmixer.loops.loopcount).
    """
    auto_k, auto_bars = _is_auto(n_loops), _is_auto(loop_bars)

    def count(grid: BeatGrid, bars: int) -> int:
        return estimate_loop_count(magnitude, grid.downbeats_s, grid.meter, bars, seed=seed, sr=sr)

    counted_bars = 2 if auto_bars else int(loop_bars)
    k = count(tracked, counted_bars) if auto_k else int(n_loops)
    choice = search_grid(magnitude, tracked, k, AUTO if auto_bars else int(loop_bars),
                         fixed_bar_lines=not move_bar_lines, duration_s=duration_s, seed=seed, sr=sr)
    grid, bars = (choice.grid, choice.loop_bars) if move_bar_lines else (tracked, choice.loop_bars)
    moved = grid is not tracked and not np.array_equal(grid.downbeats_s, tracked.downbeats_s)
    if auto_k and (moved or bars != counted_bars):
        k = count(grid, bars)
    boundaries = segment_boundaries_s(grid.downbeats_s, bars)
    return SongGrid(grid, tracked, bars, k, auto_k, boundaries, make_grid(boundaries, sr),
                    auto_bars, choice.describe(tracked) if move_bar_lines else "given",
                    float(choice.error))


def build_cube(magnitude: np.ndarray, grid: SongGrid) -> np.ndarray:
    """Stage "cube", second half: the bar-synchronous spectral cube, scaled to a maximum of 1.

    Parameters
    ----------
    magnitude : np.ndarray, shape=(n_freq, n_frames)
    grid : SongGrid

    Returns
    -------
    np.ndarray, float32, shape=(n_freq, n_steps, n_segments)

    Raises
    ------
    UnmixerError
        If the song is silent inside its bars.

    Source: :func:`unmixer.loops.cube.spectral_cube` (Smith & Goto, ICASSP 2018, §2).
    """
    cube = spectral_cube(magnitude, grid.cube_grid)
    top = float(cube.max(initial=0.0))
    if top <= 0:
        raise UnmixerError("The song is silent inside its bars.")
    cube /= top
    return cube


def decompose(cube: np.ndarray, n_loops: int, settings: EngineSettings, *,
              update: Callable[[float], None] = lambda fraction: None,
              rough: Callable[[NTDResult], None] | None = None) -> NTDResult:
    """Stage "decomposition": the nonnegative Tucker decomposition of the cube.

    With ``settings.ntd_bands``, the NTD runs on the cube pooled into that many log-spaced
    frequency bands (:func:`unmixer.loops.cube.log_bands`, orthonormal), and its sound
    templates are then refitted at full resolution with the other factors fixed
    (:func:`unmixer.loops.ntd.lift_sound_factor`): each iteration touches a cube 7-11 times
    smaller.

    Parameters
    ----------
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), nonnegative
    n_loops : int, K (sets the ranks, :func:`unmixer.loops.ntd.loop_ranks`)
    settings : EngineSettings (ranks, solver, n_iter, time_budget_s, core_l1, seed,
        preview_iter, ntd_bands)
    update : callable(fraction), progress
    rough : callable(NTDResult), optional: called with the model after
        ``settings.preview_iter`` iterations (the quick first result); the decomposition then
        continues from that state, so the final model is the same as without it.

    Returns
    -------
    NTDResult, with sound templates W of shape (n_freq, r_sound)

    Raises
    ------
    UnmixerError
        If the cube is not a nonnegative 3-way array (from the solvers).

    Source: Smith & Goto, ICASSP 2018, eq. (1); solvers in :mod:`unmixer.loops.ntd`.
    """
    pool = log_bands(cube.shape[0], settings.ntd_bands) if settings.ntd_bands else None
    X = cube if pool is None else pool_cube(cube, pool)
    ranks = loop_ranks(X.shape, n_loops) if settings.ranks is None else default_ranks(X.shape, settings.ranks)
    if settings.solver == "tensorly":
        model = ntd_tensorly(X, ranks, n_iter=settings.n_iter, seed=settings.seed, core_l1=settings.core_l1)
        return model if pool is None else lift_sound_factor(model, cube, pool)

    def hals(init, iterations: int) -> NTDResult:
        return ntd_hals(X, ranks, n_iter=iterations, tol=1e-4, time_budget_s=settings.time_budget_s,
                        init=init, seed=settings.seed, core_l1=settings.core_l1,
                        callback=lambda r: update(r.n_iter / settings.n_iter))

    def full(model: NTDResult) -> NTDResult:
        return model if pool is None else lift_sound_factor(model, cube, pool)

    if rough is None or settings.preview_iter >= settings.n_iter:
        return full(hals("svd", settings.n_iter))
    model = hals("svd", settings.preview_iter)
    rough(full(model))
    if model.n_iter == settings.preview_iter:  # not converged yet: continue from the rough state
        model = hals(model, settings.n_iter - settings.preview_iter)
    return full(model)


def fit_loop_model(model: NTDResult, cube: np.ndarray, n_loops: int, settings: EngineSettings,
                   refine: bool = True) -> LoopModel:
    """Core purification to K loops, then (with ``refine``) full-resolution templates and tails.

    Parameters
    ----------
    model : NTDResult, from :func:`decompose`
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments), the decomposed cube
    n_loops : int, K
    settings : EngineSettings (core_sparsity, purify_starts, seed, refine_iter, on_off)
    refine : bool, fit full-resolution templates and tail templates (the final model; the
        quick first result skips it). With ``settings.on_off`` they are fitted to the loops
        switched on or off per segment (:func:`unmixer.loops.ntd.on_off_activations`), and
        the activations are then refitted to them
        (:func:`unmixer.loops.ntd.refit_activations`)

    Returns
    -------
    LoopModel

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1-3.2 (purification, P_k = W G′_k Hᵀ);
    tails: :func:`unmixer.loops.ntd.refine_loop_tails`.
    """
    core, activations = purify_core(model, int(n_loops), sparsity=settings.core_sparsity,
                                    seed=settings.seed, n_starts=settings.purify_starts)
    sound, rhythm = (np.asarray(f, dtype=np.float32) for f in model.factors[:2])
    templates = loop_templates(core, sound, rhythm)  # (K, F, T)
    if not (refine and settings.refine_iter):
        return LoopModel(templates, activations)
    if settings.on_off is not None:
        activations = on_off_activations(activations, settings.on_off)
    templates, tails = refine_loop_tails(cube, templates, activations, n_iter=settings.refine_iter)
    if settings.on_off is not None:
        activations = refit_activations(cube, templates, tails, activations, n_iter=settings.refine_iter)
    return LoopModel(templates, activations, tails)


def build_loops(loop_model: LoopModel, cube: np.ndarray, mix_spec: np.ndarray, grid: SongGrid,
                audio: np.ndarray, settings: EngineSettings, *, with_tracks: bool = True,
                update: Callable[[float], None] = lambda fraction: None,
                on_track_chunk: Callable[[int, int, np.ndarray], None] | None = None,
                sr: int = SAMPLE_RATE) -> tuple[list[LoopResult], Foreground]:
    """Stage "loops": bar choice, Wiener-mask clips (and tracks), loop map, labels; loudest first.

    With ``settings.foreground`` the masks get one more source, the foreground R (what no
    loop explains, :func:`unmixer.loops.masks.foreground_model`), and its track is returned;
    the share of the song the loops explain is measured either way.

    Parameters
    ----------
    loop_model : LoopModel
    cube : np.ndarray, shape=(n_freq, n_steps, n_segments)
    mix_spec : np.ndarray, complex, shape=(2, n_freq, n_frames), the mixture's STFT (or a
        :class:`unmixer.core.spectrum.LazySTFT`)
    grid : SongGrid
    audio : np.ndarray, shape=(2, samples), the mixture
    settings : EngineSettings (mask_power, foreground)
    with_tracks : bool or "stream", also the full-length tracks (else only the clips' frames
        are masked); "stream": the tracks are computed but not kept, each chunk handed to
        ``on_track_chunk`` (each loop's ``track`` is then empty)
    on_track_chunk : callable(start, stop, block), optional, with ``with_tracks`` (required
        with "stream"): called in the song's order once samples [start, stop) of every track
        are final; ``block`` has shape (K, channels, stop - start), loops in the returned
        order, the foreground (if any) last (:func:`unmixer.loops.masks.separate_tracks`)

    Returns
    -------
    loops : list of LoopResult, ordered by energy
    foreground : Foreground (its track only with ``settings.foreground`` and ``with_tracks``)

    Source: Smith, Kawasaki & Goto, ISMIR 2019, §3.1 (D·M bar choice, Wiener masks with the
    mixture's phase); :mod:`unmixer.loops.masks`.
    """
    templates, activations, tails = loop_model.templates, loop_model.activations, loop_model.tails
    power, length = settings.mask_power, audio.shape[-1]
    K = templates.shape[0]
    residual = foreground_model(templates, activations, cube, tails)  # (F·T, S)
    explained = explained_share(cube, residual)
    fg = None
    if settings.foreground:
        fg = residual if settings.foreground_gain == 1 else residual * np.float32(settings.foreground_gain)
    del residual
    shares = mask_shares(templates, activations, cube, power, tails, fg)  # (S, K) or (S, K + 1)
    chosen = choose_segments(templates, activations, cube, shares=shares[:, :K])
    seg_energy = np.einsum("fts,fts->s", cube, cube)  # (S,), no copy of the cube
    energies = shares.T @ seg_energy / max(float(seg_energy.sum()), 1e-30)
    update(0.2)
    starts = np.round(grid.boundaries_s * sr).astype(np.int64)
    fade = 441
    # the samples cut_loop reads: the clip, and up to `fade` samples either side
    lo = np.maximum(starts[chosen] - fade, 0)
    hi = np.minimum(starts[chosen + 1] + fade, length)
    order = np.argsort(-energies[:K], kind="stable")  # loudest first: the result's order
    if with_tracks == "stream":  # the clips' samples taken from each chunk as it goes by
        excerpts = [np.empty((audio.shape[0], hi[k] - lo[k]), dtype=np.float32) for k in order]

        def take(a: int, b: int, block: np.ndarray) -> None:
            for rank, k in enumerate(order):
                s0, s1 = max(a, int(lo[k])), min(b, int(hi[k]))
                if s0 < s1:
                    excerpts[rank][:, s0 - lo[k]:s1 - lo[k]] = block[rank, :, s0 - a:s1 - a]
            on_track_chunk(a, b, block)

        tracks = separate_tracks(mix_spec, templates[order], activations[:, order], grid.cube_grid,
                                 length, power, mixture=audio,
                                 tails=None if tails is None else tails[order], foreground=fg,
                                 on_chunk=take, keep=False)
    elif with_tracks:  # computed in the result's order (the foreground last), for on_track_chunk
        tracks = separate_tracks(mix_spec, templates[order], activations[:, order], grid.cube_grid,
                                 length, power, mixture=audio,
                                 tails=None if tails is None else tails[order], foreground=fg,
                                 on_chunk=on_track_chunk)
        excerpts = [tracks[rank][:, lo[k]:hi[k]] for rank, k in enumerate(order)]
    else:
        tracks = None
        excerpts = separate_clips(mix_spec, templates, activations, grid.cube_grid,
                                  np.stack([lo, hi], axis=1), length, power, tails=tails,
                                  foreground=fg)
        excerpts = [excerpts[k] for k in order]
    update(0.7)
    loop_map = segment_map_to_bars(activations, grid.loop_bars, grid.beats.n_bars)
    clips = [cut_loop(excerpts[rank], int(starts[chosen[k]] - lo[k]), int(starts[chosen[k] + 1] - lo[k]), fade)
             for rank, k in enumerate(order)]
    def describe(clip: np.ndarray) -> tuple[str, bool]:
        label = label_loop(clip, sr)
        return label, key_mod.is_pitched(clip, sr, label)

    with ThreadPoolExecutor(2, thread_name_prefix="unmixer-labels") as pool:  # librosa releases the GIL
        labels, pitched = zip(*pool.map(describe, clips)) if clips else ((), ())
    empty = np.zeros((audio.shape[0], 0), dtype=np.float32)
    loops = [LoopResult(rank + 1, labels[rank], clips[rank], tracks[rank] if tracks is not None else empty,
                        loop_map[k], int(chosen[k]) * grid.loop_bars, float(energies[k]), pitched[rank])
             for rank, k in enumerate(order)]
    rest = Foreground(explained)
    if fg is not None:
        rest.energy = float(energies[K])
        rest.track = tracks[K] if tracks is not None else None
    return loops, rest


def _preview(model: NTDResult, cube: np.ndarray, grid: SongGrid, mix_spec: np.ndarray,
             audio: np.ndarray, settings: EngineSettings, stages: "_Stages",
             preview: Callable[["Extraction"], None], sr: int,
             song_key: key_mod.PendingKey | None = None) -> None:
    """Build the rough loops of ``model`` (no refit, clips only) and hand them to ``preview``
    (with the song's key if it is known by then: the rough loops never wait for it)."""
    built = build_loops(fit_loop_model(model, cube, grid.n_loops, settings, refine=False),
                        cube, mix_spec, grid, audio, settings, with_tracks=False, sr=sr)
    result = _extraction(grid, built, audio.shape[-1], dict(stages.timings), sr,
                         song_key if song_key is not None and song_key.done() else None)
    result.timings_s["first_result"] = time.perf_counter() - stages.t_start
    preview(result)


def _quick_preview(magnitude: np.ndarray, mix_spec: np.ndarray, audio: np.ndarray,
                   n_loops: int | str, loop_bars: int, settings: EngineSettings, stages: "_Stages",
                   preview: Callable[["Extraction"], None], sr: int,
                   song_key: key_mod.PendingKey | None = None) -> bool:
    """The rough loops on a quick grid (:func:`unmixer.loops.beats.quick_beats`), while madmom
    tracks the downbeats: the grid choice, the cube and ``settings.preview_iter`` NTD
    iterations on it. Returns False (no preview given) when the quick tracker finds no grid."""
    try:
        quick = beats_mod.quick_beats(magnitude, audio.shape[-1] / sr, sr)
        grid = choose_grid(magnitude, quick, n_loops, loop_bars, seed=settings.seed,
                           duration_s=audio.shape[-1] / sr, sr=sr)
        cube = build_cube(magnitude, grid)
    except UnmixerError:  # no quick grid: the rough loops wait for madmom's
        return False
    model = decompose(cube, grid.n_loops, replace(settings, n_iter=settings.preview_iter,
                                                  ntd_bands=PREVIEW_NTD_BANDS))
    _preview(model, cube, grid, mix_spec, audio, settings, stages, preview, sr, song_key)
    return True


def _extraction(grid: SongGrid, built: tuple[list[LoopResult], Foreground], length: int,
                timings: dict[str, float], sr: int,
                song_key: key_mod.PendingKey | None = None) -> Extraction:
    b = grid.beats
    loops, rest = built
    estimate = None if song_key is None else song_key.result()
    return Extraction(sr, length / sr, b.bpm, b.meter, b.beats_s, b.downbeats_s, grid.loop_bars,
                      loops, timings, grid.auto_bars, grid.auto_count, grid.note,
                      1.0 - min(max(grid.heldout_error, 0.0), 1.0) if np.isfinite(grid.heldout_error)
                      else float("nan"), rest.track, rest.energy,
                      None if estimate is None else estimate.key.name,
                      None if estimate is None else estimate.confidence)


def extract_loops(
    audio: np.ndarray,
    n_loops: int | str = 5,
    *,
    loop_bars: int = 2,
    seed: int = 0,
    downbeats_s: np.ndarray | None = None,
    meter: int | None = None,
    beat_grid: BeatGrid | None = None,
    ranks: tuple[int, int, int] | None = None,
    solver: str = "hals",
    n_iter: int = 100,
    time_budget_s: float | None = None,
    mask_power: float = 2.0,
    core_sparsity: float = 6.0,
    purify_starts: int = 16,
    core_l1: float = 0.3,
    progress: Progress | None = None,
    preview: Callable[["Extraction"], None] | None = None,
    preview_iter: int = 10,
    preview_grid: str = "quick",
    refine_iter: int = 10,
    on_off: float | None = ON_OFF,
    ntd_bands: int | None = NTD_BANDS,
    tracks: bool | str = True,
    foreground: bool = False,
    foreground_gain: float = 1.0,
    on_track_chunk: Callable[[int, int, np.ndarray], None] | None = None,
    sr: int = SAMPLE_RATE,
) -> Extraction:
    """Extract ``n_loops`` loops from a song.

    The stages, in order (each a function of this module, called here one after the other):
    :func:`track_grid` ("downbeats"), :func:`choose_grid` and :func:`build_cube` ("cube"),
    :func:`decompose` ("decomposition"), :func:`fit_loop_model` and :func:`build_loops`
    ("loops").

    Parameters
    ----------
    audio : np.ndarray, shape=(2, samples), float32 at 44.1 kHz (from
        :func:`unmixer.core.audio.load_audio`)
    n_loops : int, K, 1 to 12; or "auto": K chosen from the song by
        :func:`unmixer.loops.loopcount.estimate_loop_count` (2 to 10, on the tracker's grid, then
        again on the bar phase chosen with it); ``len(result.loops)`` tells it
    loop_bars : int, bars per loop: 1 or 2 (4 is accepted)
    seed : int, seed of every random choice (the result is deterministic)
    downbeats_s : np.ndarray, shape=(n_bars + 1,), s, optional
        Known bar boundaries; skips the downbeat tracker (``meter`` is then required) and
        every correction of the grid.
    beat_grid : BeatGrid, optional
        A beat grid used in place of the tracker's and corrected like it (benchmarks hand
        perturbed grids this way); ignored when ``downbeats_s`` is given.
    ranks : (sound, rhythm, loop) NTD ranks, clipped to the cube's size; default
        :func:`unmixer.loops.ntd.loop_ranks` (4K + 8, 4K + 8, K + 2; the loop rank under the
        segment count on few segments), at most (50, 40, 30)
    solver : "hals" (ours, fast) or "tensorly" (the reference)
    n_iter : int, NTD iterations at most
    time_budget_s : float, optional, NTD time budget
    mask_power : float, exponent of the Wiener masks
    core_sparsity : float, L1 weight of the core purification (:func:`unmixer.loops.ntd.purify_core`).
        6 (each loop keeps only its strongest sound × rhythm atoms) separated best on
        bench/quality.py's songs: mean SDR 1.8 -> 6.6 dB with true downbeats, 1.3 -> 4.3 dB
        with estimated ones, against 0.1 (BENCHMARKS.md, "Separation quality against
        baselines", lever "purify_l1")
    purify_starts : int, starts of the purification's sparse NMF, the one with the lowest
        objective kept (:func:`unmixer.loops.ntd.purify_core`). 16 raised the mean SDR of
        bench/quality.py's 9 songs from 9.2 to 10.3 dB (estimated downbeats) and from 10.1 to
        12.1 dB (true ones), dense songs most (BENCHMARKS.md lever "purify_starts")
    core_l1 : float, L1 penalty on the NTD core (see :func:`unmixer.loops.ntd.ntd_hals`)
    progress : callable(stage, fraction), optional; stages from :data:`STAGES`
    preview : callable(Extraction), optional
        Quick first result: the loops of a rough model (``preview_iter`` NTD iterations, no
        refit) are built and passed to ``preview`` (its ``timings_s["first_result"]`` is the
        time since the start, s), on the grid that ``preview_grid`` says.
    preview_iter : int, NTD iterations of the rough pass
    preview_grid : "quick" or "tracked", the grid of the rough loops. "quick": the rough loops
        never wait for madmom: while it tracks the downbeats on a thread, a quick beat
        tracker (:func:`unmixer.loops.beats.quick_beats`) gives a first grid, and the rough
        loops are built on it (the final loops are then decomposed from the start on madmom's
        grid). "tracked": the rough loops come after madmom, from the first
        ``preview_iter`` iterations of the final decomposition (which then continues). Either
        way the final result is the same as without a preview.
    refine_iter : int, HALS sweeps fitting full-resolution loop templates and tail templates
        (what each loop rings on into the next segment) with the activations fixed
        (:func:`unmixer.loops.ntd.refine_loop_tails`; 0: the NTD's low-rank templates, no tails).
        Measured on bench/quality.py's 9 songs against the full-resolution templates alone:
        mean SDR +1.15 dB with madmom's raw grid, +0.62 dB with the true one (factorial
        +6.0 / +2.8 dB), BENCHMARKS.md lever "tails". The preview skips it.
    on_off : float in (0, 1) or None, fit those templates to the loops switched on or off
        per segment (on where a loop's activation exceeds this fraction of its peak,
        :func:`unmixer.loops.ntd.on_off_activations`), then refit the activations: two
        loops that nearly always play together are no longer mixed into each other
        (BENCHMARKS.md, "Bar grid and loop length", on/off loops). None: the
        purification's activations as they are (the engine before)
    ntd_bands : int or None, decompose the cube pooled into at most this many log-spaced
        frequency bands and refit the sound templates at full resolution (see
        :func:`decompose`); None decomposes the full-resolution cube. Default
        :data:`NTD_BANDS`
    tracks : bool, build the full-length loop tracks (five inverse STFTs of the whole song
        for K = 5, the costliest part of the loops stage). With False only the clips are
        resynthesised, from the STFT frames around them, and each ``track`` is empty
        (shape (2, 0)); clips, loop map and order are the same. With "stream" the tracks
        are computed chunk by chunk and handed to ``on_track_chunk`` without being kept
        (each ``track`` and ``result.foreground`` empty/None; the 4-minute song's five
        tracks are 434 MB as one array), and the STFT is not kept either: each chunk's
        frames are recomputed from the samples (:class:`unmixer.core.spectrum.LazySTFT`,
        bit-equal; 347 MB less for the same song, one more STFT's time): what the CLI does. The preview never builds
        tracks.
    foreground : bool, model what no loop explains as one more source, the foreground
        (melodies that change every bar, vocals, fills: the rectified residual of the loop
        model, :func:`unmixer.loops.masks.foreground_model`); its track is
        ``result.foreground`` and the loop tracks no longer hold it. Off by default: see
        BENCHMARKS.md, "Real music", lever "foreground", for what it does.
    foreground_gain : float > 0, the foreground's model is this many times the residual
        (how readily a cell the loops explain only partly goes to the foreground)
    on_track_chunk : callable(start, stop, block), optional: with ``tracks`` (required with
        "stream"), called in the song's order (from the calling thread) once samples
        [start, stop) of every full-length track are final, with ``block`` of shape
        (K, 2, stop - start) in the result's loop order (K + 1 with ``foreground``, the
        foreground last): the CLI writes the WAV files while the rest is computed.

    Returns
    -------
    Extraction

    Raises
    ------
    UnmixerError
        If no usable beat grid is found, the song has too few bars for the loop length,
        or a parameter is out of range.

    Source: Smith & Goto, ICASSP 2018; Smith, Kawasaki & Goto, ISMIR 2019.
    """
    settings = EngineSettings(seed, None if ranks is None else tuple(ranks), solver, n_iter,
                              time_budget_s, mask_power, core_sparsity, purify_starts, core_l1,
                              preview_iter, refine_iter, bool(foreground), float(foreground_gain),
                              ntd_bands, None if on_off is None else float(on_off))
    audio = _checked_request(audio, n_loops, loop_bars, settings)
    if tracks == "stream" and on_track_chunk is None:
        raise UnmixerError("tracks='stream' needs on_track_chunk: the tracks would be lost.")
    if tracks not in (True, False, "stream"):
        raise UnmixerError(f"tracks must be True, False or 'stream', not {tracks!r}.")
    if preview_grid not in ("quick", "tracked"):
        raise UnmixerError(f"preview_grid must be 'quick' or 'tracked', not {preview_grid!r}.")
    length = audio.shape[-1]
    stages = _Stages(progress)

    stages.start("downbeats")
    song_key = key_mod.start_key_detection(audio, sr)  # on a thread, beside the tracker
    early = preview is not None and downbeats_s is None and beat_grid is None and preview_grid == "quick"
    mix_spec = None

    def spectrum():  # streamed tracks: the STFT's frames recomputed per chunk, never kept whole
        if tracks == "stream":
            lazy = LazySTFT(audio)
            return lazy, lazy.magnitude()
        return stft_magnitude(audio)  # (2, F, N) and (F, N), a channel per thread

    if downbeats_s is None and beat_grid is None:  # madmom on a thread (its DBN uses one core)
        with ThreadPoolExecutor(1, thread_name_prefix="unmixer-downbeats") as pool:
            tracking = pool.submit(_nicer(track_grid, TRACKER_NICE if early else 0), audio, sr)
            mix_spec, magnitude = spectrum()  # meanwhile
            if early:  # and the rough loops from a quick grid
                early = _quick_preview(magnitude, mix_spec, audio, n_loops, loop_bars, settings, stages,
                                       preview, sr, song_key)
            tracked = tracking.result()
    else:
        tracked = track_grid(audio, sr, downbeats_s, meter, beat_grid)

    stages.start("cube")
    if mix_spec is None:
        mix_spec, magnitude = spectrum()
    grid = choose_grid(magnitude, tracked, n_loops, loop_bars, move_bar_lines=downbeats_s is None,
                       seed=seed, duration_s=length / sr, sr=sr)
    cube = build_cube(magnitude, grid)
    del magnitude  # 90 MB for a 4-minute song; the loops stage needs the complex STFT only

    stages.start("decomposition")

    def rough(model: NTDResult) -> None:  # the quick first result: no refit, clips only
        _preview(model, cube, grid, mix_spec, audio, settings, stages, preview, sr, song_key)

    model = decompose(cube, grid.n_loops, settings, update=stages.update,
                      rough=rough if preview is not None and not early else None)

    stages.start("loops")
    built = build_loops(fit_loop_model(model, cube, grid.n_loops, settings), cube, mix_spec, grid,
                        audio, settings, with_tracks=tracks, update=stages.update,
                        on_track_chunk=on_track_chunk, sr=sr)
    stages.finish()
    return _extraction(grid, built, length, stages.timings, sr, song_key)
