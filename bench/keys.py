"""Benchmarks of keys (issue 16); each prints a Markdown table for BENCHMARKS.md, "Keys".

    .venv/bin/python bench/keys.py accuracy     # MIREX score on generated songs with a planted key
    .venv/bin/python bench/keys.py invariance   # the real songs shifted -6..+6 semitones
    .venv/bin/python bench/keys.py invariance --rubberband r3 --max-shift 3 --real-only
    .venv/bin/python bench/keys.py modes        # how sure the real songs' modes can be
    .venv/bin/python bench/keys.py alternatives # other key rules: accuracy and invariance
    .venv/bin/python bench/keys.py pitched      # the pitched/unpitched flag on labelled stems and loops
    bench/prio.sh .venv/bin/python bench/keys.py time        # time the key adds to an analysis
    bench/prio.sh .venv/bin/python bench/keys.py transpose   # time per transposed clip

``accuracy``: 24 songs (unmixer.datasets.synth, ``key=`` each of the 24 keys once, seeds
401-424, tempo 84-150 BPM, the generator's and General MIDI instruments), scored with
``mir_eval.key.weighted_score`` (1 same, 0.5 a fifth, 0.3 relative, 0.2 parallel, 0 other).
``invariance``: ../shared/audio's songs and four generated songs with a planted key shifted
by Rubber Band (pyrubberband, mono; R2 by default, ``--rubberband r3`` etc.); the detected key
must move by the shift; and shifted by an octave either way, which must keep the very key. ``alternatives``: the accuracy songs and, shifted -3..+3 by Rubber Band (R2), the two real
songs and eight of the accuracy songs, scored with other rules than the CNN's argmax (see
:func:`alternatives`). ``time``: the app's analysis
(``extract_loops(tracks=False, preview=...)``) of Vibe Ace played four times (246 s), with the
key detection as shipped (on a thread of its own, started with the downbeat tracker) and
without it, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unmixer.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from unmixer.datasets.synth import LABEL_OF, make_song  # noqa: E402
from unmixer.loops.key import KEYS, Key, detect_key, is_pitched, pitch_features  # noqa: E402

SHARED = REPO.parent / "shared" / "audio"
INSTRUMENT_SETS = (
    ("drums", "bass", "pad", "lead"),
    ("gm_drums", "gm_bass", "gm_piano", "gm_flute"),
    ("drums", "gm_synthbass", "gm_strings", "gm_guitar"),
    ("gm_drums", "bass", "gm_organ", "gm_choir"),
    ("drums", "vocal", "gm_marimba", "gm_brass"),
    ("gm_drums", "gm_epiano", "pluck", "pad"),
)


def keyed_songs():
    """The 24 benchmark songs, one per key: (planted key, SynthSong)."""
    for i, key in enumerate(KEYS):
        yield key, make_song(401 + i, n_bars=16, bpm=84 + (i * 11) % 67, key=key.name,
                             instruments=list(INSTRUMENT_SETS[i % len(INSTRUMENT_SETS)]))


def accuracy() -> None:
    import mir_eval

    rows, scores, seconds, kinds = [], [], [], {}
    for planted, song in keyed_songs():
        t = time.perf_counter()
        estimate = detect_key(song.mix)
        seconds.append(time.perf_counter() - t)
        score = mir_eval.key.weighted_score(planted.name, estimate.key.name)
        scores.append(score)
        kind = {1.0: "same", 0.5: "fifth", 0.3: "relative", 0.2: "parallel"}.get(score, "other")
        kinds[kind] = kinds.get(kind, 0) + 1
        rows.append(f"| {planted.name} | {estimate.key.name} | {estimate.confidence:.2f} | "
                    f"{score:.1f} | {', '.join(song.instruments)} |")
    print("| planted | detected | confidence | MIREX | instruments |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nMIREX weighted score: mean {np.mean(scores):.3f} over {len(scores)} songs; "
          + ", ".join(f"{k} {v}" for k, v in kinds.items())
          + f"; key CNN {np.median(seconds):.2f} s per 32-46 s song (median, in process)")


RUBBER_BAND = {"r2": {}, "r2-formant": {"--formant": ""}, "r3": {"--fine": ""},
               "r3-formant": {"--fine": "", "--formant": ""}}
"""The Rubber Band settings of the invariance check: R2 (the default engine, as the app's
deck), R3 (``--fine``, Rubber Band 3's higher-quality engine), each with formants kept or not."""


def _shifted_keys(mono: np.ndarray, shifts: list[int], engine: str = "r2") -> list:
    """The key estimate (KeyEstimate) of ``mono`` shifted by each of ``shifts`` semitones
    (Rubber Band)."""
    import pyrubberband

    options = RUBBER_BAND[engine]
    with ThreadPoolExecutor(2) as pool:  # Rubber Band runs as its own process
        shifted = list(pool.map(lambda s: pyrubberband.pitch_shift(mono, SAMPLE_RATE, s,
                                                                   rbargs=dict(options)), shifts))
    return [detect_key(np.asarray(y, dtype=np.float32)) for y in shifted]


def invariance(engine: str = "r2", max_shift: int = 6, real_only: bool = False) -> None:
    import mir_eval

    shifts = [s for s in range(-max_shift, max_shift + 1) if s]
    print(f"Rubber Band: {engine} ({' '.join(RUBBER_BAND[engine]) or 'default options'})\n")
    print("| song | reference | " + " | ".join(f"{s:+d}" for s in shifts)
          + " | −12 (same key) | +12 (same key) |")
    print("|---|---|" + "---|" * (len(shifts) + 2))
    songs = [(name, load_audio(SHARED / name).mean(axis=0))
             for name in ("vibe_ace.ogg", "choice_drum_bass.ogg")]
    for key, seed in () if real_only else (("A minor", 71), ("C major", 72), ("F# major", 73),
                                           ("Eb minor", 74)):
        song = make_song(seed, n_bars=16, key=key, instruments=["drums", "bass", "pad", "pluck"])
        songs.append((f"generated, {key} planted", song.mix.mean(axis=0)))
    summary = []
    for name, mono in songs:
        ref = detect_key(mono)
        cells, tonic, exact, score, margins = [], 0, 0, [], []
        *estimates, down, up = _shifted_keys(mono, shifts + [-12, 12], engine)
        for s, estimate in zip(shifts, estimates):
            got, want = estimate.key, ref.key.transposed(s)
            tonic += got.tonic == want.tonic
            exact += got == want
            score.append(mir_eval.key.weighted_score(want.name, got.name))
            mark = "✓" if got == want else ("≈" if got.tonic == want.tonic else "✗")
            # the mode's margin: P(detected key) - P(its parallel key)
            margins.append(estimate.confidence - float(estimate.probabilities[_parallel(got).index]))
            cells.append(f"{got.short} {mark} {margins[-1]:.2f}")
        for estimate in (down, up):  # an octave: the very same key
            got = estimate.key
            mark = "✓" if got == ref.key else ("≈" if got.tonic == ref.key.tonic else "✗")
            margin = estimate.confidence - float(estimate.probabilities[_parallel(got).index])
            cells.append(f"{got.short} {mark} {margin:.2f}")
        parallel = _parallel(ref.key)
        print(f"| {name} | {ref.key.name} ({ref.confidence:.2f}; {parallel.name} "
              f"{ref.probabilities[parallel.index]:.2f}) | " + " | ".join(cells) + " |")
        summary.append(f"{name}: tonic {tonic}/{len(shifts)}, key {exact}/{len(shifts)}, "
                       f"MIREX {np.mean(score):.2f}, median mode margin {np.median(margins):.2f}")
    print("\n✓ the key moved by the shift; ≈ its tonic moved by the shift, its mode flipped; "
          "✗ other; then P(detected key) - P(its parallel key). In brackets: the reference's "
          "probability and its parallel key's.\n\n" + "; ".join(summary))


def modes() -> None:
    """How sure the mode of ../shared/audio's songs can be: each song's detected key and its
    parallel key's probability, the same after Rubber Band processing without a shift (a
    tempo change of x1.0001), and its chroma (librosa ``chroma_cqt`` of the HPSS harmonic
    part, first 120 s) at the tonic and the minor and major thirds, with the best
    Krumhansl-Schmuckler key profile correlations (Krumhansl 1990)."""
    import librosa
    import pyrubberband

    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    print("| song | key (P; parallel P) | after Rubber Band x1.0001 | chroma: tonic, m3, M3 "
          "| Krumhansl-Schmuckler, best three |")
    print("|---|---|---|---|---|")
    for name in ("vibe_ace.ogg", "choice_drum_bass.ogg"):
        mono = load_audio(SHARED / name).mean(axis=0)
        cells = []
        for y in (mono, pyrubberband.time_stretch(mono, SAMPLE_RATE, 1.0001)):
            e = detect_key(np.asarray(y, dtype=np.float32))
            cells.append(f"{e.key.name} ({e.confidence:.2f}; "
                         f"{e.probabilities[_parallel(e.key).index]:.2f})")
        tonic = detect_key(mono).key.tonic
        chroma = librosa.feature.chroma_cqt(y=librosa.effects.harmonic(mono[:120 * SAMPLE_RATE]),
                                            sr=SAMPLE_RATE).mean(axis=1)
        chroma = chroma / chroma.sum()
        thirds = [chroma[(tonic + i) % 12] for i in (0, 3, 4)]
        profiles = sorted(((float(np.corrcoef(np.roll(p, t), chroma)[0, 1]), Key(t, mode).name)
                           for t in range(12) for p, mode in ((major, "major"), (minor, "minor"))),
                          reverse=True)[:3]
        print(f"| {name} | " + " | ".join(cells) + " | " + ", ".join(f"{v:.3f}" for v in thirds)
              + " | " + ", ".join(f"{k} {r:.2f}" for r, k in profiles) + " |")


def _parallel(key: Key) -> Key:
    return Key(key.tonic, "minor" if key.mode == "major" else "major")


def _song_4min() -> np.ndarray:
    audio = load_audio(SHARED / "vibe_ace.ogg")
    return np.ascontiguousarray(np.tile(audio, (1, 4)))


def timing(repeats: int) -> None:
    from unmixer.loops import key as key_mod
    from unmixer.loops import pipeline

    audio = _song_4min()
    pipeline.warm_up()
    time.sleep(3)
    real = key_mod.start_key_detection
    known = detect_key(audio)

    class Known:
        def done(self):
            return True

        def result(self):
            return known

    def run(with_key: bool) -> float:
        pipeline.key_mod.start_key_detection = real if with_key else (lambda a, sr=0: Known())
        t = time.perf_counter()
        pipeline.extract_loops(audio, 5, tracks=False, preview=lambda rough: None)
        return time.perf_counter() - t

    run(True)  # warm: imports, the models
    times = {True: [], False: []}
    for r in range(repeats):
        for with_key in ((True, False) if r % 2 == 0 else (False, True)):
            times[with_key].append(run(with_key))
            print(f"run {r + 1}, key {'on' if with_key else 'off'}: {times[with_key][-1]:.1f} s",
                  file=sys.stderr, flush=True)
    pipeline.key_mod.start_key_detection = real
    serial = []
    for _ in range(3):
        t = time.perf_counter()
        detect_key(audio)
        serial.append(time.perf_counter() - t)
    diffs = [a - b for a, b in zip(times[True], times[False])]
    print("| analysis of a 246-s song (app path) | median (s) | runs (s) |\n|---|---|---|")
    for flag, label in ((False, "without the key"), (True, "with the key (as shipped)")):
        print(f"| {label} | {statistics.median(times[flag]):.1f} | "
              + ", ".join(f"{t:.1f}" for t in times[flag]) + " |")
    print(f"\nAdded per song: median of the paired differences {statistics.median(diffs):+.2f} s "
          f"(mean {statistics.mean(diffs):+.2f} s, {repeats} pairs, alternating order); the key "
          f"CNN alone, in the calling process: {statistics.median(serial):.2f} s (median of 3).")


def transpose(repeats: int) -> None:
    from unmixer import mashup

    song = make_song(7, n_bars=8, bpm=100, key="A minor", instruments=["drums", "bass", "pad", "lead"])
    clip = song.stems[2][:, : mashup.loop_samples(2, 100, 4)]  # 2 bars of chords, 4.8 s
    n = mashup.loop_samples(2, 120, 4)
    sr_p = mashup.PREVIEW_SAMPLE_RATE
    from unmixer.core.audio import resample

    mono = resample(clip.mean(axis=0), SAMPLE_RATE, sr_p)
    n_p = mashup.loop_samples(2, 120, 4, sr_p)
    cases = {
        "tempo only (stereo 44.1 kHz)": lambda: mashup.stretch_loop(clip, n),
        "tempo and +3 semitones, one pass": lambda: mashup.stretch_loop(clip, n, semitones=3),
        "tempo, then +3 semitones (two passes)": lambda: mashup.stretch_loop(
            mashup.stretch_loop(clip, n), n, semitones=3),
        "+3 semitones, formants kept, one pass": lambda: mashup.stretch_loop(
            clip, n, semitones=3, formant=True),
        "deck preview, tempo only (mono 22 kHz)": lambda: mashup.stretch_loop(mono, n_p),
        "deck preview, tempo and +3 semitones": lambda: mashup.stretch_loop(mono, n_p, semitones=3),
    }
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["tempo only (stereo 44.1 kHz)"])
    print("| one 2-bar clip (4.8 s -> 4.0 s) | median (s) | vs tempo only |\n|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | x{statistics.median(ts) / base:.2f} |")
    print(f"\n{repeats} runs each, interleaved.")


