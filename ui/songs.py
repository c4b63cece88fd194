"""Songs in (uploader, demo button) and one card per song (analysis, loop map, loop tiles)."""

from __future__ import annotations

import time
from concurrent.futures import TimeoutError as FutureTimeout

import streamlit as st

from ui import engine, state
from ui.loop_map import loop_caption, loop_color, loop_map_figure
from ui.pictures import loop_picture
from ui.state import md_escape
from unmixer import mashup
from unmixer.core.audio import wav_bytes
from unmixer.data import DEMO_ATTRIBUTION, DEMO_SONG, DEMO_TITLE
from unmixer.loops.key import Key

AUDIO_TYPES = ["wav", "mp3", "ogg", "flac", "m4a", "aac", "aif", "aiff", "opus"]

STAGE_LABELS = {
    "decoding": "Decoding the audio",
    "queued": "Waiting for another analysis to finish",
    "downbeats": "Finding the beats and downbeats",
    "cube": "Stacking the bars into a spectral cube",
    "decomposition": "Decomposing the cube (Tucker)",
    "loops": "Cutting and labelling the loops",
}


# ---------------------------------------------------------------------------- songs in
REFUSED, UPLOADER_GEN = state.UPLOAD_REFUSED, state.UPLOADER_GEN


def _uploader_key() -> str:
    gen = int(st.session_state.get(UPLOADER_GEN, 0))
    return state.UPLOADER if gen == 0 else f"{state.UPLOADER}:{gen}"


def _on_upload_change() -> None:
    """Files removed from the uploader (its x) leave the page too."""
    st.session_state.pop(REFUSED, None)
    current = {f.file_id for f in (st.session_state.get(_uploader_key()) or [])}
    gone = set(st.session_state.get(state.UPLOAD_IDS_LAST, [])) - current
    for sid, song in list(state.songs().items()):
        if song.upload_id in gone:
            state.remove_song(sid)


def _add_demo() -> None:
    data = DEMO_SONG.read_bytes()
    why = None if state.song_id(data) in state.songs() else state.room_for(len(data))
    if why:
        st.session_state[REFUSED] = (why, [f"{DEMO_TITLE} (demo)"])
    else:
        state.add_song(f"{DEMO_TITLE} (demo).ogg", data, source="demo")


def _forget_uploads(files) -> None:
    """Free the server's copy of uploaded files (their songs keep their own bytes): best
    effort, through Streamlit's upload manager (an internal API: nothing happens if it
    changes)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        for f in files:
            ctx.uploaded_file_mgr.remove_file(ctx.session_id, f.file_id)
    except Exception:  # noqa: BLE001 - freeing memory early is an optimisation only
        pass


def song_inputs() -> None:
    """The uploader (several files at once) and the demo button. Uploads over the session's
    limits (:func:`ui.state.room_for`) are refused with one message; the uploader is then
    emptied, so that the refused files leave the server's memory."""
    # One container, with or without the line about refused files: what is drawn below it
    # keeps its place (see song_card).
    with st.container():
        _song_inputs()


def _song_inputs() -> None:
    cols = st.columns([3, 1.2], vertical_alignment="top")
    files = cols[0].file_uploader(
        "Add songs", type=AUDIO_TYPES, accept_multiple_files=True, key=_uploader_key(),
        on_change=_on_upload_change,
        help=f"WAV, MP3, OGG, FLAC, M4A or AIFF, 8 s to 15 min, up to {state.MAX_SONGS} "
             "songs at once. Each song is analysed once; the result is kept on this "
             "server, so it comes back at once next time.")
    with cols[1]:
        st.markdown("**No song at hand?**")
        st.button("Try the demo song", icon=":material/music_note:", on_click=_add_demo,
                  key="demo_button", width="stretch")
        st.caption(DEMO_ATTRIBUTION)
    seen = st.session_state[state.UPLOAD_IDS_SEEN]
    refused, why = [], None
    for f in files or []:
        if f.file_id in seen:
            continue
        seen.add(f.file_id)
        reason = None if state.song_id(f.getvalue()) in state.songs() else state.room_for(f.size)
        if reason:
            refused.append(f)
            why = why or reason
        else:
            state.add_song(f.name, f.getvalue(), source="upload", upload_id=f.file_id)
    st.session_state[state.UPLOAD_IDS_LAST] = [f.file_id for f in files or []]
    if refused:
        st.session_state[REFUSED] = (why, [state.safe_name(f.name) for f in refused])
        st.session_state[UPLOADER_GEN] = int(st.session_state.get(UPLOADER_GEN, 0)) + 1
        _forget_uploads(files)
        for song in state.songs().values():
            song.upload_id = None  # the emptied uploader no longer holds it
        st.rerun()
    if REFUSED in st.session_state:
        reason, names = st.session_state[REFUSED]
        shown = ", ".join(md_escape(n) for n in names[:3]) \
            + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        st.warning(f"{len(names)} file{'s' if len(names) > 1 else ''} not added ({shown}): "
                   f"{reason}. Remove a song to add another.", icon=":material/block:")


