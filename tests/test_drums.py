"""Drum Splitter (unmixer.drums): the exported CNN, transcription on an unseen kit, five layers
that sum to the input, one-shots, MIDI, the CLI contract and the page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from training.drums.data import training_kits
from training.drums.train import reference_input
from unmixer.core.audio import SAMPLE_RATE, resample, write_wav
from unmixer.core.metrics import si_sdr
from unmixer.datasets import drums as data
from unmixer.drums import CLASSES, GM_NOTES
from unmixer.drums.oneshots import extract_oneshots, make_library, nearest_oneshots
from unmixer.drums.separate import split_drums
from unmixer.drums.transcribe import WEIGHTS, Transcription, load_model, onset_scores, to_midi, transcribe

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the model


def test_committed_onnx_reproduces_its_reference_output():
    """Torch-free: the committed ONNX file gives the output PyTorch gave at export time."""
    sess, thresholds = load_model()
    out = sess.run(None, {sess.get_inputs()[0].name: reference_input()})[0][0]
    ref = np.load(WEIGHTS.with_name("reference_output.npy"))
    assert out.shape == ref.shape == (len(CLASSES), reference_input().shape[-1])
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert thresholds.shape == (len(CLASSES),) and np.all((thresholds > 0) & (thresholds < 1))
    assert WEIGHTS.stat().st_size + WEIGHTS.with_suffix(".pt").stat().st_size < 5e6


def test_onnx_matches_pytorch_model():
    torch = pytest.importorskip("torch")
    from training.drums.model import DrumCNN

    model = DrumCNN()
    model.load_state_dict(torch.load(WEIGHTS.with_suffix(".pt"), weights_only=True))
    model.eval()
    audio, _ = data.demo_loop(seed=3, duration_s=4.0)
    from unmixer.drums.features import log_mel

    x = log_mel(audio.mean(axis=0))[None, None]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()[0]
    sess, _ = load_model()
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
    assert got.shape == expected.shape == (len(CLASSES), x.shape[-1])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert expected.max() > 0.5  # the loop has hits: the comparison is not on a flat output


# ---------------------------------------------------------------------------- transcription


def _unseen_kit(name: str) -> data.Kit:
    if name == "synth":
        return data.synth_kit(data.HELDOUT_SEED_BASE + 11)
    if shutil.which("fluidsynth") is None or not data.SOUNDFONT.exists():
        pytest.skip("fluidsynth or the GM soundfont is not installed")
    return data.render_gm_kit(data.HELDOUT_GM_KIT)


@pytest.mark.parametrize("kit_name", ["synth", "gm-" + data.HELDOUT_GM_KIT])
def test_kick_and_snare_onsets_on_an_unseen_kit(kit_name):
    kit = _unseen_kit(kit_name)
    assert kit.name not in {k.name for k in training_kits(0)}
    ex = data.generate_example(kit, data.HELDOUT_SEED_BASE + 5, 20.0, background=False)
    assert ex.onsets["kick"].size >= 8 and ex.onsets["snare"].size >= 8
    tr = transcribe(np.stack([ex.mix, ex.mix]))
    scores = onset_scores(ex.onsets, tr.onsets)
    assert scores["kick"][0] >= 0.8, scores
    assert scores["snare"][0] >= 0.8, scores


def test_peak_picking_finds_planted_peaks():
    from unmixer.drums.features import FRAME_RATE
    from unmixer.drums.transcribe import pick_peaks

    prof = np.zeros((5, 400), dtype=np.float32)
    frames = np.array([20, 60, 61, 150, 300])  # 60/61: a plateau, one onset at 60.5
    prof[0, frames] = [0.9, 0.8, 0.8, 0.3, 0.95]
    prof[0, 299] = prof[0, 301] = 0.5  # shoulders of the last peak
    onsets, strength = pick_peaks(prof, 0.4)
    np.testing.assert_allclose(onsets["kick"], np.array([20, 60.5, 300]) / FRAME_RATE, atol=1e-9)
    np.testing.assert_allclose(strength["kick"], [0.9, 0.8, 0.95])
    assert all(onsets[c].size == 0 for c in CLASSES[1:])


# ---------------------------------------------------------------------------- separation


@pytest.fixture(scope="module")
def demo():
    audio, ex = data.demo_loop(seed=5)
    return audio, ex, split_drums(audio)


def test_five_layers_sum_to_the_input(demo):
    audio, _, split = demo
    assert split.layers.shape == (len(CLASSES),) + audio.shape
    np.testing.assert_allclose(split.layers.sum(axis=0), audio, atol=1e-4)


def test_layers_follow_their_classes(demo):
    """Each layer is closest to its own true stem, and kick/snare are well separated."""
    _, ex, split = demo
    present = [c for c in range(len(CLASSES)) if ex.onsets[CLASSES[c]].size]
    est = split.layers.mean(axis=1)
    for c in present:
        own = si_sdr(ex.stems[c:c + 1], est[c:c + 1])[0]
        others = [si_sdr(ex.stems[c:c + 1], est[k:k + 1])[0] for k in present if k != c]
        assert own > max(others), (CLASSES[c], own, others)
    for cls in ("kick", "snare"):
        c = CLASSES.index(cls)
        assert si_sdr(ex.stems[c:c + 1], est[c:c + 1])[0] > 6.0


def test_oneshots_are_hits_of_their_own_class(demo):
    _, ex, split = demo
    shots = extract_oneshots(split.layers, split.transcription)
    assert set(shots) == {c for c in CLASSES if split.transcription.onsets[c].size}
    for hit in shots.values():
        assert hit.ndim == 2 and 0 < hit.shape[1] <= SAMPLE_RATE * 1.01
    # unlabelled library = the demo kit's own sounds: the nearest must be the same class
    kit = data.synth_kit(data.HELDOUT_SEED_BASE + 5)
    names = [f"{c}{i}" for c in CLASSES for i in range(len(kit.sounds[c]))]
    lib = make_library(names, [s for c in CLASSES for s in kit.sounds[c]], [None] * len(names))
    picks = nearest_oneshots(shots, lib)
    for cls in ("kick", "snare"):
        assert lib.names[picks[cls]].startswith(cls), (cls, lib.names[picks[cls]])


# ---------------------------------------------------------------------------- MIDI


def test_midi_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    counts = {"kick": 7, "snare": 4, "hihat_open": 0, "hihat_closed": 13, "toms": 2}
    onsets = {c: np.sort(rng.uniform(0, 10, n)) for c, n in counts.items()}
    vel = {c: rng.uniform(0.1, 1, n).astype(np.float32) for c, n in counts.items()}
    path = tmp_path / "drums.mid"
    to_midi(Transcription(onsets, vel, np.zeros((5, 1))), path)
    mid = mido.MidiFile(str(path))
    notes, t, tempo = [], 0.0, 500_000
    for msg in mid.tracks[0]:
        t += mido.tick2second(msg.time, mid.ticks_per_beat, tempo)
        if msg.type == "note_on" and msg.velocity > 0:
            notes.append((msg.note, t, msg.channel))
    assert len(notes) == sum(counts.values())
    for cls, n in counts.items():
        got = sorted(tt for note, tt, _ in notes if note == GM_NOTES[cls])
        assert len(got) == n
        np.testing.assert_allclose(got, onsets[cls], atol=1.5 / 960)  # within a tick
    assert {ch for _, _, ch in notes} == {9}  # General MIDI drum channel


# ---------------------------------------------------------------------------- CLI


def _cli(argv, monkeypatch):
    from unmixer import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["unmixer.commands.drums"])
    return cli.main(argv)


def test_cli_writes_the_contract_files(tmp_path, monkeypatch):
    audio, _ = data.demo_loop(seed=2, duration_s=5.0)
    src = tmp_path / "loop.wav"
    write_wav(src, resample(audio.mean(axis=0), SAMPLE_RATE, 22050), 22050)  # mono 22.05 kHz
    out = tmp_path / "out"
    assert _cli(["drums", str(src), "--out", str(out)], monkeypatch) == 0
    info = sf.info(src)
    total = 0
    for cls in CLASSES:
        layer = sf.info(out / "layers" / f"{cls}.wav")
        assert (layer.samplerate, layer.frames, layer.channels) == (22050, info.frames, 1)
        total = total + sf.read(out / "layers" / f"{cls}.wav", dtype="float32")[0]
    ref = sf.read(src, dtype="float32")[0]
    # the layers sum to the input up to the 22.05 -> 44.1 -> 22.05 kHz resampling round trip
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((total - ref) ** 2))
    assert snr > 25, snr
    onsets = json.loads((out / "onsets.json").read_text())
    assert set(onsets) == set(CLASSES)
    n_onsets = sum(len(v["times_s"]) for v in onsets.values())
    assert n_onsets > 10
    assert all(len(v["times_s"]) == len(v["velocities"]) for v in onsets.values())
    mid = mido.MidiFile(str(out / "drums.mid"))
    assert sum(m.type == "note_on" and m.velocity > 0 for m in mid.tracks[0]) == n_onsets
    shots = sorted(p.stem for p in (out / "oneshots").glob("*.wav"))
    assert shots == sorted(c for c in CLASSES if onsets[c]["times_s"])


@pytest.mark.parametrize("content", [None, b"", b"not audio at all" * 100, "short"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, content):
    path = tmp_path / "in.wav"
    if content == "short":
        write_wav(path, np.zeros((2, 2000), dtype=np.float32) + 0.1)
    elif content is not None:
        path.write_bytes(content)
    code = _cli(["drums", str(path), "--out", str(tmp_path / "out")], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert not (tmp_path / "out" / "layers").exists()


# ---------------------------------------------------------------------------- page


def test_page_smoke():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app_pages" / "drum_splitter.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert at.info  # asks for an input
    at.button(key="drums_demo").click().run()
    assert not at.exception, at.exception
    assert len(at.metric) == len(CLASSES)
    assert sum(int(m.value.split()[0]) for m in at.metric) > 10
    assert not at.error
