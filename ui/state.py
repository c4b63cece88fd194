"""What the user chose, in ``st.session_state`` under clear keys.

Songs, their analysis results and every choice (loop count, loop length, loops in the mix,
gains, deck tempo and length) live here, so a rerun, a new upload, an error in another song
or a visit to another page never throws the user's work away.

Keys
----
``songs``            dict song id -> :class:`Song`, in the order they were added
``results``          dict song id -> :class:`SongResult` (the latest analysis of that song;
                     while it is refined, its quick first result, marked ``refining``)
``upload_ids_seen``  set of uploader file ids already turned into songs
``upload_ids_last``  file ids in the uploader at the end of the last run
``upload_refused``   (reason, names) of the files last refused (over :data:`MAX_SONGS` or
                     :data:`MAX_SESSION_MB`), shown until the uploader changes or a song goes
``uploader_gen``     times the uploader was emptied after a refusal (its widget key is
                     ``uploader``, then ``uploader:<gen>``)
``n_loops:<song>``   loops to extract: "auto" (chosen from the song) or 3-10 (default 5)
``loop_bars:<song>`` loop length: "auto" (chosen from the song, the default) or 1, 2, 4 bars
``in_mix:<loop>``    whether the loop is in the mix (a loop id is ``<result key>:<index>``)
``gain:<loop>``      the loop's gain in the mix (dB)
``deck_bpm``         the deck's tempo (BPM); ``deck_bars``: length of the rendered mix (bars)
``deck_seq``         number of the last selection received from the live deck
``deck_key``         the deck's key ("A minor"; first: the first song's key)
``deck_match_keys``  whether pitched loops are transposed to the deck's key
``semitones:<song>`` the user's own transposition of a song on the deck ("auto" or -6..+6)
``mashup_ids_seen``  "Open mashup" uploads already opened; ``mashup_message``: what it said

A widget never owns a choice: each choice ``<key>`` above is a plain session-state value,
and its widget uses the key ``w:<key>`` (see :func:`kept`). Streamlit deletes a widget's
state when the widget is not drawn in a run (another page is open, the song is being
analysed), so the widget is re-created from the kept value.
``deck``             the live deck component's own state (``deck_clips``: its clip store)
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from unmixer.loops import AUTO

SONGS = "songs"
RESULTS = "results"
UPLOAD_IDS_SEEN = "upload_ids_seen"
UPLOAD_IDS_LAST = "upload_ids_last"
UPLOADER = "uploader"
UPLOAD_REFUSED = "upload_refused"
UPLOADER_GEN = "uploader_gen"
DECK = "deck"
DECK_CLIPS = "deck_clips"
DECK_BPM = "deck_bpm"
DECK_BARS = "deck_bars"
DECK_SEQ = "deck_seq"
DECK_KEY = "deck_key"
DECK_MATCH = "deck_match_keys"
MASHUP_UPLOADER = "mashup_uploader"
MASHUP_IDS_SEEN = "mashup_ids_seen"
MASHUP_MESSAGE = "mashup_message"
AUTO_SHIFT = "auto"
"""A song's transposition chosen by the deck (:func:`unmixer.mashup.key.song_shift`)."""
SHIFT_CHOICES = (AUTO_SHIFT,) + tuple(range(-6, 7))

AUTO_LOOPS = AUTO
"""The loop count chosen from the song (:func:`unmixer.loops.loopcount.estimate_loop_count`)."""
DEFAULT_N_LOOPS = 5
N_LOOPS_CHOICES = (AUTO_LOOPS,) + tuple(range(3, 11))
DEFAULT_LOOP_BARS = AUTO
"""The loop length is chosen from the song with its bar grid (:func:`unmixer.loops.bargrid.search_grid`)."""
LOOP_BARS_CHOICES = (AUTO, 1, 2, 4)
DEFAULT_DECK_BARS = 8
DECK_BARS_CHOICES = (4, 8, 16, 32)
GAIN_RANGE_DB = (-24.0, 6.0)

WIDGET_PREFIX = "w:"

MAX_SONGS = 12
"""Songs one session (one browser tab) holds at once; more uploads are refused with a
message (each song's file stays in the server's memory while it is on the page)."""
MAX_SESSION_MB = 600
"""Megabytes of song files one session holds at once (a 15-minute WAV is about 160 MB)."""
MAX_NAME_CHARS = 80
"""Longest file name shown (longer ones keep their start and extension around a '…')."""


