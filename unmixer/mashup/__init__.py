"""Mashups: loops from any song, time-stretched to one tempo, in one key, mixed on one bar grid, exported.

:mod:`~unmixer.mashup.key` (which keys go together, how far to transpose),
:mod:`~unmixer.mashup.stretch` (Rubber Band to a tempo and a key), :mod:`~unmixer.mashup.mix`
(bar-aligned sum with gains, and its stems), :mod:`~unmixer.mashup.export` (file names, ZIPs,
the mix for a DAW) and :mod:`~unmixer.mashup.project` (a mashup saved to one file and opened
again). Input: the loop clips of :func:`unmixer.extract_loops`; output: audio for the deck and
the downloads.
"""

from unmixer.mashup.export import Stem, daw_archive, loop_filename, loop_key, loops_archive, slug
from unmixer.mashup.key import (
                                MAX_SHIFT,
                                compatible,
                                keeps_formants,
                                key_relation,
                                key_shift,
                                song_shift,
                                transposes,
)
from unmixer.mashup.mix import (
                                PEAK_CEILING_DBFS,
                                PREVIEW_SAMPLE_RATE,
                                db_to_gain,
                                preview_wav,
                                render_mix,
                                render_stems,
)
from unmixer.mashup.project import Mashup, MashupSong, open_mashup, save_mashup
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

__all__ = ["MIN_BPM", "MAX_BPM", "MAX_STRETCH", "MAX_SHIFT", "PREVIEW_SAMPLE_RATE",
           "PEAK_CEILING_DBFS", "bar_samples", "loop_samples", "can_stretch", "stretch_loop",
           "stretch_to_bpm", "stretch_clips", "key_shift", "key_relation", "compatible",
           "song_shift", "transposes", "keeps_formants", "db_to_gain", "render_mix", "render_stems", "preview_wav",
           "slug", "loop_filename", "loop_key", "loops_archive", "Stem", "daw_archive",
           "Mashup", "MashupSong", "save_mashup", "open_mashup"]
