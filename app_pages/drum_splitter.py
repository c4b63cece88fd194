"""Drum Splitter: transcribe a drum loop with the CNN and split it into five layers.

The page only draws; the work is :func:`unmixer.drums.separate.split_drums` (CNN onsets ->
KL-NMF with H from the onsets -> Wiener masks), :mod:`unmixer.drums.oneshots` and
:func:`unmixer.drums.transcribe.midi_bytes`.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from unmixer.core.audio import load_audio, wav_bytes, zip_bytes
from unmixer.datasets.drums import demo_loop
from unmixer.drums import CLASS_LABELS, CLASSES
from unmixer.drums.features import FRAME_RATE, log_mel
from unmixer.drums.oneshots import default_library, extract_oneshots, load_library, replace_samples
from unmixer.drums.separate import MIN_DURATION_S, percussive_part, split_drums
from unmixer.drums.transcribe import midi_bytes
from unmixer.errors import UnmixerError

AUDIO_TYPES = ["wav", "mp3", "ogg", "flac", "m4a", "aac", "aif", "aiff", "opus"]
COLORS = {"kick": "#E74C3C", "snare": "#F39C12", "hihat_open": "#27AE60",
          "hihat_closed": "#2E86DE", "toms": "#8E44AD"}
# Mel band on which each class's onsets are drawn (the piano-roll lanes).
LANES = {"kick": 8, "toms": 24, "snare": 40, "hihat_closed": 60, "hihat_open": 70}
MAX_PLOT_COLUMNS = 2500
MEL_COLORS = [[0.0, "#FFFFFF"], [0.35, "#D9D4F7"], [1.0, "#1E1B2E"]]

SOURCE = "drums_source"      # (name, bytes) of the input (also set by the Unmixer page's tiles)
MODE = "drums_mode"          # "Drum loop" / "Full song (HPSS first)"
LIBRARY = "drums_library"    # uploaded one-shots


@st.cache_data(max_entries=3, show_spinner=False)
def analyse(data: bytes, name: str, full_song: bool) -> dict:
    """Split the drums of an uploaded file (cached on its bytes and the mode)."""
    audio = load_audio(data, name=name, min_duration_s=MIN_DURATION_S)
    drums = percussive_part(audio) if full_song else audio
    split = split_drums(drums)
    return {"audio": drums, "layers": split.layers, "transcription": split.transcription,
            "oneshots": extract_oneshots(split.layers, split.transcription),
            "mel": log_mel(drums.mean(axis=0)),
            "layer_wavs": [wav_bytes(layer) for layer in split.layers]}


@st.cache_resource(show_spinner=False)
def builtin_library():
    return default_library()


@st.cache_data(max_entries=4, show_spinner=False)
def replacement(data: bytes, name: str, full_song: bool, files: tuple) -> tuple[bytes, dict]:
    """The sample-replacement mix (WAV bytes) and the chosen one-shot per class."""
    result = analyse(data, name, full_song)
    library = load_library(list(files)) if files else builtin_library()
    audio, chosen = replace_samples(result["transcription"], result["oneshots"], library,
                                    result["audio"].shape[-1], reference=result["audio"])
    return wav_bytes(audio), chosen


def piano_roll(mel: np.ndarray, transcription) -> go.Figure:
    """The transcription as a piano roll (one lane per class) over the mel spectrogram."""
    step = max(1, int(np.ceil(mel.shape[1] / MAX_PLOT_COLUMNS)))
    n = mel.shape[1] // step * step
    shown = mel[:, :n].reshape(mel.shape[0], -1, step).max(axis=2) if step > 1 else mel
    fig = go.Figure(go.Heatmap(z=shown, x=np.arange(shown.shape[1]) * step / FRAME_RATE,
                               colorscale=MEL_COLORS, showscale=False, hoverinfo="skip"))
    for cls in CLASSES:
        t = transcription.onsets[cls]
        v = transcription.velocities[cls]
        fig.add_trace(go.Scatter(
            x=t, y=np.full(t.size, LANES[cls]), mode="markers", name=CLASS_LABELS[cls],
            marker=dict(symbol="line-ns-open", size=10 + 16 * v, color=COLORS[cls],
                        line=dict(width=3, color=COLORS[cls])),
            hovertemplate="%{x:.3f} s<extra>" + CLASS_LABELS[cls] + "</extra>"))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="time (s)", legend=dict(orientation="h", y=1.08),
                      yaxis=dict(title="mel band (onsets drawn in one lane per class)",
                                 range=[0, mel.shape[0]]))
    return fig


def _zip(result: dict, midi: bytes) -> bytes:
    files = {f"layers/{cls}.wav": data for cls, data in zip(CLASSES, result["layer_wavs"])}
    files.update({f"oneshots/{cls}.wav": wav_bytes(hit) for cls, hit in result["oneshots"].items()})
    files["drums.mid"] = midi
    files["onsets.json"] = json.dumps(result["transcription"].to_json(), indent=1).encode()
    return zip_bytes(files)


def _use_demo() -> None:
    audio, _ = demo_loop()
    st.session_state[SOURCE] = ("demo drum loop.wav", wav_bytes(audio))


st.title("Drum Splitter", anchor=False)
st.caption("A small CNN transcribes the kick, snare/clap, open and closed hi-hat and "
           "toms/cowbell onsets; KL-NMF then learns the sounds of this mix with the activations "
           "fixed to those onsets, and Wiener masks give five layers that add up to the input "
           "(Koretzky & Rajashekharappa, ISMIR 2021 LBD).")

cols = st.columns([3, 1.3], vertical_alignment="top")
upload = cols[0].file_uploader("Drum loop or song", type=AUDIO_TYPES, key="drums_upload",
                               help="At least 1 s. For a whole song choose 'Full song': the "
                                    "percussive part is taken out first (HPSS).")
if upload is not None and st.session_state.get(SOURCE, ("",))[0] != upload.name:
    st.session_state[SOURCE] = (upload.name, upload.getvalue())
with cols[1]:
    st.markdown("**No loop at hand?**")
    st.button("Try a generated drum loop", icon=":material/music_note:", on_click=_use_demo,
              key="drums_demo", width="stretch")
st.radio("The input is", ["Drum loop", "Full song (HPSS first)"], key=MODE, horizontal=True)

source = st.session_state.get(SOURCE)
if source is None:
    st.info("Upload a drum loop or a song, or try the generated loop.")
    st.stop()

name, data = source
full_song = st.session_state[MODE].startswith("Full")
try:
    with st.spinner(f"Splitting the drums of {name}..."):
        result = analyse(data, name, full_song)
except UnmixerError as err:
    st.error(str(err))
    st.stop()

tr = result["transcription"]
st.subheader(name, anchor=False)
metric_cols = st.columns(len(CLASSES))
for col, cls in zip(metric_cols, CLASSES):
    n_hits = tr.onsets[cls].size
    col.metric(CLASS_LABELS[cls], f"{n_hits} hit" + ("" if n_hits == 1 else "s"))
st.plotly_chart(piano_roll(result["mel"], tr), width="stretch", key="drums_roll")

midi = midi_bytes(tr)
dl = st.columns(3)
dl[0].download_button("MIDI (General MIDI drums)", midi, "drums.mid", "audio/midi",
                      icon=":material/piano:", key="dl_midi", width="stretch")
dl[1].download_button("Onsets (JSON)", json.dumps(tr.to_json(), indent=1), "onsets.json",
                      "application/json", key="dl_json", width="stretch")
dl[2].download_button("Everything (ZIP)", _zip(result, midi), "drum_split.zip",
                      "application/zip", icon=":material/folder_zip:", key="dl_zip",
                      width="stretch")

st.subheader("Layers", anchor=False)
st.caption("Each layer is the mix through its Wiener mask, so the five add up to the input.")
for cls, wav in zip(CLASSES, result["layer_wavs"]):
    row = st.columns([1.2, 4, 1.2], vertical_alignment="center")
    row[0].markdown(f"**{CLASS_LABELS[cls]}**")
    row[1].audio(wav, format="audio/wav")
    row[2].download_button("WAV", wav, f"{cls}.wav", "audio/wav", key=f"dl_layer_{cls}",
                           icon=":material/download:", width="stretch")

st.subheader("One-shots", anchor=False)
st.caption("The cleanest single hit of each class: loud, and with the least energy from the "
           "other layers in its window.")
shots = result["oneshots"]
if not shots:
    st.info("No hits were found, so there are no one-shots.")
shot_cols = st.columns(max(len(shots), 1))
for col, (cls, hit) in zip(shot_cols, shots.items()):
    wav = wav_bytes(hit)
    col.markdown(f"**{CLASS_LABELS[cls]}**")
    col.audio(wav, format="audio/wav")
    col.download_button("WAV", wav, f"oneshot_{cls}.wav", "audio/wav", key=f"dl_shot_{cls}",
                        width="stretch")

st.subheader("Sample replacement", anchor=False)
st.caption("The pattern played again with the nearest one-shots (MFCC statistics) from your "
           "samples, or from the built-in synthetic kits.")
lib_files = st.file_uploader("One-shots to choose from (optional)", type=AUDIO_TYPES,
                             accept_multiple_files=True, key=LIBRARY)
files = tuple((f.name, f.getvalue()) for f in lib_files or [])
try:
    with st.spinner("Choosing the nearest one-shots..."):
        rep_wav, chosen = replacement(data, name, full_song, files)
except UnmixerError as err:
    st.error(str(err))
else:
    st.audio(rep_wav, format="audio/wav")
    st.caption(" · ".join(f"{CLASS_LABELS[c]}: {n}" for c, n in chosen.items()) or "nothing to replace")
    st.download_button("Replaced pattern (WAV)", rep_wav, "replaced.wav", "audio/wav",
                       key="dl_replaced")
