"""``python -m unmixer nmf`` / ``mosaic``: the files of the contract, and one-line errors."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def run_cli(*args):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    env.pop("UNMIXER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "unmixer", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 3 s stereo clip of two alternating notes, and a 2.5 s drum-like target."""
    d = tmp_path_factory.mktemp("clips")
    t = np.arange(3 * SR) / SR
    notes = 0.3 * np.where(t % 1 < 0.5, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 587 * t))
    sf.write(d / "notes.wav", np.stack([notes, 0.7 * notes]).T, SR, subtype="FLOAT")
    rng = np.random.default_rng(0)
    t2 = np.arange(int(2.5 * SR)) / SR
    hits = 0.5 * rng.standard_normal(t2.size) * np.exp(-30 * ((t2 * 3) % 1.0))
    sf.write(d / "hits.wav", np.stack([hits, hits]).T, SR, subtype="FLOAT")
    (d / "broken.mp3").write_bytes(b"ID3 this is not audio at all")
    return d


def test_nmf_writes_its_contract_files(clips, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("nmf", clips / "notes.wav", "--components", 3, "--beta", 1, "--iterations", 40,
                   "--init", "nndsvda", "--out", out)
    assert proc.returncode == 0, proc.stderr
    comps = sorted((out / "components").glob("component_*.wav"))
    assert [p.name for p in comps] == ["component_01.wav", "component_02.wav", "component_03.wav"]
    audio = np.stack([sf.read(p, always_2d=True)[0].T for p in comps])
    mix = sf.read(clips / "notes.wav", always_2d=True)[0].T
    np.testing.assert_allclose(audio.sum(0), mix, atol=1e-4)  # Wiener masks sum to the input
    W, H = np.load(out / "W.npy"), np.load(out / "H.npy")
    assert W.shape == (1025, 3) and H.shape == (3, 1 + mix.shape[1] // 512)
    with open(out / "loss.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["iteration", "loss", "seconds"]
    loss = np.array([float(r[1]) for r in rows[1:]])
    assert 2 <= len(loss) <= 41 and loss[-1] < loss[0]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(loss)))
    assert (out / "decomposition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model, extra, w_shape", [
    ("nmfd", ("--frames", 4), (2, 1025, 4)),
    ("complex", (), (1025, 2)),
])
def test_nmfd_and_complex_models_write_the_same_contract(clips, tmp_path, model, extra, w_shape):
    out = tmp_path / model
    proc = run_cli("nmf", clips / "notes.wav", "--model", model, "--components", 2,
                   "--iterations", 8, *extra, "--out", out)
    assert proc.returncode == 0, proc.stderr
    comps = sorted((out / "components").glob("component_*.wav"))
    assert [p.name for p in comps] == ["component_01.wav", "component_02.wav"]
    audio = np.stack([sf.read(p, always_2d=True)[0].T for p in comps])
    mix = sf.read(clips / "notes.wav", always_2d=True)[0].T
    np.testing.assert_allclose(audio.sum(0), mix, atol=1e-4)  # masks or own phases: the clip
    assert np.load(out / "W.npy").shape == w_shape
    assert np.load(out / "H.npy").shape == (2, 1 + mix.shape[1] // 512)
    with open(out / "loss.csv") as fh:
        loss = np.array([float(r[1]) for r in list(csv.reader(fh))[1:]])
    assert loss.size == 9 and np.all(np.diff(loss) <= 1e-5 * loss[1:])
    assert (out / "decomposition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mosaic_writes_a_target_length_mosaic(clips, tmp_path):
    proc = run_cli("mosaic", clips / "notes.wav", clips / "hits.wav", "--iterations", 10,
                   "--griffin-lim", 2, "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(tmp_path / "m" / "mosaic.wav", always_2d=True)
    assert sr == SR and audio.shape == (int(2.5 * SR), 2) and np.abs(audio).max() > 0.01


@pytest.mark.parametrize("args", [
    ("nmf", "{clips}/broken.mp3", "--out", "{tmp}/x"),
    ("nmf", "{clips}/notes.wav", "--beta", "3", "--out", "{tmp}/x"),
    ("nmf", "{clips}/notes.wav", "--model", "nmfd", "--frames", "0", "--out", "{tmp}/x"),
    ("nmf", "{clips}/notes.wav", "--model", "nmfd", "--frames", "500", "--out", "{tmp}/x"),
    ("nmf", "{clips}/notes.wav", "--model", "complex", "--components", "0", "--out", "{tmp}/x"),
    ("mosaic", "{clips}/notes.wav", "{clips}/missing.wav", "--out", "{tmp}/x"),
])
def test_bad_input_exits_2_with_one_line(clips, tmp_path, args):
    proc = run_cli(*[a.format(clips=clips, tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing half-written
