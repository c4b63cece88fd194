"""Mashups: loops from any song, time-stretched to one tempo, mixed on one bar grid, exported.

:mod:`~unmixer.mashup.stretch` (Rubber Band to a tempo), :mod:`~unmixer.mashup.mix` (bar-aligned
sum with gains) and :mod:`~unmixer.mashup.export` (file names, ZIPs). Input: the loop clips of
:func:`unmixer.extract_loops`; output: audio for the deck and the downloads.
"""

from unmixer.mashup.export import loop_filename, loops_archive, slug
from unmixer.mashup.mix import PEAK_CEILING_DBFS, PREVIEW_SAMPLE_RATE, db_to_gain, preview_wav, render_mix
from unmixer.mashup.stretch import (
                                    MAX_BPM,
                                    MAX_STRETCH,
                                    MIN_BPM,
                                    bar_samples,
                                    can_stretch,
                                    loop_samples,
                                    stretch_clips,
                                    stretch_loop,
                                    stretch_to_bpm,
)

__all__ = ["MIN_BPM", "MAX_BPM", "MAX_STRETCH", "PREVIEW_SAMPLE_RATE", "PEAK_CEILING_DBFS",
           "bar_samples", "loop_samples", "can_stretch", "stretch_loop", "stretch_to_bpm",
           "stretch_clips", "db_to_gain", "render_mix", "preview_wav", "slug", "loop_filename",
           "loops_archive"]
