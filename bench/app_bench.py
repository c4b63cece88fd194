"""What a user of the app waits for, on the real songs in ../shared/audio.

    .venv/bin/python bench/app_bench.py [--out bench/RESULTS_app.md]

Per song: the first analysis (real engine, through the app's disk cache), the same analysis
again (a cache hit: what a rerun, a second user or a restarted server gets), the deck's
previews at a new tempo (every loop stretched, mono 22.05 kHz), one loop stretched at full
quality (what the mix and the downloads use), the ZIP of all loops, and the size of what a
click on the deck sends to the browser (the deck's data) against the clips (sent once per
tempo, then referenced from the browser's message cache).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ui import engine  # noqa: E402
from ui.state import Song, song_id  # noqa: E402
from unmixer import mashup  # noqa: E402
from unmixer.cache import ResultCache  # noqa: E402

SONGS = [ROOT.parent / "shared" / "audio" / name
         for name in ("choice_drum_bass.ogg", "vibe_ace.ogg")]
TARGET_BPM = 120.0


def _time(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench_song(path: Path, cache: ResultCache) -> dict:
    data = path.read_bytes()
    song = Song(song_id(data), path.name, data)
    first, t_first = _time(lambda: engine.analyse(song, 5, 2, cache=cache))
    if first.error:
        raise SystemExit(f"{path.name}: {first.error}")
    again, t_again = _time(lambda: engine.analyse(song, 5, 2, cache=cache))
    assert again.from_cache
    ext = first.extraction
    key = f"{song.id}-5x2"
    previews, t_prev = _time(lambda: engine.deck_previews(key, TARGET_BPM, ext))
    _, t_full = _time(lambda: mashup.stretch_to_bpm(ext.loops[0].clip, ext.loop_bars,
                                                    ext.meter, TARGET_BPM))
    archive, t_zip = _time(lambda: mashup.loops_archive(song.title, ext, TARGET_BPM))
    clips = {f"{key}:{i}@{TARGET_BPM:.2f}": base64.b64encode(wav).decode()
             for i, (wav, _s) in enumerate(previews, 1)}
    deck = {"bpm": TARGET_BPM, "meter": ext.meter, "barSeconds": 2.0, "seq": 3,
            "selection": [f"{key}:1", f"{key}:2"],
            "loops": [{"id": f"{key}:{lp.index}", "song": song.id, "songTitle": song.title,
                       "songBpm": ext.bpm, "index": lp.index, "label": lp.label,
                       "color": "#4E79A7", "gainDb": 0.0, "seconds": s,
                       "clipKey": f"{key}:{lp.index}@{TARGET_BPM:.2f}"}
                      for lp, (_w, s) in zip(ext.loops, previews)]}
    return {
        "song": path.name, "duration_s": ext.duration_s, "bpm": ext.bpm,
        "analysis_s": t_first, "stages_s": ext.timings_s, "cache_hit_ms": 1000 * t_again,
        "previews_s": t_prev, "full_stretch_s": t_full, "zip_s": t_zip,
        "zip_mb": len(archive) / 1e6, "deck_kb": len(json.dumps(deck)) / 1e3,
        "clips_kb": len(json.dumps({"kind": "clips", "clips": clips})) / 1e3,
        "cache_entry_mb": cache.size_bytes() / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write a Markdown table here")
    args = parser.parse_args()
    rows = []
    for path in SONGS:
        if not path.exists():
            print(f"skipping {path} (missing)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(bench_song(path, ResultCache(tmp)))
        print(json.dumps(rows[-1], default=float))
    lines = [
        "| song | length | first analysis | of which decomposition | cache hit | deck previews"
        " @120 BPM (5 loops) | 1 loop full quality | ZIP (both tempos) | deck data per click |"
        " clips (once per tempo) | cache entry |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['song']} | {r['duration_s']:.0f} s | {r['analysis_s']:.1f} s | "
            f"{r['stages_s'].get('decomposition', float('nan')):.1f} s | "
            f"{r['cache_hit_ms']:.0f} ms | {r['previews_s']:.2f} s | {r['full_stretch_s']:.2f} s"
            f" | {r['zip_s']:.1f} s, {r['zip_mb']:.1f} MB | {r['deck_kb']:.1f} kB | "
            f"{r['clips_kb']:.0f} kB | {r['cache_entry_mb']:.1f} MB |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(
            "# The app: what a user waits for\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs "
            "(shared with other jobs while measured).\n\n"
            "Command: `.venv/bin/python bench/app_bench.py --out bench/RESULTS_app.md`\n\n"
            + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
