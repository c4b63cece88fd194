"""Training examples of the drum-transcription CNN: features and frame-wise targets.

The patterns and kits come from :mod:`unmixer.datasets.drums`; this module turns them into
(log-mel, target) pairs and lists the kits used in training (never the held-out ones).
"""

from __future__ import annotations

import numpy as np

from unmixer.datasets.drums import (
    HELDOUT_SEED_BASE,
    TRAIN_GM_KITS,
    DrumExample,
    Kit,
    render_gm_kit,
    synth_kit,
)
from unmixer.drums import CLASSES
from unmixer.drums.features import log_mel, times_to_frames
from unmixer.errors import UnmixerError


def onset_targets(onsets: dict[str, np.ndarray], n_frames: int) -> np.ndarray:
    """Frame-wise training targets of the CNN.

    Parameters
    ----------
    onsets : dict class -> onset times (s)
    n_frames : int

    Returns
    -------
    np.ndarray, float32, shape=(5, n_frames): 1 at the frame nearest each onset, 0.5 on its
    two neighbours (target widening, which eases training with frame jitter), else 0.
    """
    y = np.zeros((len(CLASSES), n_frames + 2), dtype=np.float32)
    for c, cls in enumerate(CLASSES):
        f = times_to_frames(onsets.get(cls, np.zeros(0))) + 1
        f = f[(f >= 1) & (f <= n_frames)]
        np.maximum.at(y[c], f - 1, 0.5)
        np.maximum.at(y[c], f + 1, 0.5)
        y[c, f] = 1.0
    return y[:, 1:-1]


def training_kits(n_synth: int, seed: int = 0) -> list[Kit]:
    """The kits used for training: every GM kit but :data:`HELDOUT_GM_KIT` (if fluidsynth
    is installed) and ``n_synth`` synthetic kits with seeds ``seed .. seed + n_synth - 1``."""
    kits = []
    for name in TRAIN_GM_KITS:
        try:
            kits.append(render_gm_kit(name))
        except UnmixerError:
            break
    if seed + n_synth > HELDOUT_SEED_BASE:
        raise ValueError("synthetic training kit seeds overlap the held-out range")
    return kits + [synth_kit(seed + i) for i in range(n_synth)]


def feature_example(ex: DrumExample) -> tuple[np.ndarray, np.ndarray]:
    """CNN input and targets of an example: (log-mel (80, T), targets (5, T)), float32."""
    x = log_mel(ex.mix)
    return x, onset_targets(ex.onsets, x.shape[1])
