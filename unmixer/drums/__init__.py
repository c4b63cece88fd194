"""Drum Splitter: transcription-driven NMF with a small CNN trained on generated drum patterns.

Pipeline (Koretzky & Rajashekharappa, "Transcription-driven spectral basis learning for audio
source separation combining CNNs and NMF", ISMIR 2021 LBD):

1. :mod:`unmixer.drums.features`: log-mel spectrogram of the mix (the CNN input).
2. :mod:`unmixer.drums.transcribe`: the CNN (ONNX, onnxruntime) gives one onset profile per
   class; peak picking gives onset times (s) and velocities; MIDI export with mido.
3. :mod:`unmixer.drums.separate`: the smoothed onset profiles instantiate the activations H,
   KL-NMF learns the spectral bases W, Wiener masks and the mixture's phase give five layers.
4. :mod:`unmixer.drums.oneshots`: the cleanest hit per class, and sample replacement by
   nearest neighbour on MFCC statistics.

Training (needs PyTorch, ``requirements-train.txt``) lives outside the library: :mod:`unmixer.datasets.drums` generates
the patterns, :mod:`training.drums.model` is the network, ``python -m training.drums.train``
trains and exports ``unmixer/drums/weights/drum_cnn.onnx``.
"""

from __future__ import annotations

CLASSES = ("kick", "snare", "hihat_open", "hihat_closed", "toms")
"""The five drum classes, in the order of the CNN outputs and of every class axis."""

CLASS_LABELS = {
    "kick": "Kick",
    "snare": "Snare / clap",
    "hihat_open": "Open hi-hat",
    "hihat_closed": "Closed hi-hat",
    "toms": "Toms / cowbell",
}
"""Display names of the classes."""

GM_NOTES = {"kick": 36, "snare": 38, "hihat_open": 46, "hihat_closed": 42, "toms": 45}
"""General MIDI percussion key (channel 10) written for each class in the MIDI export."""

__all__ = ["CLASSES", "CLASS_LABELS", "GM_NOTES"]