def safe_name(raw: str | bytes) -> str:
    r"""An uploaded file's name as the page keeps and shows it: its last path component (no
    name ever becomes a path: ``../../x.wav`` is ``x.wav``), valid UTF-8 (bytes that are
    not, and lone surrogates, become U+FFFD), without control or formatting characters
    (e.g. a right-to-left override), at most :data:`MAX_NAME_CHARS` characters with the
    extension kept, and never empty ("song"). Download names are made from it with
    :func:`unmixer.mashup.export.slug` (ASCII letters, digits, '-' and '_').

    >>> safe_name("../../x.wav"), safe_name(b"caf\xe9.mp3"), len(safe_name("a" * 300 + ".wav"))
    ('x.wav', 'caf�.mp3', 80)
    """
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).decode("utf-8", "replace")
    else:  # a str may hold the surrogates of undecodable bytes, or lone ones
        try:
            text = str(raw).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            text = str(raw).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in text)
    text = " ".join(text.split()).strip(" .") or "song"
    if len(text) > MAX_NAME_CHARS:
        stem, dot, ext = text.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext) <= 5 else ""
        stem = text[: len(text) - len(ext)]
        text = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip() + "…" + ext
    return text


_MARKDOWN = re.compile(r"([\\`*_\[\]<>~$|:#])")


def md_escape(text: str) -> str:
    r"""``text`` shown as it is inside Streamlit Markdown (no links, images, emphasis,
    directives or HTML from a file name).

    >>> print(md_escape("[a](http://x) *b*"))
    \[a\](http\://x) \*b\*
    """
    return _MARKDOWN.sub(r"\\\1", str(text))


@dataclass
class Song:
    """One song the user added: its bytes stay in the session so it can be re-analysed."""

    id: str
    name: str
    data: bytes = field(repr=False)
    source: str = "upload"  # "upload", "demo", or "mashup" (opened from a file: no audio)
    upload_id: str | None = None

    @property
    def can_analyse(self) -> bool:
        """Whether the song's audio is here (a song opened from a mashup file has its loops
        only)."""
        return bool(self.data)

    @property
    def title(self) -> str:
        """The file name without its extension, underscores as spaces."""
        stem = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        return stem.replace("_", " ").strip() or self.name


@dataclass
class SongResult:
    """The latest analysis of a song: an Extraction (without its full-length tracks) or the
    one-line error it raised, for the parameters it was run with.

    ``refining``: a quick first result (the loops of a rough decomposition, same count and
    indices); the final result replaces it. ``seconds``: time the analysis took (s), or
    for a quick first result, the time it took to come.
    """

    n_loops: int | str  # a count, or AUTO_LOOPS (then len(extraction.loops) is the count)
    loop_bars: int | str  # bars, or AUTO (then extraction.loop_bars is the length)
    extraction: Any = None
    error: str | None = None
    seconds: float = 0.0
    from_cache: bool = False
    refining: bool = False
    restored: bool = False  # opened from a mashup file (no analysis ran here)

    @property
    def params(self) -> tuple[int | str, int]:
        return (self.n_loops, self.loop_bars)

    @property
    def auto(self) -> bool:
        """Whether the loop count was chosen from the song."""
        return self.n_loops == AUTO_LOOPS


def song_id(data: bytes) -> str:
    """Songs are identified by their content: the same file added twice is one song."""
    return hashlib.sha256(data).hexdigest()[:16]


def result_key(song: str, n_loops: int | str, loop_bars: int) -> str:
    """Identifies one analysis of one song (its loops change with the parameters)."""
    return f"{song}-{n_loops}x{loop_bars}"


def audio_key(song: str, result: SongResult) -> str:
    """Identifies the sound of one analysis, for the clip caches and the deck's clips: the
    result key, plus ``~rough`` for a quick first result (the same loop ids, so choices
    stay, but other sounds) and ``~file`` for loops opened from a mashup file (which may
    come from another engine version than this server's analyses)."""
    return (result_key(song, *result.params) + ("~rough" if result.refining else "")
            + ("~file" if result.restored else ""))


def loop_id(result: str, index: int) -> str:
    """Identifies one loop of one analysis; used by the deck, the checkboxes and the gains."""
    return f"{result}:{index}"


def n_loops_key(song: str) -> str:
    return f"n_loops:{song}"


def loop_bars_key(song: str) -> str:
    return f"loop_bars:{song}"


def in_mix_key(loop: str) -> str:
    return f"in_mix:{loop}"


def gain_key(loop: str) -> str:
    return f"gain:{loop}"