def _stem_clips(seeds, n_bars=8):
    for seed in seeds:
        inst = list(INSTRUMENT_SETS[seed % len(INSTRUMENT_SETS)])
        song = make_song(seed, n_bars=n_bars, key=None if seed % 2 else KEYS[seed % 24].name,
                         instruments=inst)
        bar = int(round(song.sr * song.meter * 60 / song.bpm))
        for k, name in enumerate(song.instruments):
            b = int(np.flatnonzero(song.layout[k])[0]) // 2 * 2
            yield name, song.stems[k][:, b * bar:(b + 2) * bar]


def pitched() -> None:
    from unmixer.loops.pipeline import extract_loops

    rng = np.random.default_rng(0)
    rows = {}

    def count(group: str, truth: bool, clip, label=None) -> None:
        right = is_pitched(clip, SAMPLE_RATE, label) == truth
        tot = rows.setdefault(group, [0, 0, []])
        tot[0] += right
        tot[1] += 1
        tot[2].append(pitch_features(clip))

    for name, clip in _stem_clips(range(501, 519)):
        count(f"stem: {LABEL_OF[name]}", LABEL_OF[name] != "drums", clip)
    for i in range(8):
        noise = (0.1 * rng.standard_normal((2, 4 * SAMPLE_RATE))).astype(np.float32)
        if i % 2:
            noise = np.cumsum(noise, axis=1) * 0.01
        if i >= 4:
            noise = noise * (np.arange(noise.shape[1]) % 11025 < 2000)
        count("noise (white, brown, bursts)", False, noise)
    # separated loops: truth = the stem that holds most of the loop's energy at its bars
    for seed in (531, 532, 533, 534):
        song = make_song(seed, n_bars=16, key=KEYS[seed % 24].name,
                         instruments=list(INSTRUMENT_SETS[seed % len(INSTRUMENT_SETS)]))
        ext = extract_loops(song.mix, 4, downbeats_s=song.downbeats_s, meter=song.meter,
                            tracks=False)
        for loop in ext.loops:
            start = int(round(song.downbeats_s[loop.chosen_bar] * song.sr))
            seg = song.stems[:, :, start:start + loop.clip.shape[-1]]
            share = np.einsum("kcn,cn->k", seg, loop.clip[:, : seg.shape[-1]])
            truth = song.instruments[int(np.argmax(share))]
            label = LABEL_OF[truth]
            count(f"separated loop: {label}", label != "drums", loop.clip, loop.label)
    print("| clips | right | harmonic share (min-max) | chroma peak (min-max) |\n|---|---|---|---|")
    for group in sorted(rows):
        right, total, feats = rows[group]
        h, c = np.array(feats).T
        print(f"| {group} | {right}/{total} | {h.min():.2f}-{h.max():.2f} | {c.min():.2f}-{c.max():.2f} |")
    right = sum(r[0] for r in rows.values())
    total = sum(r[1] for r in rows.values())
    print(f"\n{right}/{total} right overall.")


