"""Generated music with exact ground truth, like ``sklearn.datasets.make_*``.

:func:`unmixer.datasets.synth.make_song` makes loop songs (stems, layout, downbeats) for the
loop engine's tests and benchmarks; :mod:`unmixer.datasets.drums` makes drum patterns with
exact onsets for the Drum Splitter's training, tests and demo.
"""
