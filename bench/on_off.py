"""On/off loops (issue 13): the engine with and without ``on_off`` on bench/quality.py's songs.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/on_off.py [--songs 3 2 2 2]

Each song of bench/quality.py's four families (its default counts) is extracted twice per
grid, ``extract_loops(..., on_off=None)`` (the purification's activations, as before) and
with the default on/off threshold, on the true downbeats and on madmom's grid (tracked once
per song and handed in as ``beat_grid``, so both runs correct the same grid as the default
path does), K and the loop length told as bench/quality.py tells them. Score: mean SI-SDR
improvement (dB) of the matched full-length tracks over the mixture (bench/grid.py's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from grid import si_sdr_improvement  # noqa: E402
from quality import FAMILIES, DEFAULT_SONGS, song_specs  # noqa: E402

from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.loops.beats import track_beats  # noqa: E402
from unmixer.loops.ntd import ON_OFF  # noqa: E402
from unmixer.loops.pipeline import extract_loops  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, nargs=4, default=DEFAULT_SONGS)
    args = parser.parse_args()
    rows: dict[tuple, list[float]] = {}
    for family, n in zip(FAMILIES, args.songs):
        for spec in song_specs(family, n):
            song = make_song(**spec)
            L = max(spec["loop_bars"])
            tracked = track_beats(song.mix, song.sr)
            for grid in ("true", "madmom"):
                kw = (dict(downbeats_s=song.downbeats_s, meter=song.meter) if grid == "true"
                      else dict(beat_grid=tracked))
                cells = []
                for on_off in (None, ON_OFF):
                    result = extract_loops(song.mix, spec["n_loops"], loop_bars=L, on_off=on_off, **kw)
                    mean, _ = si_sdr_improvement(song, np.stack([loop.track for loop in result.loops]))
                    rows.setdefault((family, grid, on_off), []).append(mean)
                    cells.append(f"on_off={on_off}: {mean:5.1f}")
                print(f"{family} K={spec['n_loops']} L={L} {grid:>6}: " + " | ".join(cells), flush=True)
    print("\n| family | grid | before (on_off=None) | on/off loops | change |\n|---|---|---:|---:|---:|")
    for family in FAMILIES:
        for grid in ("true", "madmom"):
            a, b = np.mean(rows[(family, grid, None)]), np.mean(rows[(family, grid, ON_OFF)])
            print(f"| {family} | {grid} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


if __name__ == "__main__":
    main()