# ---------------------------------------------------------------------------- analysis
QUICK_WAIT_S = 1.0
"""An analysis that ends within this time is shown at once, without a progress box."""


REFINING_BADGE = ":orange-badge[:material/autorenew: refining…]"
"""Marks a song whose loops are a quick first result (in its facts line)."""


@st.fragment(run_every=1.0)
def _progress(song: state.Song, n_loops: int | str, loop_bars: int, rough_shown: bool = False) -> None:
    """The progress of a song's analysis, one line per stage, redrawn every second on its own
    (the rest of the page, the playing deck included, is left alone); a full rerun when
    the quick first result comes (unless it is already shown) and when the analysis ends.
    Once rough loops are shown, the box is collapsed and says they are being refined."""
    job = engine.find_job(song, n_loops, loop_bars) or engine.submit(song, n_loops, loop_bars)
    rough = job.rough
    if job.future.done() or (rough is not None and not rough_shown):
        st.rerun()
    stages, fraction = list(job.stages), job.fraction
    place = engine.queue_place(job)
    what = STAGE_LABELS.get(stages[-1], stages[-1]) if stages \
        else "Waiting for another analysis to finish"
    if place is not None:
        what = f"waiting, {queue_line(*place)}"
    what = what[0].lower() + what[1:]
    title = md_escape(song.title)
    label = (f"Refining the loops of {title}: {what}…" if rough is not None
             else f"Unmixing {title}: {what}…")
    # Not `with st.status(...)`: leaving the block would mark the box complete (a tick).
    box = st.status(label, expanded=rough is None, state="running")
    if rough is not None:
        box.markdown(f"{REFINING_BADGE} Rough loops ready after {rough.seconds:.0f} s: "
                     "play them now. The refined loops replace them when ready.")
    for i, stage in enumerate(stages):
        finished = i < len(stages) - 1 or fraction >= 1.0
        mark = ":white_check_mark:" if finished else ":hourglass_flowing_sand:"
        pct = "" if finished or not 0 < fraction < 1 else f" ({fraction:.0%})"
        line = STAGE_LABELS.get(stage, stage)
        if stage == "queued" and place is not None:
            line = f"Waiting: {queue_line(*place)}"
        box.markdown(f"{mark} {line}{pct}")
    left = engine.time_left(job)
    box.caption(f"Started {time.time() - job.created:.0f} s ago"
                + (f", {about(left)} left" if left is not None else "")
                + ". You can keep playing with the deck meanwhile.")


def queue_line(ahead: int, wait_s: float) -> str:
    """'2 songs ahead of yours, about 1 min' (from :func:`ui.engine.queue_place`)."""
    if ahead == 0:
        return "yours is next"
    return f"{ahead} song{'s' if ahead > 1 else ''} ahead of yours, {about(wait_s)}"


def about(seconds: float) -> str:
    """A rough duration: 'about 15 s' (to 5 s), 'about 3 min' (whole minutes, up)."""
    if seconds < 57.5:
        return f"about {max(5, int(5 * round(seconds / 5)))} s"
    return f"about {int(-(-seconds // 60))} min"


def ensure_result(song: state.Song) -> state.SongResult | None:
    """The song's result for its current parameters; while it is being analysed in the
    background, its quick first result once the engine has one (``refining``), else None.
    A progress box is drawn meanwhile, and the page reruns when the rough and the final
    loops come."""
    n_loops, loop_bars = state.params(song.id)
    result = state.results().get(song.id)
    if result is not None and result.params == (n_loops, loop_bars) and not result.refining:
        return result
    job = engine.find_job(song, n_loops, loop_bars)
    if job is not None and job.future.done():  # just analysed (and now also on disk)
        result = job.future.result()
    elif job is None and engine.is_cached(song, n_loops, loop_bars):
        result = engine.analyse(song, n_loops, loop_bars)
    else:
        job = engine.submit(song, n_loops, loop_bars)
        try:  # no wait once rough loops can be shown: the user is playing with them
            result = job.future.result(timeout=0 if job.rough is not None else QUICK_WAIT_S)
        except FutureTimeout:
            result = job.rough
            _progress(song, n_loops, loop_bars, rough_shown=result is not None)
            if result is None:
                return None
    state.results()[song.id] = result
    return result


