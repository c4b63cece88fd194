"""Peak memory (RSS, MiB) of the CLI's engine per stage and step, on the 4-minute song.

    bench/prio.sh .venv/bin/python bench/memory_stages.py [WAV]

Runs what ``python -m unmixer extract`` runs (:func:`unmixer.commands.extract.extract_song`,
the tracks written while computed) in this process, with a thread sampling the process's
RSS every 10 ms; the stage is the one the progress callback last announced, or the engine
step running (the steps wrapped here: madmom's tracking, the grid search, the cube, the
purification, the tail fit, the loop model's residual, the mask shares, the bar choice,
the tracks, the clips, the labels; a name with ``+`` is the
rest of a stage after that step). madmom runs on a thread while the STFT is computed, so
the samples during ``track_grid`` include the STFT. WAV: default ``bench/out/vibe_ace_x4.wav``
(written by ``bench/engine.py stages``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.commands.extract import _TrackWriter, extract_song  # noqa: E402
from unmixer.core.audio import SAMPLE_RATE  # noqa: E402
from unmixer.loops import pipeline  # noqa: E402

STEPS = ("track_grid", "search_grid", "build_cube", "purify_core", "refine_loop_tails",
         "foreground_model", "mask_shares", "choose_segments", "separate_tracks", "separate_clips",
         "label_loop")


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    wav = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "bench" / "out" / "vibe_ace_x4.wav")
    state = {"stage": "start", "run": True}
    peaks: dict[str, float] = {}

    def sample() -> None:
        while state["run"]:
            stage = state["stage"]
            peaks[stage] = max(peaks.get(stage, 0.0), rss_mib())
            time.sleep(0.01)

    def tagged(name, fn):
        def run(*args, **kwargs):
            before, state["stage"] = state["stage"], name
            try:
                return fn(*args, **kwargs)
            finally:
                state["stage"] = before.split("+")[0] + "+"
        return run

    for name in STEPS:
        setattr(pipeline, name, tagged(name, getattr(pipeline, name)))

    def progress(stage: str, fraction: float) -> None:
        if fraction == 0.0:
            state["stage"] = stage

    threading.Thread(target=sample, daemon=True).start()
    out = REPO / "bench" / "out" / "memory_stages_out"
    writer = _TrackWriter(out, SAMPLE_RATE)
    t0 = time.perf_counter()
    try:
        extraction = extract_song(wav, 5, progress=progress, on_track_chunk=writer)
    finally:
        writer.close()
    state["stage"] = "done (tracks written)"
    time.sleep(0.05)
    state["run"] = False
    print(f"{wav}: {extraction.n_bars} bars, {time.perf_counter() - t0:.1f} s\n")
    print("| stage or step | peak RSS (MiB) |\n|---|---:|")
    for name, peak in peaks.items():
        print(f"| {name} | {peak:.0f} |")


if __name__ == "__main__":
    main()
