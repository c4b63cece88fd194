"""When each step of the app's analysis of the 4-minute song starts and ends (s since the upload).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/rough_timeline.py [--nice N] [--repeats R]

In this process, with the engine warmed up first (a server whose page was drawn):
:func:`ui.engine.analyse` on the bytes of ``bench/out/vibe_ace_x4.ogg`` (written by
``bench/engine.py stages``), loop count 5, loop length "auto", an empty result cache. The
engine's steps are wrapped to print their thread, start and end; then the first rough loops and
the final loops (s since the upload). ``--nice`` sets :data:`unmixer.loops.pipeline.TRACKER_NICE`
(BENCHMARKS.md, issue 15, lever 5, compares 0, 5 and 10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = {
    "unmixer.loops.pipeline": ("stft_magnitude", "choose_grid", "build_cube", "decompose", "fit_loop_model",
                               "foreground_model", "explained_share", "mask_shares", "separate_clips",
                               "label_loop", "build_loops", "track_grid"),
    "unmixer.loops.beats": ("quick_beats", "downbeat_features", "downbeat_activations", "decode_downbeats"),
    "ui.engine": ("load_audio",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nice", type=int, default=None, help="TRACKER_NICE (default: the engine's)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import importlib

    from ui import engine
    from ui.state import Song, song_id
    from unmixer.cache import ResultCache
    from unmixer.loops import pipeline

    if args.nice is not None:
        pipeline.TRACKER_NICE = args.nice
    pipeline.warm_up()
    for thread in threading.enumerate():
        if thread.name == "unmixer-warm-up":
            thread.join()
    t0 = [None]

    def wrap(module, name):
        fn = getattr(module, name)

        def timed(*a, **k):
            start = time.perf_counter()
            result = fn(*a, **k)
            if t0[0] is not None:
                print(f"{threading.current_thread().name:24s} {name:22s} {start - t0[0]:6.2f} -> "
                      f"{time.perf_counter() - t0[0]:6.2f}", flush=True)
            return result

        setattr(module, name, timed)

    for module_name, names in STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                wrap(module, name)
    data = (REPO / "bench" / "out" / "vibe_ace_x4.ogg").read_bytes()
    for _ in range(args.repeats):
        rough = []
        with tempfile.TemporaryDirectory() as tmp:
            t0[0] = time.perf_counter()
            engine.analyse(Song(song_id(data), "vibe_ace_x4.ogg", data), 5, "auto", cache=ResultCache(Path(tmp)),
                           preview=lambda result: rough.append(time.perf_counter() - t0[0]))
            final = time.perf_counter() - t0[0]
        print(f"first rough loops {rough[0] if rough else float('nan'):.2f} s, final loops {final:.2f} s "
              f"(TRACKER_NICE {pipeline.TRACKER_NICE})", flush=True)


if __name__ == "__main__":
    main()
