"""Real music with exact stems (issue 14): built from Debian packages, never committed.

Game soundtracks shipped in Debian are rendered one instrument at a time:

* tracker modules (``.mod``, ``.xm``, ``.s3m``, ``.it``) by **libopenmpt** (the shared library
  of the ``libopenmpt0`` package, through ctypes), every instrument (in formats without
  instruments, every sample) but one muted with the "interactive" extension's
  ``set_instrument_mute_status``. The mixer is linear and, once the random volume/panning
  variation of IT instruments is zeroed in memory, deterministic (checked: two renders are
  bit-identical). Where the instrument parts do not sum to the one-pass render within
  -60 dB (libopenmpt mutes at note starts, and a sample swapped in without a new note keeps
  the old one's mute), the channels are the parts instead (``set_channel_mute_status``,
  exact); the residual is recorded (``render_residual_db``, -98 dB or less);
* MIDI files by **FluidSynth** (the ``fluidsynth`` command, FluidR3_GM.sf2), one MIDI
  channel at a time (all the file's meta and system messages kept, every other channel's
  messages dropped), reverb and chorus off. The mixture is the sum of the channel renders,
  as in Slakh2100; FluidSynth's one-pass render differs from it only in short bursts where
  a note starts one 64-sample block apart (-55 to -87 dB on the corpus; recorded as
  ``render_residual_db``).

Parts are grouped into stems (:func:`group_parts`): a part holding less than 2% of the
piece's energy goes into "other", at most 8 stems are kept (the quietest merged into
"other"), and an "other" stem under 2% is dropped from the stems and the mixture alike (the
piece then loses less than 2% of its energy). The mixture is always the sum of the stems.

Two kinds of pieces:

* ``excerpt``: 30 s from a piece, starting on a pattern start (tracker) or a bar line (MIDI):
  of the starts whose 30 s hold one tempo (a single speed × tempo over at least 95% of the
  rows; a single MIDI tempo) and whose first second is not quiet (RMS at least a quarter of
  the piece's median 1-s RMS), the one where the most parts hold at least 2% of the window's
  energy, the earliest on ties (:func:`choose_excerpt`);
* ``song``: the whole piece, one pass (no repeat), silence trimmed at both ends; 2 to 5
  minutes, one tempo over at least 95% of it.

Everything is normalised to a peak of 0.9 and stored as 24-bit FLAC (the stems quantised first,
so the stored mixture is exactly their sum), under ``bench/out/real/pieces`` (git-ignored).

Tools: ``apt-get download`` and ``dpkg-deb`` (Debian); ``libopenmpt0`` 0.6.9 (the shared
library; ffmpeg in packages.txt pulls it in through libavformat59; ``libopenmpt-dev`` was only
needed to read the header); ``fluidsynth`` 2.3.1 and ``fluid-soundfont-gm`` (packages.txt);
``mido`` and ``soundfile`` (requirements.txt). Nothing is installed by the build itself.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SR = 44100
OUT = Path(__file__).resolve().parent / "out" / "real"
DEBS, UNPACKED, PIECES = OUT / "debs", OUT / "x", OUT / "pieces"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

EXCERPT_S = 30.0
SONG_MIN_S, SONG_MAX_S = 120.0, 300.0
MIN_SHARE = 0.02  # parts under 2% of the energy go into "other"
MAX_STEMS = 8
STEADY = 0.95  # one tempo over at least 95% of the span
PEAK = 0.9

EXCLUDED_PACKAGES = (  # held out for an independent check (issue 14): never download or use
    "biniax2-data", "fb-music-high", "criticalmass-data", "heroes-sound-tracks",
    "penguin-command", "gl-117-data", "kobodeluxe-data", "openttd-openmsx",
    "fretsonfire-songs-muldjord", "plee-the-bear-data",
)

# package: (version, licence of its music as debian/copyright states it, a phrase of that
# file that says so). Debian 12 (bookworm).
PACKAGES: dict[str, tuple[str, str, str]] = {
    "bomberclone-data": ("0.11.9-7.1", "GPL-2", "License: GPL-2"),
    "flobopuyo": ("0.20-5.1", "GPL-2+", "either version 2 of the License, or"),
    "freedink-data": ("1.08.20190120-2", "see FILE_LICENCES", "Sound/2.mid"),
    "freedroid-data": ("1.0.2+cvs040112-7", "GPL-2+", "License: GPL-2+"),
    "ironseed-data": ("0.3.6-5", "GPL-3+", "Files: * Copyright: 1994 Channel 7"),
    "njam-data": ("1.25-12", "GPL-2+", "License: GPL-2.0+"),
    "open-invaders-data": ("0.3-8", "GPL-2+", "License: GPL-2+"),
    "pekka-kana-2-data": ("1.2.7-1", "BSD-2-Clause", "License: BSD-2-Clause"),
    "pingus-data": ("0.7.6-5.1", "GPL-2+", "either version 2 of the License, or"),
    "planetblupi-music-midi": ("1.14.2-3", "GPL-3+", "License: GPL-3+"),
    "rafkill-data": ("1.2.2-7", "LGPL-2", "License: LGPL-2"),
    "ri-li-data": ("2.0.1+ds2-2", "GPL-2 or GPL-3", "License: GPL-2 or GPL-3"),
    "rockdodger": ("1.1.4-2", "GPL-2+", "either version 2 of the License, or"),
    "simutrans-data": ("123.0.1-1", "Artistic-1.0", "License: Artistic-1.0"),
    "solarwolf": ("1.5+dfsg1-6", "LGPL-2.1", "License: LGPL-2.1"),
    "tecnoballz-data": ("0.93.1-10", "GPL-3+", "License: GPL-3+"),
    "tomatoes-data": ("1.55-10", "Zlib", "License: Zlib"),
    "vodovod": ("1.10-5", "GPL-2+", "License: GPL-2+"),
}
# Files whose licence differs from the package's (freedink-data's README-REPLACEMENTS and
# copyright list each replacement music with its own licence).
FILE_LICENCES = {
    "freedink-data/usr/share/games/dink/dink/Sound/2.mid": "Zlib (Seth A. Robinson)",
    "freedink-data/usr/share/games/dink/dink/Sound/7.mid": "GPL-3+ (Joshua O'Leary)",
    "freedink-data/usr/share/games/dink/dink/Sound/18.mid": "GPL-3+ (Joshua O'Leary)",
}
MUSIC = re.compile(r"\.(mod|xm|s3m|it|mid)$", re.IGNORECASE)

# The corpus: (kind, package, path inside the package). Chosen by ``bench/real.py scan``'s
# rule (see its docstring) and frozen here, so a build always renders the same pieces.
MANIFEST: list[tuple[str, str, str]] = [
    ('excerpt', 'bomberclone-data', 'usr/share/games/bomberclone/music/cerror-bobmberclone.xm'),
    ('excerpt', 'flobopuyo', 'usr/share/games/flobopuyo/sfx/flobopuyo_game1.xm'),
    ('excerpt', 'freedink-data', 'usr/share/games/dink/dink/Sound/18.mid'),
    ('excerpt', 'freedroid-data', 'usr/share/games/freedroid/sound/AnarchyMenu1.mod'),
    ('excerpt', 'ironseed-data', 'usr/share/games/ironseed/sound/AARD.MOD'),
    ('excerpt', 'njam-data', 'usr/share/games/njam/data/dali.xm'),
    ('excerpt', 'open-invaders-data', 'usr/share/open-invaders/endsong.mod'),
    ('excerpt', 'pekka-kana-2-data', 'usr/share/games/pekka-kana-2/data/music/bigboss.xm'),
    ('excerpt', 'pingus-data', 'usr/share/games/pingus/data/music/gd-matth.it'),
    ('excerpt', 'planetblupi-music-midi', 'usr/share/planetblupi/music/music000.mid'),
    ('excerpt', 'rafkill-data', 'usr/share/games/rafkill/data/intro.mod'),
    ('excerpt', 'ri-li-data', 'usr/share/games/ri-li/Ri-li/Sounds/menu.mod'),
    ('excerpt', 'rockdodger', 'usr/share/rockdodger/front_1.mod'),
    ('excerpt', 'simutrans-data', 'usr/share/games/simutrans/music/01-Simutrans-Main-Theme.mid'),
    ('excerpt', 'solarwolf', 'usr/share/games/solarwolf/data/music/arg.xm'),
    ('excerpt', 'tecnoballz-data', 'usr/share/games/tecnoballz/musics/area1-game.mod'),
    ('excerpt', 'tomatoes-data', 'usr/share/tomatoes/music/IHaveNoTomatoes.it'),
    ('excerpt', 'vodovod', 'usr/share/games/vodovod/flow.xm'),
    ('excerpt', 'bomberclone-data', 'usr/share/games/bomberclone/music/cerror-bomberclone_numero_2.xm'),
    ('excerpt', 'flobopuyo', 'usr/share/games/flobopuyo/sfx/flobopuyo_game2.xm'),
    ('excerpt', 'freedink-data', 'usr/share/games/dink/dink/Sound/2.mid'),
    ('excerpt', 'freedroid-data', 'usr/share/games/freedroid/sound/The_Last_V8.mod'),
    ('excerpt', 'ironseed-data', 'usr/share/games/ironseed/sound/CARGO.MOD'),
    ('excerpt', 'njam-data', 'usr/share/games/njam/data/ritam.s3m'),
    ('song', 'bomberclone-data', 'usr/share/games/bomberclone/music/slice_me_nice.xm'),
    ('song', 'flobopuyo', 'usr/share/games/flobopuyo/sfx/strange_fear.xm'),
    ('song', 'freedink-data', 'usr/share/games/dink/dink/Sound/18.mid'),
    ('song', 'freedroid-data', 'usr/share/games/freedroid/sound/dreamfish-green_beret.mod'),
    ('song', 'ironseed-data', 'usr/share/games/ironseed/sound/CREWCOMM.MOD'),
    ('song', 'njam-data', 'usr/share/games/njam/data/satisfy.xm'),
    ('song', 'open-invaders-data', 'usr/share/open-invaders/endsong.mod'),
    ('song', 'pekka-kana-2-data', 'usr/share/games/pekka-kana-2/data/music/song02.xm'),
    ('song', 'pingus-data', 'usr/share/games/pingus/data/music/goin_march.it'),
    ('song', 'rafkill-data', 'usr/share/games/rafkill/music/song1.xm'),
    ('song', 'rockdodger', 'usr/share/rockdodger/magic.mod'),
    ('song', 'simutrans-data', 'usr/share/games/simutrans/music/02-Gotta-catch-that-train.mid'),
]


def source_path(package: str, path: str) -> Path:
    return UNPACKED / package / path


def licence_of(package: str, path: str) -> str:
    return FILE_LICENCES.get(f"{package}/{path}", PACKAGES[package][1])


# ----------------------------------------------------------------------------- packages

def check_packages() -> None:
    """Assert that no held-out package is in :data:`PACKAGES` or the manifest."""
    held = set(EXCLUDED_PACKAGES)
    assert not held & set(PACKAGES), f"held-out packages in PACKAGES: {held & set(PACKAGES)}"
    assert not held & {p for _, p, _ in MANIFEST}, "held-out package in the manifest"
    assert {p for _, p, _ in MANIFEST} <= set(PACKAGES), "manifest package not pinned"
    for key in FILE_LICENCES:
        assert key.split("/")[0] in PACKAGES


def fetch_packages(packages: list[str] | None = None, log=print) -> None:
    """``apt-get download PKG=VERSION`` into bench/out/real/debs and ``dpkg-deb -x`` each.

    Raises
    ------
    RuntimeError
        If a pinned version cannot be downloaded or a copyright file does not state the
        licence recorded in :data:`PACKAGES`.
    """
    check_packages()
    DEBS.mkdir(parents=True, exist_ok=True)
    for pkg in packages or sorted(PACKAGES):
        assert pkg not in EXCLUDED_PACKAGES
        version = PACKAGES[pkg][0]
        debs = list(DEBS.glob(f"{pkg}_*.deb"))
        want = [d for d in debs if d.name.split("_")[1].replace("%3a", ":").split(":")[-1] == version.split(":")[-1]]
        if not want:
            log(f"  apt-get download {pkg}={version}")
            run = subprocess.run(["apt-get", "download", "-q", f"{pkg}={version}"], cwd=DEBS,
                                 capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"apt-get download {pkg}={version} failed: {run.stderr.strip()}")
            want = [d for d in DEBS.glob(f"{pkg}_*.deb")]
        dest = UNPACKED / pkg
        if not dest.exists():
            tmp = UNPACKED / f".{pkg}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(want[0]), str(tmp)], check=True)
            tmp.rename(dest)
        text = " ".join((dest / "usr/share/doc" / pkg / "copyright").read_text(errors="replace").split())
        if PACKAGES[pkg][2].lower() not in text.lower():
            raise RuntimeError(f"{pkg}: its copyright file does not say {PACKAGES[pkg][2]!r}")


def music_files(package: str) -> list[str]:
    """Paths (inside the package) of its tracker modules and MIDI files, sorted."""
    root = UNPACKED / package
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and MUSIC.search(p.name) and "/doc/" not in str(p))


# ----------------------------------------------------------------------------- libopenmpt

class _Interactive(ctypes.Structure):
    """``openmpt_module_ext_interface_interactive`` (libopenmpt_ext.h), in its field order."""

    _MUTE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int)
    _fields_ = ([(n, ctypes.c_void_p) for n in (
        "set_current_speed", "set_current_tempo", "set_tempo_factor", "get_tempo_factor",
        "set_pitch_factor", "get_pitch_factor", "set_global_volume", "get_global_volume",
        "set_channel_volume", "get_channel_volume")]
        + [("set_channel_mute_status", _MUTE), ("get_channel_mute_status", ctypes.c_void_p),
           ("set_instrument_mute_status", _MUTE), ("get_instrument_mute_status", ctypes.c_void_p),
           ("play_note", ctypes.c_void_p), ("stop_note", ctypes.c_void_p)])


def _openmpt():
    lib = ctypes.CDLL("libopenmpt.so.0")
    vp, i32, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p
    sig = {
        "openmpt_module_ext_create_from_memory": (vp, [vp, ctypes.c_size_t, vp, vp, vp, vp,
                                                       ctypes.POINTER(ctypes.c_int), vp, vp]),
        "openmpt_module_ext_get_module": (vp, [vp]),
        "openmpt_module_ext_get_interface": (ctypes.c_int, [vp, cp, vp, ctypes.c_size_t]),
        "openmpt_module_ext_destroy": (None, [vp]),
        "openmpt_module_read_interleaved_float_stereo": (ctypes.c_size_t, [vp, i32, ctypes.c_size_t, vp]),
        "openmpt_module_set_render_param": (ctypes.c_int, [vp, ctypes.c_int, i32]),
        "openmpt_module_ctl_set_text": (ctypes.c_int, [vp, cp, cp]),
        "openmpt_module_ctl_set_boolean": (ctypes.c_int, [vp, cp, ctypes.c_int]),
        "openmpt_module_set_repeat_count": (ctypes.c_int, [vp, i32]),
        "openmpt_module_select_subsong": (ctypes.c_int, [vp, i32]),
        "openmpt_module_get_duration_seconds": (ctypes.c_double, [vp]),
        "openmpt_module_get_instrument_name": (vp, [vp, i32]),
        "openmpt_module_get_sample_name": (vp, [vp, i32]),
        "openmpt_free_string": (None, [vp]),
        "openmpt_get_library_version": (ctypes.c_uint32, []),
    }
    for name in ("num_instruments", "num_samples", "num_channels", "current_speed",
                 "current_tempo", "current_order", "current_row"):
        sig[f"openmpt_module_get_{name}"] = (i32, [vp])
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_LIB = None


def openmpt_version() -> str:
    global _LIB
    _LIB = _LIB or _openmpt()
    v = _LIB.openmpt_get_library_version()
    return f"{v >> 24}.{(v >> 16) & 0xFF}.{v & 0xFFFF}"


def zero_it_random_variation(data: bytes) -> tuple[bytes, int]:
    """IT instruments' random volume and panning variation (bytes 0x1A, 0x1B of each
    ``IMPI`` header) set to 0, so that renders are deterministic; returns (data, how many
    instruments had it). Other formats are returned unchanged.

    Source: the IT format description (ITTECH.TXT, "Impulse Instrument Format": RV, RP).
    """
    if data[:4] != b"IMPM":
        return data, 0
    buf = bytearray(data)
    n_orders, n_instruments = struct.unpack_from("<2H", buf, 0x20)
    changed = 0
    for i in range(n_instruments):
        p = struct.unpack_from("<I", buf, 0xC0 + n_orders + 4 * i)[0]
        if buf[p:p + 4] == b"IMPI" and (buf[p + 0x1A] or buf[p + 0x1B]):
            buf[p + 0x1A] = buf[p + 0x1B] = 0
            changed += 1
    return bytes(buf), changed


class TrackerModule:
    """One tracker module in libopenmpt, rendered at 44.1 kHz stereo float32.

    Settings: subsong 0, no repeat, stop at the song's end, 8-tap windowed-sinc
    interpolation for every format (Amiga resampler emulation off), default volume ramping
    and stereo separation.
    """

    def __init__(self, data: bytes):
        global _LIB
        _LIB = _LIB or _openmpt()
        self.data, self.patched = zero_it_random_variation(data)
        with self._open() as (_, mod, _):
            self.n_instruments = _LIB.openmpt_module_get_num_instruments(mod)
            self.n_samples = _LIB.openmpt_module_get_num_samples(mod)
            self.duration_s = _LIB.openmpt_module_get_duration_seconds(mod)
            self.n_channels = _LIB.openmpt_module_get_num_channels(mod)
            get = _LIB.openmpt_module_get_instrument_name if self.n_instruments else _LIB.openmpt_module_get_sample_name
            self.part_names = []
            for i in range(self.n_parts):
                ptr = get(mod, i)
                self.part_names.append(ctypes.string_at(ptr).decode("latin-1").strip() if ptr else "")
                if ptr:
                    _LIB.openmpt_free_string(ptr)

    @property
    def n_parts(self) -> int:
        """Instruments, or samples where the format has no instruments."""
        return self.n_instruments or self.n_samples

    class _Handle:
        def __init__(self, data):
            err = ctypes.c_int(0)
            self.ext = _LIB.openmpt_module_ext_create_from_memory(data, len(data), None, None, None,
                                                                   None, ctypes.byref(err), None, None)
            if not self.ext:
                raise RuntimeError(f"libopenmpt cannot load this module (error {err.value})")
            self.mod = _LIB.openmpt_module_ext_get_module(self.ext)
            self.ia = _Interactive()
            if not _LIB.openmpt_module_ext_get_interface(self.ext, b"interactive", ctypes.byref(self.ia),
                                                         ctypes.sizeof(self.ia)):
                raise RuntimeError("libopenmpt has no 'interactive' interface")
            m = self.mod
            _LIB.openmpt_module_select_subsong(m, 0)
            _LIB.openmpt_module_set_repeat_count(m, 0)
            _LIB.openmpt_module_ctl_set_text(m, b"play.at_end", b"stop")
            _LIB.openmpt_module_ctl_set_boolean(m, b"render.resampler.emulate_amiga", 0)
            _LIB.openmpt_module_set_render_param(m, 3, 8)  # INTERPOLATIONFILTER_LENGTH: sinc
            _LIB.openmpt_module_set_render_param(m, 4, -1)  # VOLUMERAMPING_STRENGTH: default

        def __enter__(self):
            return self.ext, self.mod, self.ia

        def __exit__(self, *exc):
            _LIB.openmpt_module_ext_destroy(self.ext)

    def _open(self):
        return self._Handle(self.data)

    def render(self, parts: list[int] | None = None, max_s: float | None = None,
               by: str = "instrument") -> np.ndarray:
        """The module with every part but ``parts`` muted (all parts if None), shape (2, n),
        float32, up to ``max_s`` seconds (default: to the song's end). Parts are instruments
        (samples in formats without instruments) or, with ``by="channel"``, channels."""
        with self._open() as (ext, mod, ia):
            if parts is not None:
                keep = set(parts)
                mute = ia.set_channel_mute_status if by == "channel" else ia.set_instrument_mute_status
                for i in range(self.n_channels if by == "channel" else self.n_parts):
                    mute(ext, i, int(i not in keep))
            total = int(round((max_s if max_s else self.duration_s + 10.0) * SR))
            buf = np.zeros((total, 2), dtype=np.float32)
            pos = 0
            while pos < total:
                n = _LIB.openmpt_module_read_interleaved_float_stereo(
                    mod, SR, min(16384, total - pos), buf[pos:].ctypes.data)
                if n == 0:
                    break
                pos += n
        return np.ascontiguousarray(buf[:pos].T)

    def timeline(self, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Row starts of the whole (one-pass) song.

        Returns
        -------
        rows : np.ndarray, shape=(n_rows, 5), int64: sample of the row's start (±``block``),
            order, row, speed (ticks per row), tempo
        n : the song's length in samples
        """
        with self._open() as (_, mod, _):
            buf = np.zeros(block * 2, dtype=np.float32)
            pos, rows, last = 0, [], None
            while True:
                n = _LIB.openmpt_module_read_interleaved_float_stereo(mod, SR, block, buf.ctypes.data)
                if n == 0:
                    break
                key = (_LIB.openmpt_module_get_current_order(mod), _LIB.openmpt_module_get_current_row(mod))
                if key != last:
                    rows.append((pos, *key, _LIB.openmpt_module_get_current_speed(mod),
                                 _LIB.openmpt_module_get_current_tempo(mod)))
                    last = key
                pos += n
        return np.asarray(rows, dtype=np.int64).reshape(-1, 5), pos


def tracker_structure(module: TrackerModule) -> dict:
    """Pattern starts and tempo steadiness of a module's rows.

    Returns
    -------
    dict with ``starts`` (samples of the rows that begin an order's pattern), ``row_start``
    (all row starts, samples), ``tempo_id`` (per row, an integer naming its speed × tempo),
    ``n`` (song length, samples) and ``bpm`` (the most common speed × tempo as beats per
    minute at 4 rows per beat: 60 / (4 · 2.5 · speed / tempo))
    """
    rows, n = module.timeline()
    if len(rows) == 0:
        raise RuntimeError("the module plays no rows")
    keys = rows[:, 3] * 1000 + rows[:, 4]
    _, tempo_id = np.unique(keys, return_inverse=True)
    dur = np.diff(np.r_[rows[:, 0], n])
    common = np.bincount(tempo_id, weights=dur).argmax()
    speed, tempo = rows[tempo_id == common][0, 3:5]
    return {"starts": rows[rows[:, 2] == 0, 0], "row_start": rows[:, 0], "tempo_id": tempo_id,
            "n": int(n), "bpm": float(60.0 / (4 * 2.5 * speed / tempo))}


def steady_fraction(row_start: np.ndarray, tempo_id: np.ndarray, a: int, b: int) -> float:
    """The largest share of [a, b) samples played at one speed × tempo (tracker rows) or one
    MIDI tempo (tempo segments)."""
    edges = np.r_[row_start, np.iinfo(np.int64).max]
    lo, hi = np.clip(edges[:-1], a, b), np.clip(edges[1:], a, b)
    return float(np.bincount(tempo_id, weights=hi - lo).max() / max(b - a, 1))


# ----------------------------------------------------------------------------- MIDI

GM_FAMILIES = ("piano", "chromatic perc", "organ", "guitar", "bass", "strings", "ensemble",
               "brass", "reed", "pipe", "synth lead", "synth pad", "synth fx", "ethnic",
               "percussive", "sound fx")


def midi_structure(path: Path) -> dict:
    """Channels, bar lines and tempo segments of a MIDI file (mido).

    Returns
    -------
    dict with ``channels`` (channels with notes), ``names`` (per channel: "drums" for channel
    10, else the General MIDI family of its first program), ``starts`` (bar lines, samples,
    from the time signatures; 4/4 by default), ``row_start`` / ``tempo_id`` (tempo segments:
    start sample and an integer naming the tempo), ``n`` (the last event, samples) and
    ``bpm`` (the longest-held tempo, quarter notes per minute)
    """
    import mido

    mid = mido.MidiFile(str(path), clip=True)
    events = []  # (tick, message)
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            events.append((tick, msg))
    events.sort(key=lambda e: e[0])
    tempos = [(0, 500000)] + [(t, m.tempo) for t, m in events if m.type == "set_tempo"]
    sigs = [(0, 4, 4)] + [(t, m.numerator, m.denominator) for t, m in events if m.type == "time_signature"]
    tpb = mid.ticks_per_beat
    last_tick = max((t for t, _ in events), default=0)
    # tick -> seconds through the tempo map
    t_ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    t_vals = np.array([v for _, v in tempos], dtype=np.float64)
    keep = np.r_[t_ticks[1:] != t_ticks[:-1], True]  # last tempo at a tick wins
    t_ticks, t_vals = t_ticks[keep], t_vals[keep]
    seg_s = np.r_[0.0, np.cumsum(np.diff(t_ticks) * t_vals[:-1] / tpb / 1e6)]

    def seconds(ticks):
        ticks = np.asarray(ticks, dtype=np.float64)
        i = np.searchsorted(t_ticks, ticks, side="right") - 1
        return seg_s[i] + (ticks - t_ticks[i]) * t_vals[i] / tpb / 1e6

    bars, sig_i = [], 0
    tick = 0.0
    sigs.sort(key=lambda s: s[0])
    while tick <= last_tick:
        while sig_i + 1 < len(sigs) and sigs[sig_i + 1][0] <= tick:
            sig_i += 1
        bars.append(tick)
        _, num, den = sigs[sig_i]
        tick += max(num * 4.0 / den * tpb, 1.0)
    channels, names = [], {}
    for t, m in events:
        if m.type == "note_on" and m.velocity > 0 and m.channel not in channels:
            channels.append(m.channel)
    for ch in channels:
        prog = next((m.program for _, m in events if m.type == "program_change" and m.channel == ch), 0)
        names[ch] = "drums" if ch == 9 else GM_FAMILIES[prog // 8]
    _, tempo_id = np.unique(t_vals, return_inverse=True)
    n = int(round(float(seconds(last_tick)) * SR))
    starts = np.round(seconds(bars) * SR).astype(np.int64)
    dur = np.diff(np.r_[np.round(seg_s * SR), n])
    bpm = 60e6 / t_vals[np.bincount(tempo_id, weights=np.maximum(dur, 0)).argmax()]
    return {"channels": sorted(channels), "names": names, "starts": starts,
            "row_start": np.round(seg_s * SR).astype(np.int64), "tempo_id": tempo_id,
            "n": n, "bpm": float(bpm), "mid": mid}


def midi_part_file(mid, path: Path, channel: int | None = None, end_s: float | None = None) -> None:
    """Write ``mid`` with only ``channel``'s channel messages (every channel if None) and
    every meta / system message, cut after ``end_s`` seconds (every note then released)."""
    import mido

    end_tick = None
    if end_s is not None:  # the tick at end_s, through the file's tempo map
        t, tick, tempo = 0.0, 0, 500000
        for msg in mido.merge_tracks(mid.tracks):
            dt = mido.tick2second(msg.time, mid.ticks_per_beat, tempo)
            if t + dt > end_s:
                tick_s = mido.tick2second(1, mid.ticks_per_beat, tempo)
                end_tick = tick + int((end_s - t) / max(tick_s, 1e-12))
                break
            t, tick = t + dt, tick + msg.time
            if msg.type == "set_tempo":
                tempo = msg.tempo
    channels = sorted({m.channel for tr in mid.tracks for m in tr if not m.is_meta and hasattr(m, "channel")})
    out = mido.MidiFile(type=mid.type, ticks_per_beat=mid.ticks_per_beat)
    for track in mid.tracks:
        new, carry, tick = mido.MidiTrack(), 0, 0
        for msg in track:
            if end_tick is not None and tick + msg.time > end_tick:
                break
            tick += msg.time
            if end_tick is not None and msg.type == "end_of_track":
                carry += msg.time
                continue
            if channel is not None and not msg.is_meta and hasattr(msg, "channel") and msg.channel != channel:
                carry += msg.time
                continue
            new.append(msg.copy(time=msg.time + carry))
            carry = 0
        if end_tick is not None:
            for ch in ([channel] if channel is not None else channels):  # all notes off
                new.append(mido.Message("control_change", channel=ch, control=123, value=0,
                                        time=end_tick - tick + carry))
                tick, carry = end_tick, 0
            new.append(mido.MetaMessage("end_of_track", time=0))
        out.tracks.append(new)
    out.save(str(path))


def fluidsynth_render(midi_path: Path, wav_path: Path) -> np.ndarray:
    """FluidSynth's render of a MIDI file, shape (2, n), float32, 44.1 kHz; reverb and chorus
    off, gain 0.5, 4096 voices (no voice stealing)."""
    import soundfile as sf

    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SR),
                    "-o", "synth.polyphony=4096", "-o", "synth.cpu-cores=1", "-T", "wav", "-O", "float",
                    "-F", str(wav_path), str(SOUNDFONT), str(midi_path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    assert sr == SR
    return np.ascontiguousarray(x.T)


def fluidsynth_version() -> str:
    out = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True).stdout
    return out.split("\n")[0].replace("FluidSynth runtime version", "").strip()


# ----------------------------------------------------------------------------- parts

FRAME = SR // 10  # 0.1-s frames for the part energies


def frame_energy(x: np.ndarray, hop: int = FRAME) -> np.ndarray:
    """Energy of ``x`` (shape (..., channels, n)) in frames of ``hop`` samples, shape (..., n // hop)."""
    n = x.shape[-1] // hop * hop
    x = x[..., :n].astype(np.float64)
    return (x * x).sum(axis=-2).reshape(x.shape[:-2] + (-1, hop)).sum(axis=-1)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad the last axis to n."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.concatenate([x, np.zeros(x.shape[:-1] + (n - x.shape[-1],), dtype=x.dtype)], axis=-1)


def _residual_db(parts_sum: np.ndarray, full: np.ndarray) -> float:
    """Energy of (sum of the parts - one-pass render) over the render's, dB."""
    n = max(parts_sum.shape[-1], full.shape[-1])
    r = _fit(parts_sum, n).astype(np.float64) - _fit(full, n)
    return float(10 * np.log10(max(np.sum(r * r), 1e-30) / max(np.sum(full.astype(np.float64) ** 2), 1e-30)))


@dataclass
class Rendered:
    """A source rendered part by part (parts are not held: :meth:`read` renders or reads them).

    Attributes
    ----------
    names : one per non-silent part
    energy : np.ndarray, shape=(n_parts, n_frames), each part's energy per 0.1-s frame
    starts : samples where an excerpt may begin (pattern starts, bar lines)
    row_start, tempo_id : tempo segments (see :func:`steady_fraction`)
    n : the piece's length (samples); bpm : its main tempo
    residual_db : energy of (sum of the parts - the one-pass render) over the render's, dB
    deterministic : two one-pass renders are bit-identical (None: not checked)
    patched : IT instruments whose random variation was zeroed
    parts_are : "instruments", "channels" (tracker) or "channels" (MIDI)
    """

    names: list[str]
    energy: np.ndarray
    starts: np.ndarray
    row_start: np.ndarray
    tempo_id: np.ndarray
    n: int
    bpm: float
    residual_db: float
    deterministic: bool | None
    patched: int
    _read: object = None
    _cleanup: object = None
    parts_are: str = "channels"

    def read(self, parts: list[int], a: int, b: int) -> np.ndarray:
        """The sum of ``parts`` over samples [a, b), shape (2, b - a), float32."""
        return self._read(parts, a, b)

    def close(self) -> None:
        if self._cleanup:
            self._cleanup()


def render_tracker(path: Path, max_s: float | None = None, exact_db: float = -60.0) -> Rendered:
    """Every instrument of a tracker module on its own (libopenmpt), up to ``max_s`` s.

    Parts are the instruments (the samples, in formats without instruments). libopenmpt
    mutes an instrument when a note starts, so a sample swapped in without a new note
    (ProTracker and XM allow it) plays under the old one's mute: when the instrument parts
    do not sum to the one-pass render within ``exact_db``, the channels are the parts
    instead (channel muting is exact). Also checks that two renders of the whole module are
    bit-identical.
    """
    module = TrackerModule(path.read_bytes())
    info = tracker_structure(module)
    full = module.render(max_s=max_s)
    deterministic = bool(np.array_equal(full, module.render(max_s=max_s)))
    n = full.shape[-1]
    for by, count in (("instrument", module.n_parts), ("channel", module.n_channels)):
        total = np.zeros_like(full)
        keep, names, energy = [], [], []
        for i in range(count):
            part = _fit(module.render([i], max_s=max_s, by=by), n)
            total += part
            if np.any(part):
                keep.append(i)
                if by == "channel":
                    names.append(f"ch{i + 1}")
                else:
                    label = module.part_names[i][:20].strip()
                    names.append(f"{'ins' if module.n_instruments else 'smp'}{i + 1}" + (f" '{label}'" if label else ""))
                energy.append(frame_energy(part))
        residual = _residual_db(total, full)
        if residual <= exact_db:
            break

    def read(parts, a, b, by=by, keep=keep):
        return _fit(module.render([keep[p] for p in parts], max_s=b / SR, by=by), b)[:, a:b]

    return Rendered(names, np.stack(energy), info["starts"], info["row_start"], info["tempo_id"],
                    min(info["n"], n), info["bpm"], residual, deterministic, module.patched, read,
                    parts_are=f"{by}s")


def render_midi(path: Path, max_s: float | None = None) -> Rendered:
    """Every channel of a MIDI file on its own (FluidSynth), up to ``max_s`` seconds.

    The channel renders stay in a temporary folder until :meth:`Rendered.close`.
    """
    import soundfile as sf

    info = midi_structure(path)
    tmp = Path(tempfile.mkdtemp(prefix="unmixer-real-"))
    files, names, energy = [], [], []
    total = None
    for ch in info["channels"]:
        midi_part_file(info["mid"], tmp / f"c{ch}.mid", ch, end_s=max_s)
        x = fluidsynth_render(tmp / f"c{ch}.mid", tmp / f"c{ch}.wav")
        total = x if total is None else _fit(total, max(total.shape[-1], x.shape[-1])) + _fit(x, max(total.shape[-1], x.shape[-1]))
        if np.any(x):
            files.append(tmp / f"c{ch}.wav")
            names.append(f"ch{ch + 1} {info['names'][ch]}")
            energy.append(frame_energy(x))
        del x
    midi_part_file(info["mid"], tmp / "all.mid", None, end_s=max_s)
    full = fluidsynth_render(tmp / "all.mid", tmp / "all.wav")
    (tmp / "all.wav").unlink()
    n = total.shape[-1] if max_s is None else min(total.shape[-1], int(round(max_s * SR)))
    frames = max(e.shape[0] for e in energy)
    energy = np.stack([_fit(e, frames) for e in energy])

    def read(parts, a, b):
        out = np.zeros((2, b - a), dtype=np.float32)
        for p in parts:
            x, _ = sf.read(str(files[p]), start=a, stop=b, dtype="float32", always_2d=True)
            out[:, : len(x)] += x.T
        return out

    return Rendered(names, energy, info["starts"], info["row_start"], info["tempo_id"], n, info["bpm"],
                    _residual_db(total, full), None, 0, read,
                    lambda: shutil.rmtree(tmp, ignore_errors=True))


def render_source(path: Path, max_s: float | None = None) -> Rendered:
    return (render_midi if path.suffix.lower() == ".mid" else render_tracker)(path, max_s)


# ----------------------------------------------------------------------------- stems

def group_parts(energy: np.ndarray, *, min_share: float = MIN_SHARE,
                max_stems: int = MAX_STEMS) -> tuple[list[list[int]], bool, float]:
    """Parts grouped into stems, loudest first.

    A part under ``min_share`` of the total energy goes into "other"; while there are more
    than ``max_stems`` stems the quietest named one joins "other" too. An "other" group
    whose parts hold less than ``min_share`` together is dropped (from the stems and so from
    the mixture).

    Parameters
    ----------
    energy : np.ndarray, shape=(n_parts,), each part's energy over the piece

    Returns
    -------
    groups : list of lists of part indices, one per stem (the last one "other" if kept)
    has_other : bool, the last group is "other"
    dropped_share : float, the share of the energy dropped with a small "other"
    """
    energy = np.asarray(energy, dtype=np.float64)
    total = max(float(energy.sum()), 1e-30)
    order = [int(i) for i in np.argsort(-energy, kind="stable") if energy[i] > 0]
    named = [i for i in order if energy[i] >= min_share * total]
    other = [i for i in order if energy[i] < min_share * total]
    while len(named) + (1 if other else 0) > max_stems:
        other.insert(0, named.pop())
    share = float(energy[other].sum()) / total
    if other and share >= min_share:
        return [[i] for i in named] + [other], True, 0.0
    return [[i] for i in named], False, share if other else 0.0


def choose_excerpt(r: Rendered, length_s: float = EXCERPT_S, *, min_share: float = MIN_SHARE,
                   steady: float = STEADY, max_start_s: float | None = None) -> int | None:
    """The excerpt's first sample (see the module docstring), or None if no start qualifies.

    Of the pattern starts / bar lines a whose window [a, a + length) lies inside the piece,
    holds one tempo over at least ``steady`` of it, and begins with a second whose RMS is at
    least a quarter of the piece's median 1-s RMS (over its non-silent seconds), the one with
    the most parts holding at least ``min_share`` of the window's energy, the earliest on ties.
    """
    fe = r.energy  # (P, 0.1-s frames)
    csum = np.concatenate([np.zeros((fe.shape[0], 1)), np.cumsum(fe, axis=1)], axis=1)
    per_s = fe.sum(axis=0)
    per_s = per_s[: per_s.size // 10 * 10].reshape(-1, 10).sum(axis=1)
    loud = per_s[per_s > 1e-6 * per_s.max()] if per_s.size and per_s.max() > 0 else per_s
    ref = float(np.median(loud)) if loud.size else 0.0
    w = int(round(length_s * SR))
    best, best_count = None, -1
    for a in np.unique(r.starts):
        a = int(a)
        if a < 0 or a + w > r.n or (max_start_s is not None and a > max_start_s * SR):
            continue
        f0, f1 = a // FRAME, (a + w) // FRAME
        if f1 > fe.shape[1] or csum[:, f0 + 10].sum() - csum[:, f0].sum() < ref / 16:
            continue  # first second's RMS under a quarter of the median's (energy under 1/16)
        if steady_fraction(r.row_start, r.tempo_id, a, a + w) < steady:
            continue
        e = csum[:, f1] - csum[:, f0]
        count = int(np.sum(e >= min_share * max(float(e.sum()), 1e-30)))
        if count > best_count:
            best, best_count = a, count
    return best


def trim_silence(energy: np.ndarray, threshold_db: float = -60.0) -> tuple[int, int]:
    """[first, last) sample of the 0.1-s frames of the mixture (``energy``, per frame) above
    ``threshold_db`` of the loudest frame."""
    on = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10))
    return int(on[0] * FRAME), int((on[-1] + 1) * FRAME)


