"""The mashup deck: a target tempo, the live Web Audio deck, and the rendered mix.

The live deck is a custom component (``st.components.v2.component``: inline HTML, and the
CSS and JS read from ``deck.css`` / ``deck.js`` next to this module; no build step). It gets every loop of every song already time-stretched to the deck's tempo by
:mod:`unmixer.mashup` and plays the selected ones in sync; each click on a tile is sent back
as a trigger, applied to the "in the mix" checkboxes by :func:`ui.state.set_selection`, so
the mix rendered below (and downloaded) holds exactly the loops that were heard.

A song's rough loops (a quick first result) are on the deck with a "refining…" mark; when
the refined loops replace them, each playing loop switches to its new clip on the next bar
line, without stopping (same loop ids, new ``clipKey``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui import engine, state
from ui.loop_map import loop_caption, loop_color
from unmixer import mashup
from unmixer.core.audio import ogg_bytes, wav_bytes
from unmixer.errors import UnmixerError

_HERE = Path(__file__).resolve().parent

_HTML = """
<div class="deck" role="group" aria-label="Live mashup deck">
  <div class="deck-top">
    <button class="deck-play" type="button">&#9654;&nbsp; Play</button>
    <span class="deck-tempo"></span>
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


def deck_tempo_default(ready: list[ReadySong]) -> None:
    """The deck's tempo starts at the first song's tempo (within the accepted range)."""
    if state.DECK_BPM not in st.session_state and ready:
        bpm = float(ready[0].extraction.bpm)
        st.session_state[state.DECK_BPM] = round(min(max(bpm, mashup.MIN_BPM), mashup.MAX_BPM), 1)


def deck_section(ready: list[ReadySong]) -> None:
    """Draw the deck: tempo and length controls, the live deck, the mix player, downloads."""
    st.subheader("Mashup deck", anchor="deck")
    if not ready:
        st.info("Your loops will appear here. Add a song above, or try the demo song.",
                icon=":material/queue_music:")
        return
    deck_tempo_default(ready)
    meter = int(ready[0].extraction.meter)
    controls = st.columns([1, 1, 2.2], vertical_alignment="bottom")
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
    controls[2].caption("Song tempos: " + " · ".join(
        f"{r.song.title} {r.extraction.bpm:.1f}" for r in ready)
        + f". Bars of {meter} beats. Click loops on the deck, or tick "
          "“In the mix” under a song.")

    loops, clips, selection, playable = [], {}, set(state.selection()), []
    for r in ready:
        try:
            previews = engine.deck_previews(r.audio_key, bpm, r.extraction)
        except UnmixerError as err:  # e.g. a tempo too far from this song's
            st.warning(f"{r.song.title} is left out of the deck: {err}", icon=":material/warning:")
            continue
        playable.append(r)
        for loop, (wav, seconds) in zip(r.extraction.loops, previews):
            lid = state.loop_id(r.key, loop.index)
            clip_key = f"{state.loop_id(r.audio_key, loop.index)}@{bpm:.2f}"
            loops.append({
                "id": lid, "song": r.song.id, "songTitle": r.song.title,
                "songBpm": float(r.extraction.bpm), "index": int(loop.index),
                "label": loop_caption(loop.label).removeprefix(" · "), "color": loop_color(loop.index),
                "gainDb": state.gain_db(lid), "seconds": seconds,
                "clipKey": clip_key, "refining": bool(r.result.refining),
            })
            clips[clip_key] = base64.b64encode(wav).decode("ascii")
    live = [lp["id"] for lp in loops if lp["id"] in selection]
    bar_seconds = mashup.bar_samples(bpm, meter, mashup.PREVIEW_SAMPLE_RATE) \
        / mashup.PREVIEW_SAMPLE_RATE
    _DECK(key=state.DECK, on_selection_change=_on_deck_selection, data={
        "bpm": bpm, "meter": meter, "barSeconds": bar_seconds, "loops": loops,
        "selection": live, "seq": int(st.session_state.get(state.DECK_SEQ, 0)),
    })
    mix_section(playable, bpm, meter, n_bars, live)
    # The clips themselves, in a hidden instance whose data only changes with the songs or
    # the tempo (so a click on the deck does not send them again).
    _CLIP_STORE(key=state.DECK_CLIPS, data={"kind": "clips", "clips": clips})


def mix_section(ready: list[ReadySong], bpm: float, meter: int, n_bars: int,
                live: list[str]) -> None:
    """The rendered mix of the selected loops: a player and a WAV download."""
    if not live:
        st.caption("The mix is empty: click loops on the deck to add them.")
        return
    by_key = {r.key: r for r in ready}
    clips, gains = [], []
    for lid in live:
        rkey, index = lid.rsplit(":", 1)
        r = by_key[rkey]
        clips.append(engine.stretched_clip(r.audio_key, int(index), bpm, r.extraction))
        gains.append(state.gain_db(lid))
    mix = mashup.render_mix(clips, gains, n_bars * mashup.bar_samples(bpm, meter))
    cols = st.columns([3, 1], vertical_alignment="center")
    # The button is drawn before the text that names the tempo: once the new text shows,
    # the button already serves the new mix.
    name = f"unmixer-mix_{len(live)}loops_{n_bars}bars_{int(round(bpm))}bpm.wav"
    cols[1].download_button("Download the mix (WAV)", data=lambda: wav_bytes(mix),
                            file_name=name, mime="audio/wav", icon=":material/download:",
                            on_click="ignore", key="download_mix", type="primary")
    with cols[0]:
        st.markdown(f"**Your mix** · {len(live)} loop{'s' if len(live) > 1 else ''}, "
                    f"{n_bars} bars at {bpm:.1f} BPM")
        st.audio(ogg_bytes(mix), format="audio/ogg")