KS_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KS_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
"""Krumhansl & Kessler's key profiles (C major, C minor; Krumhansl 1990)."""


def _key_features(mono: np.ndarray) -> dict:
    """What the rules of :func:`alternatives` need: the CNN's probabilities, those of its
    input spectrogram moved -4..+4 semitones (rotated back), and two chroma vectors."""
    import librosa
    from madmom.audio.signal import Signal
    from madmom.ml.nn.activations import softmax

    from unmixer.loops import key as key_mod

    processor, order = key_mod._processor()
    x = Signal(np.asarray(mono, np.float32), sample_rate=SAMPLE_RATE, num_channels=1)
    for step in processor.processors[:4]:
        x = step(x)
    spec = np.asarray(x, np.float32)
    centres = np.asarray(x.filterbank.center_frequencies)
    shifted = []
    for m in range(-4, 5):  # test-time augmentation: the input moved m semitones (2 bands each)
        moved = np.zeros_like(spec)
        if m >= 0:
            moved[:, 2 * m:] = spec[:, : spec.shape[1] - 2 * m]
        else:
            moved[:, : 2 * m] = spec[:, -2 * m:]
        p = np.empty(24)
        p[order] = softmax(np.asarray(processor.processors[4](moved)).reshape(1, -1))[0]
        shifted.append(np.roll(p.reshape(2, 12), -m, axis=1).reshape(-1))
    pcs = np.round(12 * np.log2(centres / 261.6256)).astype(int) % 12
    chroma_cnn = np.bincount(pcs, weights=(10 ** spec - 1).mean(axis=0), minlength=12)
    harmonic = librosa.effects.harmonic(np.asarray(mono, np.float32)[: 120 * SAMPLE_RATE],
                                        margin=2.0)
    chroma_h = librosa.feature.chroma_cqt(y=harmonic, sr=SAMPLE_RATE, hop_length=2048).mean(axis=1)
    return {"cnn": key_mod._probabilities_44k(np.asarray(mono, np.float32)),
            "tta": np.mean(shifted, axis=0), "chroma_cnn": chroma_cnn, "chroma_h": chroma_h}


