"""The library as a library: a small face, a fast import, and safe to call from a plain
script (no ``if __name__ == "__main__":``) and from a thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import shared_song, synth_song

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    script = cwd / "plain_script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_import_unmixer_loads_no_engine(tmp_path):
    out = _run("import sys, unmixer\n"
               "heavy = [m for m in ('numpy', 'madmom', 'tensorly', 'librosa', 'streamlit') if m in sys.modules]\n"
               "print(heavy, sorted(unmixer.__all__))\n", tmp_path)
    assert out.returncode == 0, out.stderr
    heavy, face = out.stdout.strip().split("] ")
    assert heavy == "["
    assert all(name in face for name in ("load_audio", "extract_loops", "UnmixerError"))


def test_a_plain_script_without_a_main_guard_extracts_and_writes_the_clips(tmp_path):
    """The README's three lines, run from a folder outside the repository: madmom's worker
    processes must not re-run the script (multiprocessing's spawn pool did, and failed in
    its "bootstrapping phase")."""
    song = shared_song("vibe_ace.ogg")
    out = _run(f"""import unmixer
print("top level ran")
result = unmixer.extract_loops(unmixer.load_audio({str(song)!r}), 5)
for loop in result.loops:
    unmixer.write_wav(f"clips/loop_{{loop.index}}.wav", loop.clip)
print(len(result.loops), "loops")
""", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("top level ran") == 1  # the workers never ran the script
    assert "5 loops" in out.stdout
    clips = sorted((tmp_path / "clips").glob("loop_*.wav"))
    assert len(clips) == 5
    for clip in clips:
        audio, sr = sf.read(clip)
        assert sr == 44100 and audio.shape[1] == 2 and np.abs(audio).max() > 0.01


def test_extract_loops_from_a_thread():
    import unmixer

    song = synth_song(seed=11, bpm=120.0, meter=4, loop_bars=2, n_bars=16, n_loops=3)
    results, errors = [], []

    def work():
        try:
            results.append(unmixer.extract_loops(song.mix, 3, tracks=False))  # madmom too
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(600)
    assert not errors and len(results) == 1
    assert len(results[0].loops) == 3 and results[0].loops[0].clip.shape[0] == 2
