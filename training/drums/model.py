"""The drum-transcription CNN (PyTorch; needed only to train and export, see ``train.py``).

The seed's network (Koretzky & Rajashekharappa, ISMIR 2021 LBD, Fig. 2) is three blocks of
two 3x3 convolutions and a max-pooling, dropout, a 128-unit dense layer and one sigmoid per
class. Theirs pools 5x5 in time and frequency and gives one output per 344-frame segment; ours
pools in frequency only (80 -> 20 -> 5 -> 1 mel bands) and applies the dense layers to every
frame (as 1-D convolutions, the second one dilated to see +-12 frames, 140 ms, which tells an
open hi-hat's ring from a closed one), so one pass over a whole song gives an onset profile at
the STFT frame rate. Batch normalisation after each convolution speeds up training on a CPU; at
export it folds into the convolutions. About 0.15 M parameters, 0.6 MB of float32 weights.
"""

from __future__ import annotations

import torch
from torch import nn

from unmixer.drums import CLASSES
from unmixer.drums.features import N_MELS

CHANNELS = (16, 32, 64)
"""Channels of the three convolution blocks."""

POOLS = (4, 4, 5)
"""Max-pooling factors in frequency of the three blocks (80 mel bands -> 1)."""


def _block(c_in: int, c_out: int, pool: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d((pool, 1)), nn.Dropout(dropout),
    )


class DrumCNN(nn.Module):
    """Log-mel spectrogram in, one onset probability per class and frame out.

    Input: tensor, shape=(batch, 1, N_MELS, frames). Output: shape=(batch, 5, frames), in
    (0, 1), classes in the order of :data:`unmixer.drums.CLASSES`.
    """

    def __init__(self, n_mels: int = N_MELS, n_classes: int = len(CLASSES),
                 dense: int = 128) -> None:
        super().__init__()
        if n_mels % (POOLS[0] * POOLS[1] * POOLS[2]):
            raise ValueError(f"n_mels={n_mels} is not a multiple of the pooling {POOLS}")
        chans = (1,) + CHANNELS
        self.features = nn.Sequential(*[
            _block(chans[i], chans[i + 1], POOLS[i], (0.0, 0.1, 0.25)[i]) for i in range(3)
        ])
        height = n_mels // (POOLS[0] * POOLS[1] * POOLS[2])
        self.head = nn.Sequential(
            nn.Conv1d(CHANNELS[-1] * height, dense, 5, padding=2), nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Conv1d(dense, dense, 3, padding=12, dilation=12), nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Conv1d(dense, n_classes, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs, shape=(batch, classes, frames)."""
        h = self.features(x)
        return self.head(h.flatten(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))