def semitones_key(song: str) -> str:
    return f"semitones:{song}"


def init() -> None:
    """Create the containers (idempotent; run at the top of every page). The deck's choices
    (length, Match keys) are not set here but by their widgets (:func:`kept`), so that a
    kept tab's choices (:mod:`ui.sessions`) come back into a new session."""
    ss = st.session_state
    ss.setdefault(SONGS, {})
    ss.setdefault(RESULTS, {})
    ss.setdefault(UPLOAD_IDS_SEEN, set())
    ss.setdefault(UPLOAD_IDS_LAST, [])
    ss.setdefault(DECK_SEQ, 0)
    ss.setdefault(MASHUP_IDS_SEEN, set())


def widget_key(key: str) -> str:
    """The key of the widget that edits the kept choice ``key``."""
    return WIDGET_PREFIX + key


def kept(widget: Callable[..., Any], label: str, key: str, default: Any,
         on_change: Callable[[], None] | None = None, **kwargs: Any) -> Any:
    """Draw ``widget(label, key=w:<key>, ...)`` editing the kept choice ``key``.

    The choice lives under ``key`` (created with ``default``); the widget starts from it
    whenever Streamlit has forgotten the widget, and writes back to it on every change. A
    change to None (a segmented control unselected by a click) is refused.
    """
    ss = st.session_state
    ss.setdefault(key, default)
    wkey = widget_key(key)
    if wkey not in ss:
        ss[wkey] = ss[key]

    def _write_back() -> None:
        if ss[wkey] is None:
            ss[wkey] = ss[key]
        else:
            ss[key] = ss[wkey]
        if on_change:
            on_change()

    return widget(label, key=wkey, on_change=_write_back, **kwargs)


def sync_kept() -> None:
    """Copy each drawn widget's value to its kept choice (:func:`kept`); run at the top of
    the page, before anything reads a choice. A value of None (a segmented control
    unselected by a click) is refused: the widget goes back to the choice.

    The widget's own write-back (its ``on_change``) is not enough. Streamlit looks for a
    newer rerun request on every session-state access, in a callback too. If one is waiting
    (a second click, a reconnect, the tab id), the callback stops there, Streamlit takes it
    for a callback that asked for a rerun, and the next run sees the widget unchanged: the
    box ticked, the loop not in the mix (issue 18). Every other writer of a choice
    (:func:`set_choice`, :func:`set_selection`) sets its widget too, so a widget that differs
    from its choice holds a change not written yet. Cut short itself, the next run does it
    again.
    """
    ss = st.session_state
    for wkey in [k for k in ss.keys() if isinstance(k, str) and k.startswith(WIDGET_PREFIX)]:
        key = wkey[len(WIDGET_PREFIX):]
        value = ss[wkey]
        if value is None:
            if key in ss:
                ss[wkey] = ss[key]
        elif key not in ss or ss[key] != value:
            ss[key] = value


def songs() -> dict[str, Song]:
    return st.session_state[SONGS]


def results() -> dict[str, SongResult]:
    return st.session_state[RESULTS]


def add_song(name: str | bytes, data: bytes, source: str = "upload",
             upload_id: str | None = None) -> Song:
    """Add a song (or return the one with the same content) with default choices; its name
    is made safe (:func:`safe_name`)."""
    sid = song_id(data)
    store = songs()
    if sid not in store:
        store[sid] = Song(sid, safe_name(name), data, source, upload_id)
        st.session_state.setdefault(n_loops_key(sid), DEFAULT_N_LOOPS)
        st.session_state.setdefault(loop_bars_key(sid), DEFAULT_LOOP_BARS)
    return store[sid]


def room_for(n_bytes: int) -> str | None:
    """Why one more song of ``n_bytes`` bytes cannot be added to this session (one line),
    or None when it can (:data:`MAX_SONGS`, :data:`MAX_SESSION_MB`)."""
    held = songs()
    if len(held) >= MAX_SONGS:
        return f"This page holds at most {MAX_SONGS} songs at once"
    if sum(len(s.data) for s in held.values()) + n_bytes > MAX_SESSION_MB * 1024 * 1024:
        return f"This page holds at most {MAX_SESSION_MB:.0f} MB of songs at once"
    return None


def remove_song(sid: str) -> None:
    """Forget a song, its result and its choices (and a message about refused uploads: there
    is room again)."""
    st.session_state.pop(UPLOAD_REFUSED, None)
    songs().pop(sid, None)
    results().pop(sid, None)
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and sid in key:
            del st.session_state[key]


