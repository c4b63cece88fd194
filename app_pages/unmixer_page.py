"""Unmixer: pull the loops out of songs and play them together at any tempo.

The page reads top to bottom like it looks: songs in, the deck (filled last, once every
song is analysed, but drawn above the songs), then one card per song. What the tab holds is
kept on disk (:mod:`ui.sessions`) and given back to a new session of the same tab.
"""

import streamlit as st

from ui import deck, engine, sessions, songs, state, style

engine.warm_up()  # once per server: the first upload does not wait for the engine to load
state.init()
state.sync_kept()  # choices whose widget's write-back a newer rerun cut short
style.inject()
sessions.keep()  # a new session of this tab (a reload, a restarted server) gets it all back

st.title("Unmixer", anchor=False)
st.markdown(
    "Drop in a few songs. Unmixer finds the **loops** that repeat in each one (drums, bass, "
    "chords…), lines them all up at **one tempo** (and, if you like, in **one key**), and lets "
    "you click them in and out of a live mix, then download the loops and the mix."
)

songs.song_inputs()
sessions.save()
deck_slot = st.container()

if state.songs():
    st.subheader("Your songs", anchor="songs")
ready = deck.ready_songs()
deck.deck_tempo_default(ready)
shifts = deck.deck_shifts(ready)
for song in list(state.songs().values()):
    songs.song_card(song, st.session_state.get(state.DECK_BPM), shifts.get(song.id, 0))

with deck_slot:
    deck.deck_section(deck.ready_songs())

sessions.save()
