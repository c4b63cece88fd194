"""The loop engine: song -> downbeats -> bar grid -> spectral cube -> NTD -> purified core -> loops.

In data-path order: :mod:`~unmixer.loops.beats` (madmom's downbeats), :mod:`~unmixer.loops.bargrid`
(the bar phase the loops fit), :mod:`~unmixer.loops.loopcount` (K from the song),
:mod:`~unmixer.loops.cube` (the bar-synchronous spectral cube), :mod:`~unmixer.loops.ntd`
(nonnegative Tucker decomposition, core purification, templates), :mod:`~unmixer.loops.masks`
(bar choice, Wiener masks, clips and tracks), :mod:`~unmixer.loops.labels` (drums, bass, ...);
:mod:`~unmixer.loops.pipeline` runs them all (:func:`unmixer.extract_loops`). The loops go next
to :mod:`unmixer.mashup`.
"""

AUTO = "auto"
"""The value of a setting (loop count, loop length) that asks the engine to choose it from
the song (:func:`unmixer.loops.loopcount.estimate_loop_count`)."""

MIN_LOOPS, MAX_LOOPS = 1, 12
"""The loop counts :func:`unmixer.extract_loops` accepts."""

LOOP_BARS = (1, 2, 4)
"""The loop lengths (bars) the engine accepts."""

# Constants only: importing this package must stay instant (the CLI's --help, the app's
# widgets); the modules above are imported when used.