def loop_count(value: Any) -> int | str:
    """A loop count choice as the engine takes it: AUTO_LOOPS or an int."""
    return AUTO_LOOPS if value == AUTO_LOOPS else int(value)


def loop_length(value: Any) -> int | str:
    """A loop length choice as the engine takes it: AUTO or bars (int)."""
    return AUTO if value == AUTO else int(value)


def params(sid: str) -> tuple[int | str, int | str]:
    """The (loop count or AUTO_LOOPS, loop length in bars or AUTO) chosen for a song."""
    ss = st.session_state
    return (loop_count(ss.get(n_loops_key(sid)) or DEFAULT_N_LOOPS),
            loop_length(ss.get(loop_bars_key(sid)) or DEFAULT_LOOP_BARS))


def selection() -> list[str]:
    """Loop ids currently in the mix (checked), in no particular order."""
    return [key[len("in_mix:"):] for key, value in st.session_state.items()
            if isinstance(key, str) and key.startswith("in_mix:") and value]


def gain_db(loop: str) -> float:
    return float(st.session_state.get(gain_key(loop), 0.0))


def set_selection(ids: list[str], seq: int) -> None:
    """Apply a selection sent by the live deck (inside its callback, before the run)."""
    wanted = set(ids)
    ss = st.session_state
    keys = {k for k in ss.keys() if isinstance(k, str) and k.startswith("in_mix:")}
    for key in keys | {in_mix_key(loop) for loop in wanted}:
        ss[key] = key[len("in_mix:"):] in wanted
        if widget_key(key) in ss:
            ss[widget_key(key)] = ss[key]
    ss[DECK_SEQ] = max(int(seq), int(ss.get(DECK_SEQ, 0)))


def semitones(sid: str) -> int | None:
    """The user's own transposition of a song on the deck, or None (the deck chooses)."""
    value = st.session_state.get(semitones_key(sid), AUTO_SHIFT)
    return None if value in (AUTO_SHIFT, None) else int(value)


def set_choice(key: str, value: Any) -> None:
    """Set a kept choice and its widget (before the widget is drawn, e.g. in a callback)."""
    st.session_state[key] = value
    st.session_state[widget_key(key)] = value


def add_opened_song(song) -> SongResult:
    """Put one song of an opened mashup (:class:`unmixer.mashup.MashupSong`) on the page with
    its saved loops as its result (no analysis); its choices are left as they are. A song
    already on the page keeps its audio (so it can still be re-analysed)."""
    store = songs()
    if song.id not in store:
        store[song.id] = Song(song.id, song.name, b"", source="mashup")
    ext = song.extraction
    bars = loop_length(ext.loop_bars if song.loop_bars is None else song.loop_bars)
    result = SongResult(loop_count(song.n_loops), bars, ext, restored=True)
    results()[song.id] = result
    return result


def apply_mashup(mashup) -> None:
    """Put an opened mashup (:class:`unmixer.mashup.Mashup`) on the page: its songs with
    their saved loops (no analysis), its tempo, length and key, and exactly its loops in the
    mix, at their gains. Songs already on the page stay (one with the same id takes the
    saved loops; it keeps its audio, so it can still be re-analysed)."""
    ss = st.session_state
    for key in [k for k in ss.keys() if isinstance(k, str) and k.startswith("in_mix:")]:
        set_choice(key, False)
    for song in mashup.songs:
        result = add_opened_song(song)
        set_choice(n_loops_key(song.id), result.n_loops)
        set_choice(loop_bars_key(song.id), result.loop_bars)
        set_choice(semitones_key(song.id), AUTO_SHIFT if song.semitones is None
                   else int(song.semitones))
        ext = song.extraction
        rkey = result_key(song.id, *result.params)
        for loop in ext.loops:
            lid = loop_id(rkey, loop.index)
            set_choice(gain_key(lid), float(song.gains_db.get(loop.index, 0.0)))
            set_choice(in_mix_key(lid), loop.index in song.in_mix)
    set_choice(DECK_BPM, round(float(mashup.bpm), 1))
    bars = min(DECK_BARS_CHOICES, key=lambda n: abs(n - int(mashup.n_bars)))
    set_choice(DECK_BARS, bars)
    if mashup.key is not None:
        set_choice(DECK_KEY, mashup.key)
    set_choice(DECK_MATCH, bool(mashup.match_keys))
    ss[DECK_SEQ] = int(ss.get(DECK_SEQ, 0)) + 1  # the deck takes this selection