# ---------------------------------------------------------------------------- one song
def song_card(song: state.Song, deck_bpm: float | None, deck_shift: int = 0) -> None:
    """A bordered card: title and choices, progress or error, tempo and key, loop map, loop
    tiles. ``deck_shift``: the song's transposition on the deck (semitones)."""
    with st.container(border=True, key=f"song_{song.id}"):
        head = st.columns([2.4, 0.9, 1.7, 0.8], vertical_alignment="bottom")
        fixed = None if song.can_analyse else (
            "Opened from a mashup file: its loops as saved (the song's audio is not in the "
            "file, so it cannot be analysed again here). Add the song itself to change them.")
        with head[0]:
            st.markdown(f"### {md_escape(song.title)}")
        with head[1]:
            state.kept(st.selectbox, "Loops", state.n_loops_key(song.id),
                       state.DEFAULT_N_LOOPS, options=state.N_LOOPS_CHOICES,
                       format_func=lambda n: "Auto" if n == state.AUTO_LOOPS else str(n),
                       disabled=fixed is not None,
                       help=fixed or "How many loops to pull out of this song (3 to 10), or "
                            "Auto: Unmixer counts them (2 to 10) from how the bars repeat.")
        with head[2]:
            state.kept(st.segmented_control, "Loop length (bars)", state.loop_bars_key(song.id),
                       state.DEFAULT_LOOP_BARS, options=state.LOOP_BARS_CHOICES,
                       format_func=lambda n: "Auto" if n == state.AUTO else str(n),
                       disabled=fixed is not None,
                       help=fixed or "How many bars each loop lasts: Auto finds it from how the "
                                     "song repeats (and checks the bar lines too), or force 1, 2 "
                                     "or 4 bars.")
        head[3].button("Remove", icon=":material/close:", key=f"remove_{song.id}",
                       help=f"Remove {md_escape(song.title)} from the page (and its loops "
                            "from the mix)",
                       on_click=state.remove_song, args=(song.id,), width="stretch")
        # The progress box, the error, the facts and the note come and go between runs (the
        # progress box while the song is analysed or refined): they live in one container,
        # always drawn, so the loop map and the tiles below keep their places (delta paths)
        # from the rough loops to the refined ones. The browser draws a run's elements over
        # the last run's, place by place: a tile one place higher would be drawn over the
        # loop map while the old tiles stay below until the run ends, and a click there hits
        # a stale copy of another loop's box (issue 18).
        with st.container(key=f"head_{song.id}"):
            result = ensure_result(song)
            if result is None:
                return
            if result.error:
                st.error(md_escape(result.error), icon=":material/error:")
                return
            ext = result.extraction
            key = getattr(ext, "key", None)
            facts = [f"**{ext.bpm:.1f} BPM**", f"**{ext.meter}/4**"]
            if key:
                facts.append(f"**{Key.parse(key).label}**")
            facts += [f"{ext.n_bars} bars",
                     f"{ext.duration_s:.0f} s", f"{len(ext.loops)} loops{' (auto)' if result.auto else ''} of {ext.loop_bars} "
                     f"bar{'s' if ext.loop_bars > 1 else ''}{' (auto)' if getattr(ext, 'loop_bars_auto', False) else ''}"]
            if getattr(ext, "grid_note", "") not in ("", "as tracked", "given"):
                facts.append(f"grid corrected: {ext.grid_note}")
            if song.source == "demo":
                facts.append("demo song")
            if result.refining:
                facts.append(f"rough loops after {result.seconds:.0f} s {REFINING_BADGE}")
            elif result.restored:
                facts.append("opened from a mashup file")
            else:
                facts.append("analysed earlier (from the cache)" if result.from_cache
                             else f"analysed in {result.seconds:.0f} s")
            st.markdown(" · ".join(facts))
            note = ext.repetition_note() if hasattr(ext, "repetition_note") else ""
            if note:
                st.warning(note, icon=":material/info:")
        st.plotly_chart(loop_map_figure(ext), key=f"map_{song.id}",
                        config={"displayModeBar": False})
        _loop_tiles(song, result, deck_bpm, deck_shift)
        _song_zip(song, result, deck_bpm)


def _loop_tiles(song: state.Song, result: state.SongResult, deck_bpm: float | None,
                deck_shift: int = 0) -> None:
    """One tile per loop. Widget keys use the loop ids (the same for the rough and the
    final loops, so a choice made on a rough loop stays); the audio uses the audio key."""
    per_row = 5
    rkey = state.result_key(song.id, *result.params)
    loops = result.extraction.loops
    for row_start in range(0, len(loops), per_row):
        cols = st.columns(per_row)
        for col, loop in zip(cols, loops[row_start:row_start + per_row]):
            with col.container(border=True, key=f"tile_{rkey}_{loop.index}"):
                _loop_tile(song, result, rkey, loop, deck_bpm, deck_shift)


