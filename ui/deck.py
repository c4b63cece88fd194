"""The mashup deck: a target tempo and key, the live Web Audio deck, the rendered mix, and
the mashup kept in one file (Save / Open) or exported for a DAW.

The live deck is a custom component (``st.components.v2.component``: inline HTML, and the
CSS and JS read from ``deck.css`` / ``deck.js`` next to this module; no build step). It gets every loop of every song already time-stretched to the deck's tempo by
:mod:`unmixer.mashup` and plays the selected ones in sync; each click on a tile is sent back
as a trigger, applied to the "in the mix" checkboxes by :func:`ui.state.set_selection`, so
the mix rendered below (and downloaded) holds exactly the loops that were heard.

A song's rough loops (a quick first result) are on the deck with a "refining…" mark; when
the refined loops replace them, each playing loop switches to its new clip on the next bar
line, without stopping (same loop ids, new ``clipKey``).

Keys (issue 16): every song's key is on the deck with how it goes with the deck's key (same,
relative, a fifth apart, or clashing) before anything plays. With "Match keys" on, each
song's pitched loops are transposed by :func:`unmixer.mashup.song_shift` (or the user's own
shift for that song), in the same Rubber Band pass as the time-stretch; the shift is part of
each clip's cache key and ``clipKey``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui import engine, state
from ui.loop_map import loop_caption, loop_color
from ui.pictures import data_uri, loop_picture
from unmixer import mashup
from unmixer.core.audio import ogg_bytes, wav_bytes
from unmixer.errors import UnmixerError
from unmixer.loops.key import KEYS, Key

_HERE = Path(__file__).resolve().parent

_HTML = """
<div class="deck" role="group" aria-label="Live mashup deck">
  <div class="deck-top">
    <button class="deck-play" type="button">&#9654;&nbsp; Play</button>
    <span class="deck-tempo"></span>
    <span class="deck-key"></span>
    <span class="deck-beats" aria-hidden="true"></span>
    <span class="deck-status"></span>
    <span class="deck-count"></span>
  </div>
  <div class="deck-songs"></div>
