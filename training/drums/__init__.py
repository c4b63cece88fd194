"""Training of the Drum Splitter's CNN: ``python -m training.drums.train``.

:mod:`~training.drums.data` turns generated patterns (:mod:`unmixer.datasets.drums`) into
(log-mel, target) pairs, :mod:`~training.drums.model` is the network, and
:mod:`~training.drums.train` trains it and exports ``unmixer/drums/weights/drum_cnn.onnx``.
"""