def _loop_tile(song: state.Song, result: state.SongResult, rkey: str, loop,
               deck_bpm: float | None, deck_shift: int = 0) -> None:
    ext = result.extraction
    akey = state.audio_key(song.id, result)
    lid = state.loop_id(rkey, loop.index)
    color = loop_color(loop.index)
    st.markdown(
        f"<div class='loop-tile-head'><span class='loop-swatch' style='background:{color}'>"
        f"</span><b>Loop {loop.index}</b>{loop_caption(loop.label)}</div>", unsafe_allow_html=True)
    st.image(loop_picture(akey, loop.index, color, loop.clip), width="stretch")
    st.audio(engine.player_ogg(akey, loop.index, loop.clip), format="audio/ogg")
    state.kept(st.checkbox, "In the mix", state.in_mix_key(lid), False)
    state.kept(st.slider, "Gain", state.gain_key(lid), 0.0, min_value=state.GAIN_RANGE_DB[0],
               max_value=state.GAIN_RANGE_DB[1], step=1.0, format="%+.0f dB",
               help="Loudness of this loop in the mix (dB).")
    key = mashup.loop_key(ext, loop)
    shift = deck_shift if key else 0
    original = mashup.loop_filename(song.title, loop.index, loop.label, ext.bpm, key)
    with st.popover("Download", icon=":material/download:", width="stretch",
                    disabled=result.refining, help=_REFINING_HELP if result.refining else None):
        st.download_button(
            f"At the song's tempo ({ext.bpm:.0f} BPM)", data=lambda c=loop.clip: wav_bytes(c),
            file_name=original, mime="audio/wav", on_click="ignore",
            key=f"dl_{lid}_orig", width="stretch")
        if _deck_tempo_ok(ext, loop.clip, deck_bpm):
            moved = Key.parse(key).transposed(shift).name if key else None
            st.download_button(
                f"At the deck's tempo ({deck_bpm:.0f} BPM"
                + (f", {Key.parse(moved).short}, {shift:+d} st)" if shift else ")"),
                data=lambda i=loop.index, n=shift: wav_bytes(
                    engine.stretched_clip(akey, i, deck_bpm, ext, n)),
                file_name=mashup.loop_filename(song.title, loop.index, loop.label, deck_bpm,
                                               moved),
                mime="audio/wav", on_click="ignore", key=f"dl_{lid}_deck",
                width="stretch")
    if loop.label == "drums":  # straight to the Drum Splitter with this loop as its input
        if st.button("Split its drums", icon=":material/album:", key=f"split_{lid}",
                     width="stretch", disabled=result.refining,
                     help=_REFINING_HELP if result.refining else
                     "Open this loop in the Drum Splitter: kick, snare, hi-hats and toms as "
                     "layers, MIDI and one-shots."):
            send_to_drum_splitter(f"{song.title} - loop {loop.index}.wav", loop.clip)


DRUM_PAGE = "app_pages/drum_splitter.py"
DRUM_SOURCE = "drums_source"
"""The Drum Splitter's input: (name, WAV bytes) in the session (see app_pages/drum_splitter.py)."""


def send_to_drum_splitter(name: str, clip) -> None:
    """Make a loop clip (2, samples) the Drum Splitter's input and open that page."""
    st.session_state[DRUM_SOURCE] = (name, wav_bytes(clip))
    st.session_state["drums_mode"] = "Drum loop"
    st.switch_page(DRUM_PAGE)


def _deck_tempo_ok(ext, clip, deck_bpm: float | None) -> bool:
    """Whether a clip of this song can be stretched to the deck's tempo."""
    if not deck_bpm:
        return False
    return mashup.can_stretch(clip.shape[-1], mashup.loop_samples(ext.loop_bars, deck_bpm,
                                                                  ext.meter))


_REFINING_HELP = "The downloads open when the refined loops are ready."


def _song_zip(song: state.Song, result: state.SongResult, deck_bpm: float | None) -> None:
    ext = result.extraction
    bpm = deck_bpm if _deck_tempo_ok(ext, ext.loops[0].clip, deck_bpm) else None
    st.download_button(
        f"Download all {len(ext.loops)} loops (ZIP)",
        data=lambda: mashup.loops_archive(song.title, ext, bpm),
        file_name=f"{mashup.slug(song.title)}_loops.zip", mime="application/zip",
        icon=":material/folder_zip:", on_click="ignore",
        key=f"zip_{state.result_key(song.id, *result.params)}", disabled=result.refining,
        help=_REFINING_HELP if result.refining else
        "Every loop as WAV, at the song's tempo and at the deck's tempo, "
        "plus the loop map (JSON).")