</div>
"""

_JS = (_HERE / "deck.js").read_text(encoding="utf-8")
_DECK = st.components.v2.component(
    "unmixer_live_deck", html=_HTML, css=(_HERE / "deck.css").read_text(encoding="utf-8"),
    js=_JS)
_CLIP_STORE = st.components.v2.component("unmixer_clip_store", js=_JS)
"""Same code, no HTML: hands the (big, rarely changing) clips to the deck in the browser."""


@dataclass
class ReadySong:
    """A song with loops, as the deck needs it."""

    song: state.Song
    result: state.SongResult

    @property
    def key(self) -> str:
        return state.result_key(self.song.id, *self.result.params)

    @property
    def audio_key(self) -> str:
        """Tells the rough loops (a quick first result) from the final ones."""
        return state.audio_key(self.song.id, self.result)

    @property
    def extraction(self):
        return self.result.extraction


def ready_songs() -> list[ReadySong]:
    """Songs whose latest analysis (with the current parameters) has loops, in order."""
    ready = []
    for sid, song in state.songs().items():
        result = state.results().get(sid)
        if result is not None and result.extraction is not None \
                and result.params == state.params(sid):
            ready.append(ReadySong(song, result))
    return ready


def _on_deck_selection() -> None:
    payload = st.session_state[state.DECK].get("selection")
    if isinstance(payload, dict) and isinstance(payload.get("ids"), list):
        state.set_selection([str(i) for i in payload["ids"]], int(payload.get("seq", 0)))


_DECK_BPM_FROM = "deck_bpm_from"
"""The first song's tempo the deck's tempo was set to, and whether it came from rough loops."""


def deck_tempo_default(ready: list[ReadySong]) -> None:
    """The deck's tempo starts at the first song's tempo (within the accepted range), its key
    at the first song's key. A tempo taken from the first song's rough loops (their quick
    beat grid, e.g. 120.2 BPM where madmom's reads 120.0) follows the refined loops' tempo,
    unless the person changed it meanwhile."""
    if not ready:
        return
    bpm = round(min(max(float(ready[0].extraction.bpm), mashup.MIN_BPM), mashup.MAX_BPM), 1)
    rough = bool(ready[0].result.refining)
    source = st.session_state.get(_DECK_BPM_FROM)
    if state.DECK_BPM not in st.session_state:
        st.session_state[state.DECK_BPM] = bpm
        st.session_state[_DECK_BPM_FROM] = (bpm, rough)
    elif source is not None and source[1] and not rough \
            and abs(float(st.session_state[state.DECK_BPM]) - source[0]) < 0.05:
        # the rough tempo, untouched: the refined one, in the kept choice and in its widget
        # (state.kept seeds the widget only once: it would show, and write back, the old one)
        st.session_state[state.DECK_BPM] = bpm
        st.session_state[state.widget_key(state.DECK_BPM)] = bpm
        st.session_state[_DECK_BPM_FROM] = (bpm, rough)
    if state.DECK_KEY not in st.session_state:
        keyed = [r for r in ready if _song_key(r) is not None]
        if keyed:
            st.session_state[state.DECK_KEY] = _song_key(keyed[0]).name


def _song_key(r: ReadySong) -> Key | None:
    key = getattr(r.extraction, "key", None)
    return Key.parse(key) if key else None


def deck_shifts(ready: list[ReadySong]) -> dict[str, int]:
    """Song id -> the transposition (semitones) of its pitched loops on the deck."""
    ss = st.session_state
    target, match = ss.get(state.DECK_KEY), bool(ss.get(state.DECK_MATCH))
    return {r.song.id: mashup.song_shift(_song_key(r), target, match, state.semitones(r.song.id))
            for r in ready}


def loop_shifts(r: ReadySong, shift: int) -> tuple[int, ...]:
    """Each loop's own shift: the song's for pitched loops, 0 for drums and noise."""
    return tuple(shift if mashup.transposes(loop.label, getattr(loop, "pitched", True)) else 0
                 for loop in r.extraction.loops)


def deck_section(ready: list[ReadySong]) -> None:
    """Draw the deck: tempo, length and key controls, the songs' keys, the live deck, the mix
    player and downloads, and Save / Open mashup."""
    st.subheader("Mashup deck", anchor="deck")
    if not ready:
        st.info("Your loops will appear here. Add a song above, or try the demo song, or open "
                "a mashup you saved.", icon=":material/queue_music:")
        _mashup_files([], refining=False)
        return
    deck_tempo_default(ready)
    meter = int(ready[0].extraction.meter)
    controls = st.columns([1, 1, 1.3, 1, 1.6], vertical_alignment="bottom")
    with controls[0]:
        bpm = float(state.kept(
            st.number_input, "Tempo (BPM)", state.DECK_BPM, 120.0, min_value=mashup.MIN_BPM,
            max_value=mashup.MAX_BPM, step=1.0, format="%.1f",
            help="Every loop is time-stretched to this tempo (pitch unchanged)."))
    with controls[1]:
        n_bars = int(state.kept(
            st.selectbox, "Mix length", state.DECK_BARS, state.DEFAULT_DECK_BARS,
            options=state.DECK_BARS_CHOICES, format_func=lambda n: f"{n} bars",
            help="Length of the mix you can download."))
    with controls[2]:
        state.kept(st.selectbox, "Key", state.DECK_KEY, KEYS[0].name,
                   options=[k.name for k in KEYS], format_func=lambda k: Key.parse(k).label,
                   help="The deck's key: with “Match keys” on, pitched loops are transposed "
                        "to it or to its relative key. It starts at the first song's key.")
    with controls[3]:
        match = bool(state.kept(
            st.toggle, "Match keys", state.DECK_MATCH, False,
            help="Transpose each song's pitched loops (never drums) by the smallest shift, at "
                 f"most ±{mashup.MAX_SHIFT} semitones, to the deck's key or its relative key "
                 "(Rubber Band, formants kept for voices)."))
    controls[4].caption("Song tempos: " + " · ".join(
        f"{r.song.title} {r.extraction.bpm:.1f}" for r in ready)
        + f". Bars of {meter} beats. Click loops on the deck, or tick "
          "“In the mix” under a song.")
    target = st.session_state.get(state.DECK_KEY)
    shifts = deck_shifts(ready)
    _keys_row(ready, target, shifts)

    loops, clips, selection, playable = [], {}, set(state.selection()), []
    for r in ready:
        song_shift = shifts[r.song.id]
        per_loop = loop_shifts(r, song_shift)
        try:
            previews = engine.deck_previews(r.audio_key, bpm, r.extraction,
                                            per_loop if any(per_loop) else ())
        except UnmixerError as err:  # e.g. a tempo too far from this song's
            st.warning(f"{r.song.title} is left out of the deck: {err}", icon=":material/warning:")
            continue
        playable.append(r)
        key = _song_key(r)
        relation = _relation(key, target)
        for loop, (wav, seconds), shift in zip(r.extraction.loops, previews, per_loop):
            lid = state.loop_id(r.key, loop.index)
            akey = state.loop_id(r.audio_key, loop.index)
            clip_key = f"{akey}@{bpm:.2f}" + (f"{shift:+d}st" if shift else "")
            pic_key = f"pic:{akey}"
            loops.append({
                "id": lid, "song": r.song.id, "songTitle": r.song.title,
                "songBpm": float(r.extraction.bpm), "index": int(loop.index),
                "label": loop_caption(loop.label).removeprefix(" · "), "color": loop_color(loop.index),
                "gainDb": state.gain_db(lid), "seconds": seconds,
                "clipKey": clip_key, "refining": bool(r.result.refining),
                "songKey": key.label if key else "", "songRelation": relation,
                "songShift": int(song_shift), "pitched": bool(getattr(loop, "pitched", True)),
                "shift": int(shift), "picKey": pic_key,
            })
            clips[clip_key] = base64.b64encode(wav).decode("ascii")
            clips[pic_key] = data_uri(loop_picture(r.audio_key, loop.index,
                                                   loop_color(loop.index), loop.clip))
    live = [lp["id"] for lp in loops if lp["id"] in selection]
    bar_seconds = mashup.bar_samples(bpm, meter, mashup.PREVIEW_SAMPLE_RATE) \
        / mashup.PREVIEW_SAMPLE_RATE
    _DECK(key=state.DECK, on_selection_change=_on_deck_selection, data={
        "bpm": bpm, "meter": meter, "barSeconds": bar_seconds, "loops": loops,
        "selection": live, "seq": int(st.session_state.get(state.DECK_SEQ, 0)),
        "key": Key.parse(target).label if target else "", "matchKeys": match,
    })
    mix_section(playable, bpm, meter, n_bars, live, shifts)
    _mashup_files(playable, refining=any(r.result.refining for r in ready))
    # The clips themselves, in a hidden instance whose data only changes with the songs or
    # the tempo (so a click on the deck does not send them again).
    _CLIP_STORE(key=state.DECK_CLIPS, data={"kind": "clips", "clips": clips})


def _relation(key: Key | None, target: str | None) -> str:
    """How a song's key goes with the deck's: a :func:`unmixer.mashup.key_relation` name,
    "clash", or "" when a key is unknown."""
    if key is None or not target:
        return ""
    return mashup.key_relation(key, target) or "clash"


_RELATION_BADGE = {mashup.key.SAME: ":green-badge[same key]",
                   mashup.key.RELATIVE: ":green-badge[relative key]",
                   mashup.key.FIFTH: ":green-badge[a fifth apart]",
                   "clash": ":orange-badge[clashes]", "": ":gray-badge[key unknown]"}


def _keys_row(ready: list[ReadySong], target: str | None, shifts: dict[str, int]) -> None:
    """Each song's key, how it goes with the deck's key, its transposition now, and the
    choice of it (Auto or the user's own), before anything plays."""
    per_row = 4
    for start in range(0, len(ready), per_row):
        cols = st.columns(per_row, vertical_alignment="bottom")
        for col, r in zip(cols, ready[start:start + per_row]):
            key = _song_key(r)
            shift = shifts.get(r.song.id, 0)
            moved = f" · :violet-badge[plays {shift:+d} st]" if shift else ""
            with col.container(key=f"keys_{r.song.id}"):
                st.markdown(f"**{state.md_escape(r.song.title)}** · {key.label if key else 'key unknown'} "
                            f"{_RELATION_BADGE[_relation(key, target)]}{moved}")
                state.kept(st.selectbox, "Transpose", state.semitones_key(r.song.id),
                           state.AUTO_SHIFT, options=state.SHIFT_CHOICES,
                           format_func=lambda n: "Auto" if n == state.AUTO_SHIFT
                           else ("0 (as it is)" if n == 0 else f"{n:+d} semitones"),
                           help="Semitones this song's pitched loops move on the deck. Auto: "
                                "with “Match keys” on, the smallest shift to the deck's key "
                                "or its relative key; off, none.")


def mix_section(ready: list[ReadySong], bpm: float, meter: int, n_bars: int,
                live: list[str], shifts: dict[str, int] | None = None) -> None:
    """The rendered mix of the selected loops: a player, a WAV download, and the mix for a
    DAW (one track per loop from bar 1, a README of the tempo and key)."""
    if not live:
        st.caption("The mix is empty: click loops on the deck to add them.")
        return
    shifts = shifts or {}
    by_key = {r.key: r for r in ready}
    clips, gains, parts = [], [], []
    for lid in live:
        rkey, index = lid.rsplit(":", 1)
        r = by_key[rkey]
        loop = r.extraction.loops[int(index) - 1]
        shift = loop_shifts(r, shifts.get(r.song.id, 0))[int(index) - 1]
        clips.append(engine.stretched_clip(r.audio_key, int(index), bpm, r.extraction, shift))
        gains.append(state.gain_db(lid))
        key = _song_key(r)
        plays_in = key.transposed(shift).name if key and mashup.transposes(
            loop.label, getattr(loop, "pitched", True)) else None
        parts.append((r.song.title, loop, shift, plays_in))
    n_samples = n_bars * mashup.bar_samples(bpm, meter)
    mix = mashup.render_mix(clips, gains, n_samples)
    match = bool(st.session_state.get(state.DECK_MATCH))
    target = st.session_state.get(state.DECK_KEY) if match else None
    in_key = f"_{Key.parse(target).short}" if target else ""

    def daw_zip() -> bytes:
        stems = mashup.render_stems(clips, gains, n_samples)
        return mashup.daw_archive(
            [mashup.Stem(title, loop.index, loop.label, audio, gain, shift, plays_in)
             for (title, loop, shift, plays_in), audio, gain in zip(parts, stems, gains)],
            bpm, meter, n_bars, target)

    cols = st.columns([3, 1, 1], vertical_alignment="center")
    # The buttons are drawn before the text that names the tempo: once the new text shows,
    # the buttons already serve the new mix.
    name = f"unmixer-mix_{len(live)}loops_{n_bars}bars_{int(round(bpm))}bpm{in_key}.wav"
    cols[1].download_button("Download the mix (WAV)", data=lambda: wav_bytes(mix),
                            file_name=name, mime="audio/wav", icon=":material/download:",
                            on_click="ignore", key="download_mix", type="primary")
    cols[2].download_button("Export for a DAW", data=daw_zip, file_name=name[:-4] + "_daw.zip",
                            mime="application/zip", icon=":material/piano:", on_click="ignore",
                            key="download_daw",
                            help="A ZIP with one 24-bit WAV per loop in the mix, all starting "
                                 "at bar 1 and as long as the mix, at the deck's tempo and "
                                 "key, and a README of the tempo and key.")
    with cols[0]:
        key_text = f", in {Key.parse(target).label}" if target else ""
        st.markdown(f"**Your mix** · {len(live)} loop{'s' if len(live) > 1 else ''}, "
                    f"{n_bars} bars at {bpm:.1f} BPM{key_text}")
        st.audio(ogg_bytes(mix), format="audio/ogg")


# ---------------------------------------------------------------------------- keep a mashup
def current_mashup(ready: list[ReadySong], session=None) -> mashup.Mashup:
    """The deck as a :class:`unmixer.mashup.Mashup`: its settings and its songs' loops
    (``session``: the session state, by default this run's)."""
    ss = st.session_state if session is None else session

    def get(key, default=None):
        return ss[key] if key in ss else default

    songs = []
    for r in ready:
        gains, in_mix = {}, []
        for loop in r.extraction.loops:
            lid = state.loop_id(r.key, loop.index)
            gains[loop.index] = float(get(state.gain_key(lid), 0.0))
            if get(state.in_mix_key(lid)):
                in_mix.append(loop.index)
        shift = get(state.semitones_key(r.song.id), state.AUTO_SHIFT)
        songs.append(mashup.MashupSong(r.song.id, r.song.name, r.result.n_loops, r.extraction,
                                       gains, in_mix,
                                       None if shift == state.AUTO_SHIFT else int(shift),
                                       r.result.loop_bars))
    return mashup.Mashup(float(get(state.DECK_BPM, 120.0)),
                         int(get(state.DECK_BARS, state.DEFAULT_DECK_BARS)),
                         get(state.DECK_KEY), bool(get(state.DECK_MATCH)), songs)


def _on_open_mashup() -> None:
    """Open the uploaded mashup file (once per upload); a bad file changes nothing."""
    ss = st.session_state
    upload = ss.get(state.MASHUP_UPLOADER)
    if upload is None or upload.file_id in ss[state.MASHUP_IDS_SEEN]:
        return
    ss[state.MASHUP_IDS_SEEN].add(upload.file_id)
    try:
        opened = mashup.open_mashup(upload.getvalue(), upload.name)
    except UnmixerError as err:
        ss[state.MASHUP_MESSAGE] = ("error", str(err))
        return
    state.apply_mashup(opened)
    n = opened.n_in_mix
    ss[state.MASHUP_MESSAGE] = ("success", (
        f"Opened {upload.name}: {len(opened.songs)} song{'s' if len(opened.songs) > 1 else ''}, "
        f"{n} loop{'s' if n != 1 else ''} in the mix, {opened.bpm:.1f} BPM"
        + (f", {Key.parse(opened.key).label}" if opened.key else "") + "."))


def _mashup_files(ready: list[ReadySong], refining: bool) -> None:
    """Save mashup (one file: the deck and its loop clips) and Open mashup."""
    cols = st.columns([1, 1, 3], vertical_alignment="center")
    with cols[0]:
        if ready:
            # The deck is read now: the button calls its data later, outside this session's
            # run, where the session state is not at hand.
            deck = current_mashup(ready)
            st.download_button(
                "Save mashup", data=lambda: mashup.save_mashup(deck),
                file_name=f"mashup_{int(round(float(st.session_state.get(state.DECK_BPM, 120))))}"
                          f"bpm{mashup.project.SUFFIX}",
                mime="application/zip", icon=":material/save:", on_click="ignore",
                key="save_mashup", disabled=refining, width="stretch",
                help="The loops are still being refined." if refining else
                "One file with the deck (tempo, key, length, which loops at what gain) and "
                "every loop clip: “Open mashup” brings it back here or on another computer, "
                "without analysing the songs again.")
    with cols[1].popover("Open mashup", icon=":material/folder_open:", width="stretch"):
        st.file_uploader(f"A mashup saved by Unmixer ({mashup.project.SUFFIX})",
                         type=[mashup.project.SUFFIX.lstrip(".")], key=state.MASHUP_UPLOADER,
                         on_change=_on_open_mashup)
    message = st.session_state.get(state.MASHUP_MESSAGE)
    if message:
        kind, text = message
        (cols[2].error if kind == "error" else cols[2].success)(
            text, icon=":material/error:" if kind == "error" else ":material/check_circle:")
