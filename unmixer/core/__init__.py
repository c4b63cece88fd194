"""The shared data path of every product: audio in and out, STFT and Wiener masks, metrics.

:mod:`~unmixer.core.audio` decodes any file to float32 stereo at 44.1 kHz and encodes WAV, Ogg
and ZIP; :mod:`~unmixer.core.spectrum` holds the STFT and the one Wiener-mask resynthesis that
every decomposition uses; :mod:`~unmixer.core.metrics` scores separations (SDR/SIR/SAR, SI-SDR).
"""