def _ks(chroma: np.ndarray) -> np.ndarray:
    """Krumhansl-Schmuckler: the correlation of ``chroma`` with each of the 24 keys' profiles,
    in :data:`KEYS` order."""
    profiles = np.stack([np.roll(prof, t) for prof in (KS_MAJOR, KS_MINOR) for t in range(12)])
    c = (chroma - chroma.mean()) / (chroma.std() + 1e-12)
    z = (profiles - profiles.mean(1, keepdims=True)) / profiles.std(1, keepdims=True)
    return z @ c / 12


def _rules() -> dict:
    def tonic_then_ks_mode(f, chroma):
        t = int(np.argmax(f["cnn"])) % 12
        r = _ks(f[chroma])
        return t if r[t] >= r[t + 12] else t + 12

    rules = {"CNN (shipped)": lambda f: int(np.argmax(f["cnn"])),
             "CNN, input moved -4..+4 st, averaged": lambda f: int(np.argmax(f["tta"])),
             "K-S on the CNN spectrogram's chroma": lambda f: int(np.argmax(_ks(f["chroma_cnn"]))),
             "K-S on HPSS-harmonic CQT chroma": lambda f: int(np.argmax(_ks(f["chroma_h"]))),
             "CNN tonic, mode by K-S (HPSS chroma)": lambda f: tonic_then_ks_mode(f, "chroma_h")}
    for w in (3, 5, 8):
        rules[f"log P(CNN) + {w} x K-S (HPSS chroma)"] = (
            lambda f, w=w: int(np.argmax(np.log(f["cnn"] + 1e-9) + w * _ks(f["chroma_h"]))))
    return rules