# ----------------------------------------------------------------------------- pieces

@dataclass
class Piece:
    """One benchmark piece: a mixture and its exact stems (read from disk on access).

    Attributes
    ----------
    name : str, "<file name> (<package>)"
    kind : "excerpt" or "song"
    package, version, licence, source : the Debian package, its version, the music's
        licence, the file inside the package
    stem_names : list of n_stems str
    offset_s, duration_s : where the piece starts in the source, and its length (s)
    bpm : the source's main tempo (tracker rows at 4 per beat; MIDI quarter notes)
    directory : where its FLAC files and meta.json are
    meta : everything recorded at build time (render residual, determinism, shares, ...)
    """

    name: str
    kind: str
    package: str
    version: str
    licence: str
    source: str
    stem_names: list[str]
    offset_s: float
    duration_s: float
    bpm: float
    directory: Path
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A file-name-safe id, unique in the corpus."""
        return self.directory.name

    @property
    def mix(self) -> np.ndarray:
        """The mixture, shape=(2, n), float32, 44.1 kHz: exactly the sum of the stems."""
        return _read_flac(self.directory / "mix.flac")

    @property
    def stems(self) -> np.ndarray:
        """The stems, shape=(n_stems, 2, n), float32, in :attr:`stem_names` order."""
        return np.stack([self.stem(i) for i in range(len(self.stem_names))])

    def stem(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Stem i over samples [start, stop), shape (2, samples), float32."""
        return _read_flac(self.directory / f"stem_{i:02d}.flac", start, stop)


