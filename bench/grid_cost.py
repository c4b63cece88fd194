"""Cost of the grid search on a 4-minute song (issue 13, item 5): search_grid beside the cube,
same process, same run (times drift with the machine's load; compare within a run).

    .venv/bin/python bench/grid_cost.py [--repeats 2]

The song: ../shared/audio/vibe_ace.ogg four times over (246 s), as in BENCHMARKS.md's stage
table; a steady 130.4 BPM 4/4 beat grid stands in for madmom's (the search's cost depends on
the number of half-beats and hypotheses, not on where the beats are).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.core.audio import load_audio  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.loops.bargrid import search_grid  # noqa: E402
from unmixer.loops.beats import grid_from_beats  # noqa: E402
from unmixer.loops.pipeline import build_cube, choose_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    song = load_audio(str(REPO.parent / "shared" / "audio" / "vibe_ace.ogg"))
    audio = np.concatenate([song] * 4, axis=1)
    duration = audio.shape[1] / 44100
    magnitude = np.abs(stft(audio)).mean(axis=0)
    beats = np.arange(0.05, duration - 0.5, 60 / 130.4)
    tracked = grid_from_beats(beats, np.arange(len(beats)) % 4 + 1, duration)
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        choice = search_grid(magnitude, tracked, 5, "auto", duration_s=duration)
        t1 = time.perf_counter()
        grid = choose_grid(magnitude, tracked, 5, "auto", duration_s=duration)
        t2 = time.perf_counter()
        build_cube(magnitude, grid)
        t3 = time.perf_counter()
        print(f"run {rep + 1}: search_grid {t1 - t0:.2f} s ({choice.n_scored} hypotheses, "
              f"{choice.loop_bars} bars, {choice.describe(tracked)}); choose_grid {t2 - t1:.2f} s; "
              f"build_cube {t3 - t2:.2f} s", flush=True)


if __name__ == "__main__":
    main()
