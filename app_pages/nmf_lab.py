"""NMF Lab: factorise a clip several ways, then look, listen and measure.

Methods: β-divergence NMF (ours, beside scikit-learn's ``mu`` and ``cd`` from the same start),
HPSS + NMF with drums/bass/melody stems, FastICA of stereo mixtures, convolutive NMF (NMFD,
beside plain NMF with T x K components), complex NMF (own phases, beside Wiener masks of the
same W, H), and Let-it-Bee mosaicing.
Each method is one section function (its settings, its run and its results), with its cached
work beside it, and ``METHODS`` maps the method names to them. The heavy work sits in
``st.cache_data`` functions keyed by the SHA-1 of the audio bytes plus the parameters; the page
only draws. Session-state keys all start with ``nmf_lab:``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
import plotly.graph_objects as go
import soundfile as sf
import streamlit as st
from plotly.colors import sequential
from plotly.subplots import make_subplots

from unmixer.core import metrics
from unmixer.core.audio import SAMPLE_RATE, load_audio, ogg_bytes, wav_bytes
from unmixer.core.spectrum import HOP_LENGTH, stft
from unmixer.data import DEMO_ATTRIBUTION, DEMO_SONG, DEMO_TITLE
from unmixer.errors import UnmixerError
from unmixer.lab import complex_nmf, hpss, ica, mosaic, nmf, nmfd

MAX_CLIP_S = 60.0  # longest excerpt the lab works on (s); longer clips are trimmed

MIN_CLIP_S = 1.0
KEY = "nmf_lab:"
BETAS = {0.0: "0 · Itakura-Saito", 0.5: "0.5", 1.0: "1 · Kullback-Leibler", 1.5: "1.5",
         2.0: "2 · Euclidean"}
HEATMAP_ROWS, HEATMAP_COLS = 256, 600  # display resolution of spectrogram heatmaps
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
# Magma as rgb() stops: Streamlit's Plotly renders the hex stop "#000004" (and the named
# "Magma"/"Inferno" scales that start with it) as a light purple band at the bottom.
MAGMA = [[i / (len(sequential.Magma) - 1), "rgb({},{},{})".format(*(int(c[j:j + 2], 16)
                                                                    for j in (1, 3, 5)))]
         for i, c in enumerate(sequential.Magma)]
DEFAULTS = {"method": "NMF", "k": 8, "beta": 1.0, "iters": 100, "init": "nndsvda", "l1": 0.0,
            "compare": True, "nh": 4, "np": 3, "hbeta": 1.0, "hiters": 100, "variant": "tf",
            "miters": 20, "mr": 3, "mp": 10, "mc": 3, "mgl": 10, "groups": "",
            "xaxis": "iteration", "dk": 4, "dt": 8, "dbeta": 1.0, "diters": 100,
            "dcompare": True, "ck": 4, "citers": 50, "cphase": "own"}  # initial widget values (widgets read st.session_state)


# --------------------------------------------------------------------------- state


def _keep_widget_state() -> None:
    """Widget values survive visits to other pages (Streamlit drops undrawn widgets' keys)."""
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(KEY + "w:"):
            st.session_state[key] = st.session_state[key]


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _accept(slot: str, name: str, data: bytes) -> None:
    """Decode an upload into ``slot``; on bad input show one line and keep the previous clip."""
    try:
        audio = _decode(_digest(data), name, data)
    except UnmixerError as err:
        st.error(str(err), icon=":material/error:")
        return
    st.session_state[KEY + slot] = {"name": name, "data": data, "digest": _digest(data),
                                    "seconds": audio.shape[-1] / SAMPLE_RATE}
    st.session_state.pop(KEY + "run", None)


def _clip_input(slot: str, label: str, help_text: str) -> dict | None:
    """Uploader for one clip slot; returns the clip record in the session, if any."""
    upload = st.file_uploader(label, type=["wav", "flac", "ogg", "mp3", "m4a", "aiff", "aif"],
                              key=KEY + "upload_" + slot, help=help_text)
    seen = KEY + "seen_" + slot
    if upload is not None and st.session_state.get(seen) != upload.file_id:
        st.session_state[seen] = upload.file_id
        _accept(slot, upload.name, upload.getvalue())
    return st.session_state.get(KEY + slot)


def _excerpt_start(slot: str, clip: dict) -> float:
    """Start (s) of the ≤ 60 s excerpt of a long clip, chosen by the user."""
    if clip["seconds"] <= MAX_CLIP_S:
        return 0.0
    latest = float(np.floor(clip["seconds"] - MAX_CLIP_S))
    st.info(f"“{clip['name']}” is {clip['seconds']:.0f} s long; the lab works on a "
            f"{MAX_CLIP_S:.0f} s excerpt. Choose where it starts.", icon=":material/content_cut:")
    key = f"{KEY}w:start_{slot}"
    st.session_state.setdefault(key, 0.0)
    return float(st.slider("Excerpt start (s)", 0.0, latest, step=1.0, key=key))


# --------------------------------------------------------------------------- shared work


@st.cache_data(max_entries=6, show_spinner="Decoding…")
def _decode(digest: str, name: str, _data: bytes) -> np.ndarray:
    return load_audio(_data, name=name, min_duration_s=MIN_CLIP_S)


def _excerpt(clip: dict, start_s: float) -> np.ndarray:
    audio = _decode(clip["digest"], clip["name"], clip["data"])
    a = int(round(start_s * SAMPLE_RATE))
    return audio[:, a : a + int(MAX_CLIP_S * SAMPLE_RATE)]


def _ogg(audio: np.ndarray) -> bytes:
    """Ogg Vorbis bytes for the players (a tenth of the WAV size)."""
    return ogg_bytes(audio)


def _pool(x: np.ndarray, rows: int, cols: int, how: str = "mean") -> np.ndarray:
    """Mean- (or max-) pool a 2-D array to at most rows x cols (display only)."""
    r = max(1, int(np.ceil(x.shape[0] / rows)))
    c = max(1, int(np.ceil(x.shape[1] / cols)))
    pr, pc = (-x.shape[0]) % r, (-x.shape[1]) % c
    x = np.pad(x, ((0, pr), (0, pc)), mode="edge")
    blocks = x.reshape(x.shape[0] // r, r, x.shape[1] // c, c)
    return blocks.max(axis=(1, 3)) if how == "max" else blocks.mean(axis=(1, 3))


def _db(x: np.ndarray, ref: float, floor_db: float = -80.0) -> np.ndarray:
    return np.maximum(20 * np.log10(np.maximum(x, 1e-12) / ref), floor_db).astype(np.float32)


def _display(V: np.ndarray, W: np.ndarray, H: np.ndarray, R: np.ndarray | None = None) -> dict:
    """Everything the decomposition figure needs, small enough to cache and send (R: the
    model, default W @ H)."""
    R = W @ H if R is None else R
    ref = max(float(V.max()), 1e-12)
    energy = np.sum(W.astype(np.float64) ** 2, axis=0) * np.sum(H.astype(np.float64) ** 2, axis=1)
    return {
        "V_db": _db(_pool(V, HEATMAP_ROWS, HEATMAP_COLS), ref),
        "R_db": _db(_pool(R, HEATMAP_ROWS, HEATMAP_COLS), ref),
        "W_db": _db(_pool(W, HEATMAP_ROWS, W.shape[1]), max(float(W.max()), 1e-12), -60.0),
        "H": _pool(H, H.shape[0], HEATMAP_COLS),
        "contrib": 100 * energy / max(float(energy.sum()), 1e-30),
        "error": np.mean((V - R) ** 2, axis=0),
        "seconds": V.shape[1] * HOP_LENGTH / SAMPLE_RATE,
    }


@st.cache_data(max_entries=8, show_spinner=False)
def _component_wav(digest: str, start: float, params: tuple, groups: tuple | None, index: int,
                   _W: np.ndarray, _H: np.ndarray, _clip: dict) -> bytes:
    audio = _excerpt(_clip, start)
    g = None if groups is None else [list(x) for x in groups]
    out = nmf.resynthesise_components(audio, _W, _H, g, which=[index])
    return wav_bytes(out[0])


@st.cache_data(max_entries=4, show_spinner="Scoring against the reference stems…")
def _score(digest: str, params: tuple, ref_digests: tuple, _refs: list, _outputs: list) -> dict:
    refs = [load_audio(d, name=n, min_duration_s=MIN_CLIP_S) for n, d in _refs]
    ests = [sf.read(io.BytesIO(b), always_2d=True)[0].T.astype(np.float32) for b in _outputs]
    n = min(x.shape[-1] for x in refs + ests)
    scores = metrics.bss_eval(np.stack([x[:, :n] for x in refs]),
                              np.stack([x[:, :n] for x in ests]), max_seconds=30.0)
    return {"sdr": scores.sdr, "sir": scores.sir, "sar": scores.sar, "si_sdr": scores.si_sdr,
            "match": scores.match}


def _npz(W: np.ndarray, H: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, W=W, H=H)
    return buf.getvalue()


# --------------------------------------------------------------------------- shared figures


def decomposition_figure(d: dict, labels: list[str]) -> go.Figure:
    """Seed 001's ``plot_decomposition`` panels: spectrogram, reconstruction, W, H,
    per-component contributions and the error over time."""
    fig = make_subplots(rows=3, cols=2, vertical_spacing=0.13, horizontal_spacing=0.09,
                        subplot_titles=("Spectrogram |X| (dB)", "Reconstruction W·H (dB)",
                                        "Templates W (dB)", "Activations H",
                                        "Component contributions (% of model energy)",
                                        "Reconstruction error over time (MSE)"))
    t = np.linspace(0, d["seconds"], d["V_db"].shape[1])
    f = np.linspace(0, SAMPLE_RATE / 2000, d["V_db"].shape[0])
    for col, z in ((1, d["V_db"]), (2, d["R_db"])):
        fig.add_trace(go.Heatmap(z=z, x=t, y=f, colorscale=MAGMA, zmin=-80, zmax=0,
                                 showscale=col == 2, colorbar=dict(len=0.3, y=0.87, title="dB"),
                                 hovertemplate="%{x:.2f} s, %{y:.2f} kHz: %{z:.0f} dB"
                                               "<extra></extra>"), 1, col)
    fw = np.linspace(0, SAMPLE_RATE / 2000, d["W_db"].shape[0])
    fig.add_trace(go.Heatmap(z=d["W_db"], x=labels, y=fw, colorscale=MAGMA, zmin=-60, zmax=0,
                             showscale=False, hovertemplate="%{x}, %{y:.2f} kHz: %{z:.0f} dB"
                                                           "<extra></extra>"), 2, 1)
    th = np.linspace(0, d["seconds"], d["H"].shape[1])
    fig.add_trace(go.Heatmap(z=d["H"], x=th, y=labels, colorscale=MAGMA, showscale=False,
                             hovertemplate="%{y} at %{x:.2f} s: %{z:.3g}<extra></extra>"), 2, 2)
    fig.add_trace(go.Bar(x=labels, y=d["contrib"], marker_color=COLORS[0],
                         hovertemplate="%{x}: %{y:.1f} %<extra></extra>"), 3, 1)
    te = np.arange(d["error"].size) * HOP_LENGTH / SAMPLE_RATE
    fig.add_trace(go.Scatter(x=te, y=d["error"], mode="lines", line=dict(color=COLORS[1]),
                             hovertemplate="%{x:.2f} s: %{y:.3g}<extra></extra>"), 3, 2)
    for row, col, xt, yt in ((1, 1, "time (s)", "kHz"), (1, 2, "time (s)", "kHz"),
                             (2, 1, "component", "kHz"), (2, 2, "time (s)", "component"),
                             (3, 1, "component", "%"), (3, 2, "time (s)", "MSE")):
        fig.update_xaxes(title_text=xt, row=row, col=col)
        fig.update_yaxes(title_text=yt, row=row, col=col)
    fig.update_layout(height=1000, showlegend=False, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def loss_figure(curves: dict, x_axis: str) -> go.Figure:
    """Loss of every solver against iterations or seconds, log-scaled."""
    fig = go.Figure()
    for i, (name, (iters, loss, secs)) in enumerate(curves.items()):
        ok = np.isfinite(loss)
        x = np.asarray(iters if x_axis == "iteration" else secs)[ok]
        fig.add_trace(go.Scatter(x=x, y=np.asarray(loss)[ok], name=name, mode="lines+markers",
                                 marker=dict(size=4), line=dict(color=COLORS[i % len(COLORS)])))
    fig.update_layout(height=360, xaxis_title=x_axis + ("" if x_axis == "iteration" else " (s)"),
                      yaxis_title="β-divergence", yaxis_type="log",
                      margin=dict(l=50, r=20, t=20, b=40), legend=dict(x=0.6, y=0.98))
    return fig


# --------------------------------------------------------------------------- shared widgets


def _players(names: list[str], players: list[bytes], wav: callable, prefix: str) -> None:
    """One row per output: name, player and a WAV download (made on click)."""
    for i, (name, data) in enumerate(zip(names, players)):
        c1, c2, c3 = st.columns([1.2, 5, 1.4], vertical_alignment="center")
        c1.markdown(f"**{name}**")
        c2.audio(data, format="audio/ogg")
        c3.download_button("WAV", data=lambda i=i: wav(i), file_name=f"{prefix}_{name}.wav",
                           mime="audio/wav", on_click="ignore", key=f"{KEY}dl_{prefix}_{i}",
                           icon=":material/download:")


def _parse_groups(text: str, k: int) -> list[list[int]]:
    """'1+2, 3, 4+5' -> [[0, 1], [2], [3, 4]] (1-based in the UI)."""
    groups = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            members = sorted({int(x) - 1 for x in part.replace(" ", "+").split("+") if x})
        except ValueError:
            raise UnmixerError(f"cannot read the group “{part}”: write components as 1+2, 3") from None
        if not members or min(members) < 0 or max(members) >= k:
            raise UnmixerError(f"group “{part}” names a component outside 1..{k}")
        groups.append(members)
    return groups


def _reference_scores(clip: dict, params: tuple, names: list[str], players: list[bytes]) -> None:
    """Optional SDR/SIR/SAR/SI-SDR against uploaded reference stems."""
    with st.expander("Score against reference stems (optional)", icon=":material/rule:"):
        st.caption("Upload the true stems of this excerpt (same start and length) to get "
                   "BSS Eval SDR/SIR/SAR and SI-SDR (dB) of the best-matching outputs.")
        files = st.file_uploader("Reference stems", accept_multiple_files=True,
                                 type=["wav", "flac", "ogg", "mp3"], key=KEY + "refs")
        if not files:
            return
        if len(files) > len(players):
            st.error(f"{len(files)} references but only {len(players)} outputs to match them.")
            return
        refs = [(f.name, f.getvalue()) for f in files]
        try:
            s = _score(clip["digest"], params, tuple(_digest(d) for _, d in refs), refs, players)
        except (UnmixerError, ValueError) as err:
            st.error(str(err))
            return
        st.dataframe({"reference": [n for n, _ in refs],
                      "matched output": [names[i] for i in s["match"]],
                      "SDR (dB)": np.round(s["sdr"], 1), "SIR (dB)": np.round(s["sir"], 1),
                      "SAR (dB)": np.round(s["sar"], 1), "SI-SDR (dB)": np.round(s["si_sdr"], 1)},
                     hide_index=True)


def _factorisation_panels(out: dict, models_label: str = "solver") -> None:
    """Decomposition figure, loss curves and the solver table of an NMF-type result."""
    K = out["W"].shape[1]
    labels = out.get("labels") or [str(i + 1) for i in range(K)]
    st.subheader("Decomposition", anchor=False)
    st.plotly_chart(decomposition_figure(out["display"], labels), width="stretch",
                    key=KEY + "fig_dec")
    st.subheader("Loss curves", anchor=False)
    x_axis = st.radio("x axis", ["iteration", "seconds"], horizontal=True, key=KEY + "w:xaxis",
                      label_visibility="collapsed")
    st.plotly_chart(loss_figure(out["curves"], x_axis), width="stretch",
                    key=KEY + "fig_loss")
    st.dataframe({models_label: list(out["curves"]),
                  "iterations": [int(c[0][-1]) for c in out["curves"].values()],
                  "final loss": [f"{c[1][-1]:.6g}" for c in out["curves"].values()],
                  "time (s)": [round(float(c[2][-1]), 2) for c in out["curves"].values()]},
                 hide_index=True)


def _run_when_asked(method: str, clip: dict, start: float, params: tuple) -> tuple:
    """The Run button; returns the run key once this method and these settings were run
    (otherwise a hint and ``st.stop()``)."""
    run_key = (method, clip["digest"], start, params)
    if st.button("Run", type="primary", icon=":material/play_arrow:", key=KEY + "go"):
        st.session_state[KEY + "run"] = run_key
    if st.session_state.get(KEY + "run") != run_key:
        st.caption("Press **Run** to compute (results are cached: re-running the same settings "
                   "is instant).")
        st.stop()
    return run_key


def _computed(method: str, run, *args, **kwargs) -> dict:
    """``run(*args, **kwargs)`` under a spinner; bad input: one error line and ``st.stop()``."""
    try:
        with st.spinner(f"Running {method}…"):
            return run(*args, **kwargs)
    except UnmixerError as err:
        st.error(str(err), icon=":material/error:")
        st.stop()


# --------------------------------------------------------------------------- NMF


@st.cache_data(max_entries=4, show_spinner=False)
def _run_nmf(digest: str, start: float, k: int, beta: float, n_iter: int, init: str, l1: float,
             compare: bool, _clip: dict) -> dict:
    audio = _excerpt(_clip, start)
    spec = stft(audio)
    V = np.abs(spec).mean(axis=0)
    res = nmf.beta_nmf(V, k, beta=beta, n_iter=n_iter, init=init, l1_H=l1, tol=0.0)
    curves = {"ours (MU)": (np.arange(res.loss.size), res.loss, res.times_s - res.times_s[0])}
    if compare:
        start_point = nmf.beta_nmf(V, k, beta=beta, n_iter=0, init=init)  # the same start
        solvers = ["mu"] + (["cd"] if beta == 2.0 else [])
        for solver in solvers:
            c = nmf.sklearn_nmf_curve(V, start_point.W, start_point.H, beta=beta, solver=solver,
                                      n_iter=n_iter)
            curves[f"scikit-learn {solver}"] = (c.iterations, c.loss, c.times_s)
    players = [_ogg(x) for x in nmf.iter_components(audio, res.W, res.H, spec=spec)]
    return {"W": res.W, "H": res.H, "curves": curves, "players": players,
            "display": _display(V, res.W, res.H), "n_iter": res.n_iter}


@st.cache_data(max_entries=8, show_spinner=False)
def _run_groups(digest: str, start: float, params: tuple, groups: tuple, _W: np.ndarray,
                _H: np.ndarray, _clip: dict) -> list[bytes]:
    audio = _excerpt(_clip, start)
    outs = nmf.iter_components(audio, _W, _H, [list(g) for g in groups])
    return [_ogg(x) for x in outs]


def nmf_section(clip: dict, start: float, source: dict | None) -> None:
    """β-NMF: settings, the run, decomposition and loss curves, components, groups, scores."""
    c1, c2, c3, c4, c5 = st.columns(5)
    k = c1.slider("Components K", 1, 16, key=KEY + "w:k")
    beta = c2.select_slider("β (divergence)", list(BETAS), format_func=BETAS.get,
                            key=KEY + "w:beta")
    n_iter = c3.number_input("Iterations", 1, 1000, step=10, key=KEY + "w:iters")
    init = c4.selectbox("Initialisation", ["nndsvda", "nndsvd", "random"], key=KEY + "w:init")
    l1 = c5.number_input("L1 on H", 0.0, 1e6, key=KEY + "w:l1",
                         help="Sparsity penalty on the activations (units of the divergence).")
    compare = st.toggle("Compare with scikit-learn (mu; and cd when β = 2) from the same start",
                        key=KEY + "w:compare")
    params = (k, float(beta), int(n_iter), init, float(l1), bool(compare))
    run_key = _run_when_asked("NMF", clip, start, params)
    out = _computed("NMF", _run_nmf, clip["digest"], start, *params, _clip=clip)
    _factorisation_panels(out)
    K = out["W"].shape[1]
    st.subheader("Components", anchor=False)
    names = [f"component {i + 1:02d}" for i in range(K)]
    _players(names, out["players"],
             lambda i: _component_wav(clip["digest"], start, params, None, i, out["W"], out["H"],
                                      clip), "component")
    st.subheader("Groups", anchor=False)
    text = st.text_input("Group components (e.g. 1+2, 3, 4+5+6); the rest form one more group",
                         key=KEY + "w:groups")
    all_names, all_players = names, out["players"]
    if text.strip():
        try:
            groups = _parse_groups(text, K)
        except UnmixerError as err:
            st.error(str(err), icon=":material/error:")
            groups = []
        if groups:
            used = {i for g in groups for i in g}
            full = groups + ([[i for i in range(K) if i not in used]] if len(used) < K else [])
            gkey = tuple(tuple(g) for g in full)
            with st.spinner("Masking the groups…"):
                g_players = _run_groups(clip["digest"], start, params, gkey, out["W"], out["H"],
                                        clip)
            g_names = ["+".join(str(i + 1) for i in g) for g in full]
            _players(g_names, g_players,
                     lambda i: _component_wav(clip["digest"], start, params, gkey, i, out["W"],
                                              out["H"], clip), "group")
            all_names, all_players = g_names, g_players
    st.download_button("W and H (NPZ)", data=lambda: _npz(out["W"], out["H"]),
                       file_name="nmf_W_H.npz", on_click="ignore", key=KEY + "dl_npz",
                       icon=":material/data_array:")
    _reference_scores(clip, run_key, all_names, all_players)


# --------------------------------------------------------------------------- HPSS + NMF


@st.cache_data(max_entries=4, show_spinner=False)
def _run_hpss(digest: str, start: float, n_h: int, n_p: int, beta: float, n_iter: int,
              _clip: dict) -> dict:
    audio = _excerpt(_clip, start)
    spec = stft(audio)
    V = np.abs(spec).mean(axis=0)
    res = hpss.hpss_nmf(V, n_h, n_p, beta=beta, n_iter=n_iter)
    stems = res.stem_groups()
    names = list(stems) + ["harmonic", "percussive"]
    outs = [_ogg(x) for x in nmf.iter_components(audio, res.W, res.H, list(stems.values()),
                                                 spec=spec)]
    h_idx = np.flatnonzero(~res.is_percussive).tolist()
    outs += [_ogg(x) for x in nmf.iter_components(audio, res.W, res.H, [h_idx], spec=spec)]
    curves = {"harmonic NMF": (np.arange(res.harmonic.loss.size), res.harmonic.loss,
                               res.harmonic.times_s),
              "percussive NMF": (np.arange(res.percussive.loss.size), res.percussive.loss,
                                 res.percussive.times_s)}
    return {"W": res.W, "H": res.H, "names": names, "players": outs,
            "groups": {**stems, "harmonic": h_idx,
                       "percussive": np.flatnonzero(res.is_percussive).tolist()},
            "labels": [("P" if p else "H") + str(i + 1) for i, p in enumerate(res.is_percussive)],
            "display": _display(V, res.W, res.H), "curves": curves}


@st.cache_data(max_entries=8, show_spinner="Writing the WAV…")
def _hpss_wav(digest: str, start: float, params: tuple, index: int, _clip: dict) -> bytes:
    out = _run_hpss(digest, start, *params, _clip=_clip)
    n_stems = len(out["names"]) - 2
    if index < n_stems:
        groups, which = [out["groups"][n] for n in out["names"][:n_stems]], index
    else:
        groups, which = [out["groups"]["harmonic"]], index - n_stems
    audio = _excerpt(_clip, start)
    return wav_bytes(nmf.resynthesise_components(audio, out["W"], out["H"], groups,
                                                 which=[which])[0])


def hpss_section(clip: dict, start: float, source: dict | None) -> None:
    """HPSS + NMF: settings, the run, decomposition and loss curves, the stems, scores."""
    c1, c2, c3, c4 = st.columns(4)
    n_h = c1.slider("Harmonic components", 1, 12, key=KEY + "w:nh")
    n_p = c2.slider("Percussive components", 1, 12, key=KEY + "w:np")
    beta = c3.select_slider("β (divergence)", list(BETAS), format_func=BETAS.get,
                            key=KEY + "w:hbeta")
    n_iter = c4.number_input("Iterations", 1, 1000, step=10, key=KEY + "w:hiters")
    params = (n_h, n_p, float(beta), int(n_iter))
    run_key = _run_when_asked("HPSS + NMF", clip, start, params)
    out = _computed("HPSS + NMF", _run_hpss, clip["digest"], start, *params, _clip=clip)
    _factorisation_panels(out)
    st.subheader("Stems", anchor=False)
    st.caption("Drums: the percussive components. Bass: harmonic components with most template "
               "energy below 200 Hz. Melody: the other harmonic components. Soft masks, so the "
               "stems sum to the clip.")
    _players(out["names"], out["players"],
             lambda i: _hpss_wav(clip["digest"], start, params, i, clip), "stem")
    _reference_scores(clip, run_key, out["names"][:-2], out["players"][:-2])


# --------------------------------------------------------------------------- FastICA


@st.cache_data(max_entries=4, show_spinner=False)
def _run_ica(digest: str, start: float, variant: str, _clip: dict) -> dict:
    audio = _excerpt(_clip, start)
    res = ica.fastica_stereo(audio, 2, variant=variant)
    return {"mixing": res.mixing, "players": [_ogg(x) for x in res.images],
            "rms_db": [float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12))
                       for x in res.images]}


@st.cache_data(max_entries=4, show_spinner="Writing the WAV…")
def _ica_wav(digest: str, start: float, variant: str, index: int, _clip: dict) -> bytes:
    return wav_bytes(ica.fastica_stereo(_excerpt(_clip, start), 2, variant=variant).images[index])


def ica_section(clip: dict, start: float, source: dict | None) -> None:
    """FastICA of the stereo channels: when it applies, the run, the mixing gains, sources."""
    st.caption("ICA applies to **instantaneous stereo mixtures** (each source panned by gains, "
               "no delays or reverb), with **at most as many sources as channels** (2).")
    variant = st.radio("Learn the unmixing matrix from", ["tf", "time"], horizontal=True,
                       format_func={"tf": "STFT coefficients (sparser: usually better)",
                                    "time": "waveform samples"}.get, key=KEY + "w:variant")
    params = (variant,)
    run_key = _run_when_asked("FastICA", clip, start, params)
    out = _computed("FastICA", _run_ica, clip["digest"], start, *params, _clip=clip)
    st.subheader("Independent sources", anchor=False)
    mix = out["mixing"] / np.maximum(np.abs(out["mixing"]).max(axis=0), 1e-12)
    st.dataframe({"source": ["source 1", "source 2"], "gain L": np.round(mix[0], 3),
                  "gain R": np.round(mix[1], 3), "level (dBFS)": np.round(out["rms_db"], 1)},
                 hide_index=True)
    names = ["source 1", "source 2"]
    _players(names, out["players"], lambda i: _ica_wav(clip["digest"], start, variant, i, clip),
             "ica")
    _reference_scores(clip, run_key, names, out["players"])


# --------------------------------------------------------------------------- Mosaicing


@st.cache_data(max_entries=4, show_spinner=False)
def _run_mosaic(digest_t: str, start_t: float, digest_s: str, start_s: float, n_iter: int,
                r: int, p: int, c: int, gl: int, _target: dict, _source: dict) -> dict:
    res = mosaic.mosaic(_excerpt(_source, start_s), _excerpt(_target, start_t), n_iter=n_iter,
                        r=r, p=p, c=c, griffin_lim_iter=gl)
    return {"player": _ogg(res.audio), "wav": wav_bytes(res.audio),
            "H": _pool(res.H, 400, 400, "max"), "shape": res.H.shape,
            "curves": {"Let it Bee (KL)": (np.arange(res.loss.size), res.loss, res.times_s)}}


def mosaic_section(clip: dict, start: float, source: dict | None) -> None:
    """Let-it-Bee mosaicing: the source clip, settings, the run, the mosaic and its H."""
    if source is None:
        st.info("Add a source clip: its sounds will play the target's rhythm and melody.",
                icon=":material/upload_file:")
        st.stop()
    st.markdown(f"**Source:** {source['name']} · {source['seconds']:.1f} s")
    start_src = _excerpt_start("source", source)
    c1, c2, c3, c4, c5 = st.columns(5)
    m_iter = c1.number_input("Iterations L", 1, 200, key=KEY + "w:miters")
    m_r = c2.number_input("Repetition r (frames)", 0, 50, key=KEY + "w:mr")
    m_p = c3.number_input("Polyphony p", 1, 100, key=KEY + "w:mp")
    m_c = c4.number_input("Continuity c (frames)", 0, 50, key=KEY + "w:mc")
    m_gl = c5.number_input("Griffin-Lim iterations", 0, 100, key=KEY + "w:mgl")
    params = (source["digest"], start_src, int(m_iter), int(m_r), int(m_p), int(m_c), int(m_gl))
    _run_when_asked("Mosaicing", clip, start, params)
    out = _computed("Mosaicing", _run_mosaic, clip["digest"], start, *params, _target=clip,
                    _source=source)
    st.subheader("Mosaic", anchor=False)
    st.audio(out["player"], format="audio/ogg")
    st.download_button("Mosaic (WAV)", data=out["wav"], file_name="mosaic.wav",
                       mime="audio/wav", key=KEY + "dl_mosaic", icon=":material/download:")
    fig = go.Figure(go.Heatmap(z=out["H"], colorscale=MAGMA, showscale=False))
    fig.update_layout(height=420, xaxis_title="target frame (pooled)",
                      yaxis_title="source frame (pooled)", margin=dict(l=50, r=20, t=30, b=40),
                      title=f"Activations H ({out['shape'][0]} source x {out['shape'][1]} target "
                            "frames): diagonals = source played in order")
    st.plotly_chart(fig, width="stretch", key=KEY + "fig_mosaic")
    st.plotly_chart(loss_figure(out["curves"], "iteration"), width="stretch",
                    key=KEY + "fig_mloss")


# --------------------------------------------------------------------------- NMFD


@st.cache_data(max_entries=4, show_spinner=False)
def _run_nmfd(digest: str, start: float, k: int, frames: int, beta: float, n_iter: int,
              compare: bool, _clip: dict) -> dict:
    audio = _excerpt(_clip, start)
    spec = stft(audio)
    V = np.abs(spec).mean(axis=0)
    res = nmfd.nmfd(V, k, frames, beta=beta, n_iter=n_iter)
    per_iter = {f"NMFD ({k} templates x {frames} frames)": res}
    if compare:  # plain NMF with T times more components on the same clip
        per_iter[f"plain NMF ({k * frames} components)"] = nmf.beta_nmf(
            V, k * frames, beta=beta, n_iter=n_iter, tol=0.0)
    curves = {name: (np.arange(r.loss.size), r.loss, r.times_s - r.times_s[0])
              for name, r in per_iter.items()}
    F, N = V.shape
    table = {"model": list(per_iter),
             "parameters": [F * k * frames + k * N, F * k * frames + k * frames * N][:len(per_iter)],
             "final loss": [f"{r.loss[-1]:.6g}" for r in per_iter.values()],
             "ms / iteration": [round(1000 * float(r.times_s[-1] - r.times_s[0])
                                      / max(r.n_iter, 1), 1) for r in per_iter.values()]}
    players = [_ogg(x) for x in nmfd.iter_components(audio, res, spec=spec)]
    patches = np.concatenate([np.pad(w, ((0, 0), (0, 1))) for w in res.W], axis=1)
    return {"W": res.W.sum(axis=2).T, "H": res.H, "templates": res.W, "curves": curves,
            "players": players,
            "table": table, "patches": _db(_pool(patches, HEATMAP_ROWS, patches.shape[1]),
                                           max(float(patches.max()), 1e-12), -60.0),
            "display": _display(V, res.W.sum(axis=2).T, res.H, nmfd.convolve(res.W, res.H))}


@st.cache_data(max_entries=8, show_spinner="Writing the WAV…")
def _nmfd_wav(digest: str, start: float, params: tuple, index: int, _W: np.ndarray,
              _H: np.ndarray, _clip: dict) -> bytes:
    result = nmfd.NMFDResult(W=_W, H=_H, loss=np.zeros(1), times_s=np.zeros(1), n_iter=0)
    out = nmfd.iter_components(_excerpt(_clip, start), result, which=[index])
    return wav_bytes(next(iter(out)))


def templates_figure(patches: np.ndarray, k: int, frames: int) -> go.Figure:
    """The K templates side by side, each an F x T spectrogram patch (dB)."""
    f = np.linspace(0, SAMPLE_RATE / 2000, patches.shape[0])
    fig = go.Figure(go.Heatmap(z=patches, y=f, colorscale=MAGMA, zmin=-60, zmax=0,
                               showscale=False, hovertemplate="%{y:.2f} kHz: %{z:.0f} dB"
                                                              "<extra></extra>"))
    fig.update_xaxes(tickvals=[(frames + 1) * i + frames / 2 - 0.5 for i in range(k)],
                     ticktext=[str(i + 1) for i in range(k)], title_text="template")
    fig.update_layout(height=360, yaxis_title="kHz", margin=dict(l=50, r=20, t=20, b=40))
    return fig


def nmfd_section(clip: dict, start: float, source: dict | None) -> None:
    """Convolutive NMF: settings, the run beside plain NMF with T x K components, templates,
    components, scores."""
    st.caption("**When it helps:** sounds that change over their length (a drum hit's decay, a "
               "note's attack and release, vibrato). One NMFD template holds the whole "
               "T-frame patch, where plain NMF needs several components that happen to play "
               "together.")
    c1, c2, c3, c4 = st.columns(4)
    k = c1.slider("Templates K", 1, 16, key=KEY + "w:dk")
    frames = c2.number_input("Template length T (frames)", 1, nmfd.MAX_FRAMES, key=KEY + "w:dt",
                             help=f"{HOP_LENGTH / SAMPLE_RATE * 1000:.1f} ms per frame.")
    beta = c3.select_slider("β (divergence)", list(BETAS), format_func=BETAS.get,
                            key=KEY + "w:dbeta")
    n_iter = c4.number_input("Iterations", 1, 1000, step=10, key=KEY + "w:diters")
    compare = st.toggle("Compare with plain NMF with T x K components on the same clip",
                        key=KEY + "w:dcompare")
    params = (k, int(frames), float(beta), int(n_iter), bool(compare))
    run_key = _run_when_asked("NMFD", clip, start, params)
    out = _computed("NMFD", _run_nmfd, clip["digest"], start, *params, _clip=clip)
    _factorisation_panels(out, models_label="model")
    st.dataframe(out["table"], hide_index=True)
    st.subheader("Templates", anchor=False)
    st.plotly_chart(templates_figure(out["patches"], k, int(frames)), width="stretch",
                    key=KEY + "fig_patches")
    st.subheader("Components", anchor=False)
    names = [f"component {i + 1:02d}" for i in range(k)]
    _players(names, out["players"],
             lambda i: _nmfd_wav(clip["digest"], start, params, i, out["templates"], out["H"],
                                 clip), "nmfd")
    _reference_scores(clip, run_key, names, out["players"])


# --------------------------------------------------------------------------- Complex NMF

RESYNTHESES = {"own": "each component's own phase (complex NMF)",
               "wiener": "Wiener masks on the mixture (same W, H)"}


@st.cache_data(max_entries=2, show_spinner=False)
def _run_complex(digest: str, start: float, k: int, n_iter: int, _clip: dict) -> dict:
    audio = _excerpt(_clip, start)
    spec = stft(audio)
    res = complex_nmf.complex_nmf(spec, k, n_iter=n_iter)
    own = complex_nmf.resynthesise(res, audio.shape[-1])
    del res.components  # the phases are large; the audio is what the page keeps
    wiener = nmf.resynthesise_components(audio, res.W, res.H, spec=spec)
    V = np.abs(spec).mean(axis=0)
    return {"W": res.W, "H": res.H, "display": _display(V, res.W, res.H),
            "curves": {"complex NMF (squared error)": (np.arange(res.loss.size), res.loss,
                                                       res.times_s - res.times_s[0])},
            "players": {"own": [_ogg(x) for x in own], "wiener": [_ogg(x) for x in wiener]},
            "wavs": {"own": [wav_bytes(x) for x in own], "wiener": [wav_bytes(x) for x in wiener]}}


def complex_section(clip: dict, start: float, source: dict | None) -> None:
    """Complex NMF: settings, the run, decomposition and loss, components with their own
    phase or Wiener-masked, scores."""
    st.caption("**When it helps:** sources whose partials overlap in the same bins. Each "
               "component keeps its own phase, so overlapping sounds can add up or cancel as "
               "they do in the mix, where Wiener masks give every output the mixture's phase. "
               "It costs time and memory (a phase per component, channel and cell).")
    c1, c2 = st.columns(2)
    k = c1.slider("Components K", 1, 12, key=KEY + "w:ck")
    n_iter = c2.number_input("Iterations", 1, 500, step=10, key=KEY + "w:citers")
    params = (k, int(n_iter))
    run_key = _run_when_asked("Complex NMF", clip, start, params)
    out = _computed("Complex NMF", _run_complex, clip["digest"], start, *params, _clip=clip)
    _factorisation_panels(out)
    st.subheader("Components", anchor=False)
    how = st.radio("Resynthesis", list(RESYNTHESES), format_func=RESYNTHESES.get,
                   horizontal=True, key=KEY + "w:cphase")
    names = [f"component {i + 1:02d}" for i in range(k)]
    _players(names, out["players"][how], lambda i: out["wavs"][how][i], "complex_" + how)
    _reference_scores(clip, run_key + (how,), names, out["players"][how])


# --------------------------------------------------------------------------- the methods


@dataclass(frozen=True)
class Method:
    """One method of the lab: its page section (settings, run, results) and its inputs."""

    section: Callable[[dict, float, dict | None], None]
    needs_source: bool = False  # a second clip (mosaicing: the sounds)


METHODS = {
    "NMF": Method(nmf_section),
    "HPSS + NMF": Method(hpss_section),
    "FastICA": Method(ica_section),
    "NMFD": Method(nmfd_section),
    "Complex NMF": Method(complex_section),
    "Mosaicing": Method(mosaic_section, needs_source=True),
}


# --------------------------------------------------------------------------- page

_keep_widget_state()
for _name, _value in DEFAULTS.items():
    st.session_state.setdefault(KEY + "w:" + _name, _value)
st.title("NMF Lab", anchor=False)
st.caption("Factorise a clip several ways, then look, listen and measure. β-NMF with "
           "multiplicative updates beside scikit-learn's solvers, HPSS + NMF stems, FastICA, "
           "convolutive NMF, complex NMF and Let-it-Bee mosaicing. Every output is "
           "Wiener-masked with the mixture's phase, except complex NMF's own-phase components.")

name = st.segmented_control("Method", list(METHODS), key=KEY + "w:method", required=True) or "NMF"
method = METHODS[name]

up1, up2 = st.columns(2) if method.needs_source else (st.container(), None)
with up1:
    label = "Target clip (its rhythm and melody)" if method.needs_source else "Clip"
    clip = _clip_input("clip", label, "Up to 60 s is analysed; a longer clip is trimmed to an "
                                      "excerpt you choose.")
    if st.button(f"Use the demo song ({DEMO_TITLE})", icon=":material/music_note:",
                 key=KEY + "demo"):
        _accept("clip", f"{DEMO_TITLE}.ogg", DEMO_SONG.read_bytes())
        clip = st.session_state.get(KEY + "clip")
    st.caption(DEMO_ATTRIBUTION)
source = None
if up2 is not None:
    with up2:
        source = _clip_input("source", "Source clip (its sounds)",
                             "The spectral frames of this clip become the fixed templates.")

if clip is None:
    st.info("Upload a clip (or use the demo song) to start.", icon=":material/upload_file:")
    st.stop()

st.markdown(f"**Clip:** {clip['name']} · {clip['seconds']:.1f} s")
start = _excerpt_start("clip", clip)
method.section(clip, start, source)