def alternatives() -> None:
    """Other key rules than the CNN's argmax, on the accuracy songs (MIREX weighted score) and
    on the invariance check (-3..+3, Rubber Band R2: the two real songs and eight of the
    accuracy songs; a shift passes when the key moves by exactly the shift from the unshifted
    copy's key under the same rule)."""
    import mir_eval

    rules = _rules()
    accuracy_rows, invariance_rows = [], {}
    shifted_songs = [(name, load_audio(SHARED / name).mean(axis=0))
                     for name in ("vibe_ace.ogg", "choice_drum_bass.ogg")]
    chosen = ("C major", "D major", "E major", "F# major", "G minor", "A minor", "B minor",
              "D# minor")
    for key, song in keyed_songs():
        mono = song.mix.mean(axis=0)
        accuracy_rows.append((key, _key_features(mono)))
        if key.name in chosen:
            shifted_songs.append((f"generated {key.name}", mono))
    import pyrubberband

    shifts = [-3, -2, -1, 0, 1, 2, 3]
    for name, mono in shifted_songs:
        with ThreadPoolExecutor(2) as pool:
            copies = list(pool.map(lambda s: mono if s == 0 else pyrubberband.pitch_shift(
                mono, SAMPLE_RATE, s), shifts))
        invariance_rows[name] = {s: _key_features(np.asarray(y, np.float32))
                                 for s, y in zip(shifts, copies)}
    print("| rule | MIREX (24 songs) | exact key moves (all 60) | vibe_ace.ogg | "
          "choice_drum_bass.ogg |\n|---|---|---|---|---|")
    for label, rule in rules.items():
        score = np.mean([mir_eval.key.weighted_score(key.name, KEYS[rule(f)].name)
                         for key, f in accuracy_rows])
        passed = {}
        for name, rows in invariance_rows.items():
            ref = KEYS[rule(rows[0])]
            passed[name] = sum(KEYS[rule(rows[s])] == ref.transposed(s) for s in shifts if s)
        total = sum(passed.values())
        print(f"| {label} | {score:.3f} | {total}/{6 * len(passed)} | "
              f"{passed['vibe_ace.ogg']}/6 | {passed['choice_drum_bass.ogg']}/6 |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("accuracy", "invariance", "modes", "pitched", "time",
                                         "transpose", "alternatives"))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rubberband", choices=sorted(RUBBER_BAND), default="r2",
                        help="invariance: the Rubber Band engine and options that shift the songs")
    parser.add_argument("--max-shift", type=int, default=6, help="invariance: shifts -N..+N")
    parser.add_argument("--real-only", action="store_true",
                        help="invariance: ../shared/audio's songs only")
    args = parser.parse_args()
    if args.what == "time":
        timing(args.repeats)
    elif args.what == "transpose":
        transpose(max(args.repeats, 5))
    elif args.what == "invariance":
        invariance(args.rubberband, args.max_shift, args.real_only)
    else:
        {"accuracy": accuracy, "modes": modes, "pitched": pitched,
         "alternatives": alternatives}[args.what]()


if __name__ == "__main__":
    main()
