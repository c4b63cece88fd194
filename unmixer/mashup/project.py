"""A mashup you can keep: one file with the deck and every loop clip, that opens anywhere.

The file (``.unmixer``) is a ZIP: ``mashup.json`` (the deck's tempo, length and key, and per
song its loop map, grid, key and every loop's label, gain and place in the mix) and the
loops themselves as 32-bit float WAV (``songs/NN_<song id>/loop_KK.wav``), so that unzipped
it is also a folder of loops any audio program opens. Opening it needs no analysis: the loops
are in it (:func:`open_mashup` checks everything and says in one line what is wrong with a
file that is not one, is damaged, or comes from a newer Unmixer).

The clips are kept bit for bit, not as 24-bit FLAC: Rubber Band's pitch shift is not a
continuous function of its input (its transient detector resets phases), so a clip that
differs by one 24-bit step (6e-8) came out of the same -4 semitone shift up to 0.32 apart,
and a reopened mashup's mix differed from the saved one in 35% of its samples.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from unmixer.core.audio import SAMPLE_RATE, zip_bytes
from unmixer.errors import UnmixerError

FORMAT = "unmixer-mashup"
"""The ``format`` field of ``mashup.json``: tells our files from other ZIPs."""

VERSION = 1
"""The version of the file format this code writes and the newest it opens."""

SUFFIX = ".unmixer"
"""The file name suffix of a saved mashup."""

MAX_SONGS = 32
MAX_FILE_BYTES = 1 << 30
"""Files whose contents would unpack to more than this (1 GiB) are refused."""


@dataclass
class MashupSong:
    """One song of a mashup.

    Attributes
    ----------
    id : str, the song's id (from its file's contents; loop ids are built from it)
    name : str, the song's file name
    n_loops : int or "auto", the loop count the loops were extracted with
    extraction : unmixer.loops.pipeline.Extraction, without full-length tracks
    gains_db : dict, loop index (1-based) -> gain in the mix (dB)
    in_mix : list of int, the loop indices in the mix
    semitones : int or None, the user's own transposition of the song (None: automatic)
    loop_bars : int, "auto" or None, the loop length the loops were extracted with (None:
        the extraction's ``loop_bars``)
    """

    id: str
    name: str
    n_loops: int | str
    extraction: object
    gains_db: dict[int, float] = field(default_factory=dict)
    in_mix: list[int] = field(default_factory=list)
    semitones: int | None = None
    loop_bars: int | str | None = None


@dataclass
class Mashup:
    """The deck: tempo (BPM), length (bars), key, whether it matches keys, and its songs."""

    bpm: float
    n_bars: int
    key: str | None
    match_keys: bool
    songs: list[MashupSong]

    @property
    def n_in_mix(self) -> int:
        return sum(len(song.in_mix) for song in self.songs)


def save_mashup(mashup: Mashup) -> bytes:
    """The bytes of a ``.unmixer`` file holding ``mashup`` (see the module docstring).

    Parameters
    ----------
    mashup : Mashup

    Returns
    -------
    bytes: a ZIP with ``mashup.json`` and one WAV per loop (32-bit float, 44.1 kHz, stereo,
    the clip exactly).

    Raises
    ------
    UnmixerError
        If the mashup has no song.
    """
    import soundfile as sf

    from unmixer import __version__

    if not mashup.songs:
        raise UnmixerError("There is nothing to save: add a song first.")
    files, songs = {}, []
    for number, song in enumerate(mashup.songs, start=1):
        ext = song.extraction
        folder = f"songs/{number:02d}_{_safe(song.id)}"
        loops = []
        for loop in ext.loops:
            buf = io.BytesIO()  # float: exactly the clip, louder than full scale too
            sf.write(buf, np.asarray(loop.clip, dtype=np.float32).T, int(ext.sr), format="WAV",
                     subtype="FLOAT")
            path = f"{folder}/loop_{loop.index:02d}.wav"
            files[path] = buf.getvalue()
            loops.append({"index": int(loop.index), "file": path,
                          "gain_db": float(song.gains_db.get(loop.index, 0.0)),
                          "in_mix": loop.index in song.in_mix})
        loop_bars = ext.loop_bars if song.loop_bars is None else song.loop_bars
        songs.append({"id": song.id, "name": song.name, "n_loops": song.n_loops,
                      "loop_bars": loop_bars if loop_bars == "auto" else int(loop_bars),
                      "semitones": song.semitones, "loops": loops,
                      "extraction": ext.metadata()})
    manifest = {"format": FORMAT, "version": VERSION, "saved_by": f"unmixer {__version__}",
                "deck": {"bpm": float(mashup.bpm), "bars": int(mashup.n_bars),
                         "key": mashup.key, "match_keys": bool(mashup.match_keys)},
                "songs": songs}
    return zip_bytes({"mashup.json": json.dumps(manifest, indent=1).encode(), **files})


def open_mashup(data: bytes, name: str = "The file") -> Mashup:
    """Read a ``.unmixer`` file written by :func:`save_mashup`, checking everything first.

    Parameters
    ----------
    data : bytes, the file's contents
    name : str, the file's name, for the messages

    Returns
    -------
    Mashup, every song's Extraction rebuilt from the file (clips, loop map, grid, key)

    Raises
    ------
    UnmixerError
        With one line saying what is wrong: not an Unmixer mashup file (not a ZIP, no
        ``mashup.json``, another ``format``), saved by a newer Unmixer (a higher
        ``version``), or damaged (unreadable JSON, missing or wrong fields, a clip missing or
        undecodable, too large).
    """
    not_ours = UnmixerError(f"{name} is not an Unmixer mashup file (save one with "
                            f"“Save mashup”: a {SUFFIX} file).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise not_ours from None
    with archive:
        try:
            infos = {info.filename: info for info in archive.infolist()}
        except (zipfile.BadZipFile, OSError):
            raise not_ours from None
        if "mashup.json" not in infos:
            raise not_ours
        if sum(info.file_size for info in infos.values()) > MAX_FILE_BYTES:
            raise UnmixerError(f"{name} is too large to be a mashup (over "
                               f"{MAX_FILE_BYTES >> 20} MB unpacked).")
        try:
            manifest = json.loads(archive.read("mashup.json").decode("utf-8"))
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, EOFError) as err:
            raise _damaged(name, f"its mashup.json cannot be read: {err}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise not_ours
        version = manifest.get("version")
        if not isinstance(version, int) or version < 1:
            raise _damaged(name, f"unknown format version {version!r}")
        if version > VERSION:
            raise UnmixerError(f"{name} was saved by a newer Unmixer (mashup format "
                               f"{version}); this one opens format {VERSION}. Update Unmixer "
                               "to open it.")
        try:
            return _read(manifest, archive, name)
        except UnmixerError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError,
                zipfile.BadZipFile, OSError, EOFError) as err:
            raise _damaged(name, _describe(err)) from None


def _read(manifest: dict, archive: zipfile.ZipFile, name: str) -> Mashup:
    import soundfile as sf

    from unmixer.loops import MAX_LOOPS
    from unmixer.loops.key import Key
    from unmixer.loops.pipeline import Extraction

    deck = manifest["deck"]
    bpm, n_bars = float(deck["bpm"]), int(deck["bars"])
    if not (np.isfinite(bpm) and bpm > 0 and n_bars > 0):
        raise ValueError(f"tempo {bpm} BPM, {n_bars} bars")
    key = None if deck.get("key") is None else Key.parse(deck["key"]).name
    songs_meta = manifest["songs"]
    if not isinstance(songs_meta, list) or not 1 <= len(songs_meta) <= MAX_SONGS:
        raise ValueError(f"it holds {len(songs_meta) if isinstance(songs_meta, list) else 'no'} songs")
    songs = []
    for meta in songs_meta:
        loops_meta = meta["loops"]
        if not isinstance(loops_meta, list) or not 1 <= len(loops_meta) <= MAX_LOOPS:
            raise ValueError("a song without loops")
        clips = []
        for loop in loops_meta:
            try:
                audio, sr = sf.read(io.BytesIO(archive.read(str(loop["file"]))), dtype="float32",
                                    always_2d=True)
            except KeyError:
                raise ValueError(f"the clip {loop['file']} is missing") from None
            except (sf.LibsndfileError, RuntimeError) as err:
                raise ValueError(f"the clip {loop['file']} cannot be decoded ({err})") from None
            if sr != SAMPLE_RATE or audio.shape[1] != 2 or audio.shape[0] < 1024:
                raise ValueError(f"the clip {loop['file']} is not a stereo 44.1 kHz loop")
            clips.append(audio.T * np.float32(float(loop.get("scale", 1.0))))
        extraction = Extraction.from_metadata(meta["extraction"], clips)
        if extraction.key is not None:
            extraction.key = Key.parse(extraction.key).name
        indices = [int(loop["index"]) for loop in loops_meta]
        if indices != [lp.index for lp in extraction.loops]:
            raise ValueError("its loops are out of order")
        n_loops = meta["n_loops"]
        if n_loops != "auto":
            n_loops = int(n_loops)
        semitones = meta.get("semitones")
        loop_bars = meta.get("loop_bars", extraction.loop_bars)
        if loop_bars != "auto":
            loop_bars = int(loop_bars)
        songs.append(MashupSong(
            id=_safe(str(meta["id"])), name=str(meta["name"]), n_loops=n_loops,
            extraction=extraction,
            gains_db={int(lp["index"]): float(lp.get("gain_db", 0.0)) for lp in loops_meta},
            in_mix=[int(lp["index"]) for lp in loops_meta if lp.get("in_mix")],
            semitones=None if semitones is None else int(semitones), loop_bars=loop_bars))
    if len({s.id for s in songs}) != len(songs):
        raise ValueError("a song appears twice")
    return Mashup(bpm, n_bars, key, bool(deck.get("match_keys", False)), songs)


def _safe(text: str) -> str:
    """An id as it may appear in a path: letters, digits, '-' and '_' (raises ValueError)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ValueError(f"bad song id {text[:20]!r}")
    return text


def _damaged(name: str, detail: str) -> UnmixerError:
    return UnmixerError(f"{name} is damaged and cannot be opened ({detail}).".replace("\n", " "))


def _describe(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"the field {err.args[0]!r} is missing"
    return str(err) or type(err).__name__