def _read_flac(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    import soundfile as sf

    x, _ = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T)


def _slug(package: str, path: str, kind: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(path).stem).strip("-").lower()
    return f"{kind}-{package}-{stem}"


def _quantise(x: np.ndarray) -> np.ndarray:
    """To the 24-bit grid (k / 2^23), so FLAC stores it exactly."""
    return (np.round(x.astype(np.float64) * 2.0**23) / 2.0**23).astype(np.float32)


def make_piece(kind: str, package: str, path: str, r: Rendered, log=print) -> Piece | None:
    """Cut, group, normalise and store one piece; None if it does not qualify (says why)."""
    import soundfile as sf

    where = f"{package}/{path}"
    if kind == "excerpt":
        a = choose_excerpt(r)
        if a is None:
            log(f"  {where}: no steady, non-quiet {EXCERPT_S:.0f} s window")
            return None
        b = a + int(round(EXCERPT_S * SR))
    else:
        a, b = trim_silence(r.energy.sum(axis=0))
        b = min(b, r.n)
        if not SONG_MIN_S * SR <= b - a <= SONG_MAX_S * SR:
            log(f"  {where}: {(b - a) / SR:.0f} s is not a {SONG_MIN_S / 60:.0f}-{SONG_MAX_S / 60:.0f} min song")
            return None
        steady = steady_fraction(r.row_start, r.tempo_id, a, b)
        if steady < STEADY:
            log(f"  {where}: tempo changes (one tempo over {steady:.0%} of it)")
            return None
    energy = r.energy[:, a // FRAME: b // FRAME].sum(axis=1)
    groups, has_other, dropped = group_parts(energy)
    if len(groups) < 3:
        log(f"  {where}: {len(groups)} stems (at least 3 wanted)")
        return None
    names = [r.names[g[0]] for g in groups]
    if has_other:
        names[-1] = f"other ({len(groups[-1])} parts)"
    stems = np.stack([r.read(g, a, b) for g in groups])
    peak = max(float(np.abs(stems.sum(axis=0)).max()), float(np.abs(stems).max()))
    stems = _quantise(stems * np.float32(PEAK / peak))
    mix = stems.astype(np.float64).sum(axis=0)
    assert np.abs(mix).max() < 1.0
    shares = np.einsum("scn,scn->s", stems.astype(np.float64), stems.astype(np.float64)) / float(np.sum(mix * mix))
    d = PIECES / _slug(package, path, kind)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for i, s in enumerate(stems):
        sf.write(str(d / f"stem_{i:02d}.flac"), s.T, SR, subtype="PCM_24")
    sf.write(str(d / "mix.flac"), mix.astype(np.float32).T, SR, subtype="PCM_24")
    midi = path.lower().endswith(".mid")
    meta = {
        "name": f"{Path(path).name} ({package})", "kind": kind, "package": package,
        "version": PACKAGES[package][0], "licence": licence_of(package, path), "source": path,
        "stem_names": names, "offset_s": round(a / SR, 4), "duration_s": round((b - a) / SR, 4),
        "bpm": round(r.bpm, 2), "stem_shares": [round(float(x), 4) for x in shares],
        "dropped_share": round(dropped, 4), "n_parts": len(r.names),
        "render_residual_db": round(r.residual_db, 1), "deterministic": r.deterministic,
        "it_random_variation_zeroed": r.patched, "parts": r.parts_are,
        "renderer": f"fluidsynth {fluidsynth_version()}" if midi else f"libopenmpt {openmpt_version()}",
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    return _piece_from(d)


def _piece_from(d: Path) -> Piece:
    meta = json.loads((d / "meta.json").read_text())
    fields = {f.name for f in dataclasses.fields(Piece)} - {"directory", "meta"}
    return Piece(**{k: meta[k] for k in fields}, directory=d, meta=meta)


def load_corpus(kind: str = "excerpt") -> list[Piece]:
    """The built pieces of one kind ("excerpt", "song" or "all"), in manifest order.

    Each :class:`Piece` reads its ``mix`` and ``stems`` from bench/out/real/pieces on every
    access (a 5-minute song's 8 stems are 0.8 GB in float32): hold the arrays while you use
    them, and let them go before the next piece.

    Raises
    ------
    FileNotFoundError
        If the corpus has not been built (``python bench/real.py build``).
    """
    if kind not in ("excerpt", "song", "all"):
        raise ValueError(f"kind must be 'excerpt', 'song' or 'all', not {kind!r}")
    index = OUT / "corpus.json"
    if not index.exists():
        raise FileNotFoundError(f"{index} is missing: run `.venv/bin/python bench/real.py build` first")
    keys = json.loads(index.read_text())["pieces"]
    pieces = [_piece_from(PIECES / k) for k in keys]
    return [p for p in pieces if kind == "all" or p.kind == kind]
