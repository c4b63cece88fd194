"""``python -m unmixer drums INPUT --out DIR``: the Drum Splitter on the command line.

Writes
    DIR/layers/kick.wav, snare.wav, hihat_open.wav, hihat_closed.wav, toms.wav
        (same length, sample rate and channels as INPUT; they sum to it),
    DIR/drums.mid (General MIDI drums, channel 10),
    DIR/onsets.json ({class: {"times_s": [...], "velocities": [...]}}),
    DIR/oneshots/<class>.wav (the cleanest hit of each class that plays),
    and with --library FOLDER, DIR/replaced.wav (the pattern re-played with the nearest
    one-shots of FOLDER).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from unmixer.commands.nmf import _out_dir
from unmixer.errors import UnmixerError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``drums`` sub-command."""
    p = subparsers.add_parser(
        "drums", help="split a drum mix into kick, snare, hi-hats and toms; MIDI and one-shots",
        description="Transcribe the drums of INPUT with the CNN, learn spectral bases with "
                    "transcription-driven KL-NMF and write five Wiener-masked layers, a MIDI "
                    "file, the onsets as JSON and one one-shot per class.")
    p.add_argument("input", help="drum loop or song (WAV, FLAC, OGG, MP3, M4A ...), >= 1 s")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--full-song", action="store_true",
                   help="take the percussive part (HPSS) first, for a song rather than drums")
    p.add_argument("--library", help="folder of one-shots: also write replaced.wav")
    p.add_argument("--iterations", "-n", type=int, default=25,
                   help="KL-NMF iterations learning W with H fixed (default 25)")
    p.set_defaults(func=run)


def _input_format(path: str, audio: np.ndarray) -> tuple[int, int, int]:
    """(sample rate Hz, samples, channels) of the file as stored (44.1 kHz stereo if unknown)."""
    import soundfile as sf

    from unmixer.core.audio import SAMPLE_RATE

    try:
        info = sf.info(path)
        return int(info.samplerate), int(info.frames), int(info.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError):  # ffmpeg decoded it: keep its format
        return SAMPLE_RATE, audio.shape[-1], 2


def _to_format(x: np.ndarray, sr: int, n: int, channels: int) -> np.ndarray:
    from unmixer.core.audio import SAMPLE_RATE, resample

    x = resample(x, SAMPLE_RATE, sr)
    x = x[..., :n] if x.shape[-1] >= n else np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])
    if channels == 1:
        x = x.mean(axis=-2, keepdims=True)
    return x


def run(args: argparse.Namespace) -> int:
    from unmixer.core.audio import load_audio, write_wav
    from unmixer.drums import CLASSES
    from unmixer.drums.oneshots import extract_oneshots, load_library, replace_samples
    from unmixer.drums.separate import MIN_DURATION_S, percussive_part, split_drums
    from unmixer.drums.transcribe import to_midi

    if args.iterations < 1:
        raise UnmixerError(f"--iterations must be at least 1, got {args.iterations}")
    library = load_library(args.library) if args.library else None
    audio = load_audio(args.input, min_duration_s=MIN_DURATION_S)
    sr, n, channels = _input_format(args.input, audio)
    out = _out_dir(args.out)
    drums = percussive_part(audio) if args.full_song else audio
    split = split_drums(drums, n_iter=args.iterations)
    layers = _to_format(split.layers, sr, n, channels)
    for cls, layer in zip(CLASSES, layers):
        write_wav(out / "layers" / f"{cls}.wav", layer, sr, subtype="FLOAT")
    to_midi(split.transcription, out / "drums.mid")
    (out / "onsets.json").write_text(json.dumps(split.transcription.to_json(), indent=1) + "\n")
    oneshots = extract_oneshots(split.layers, split.transcription)
    for cls, hit in oneshots.items():
        write_wav(out / "oneshots" / f"{cls}.wav", hit)
    counts = ", ".join(f"{cls} {split.transcription.onsets[cls].size}" for cls in CLASSES)
    print(f"onsets: {counts}")
    if library is not None:
        replaced, chosen = replace_samples(split.transcription, oneshots, library,
                                           audio.shape[-1], reference=drums)
        write_wav(out / "replaced.wav", replaced)
        print("replacements: " + ", ".join(f"{c} <- {name}" for c, name in chosen.items()))
    print(f"wrote {out}/layers/*.wav, drums.mid, onsets.json, oneshots/")
    return 0
