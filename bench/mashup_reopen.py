"""Save mashup -> Open mashup on a fresh app: is the reopened deck's mix the saved one's?

    .venv/bin/python bench/mashup_reopen.py

The browser test's two songs (``unmixer.datasets.synth.make_song``, A minor and C# minor, 16
bars at 120 BPM), analysed by the real engine in Streamlit's AppTest; two pitched loops and a
drums loop of the second song in the mix with Match keys on (the pitched ones -4 semitones);
the mashup saved, opened in a fresh AppTest (its own session, nothing analysed), and the two
mixes the page renders (``unmixer.mashup.render_mix``, recorded) compared sample by sample,
and each loop's clip at the deck's tempo and key.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("UNMIXER_CACHE_DIR", tempfile.mkdtemp(prefix="unmixer-reopen-"))

from streamlit.testing.v1 import AppTest  # noqa: E402

import ui.songs  # noqa: E402
import unmixer.mashup as mashup  # noqa: E402
from ui.deck import ReadySong, current_mashup  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402

APP = str(REPO / "streamlit_app.py")


def main() -> None:
    mixes = []
    render_mix = mashup.render_mix

    def recorded(clips, gains_db, n_samples, **kw):
        mixes.append(([c.copy() for c in clips], render_mix(clips, gains_db, n_samples, **kw)))
        return mixes[-1][1]

    mashup.render_mix = recorded
    ui.songs.QUICK_WAIT_S = 900.0
    files = []
    for key, seed in (("A minor", 61), ("C# minor", 62)):
        song = make_song(seed, n_bars=16, bpm=120, key=key,
                         instruments=["drums", "bass", "pad", "pluck"])
        buf = io.BytesIO()
        sf.write(buf, song.mix.T, song.sr, format="WAV")
        files.append((f"song{len(files) + 1}.wav", buf.getvalue(), "audio/wav"))
    at = AppTest.from_file(APP, default_timeout=1800)
    at.run()
    t0 = time.perf_counter()
    at.file_uploader[0].set_value(files).run()
    while True:  # the final (refined) loops of both songs
        results = at.session_state["results"]
        if len(results) == 2 and all(r.extraction is not None and not r.refining
                                     for r in results.values()):
            break
        time.sleep(3)
        at.run()
    print(f"analysed in {time.perf_counter() - t0:.0f} s")
    second = list(at.session_state["songs"])[1]
    loops = at.session_state["results"][second].extraction.loops
    boxes = [c for c in at.checkbox if c.key.startswith(f"w:in_mix:{second}")]
    chosen = [i for i, lp in enumerate(loops) if lp.pitched][:2] \
        + [i for i, lp in enumerate(loops) if lp.label == "drums"][:1]
    for i in chosen:
        boxes[i].check()
    at.toggle(key="w:deck_match_keys").set_value(True).run()
    clips, mix = mixes[-1]
    ss = at.session_state
    saved = mashup.save_mashup(current_mashup(
        [ReadySong(song, ss["results"][sid]) for sid, song in ss["songs"].items()], ss))

    fresh = AppTest.from_file(APP, default_timeout=1800)
    fresh.run()
    uploader = next(u for u in fresh.file_uploader if u.key == "mashup_uploader")
    uploader.set_value(("mix.unmixer", saved, "application/zip")).run()
    clips_again, mix_again = mixes[-1]
    diff = np.abs(mix_again - mix)
    print(f"{len(chosen)} loops ({', '.join(loops[i].label for i in chosen)}), "
          f"{mix.shape[-1]} samples; the reopened mix differs in {np.mean(diff > 2e-3):.1%} of "
          f"its samples by more than 2e-3 (the browser test's tolerance), at most {diff.max():.4f}")
    for i, a, b in zip(chosen, clips, clips_again):
        d = np.abs(a - b)
        print(f"  {loops[i].label}: clip at the deck's tempo and key differs by at most "
              f"{d.max():.4f} ({np.mean(d > 2e-3):.1%} of samples over 2e-3)")


if __name__ == "__main__":
    main()
