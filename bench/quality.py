"""Separation quality of Unmixer's loop extraction against baselines, on songs with ground truth.

    nice -n 10 .venv/bin/python bench/quality.py run                 # tables + plot (default song counts)
    nice -n 10 .venv/bin/python bench/quality.py run --songs 1 1 1 1 # one song per family
    nice -n 10 .venv/bin/python bench/quality.py levers mask_power   # one lever, before/after
    nice -n 10 .venv/bin/python bench/quality.py check               # the composed pipeline == extract_loops

Songs come from :func:`unmixer.datasets.synth.make_song` in four layout families: "composed" (4 loops,
an arranged form in blocks of 2 or 4 bars), "factorial" (4 loops, every combination),
"sparse" and "dense" (10 loops; Ramires et al., ISMIR 2020). Tempo (80-170 BPM), meter (4/4,
3/4), loop length (1, 2, 4 bars, loops of one song may differ), swing and instruments (the
generator's synthesised ones and General MIDI instruments rendered by fluidsynth) are drawn
per song from a seeded generator, so every run scores the same songs.

Methods: the mixture as every estimate (floor), the ideal ratio mask (oracle ceiling), ours
(``extract_loops``) with the true downbeats and with madmom's, the loopextractor configuration,
NMF + k-means, and REPET (2 sources: loops that play in more than half the bars against the
rest). Baselines that need bars get madmom's downbeats (the ones ``extract_loops`` found).
Every method is told K and the loop length (the longest loop of the song).

Metrics: BSS Eval SDR/SIR/SAR (512-tap filter; :func:`bench.blockeval.bss_eval_blocks`) and
SI-SDR of every full-length track under the best permutation, the loop map's layout accuracy
and F1 (0-1 per loop, threshold 0.5, on the true bars: each true bar takes the estimated bar
holding its middle), and the SI-SDR of each loop's clip against the true stem over the same
samples (clipped at -30 dB: a clip cut where its loop is silent scores -30).

Scores are cached per song and method in ``bench/out/quality_cache`` (``--no-cache`` to
recompute), so lever runs reuse the baselines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from quality_variants import Options, auto_loop_count, choose_loop_bars, fit_ntd, prepare, run_variant  # noqa: E402

from bench import baselines  # noqa: E402
from bench.blockeval import bss_eval_blocks  # noqa: E402
from unmixer.core.metrics import layout_scores, si_sdr  # noqa: E402
from unmixer.core.spectrum import stft  # noqa: E402
from unmixer.datasets.synth import make_song  # noqa: E402
from unmixer.errors import UnmixerError  # noqa: E402
from unmixer.loops.bargrid import search_grid  # noqa: E402
from unmixer.loops.beats import grid_from_downbeats  # noqa: E402
from unmixer.loops.ntd import NTDResult  # noqa: E402
from unmixer.loops.pipeline import extract_loops  # noqa: E402

SR = 44100
FAMILIES = ("composed", "factorial", "sparse", "dense")
DEFAULT_SONGS = (3, 2, 2, 2)
CACHE = REPO / "bench" / "out" / "quality_cache"
CACHE_VERSION = 1
CLIP_FLOOR_DB = -30.0
ENGINE_KEY = {"engine": 8}  # 8: 16 purification starts; 7: tail templates; 6: Euclidean templates
"""Part of the cache key of ``extract_loops``' results: bump it when the engine changes
(no key: the engine before issue 5's levers; 4: bar phase choice and purification L1 6).
``run --engine NAME=VALUE`` adds ``extract_loops`` keyword arguments to it (a variant)."""

ENGINE_OPTIONS: dict = {}
"""Keyword arguments of ``extract_loops`` for "ours" (``run --engine NAME=VALUE``)."""

SYNTH_TONAL = ("pad", "pluck", "lead", "vocal")
GM_TONAL = ("gm_piano", "gm_organ", "gm_strings", "gm_epiano", "gm_guitar", "gm_marimba",
            "gm_brass", "gm_flute", "gm_choir")

METHODS = {  # key: (label, needs estimated downbeats)
    "mixture": "mixture (floor)",
    "irm": "ideal ratio mask (oracle)",
    "ours_true": "ours, true downbeats",
    "ours_est": "ours, estimated downbeats",
    "le_est": "loopextractor, estimated downbeats",
    "le_true": "loopextractor, true downbeats",
    "nmf_est": "NMF + k-means, estimated downbeats",
}


# ----------------------------------------------------------------------------- songs

def song_specs(family: str, n: int, first: int = 0) -> list[dict]:
    """``n`` reproducible make_song argument sets of a layout family (songs first .. first+n-1)."""
    fam = FAMILIES.index(family)
    specs = []
    for i in range(first, first + n):
        rng = np.random.default_rng([2024, fam, i])
        K = 4 if family in ("composed", "factorial") else 10
        lengths = (1, 2, 4) if family == "composed" else (1, 2)
        L = lengths[i % len(lengths)]  # every length and both meters in the first songs
        bars = [L if rng.random() < 0.7 or L == 1 else int(rng.choice([d for d in (1, 2) if d < L]))
                for _ in range(K)]
        bars[int(rng.integers(0, K))] = L  # the longest loop sets the loop length
        drums = str(rng.choice(["drums", "gm_drums"]))
        bass = str(rng.choice(["bass", "gm_bass", "gm_synthbass"]))
        pool = list(SYNTH_TONAL + GM_TONAL)
        if K == 4:
            tonal = [str(x) for x in rng.choice(pool, 2, replace=False)]
            instruments = [drums, bass] + tonal
        else:
            other_drums = "gm_drums" if drums == "drums" else "drums"
            tonal = [str(x) for x in rng.choice(pool, 7, replace=False)]
            instruments = [drums, other_drums, bass] + tonal
        spec = dict(seed=int(10_000 * (fam + 1) + i), n_loops=K, bpm=float(rng.integers(80, 171)),
                    meter=3 if i % 2 else 4, loop_bars=bars,
                    family=family, instruments=instruments,
                    swing=float(rng.choice([0.0, 0.0, 0.25, 0.4])))
        if family == "composed":
            spec["block_bars"] = max(2, L)
            spec["n_bars"] = spec["block_bars"] * int(rng.integers(6, 9))
        elif family == "factorial":
            spec["block_bars"] = L
            spec["n_bars"] = 15 * L
        else:
            spec["block_bars"] = 2
            spec["n_bars"] = 24
        specs.append(spec)
    return specs


def song_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def describe(spec: dict) -> str:
    bars = spec["loop_bars"]
    lengths = "/".join(str(b) for b in sorted(set(bars)))
    swing = f", swing {spec['swing']:.2f}" if spec["swing"] else ""
    return (f"{spec['bpm']:.0f} BPM {spec['meter']}/4, {spec['n_bars']} bars, loops of {lengths} bars{swing}; "
            + ", ".join(spec["instruments"]))


def two_source_groups(layout: np.ndarray) -> np.ndarray | None:
    """Loops playing in more than half the bars (REPET's background), or None if all or none do."""
    bg = layout.mean(axis=1) > 0.5
    return bg if 0 < bg.sum() < len(bg) else None


# ----------------------------------------------------------------------------- scoring

def layout_on_true_bars(song, loop_map: np.ndarray, map_downbeats: np.ndarray):
    """Layout scores after mapping each true bar to the estimated bar holding its middle."""
    mids = 0.5 * (song.downbeats_s[:-1] + song.downbeats_s[1:])
    n = loop_map.shape[1]
    idx = np.clip(np.searchsorted(map_downbeats, mids, side="right") - 1, 0, n - 1)
    return layout_scores(song.layout, loop_map[:, idx])


def score(song, sep: baselines.Separation, map_downbeats: np.ndarray | None = None,
          two: bool = True, sir_sar: bool = True) -> dict:
    """Every metric of one method's output on one song (JSON-serialisable).

    ``sir_sar=False`` (lever runs) skips SIR and SAR, which need all K² correlations.
    """
    bss = bss_eval_blocks(song.stems, sep.tracks, sir_sar=sir_sar)
    out = {"sdr": bss.sdr.tolist(), "sir": bss.sir.tolist(), "sar": bss.sar.tolist(),
           "si_sdr": bss.si_sdr.tolist(), "match": bss.match.tolist()}
    if sep.loop_map is not None and map_downbeats is not None:
        lay = layout_on_true_bars(song, sep.loop_map, map_downbeats)
        out.update(layout_acc=lay.accuracy, layout_f1=lay.f1)
    if sep.clips is not None:
        clip_scores = []
        for k, m in enumerate(bss.match):
            a, b = sep.clip_spans[m]
            ref = song.stems[k][:, a:b]
            clip_scores.append(max(float(si_sdr(ref[None], sep.clips[m][None])[0]), CLIP_FLOOR_DB))
        out["clip_si_sdr"] = clip_scores
    bg = two_source_groups(song.layout)
    if two and bg is not None:
        est_bg = sep.tracks[bss.match[bg]].sum(axis=0)
        refs = np.stack([song.stems[bg].sum(axis=0), song.stems[~bg].sum(axis=0)])
        two_scores = bss_eval_blocks(refs, np.stack([est_bg, song.mix - est_bg]), match=np.arange(2))
        out["two_sdr"] = two_scores.sdr.tolist()
    return out


# ----------------------------------------------------------------------------- cache

def _cache_path(kind: str, key: dict) -> Path:
    h = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return CACHE / f"{kind}_{h}.json"


def cached(kind: str, key: dict, compute, use_cache: bool = True) -> dict:
    """``compute()`` (a JSON-able dict), stored under ``key``; reused when present."""
    path = _cache_path(kind, {**key, "version": CACHE_VERSION})
    if use_cache and path.exists():
        return json.loads(path.read_text())
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def cached_model(key: dict, compute) -> NTDResult:
    """An NTD model stored as npz under ``key``."""
    path = _cache_path("ntd", {**key, "version": CACHE_VERSION}).with_suffix(".npz")
    if path.exists():
        with np.load(path) as z:
            return NTDResult(z["core"], [z["W"], z["H"], z["D"]])
    model = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, core=np.asarray(model.core), W=np.asarray(model.factors[0]),
             H=np.asarray(model.factors[1]), D=np.asarray(model.factors[2]))
    return model


# ----------------------------------------------------------------------------- methods

def extraction_separation(result) -> baselines.Separation:
    """An :class:`Extraction` as a Separation (tracks, loop map, clips and their spans)."""
    tracks = np.stack([loop.track for loop in result.loops])
    db = np.round(np.asarray(result.downbeats_s) * SR).astype(np.int64)
    spans = np.array([[db[l.chosen_bar], db[l.chosen_bar] + len(l.clip[0])] for l in result.loops])
    return baselines.Separation(tracks, result.activations, [l.clip for l in result.loops], spans)


def estimated_grid(song, spec, K, L, use_cache) -> dict:
    """Run ``extract_loops`` with madmom's downbeats; returns its scores and the grid it found."""
    def compute():
        t0 = time.perf_counter()
        try:
            result = extract_loops(song.mix, K, loop_bars=L, **ENGINE_OPTIONS)
        except UnmixerError as err:
            return {"failed": str(err), "time_s": time.perf_counter() - t0}
        elapsed = time.perf_counter() - t0
        out = score(song, extraction_separation(result), result.downbeats_s)
        out.update(time_s=elapsed, downbeats_s=[float(x) for x in result.downbeats_s],
                   meter=int(result.meter))
        return out

    return cached("ours_est", {"song": song_key(spec), **ENGINE_KEY}, compute, use_cache)


def method_key(method: str, spec: dict, est: dict) -> dict:
    """Cache key of a method's scores on a song.

    Ours carries :data:`ENGINE_KEY`; the baselines that use estimated downbeats carry the
    grid they got when it differs from the one the first engine found (results computed on
    that grid stay valid).
    """
    key = {"song": song_key(spec)}
    if method.startswith("ours"):
        return {**key, **ENGINE_KEY}
    if method.endswith("_est") and "downbeats_s" in est:
        first = _cache_path("ours_est", {**key, "version": CACHE_VERSION})
        old = json.loads(first.read_text()).get("downbeats_s") if first.exists() else None
        if old is None or len(old) != len(est["downbeats_s"]) or not np.allclose(old, est["downbeats_s"], atol=1e-3):
            key["grid"] = hashlib.sha1(np.round(np.asarray(est["downbeats_s"]), 3).tobytes()).hexdigest()[:12]
    return key


def run_method(method: str, song, spec: dict, est: dict, use_cache: bool) -> dict:
    """Scores of one method on one song (cached)."""
    K, L = spec["n_loops"], max(spec["loop_bars"])
    if method == "ours_est":
        return est
    if method.endswith("_est") and "failed" in est:
        return {"failed": est["failed"]}
    est_db = np.asarray(est.get("downbeats_s", []))

    def compute():
        t0 = time.perf_counter()
        map_db = None
        if method == "mixture":
            sep = baselines.Separation(np.repeat(song.mix[None], K, axis=0))
        elif method == "irm":
            sep = baselines.ideal_ratio_mask(song.mix, song.stems)
        elif method == "ours_true":
            result = extract_loops(song.mix, K, loop_bars=L, downbeats_s=song.downbeats_s, meter=song.meter,
                                   **ENGINE_OPTIONS)
            sep, map_db = extraction_separation(result), song.downbeats_s
        elif method in ("le_est", "le_true"):
            map_db = est_db if method == "le_est" else song.downbeats_s
            sep = baselines.loopextractor(song.mix, K, map_db)
        elif method == "nmf_est":
            sep, map_db = baselines.nmf_kmeans(song.mix, K, est_db), est_db
        else:
            raise ValueError(method)
        elapsed = time.perf_counter() - t0
        return {**score(song, sep, map_db), "time_s": elapsed}

    return cached(method, method_key(method, spec, est), compute, use_cache)


def run_repet(song, spec, use_cache) -> dict | None:
    """REPET's 2-source SDR (estimated period, and the true loop period), or None if 2-source scoring does not apply."""
    bg = two_source_groups(song.layout)
    if bg is None:
        return None

    def compute():
        refs = np.stack([song.stems[bg].sum(axis=0), song.stems[~bg].sum(axis=0)])
        out = {}
        for name, period in (("repet", None), ("repet_known", max(spec["loop_bars"]) * spec["meter"] * 60 / spec["bpm"])):
            t0 = time.perf_counter()
            sep, found = baselines.repet(song.mix, period_s=period)
            elapsed = time.perf_counter() - t0
            sdr = bss_eval_blocks(refs, sep.tracks, match=np.arange(2)).sdr
            out[name] = {"two_sdr": sdr.tolist(), "period_s": found, "time_s": elapsed}
        return out

    return cached("repet", {"song": song_key(spec)}, compute, use_cache)


# ----------------------------------------------------------------------------- tables

def _pool(rows: list[dict], field: str) -> np.ndarray:
    vals = [v for r in rows if field in r for v in np.atleast_1d(r[field])]
    return np.asarray(vals, dtype=np.float64)


def _fmt(x: np.ndarray, how=np.mean, digits: int = 1) -> str:
    return f"{how(x):.{digits}f}" if len(x) else "–"


def family_table(family: str, per_method: dict[str, list[dict]]) -> str:
    """Markdown table of one family: mean and median over every loop of every song.

    SIR and SAR are medians: BSS Eval gives +inf where an estimate lies exactly in the span
    of the references (the mixture's SAR) and CG rounding can do the same to a SIR.
    """
    lines = ["| method | SDR mean | SDR median | SIR median | SAR median | SI-SDR mean | SI-SDR median | layout acc. "
             "| layout F1 | clip SI-SDR median | s / song | failed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, rows in per_method.items():
        ok = [r for r in rows if "failed" not in r]
        failed = len(rows) - len(ok)
        t = _pool(ok, "time_s")
        lines.append(
            f"| {METHODS[method]} | {_fmt(_pool(ok, 'sdr'))} | {_fmt(_pool(ok, 'sdr'), np.median)} | "
            f"{_fmt(_pool(ok, 'sir'), np.median)} | {_fmt(_pool(ok, 'sar'), np.median)} | {_fmt(_pool(ok, 'si_sdr'))} | "
            f"{_fmt(_pool(ok, 'si_sdr'), np.median)} | {_fmt(_pool(ok, 'layout_acc'), digits=2)} | "
            f"{_fmt(_pool(ok, 'layout_f1'), digits=2)} | {_fmt(_pool(ok, 'clip_si_sdr'), np.median)} | "
            f"{_fmt(t, digits=0) if method != 'mixture' else '0'} | {failed} |")
    return "\n".join(lines)


def two_source_table(rows: dict[str, list]) -> str:
    lines = ["| method | background SDR | foreground SDR | mean | songs |", "|---|---:|---:|---:|---:|"]
    for name, vals in rows.items():
        if not vals:
            continue
        a = np.asarray(vals)
        lines.append(f"| {name} | {a[:, 0].mean():.1f} | {a[:, 1].mean():.1f} | {a.mean():.1f} | {len(a)} |")
    return "\n".join(lines)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} logical CPUs shared with other jobs (load average "
            f"{load} at the end), Python {platform.python_version()}")


def plot(summary: dict[str, dict[str, float]], path: Path) -> None:
    """Grouped bars of the mean SDR of each method in each family (small PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(m in summary[f] for f in summary)]
    fig, ax = plt.subplots(figsize=(9, 3.4), dpi=100)
    width = 0.8 / len(methods)
    x = np.arange(len(summary))
    for i, m in enumerate(methods):
        vals = [summary[f].get(m, np.nan) for f in summary]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=METHODS[m])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [f"{f}" for f in summary])
    ax.set_ylabel("mean SDR (dB)")
    ax.set_title("Loop separation on generated songs (bench/quality.py)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _engine_options(pairs: list[str]) -> dict:
    """``NAME=VALUE`` pairs (values parsed as JSON: numbers, null, true) as keyword arguments."""
    out = {}
    for pair in pairs or []:
        name, _, value = pair.partition("=")
        out[name] = json.loads(value)
    return out


def cmd_run(args) -> None:
    counts = dict(zip(FAMILIES, args.songs))
    methods = [m for m in METHODS if m != "le_true" or args.le_true]
    if args.methods:
        methods = [m for m in methods if m in args.methods]
    ENGINE_OPTIONS.update(_engine_options(args.engine))
    ENGINE_KEY.update(ENGINE_OPTIONS)
    if args.tag:  # e.g. "before" / "after": the same engine options, another checkout's code
        ENGINE_KEY["tag"] = args.tag
    t_start = time.perf_counter()
    out = ["Machine: {machine}\n"]
    summary: dict[str, dict[str, float]] = {}
    two_rows: dict[str, list] = {"mixture (floor)": [], "ideal ratio mask (oracle)": [],
                                 "REPET (period from the beat spectrum)": [],
                                 "REPET (true loop period)": [], "ours, estimated downbeats": [],
                                 "loopextractor, estimated downbeats": []}
    targets = []
    for family in FAMILIES:
        specs = song_specs(family, counts[family])
        if not specs:
            continue
        per_method: dict[str, list[dict]] = {m: [] for m in methods}
        out.append(f"\n### {family} ({len(specs)} songs, K = {specs[0]['n_loops']})\n")
        for i, spec in enumerate(specs):
            song = make_song(**spec)
            K, L = spec["n_loops"], max(spec["loop_bars"])
            out.append(f"- song {i + 1}: {describe(spec)}")
            est = estimated_grid(song, spec, K, L, not args.no_cache)
            for m in methods:
                per_method[m].append(run_method(m, song, spec, est, not args.no_cache))
                r = per_method[m][-1]
                print(f"{family} {i + 1} {m}: SDR {np.mean(r['sdr']) if 'sdr' in r else float('nan'):.2f} "
                      f"({r.get('time_s', 0):.0f} s)", flush=True)
            rep = run_repet(song, spec, not args.no_cache)
            if rep is not None:
                for name, m in (("mixture (floor)", "mixture"), ("ideal ratio mask (oracle)", "irm"),
                                ("ours, estimated downbeats", "ours_est"),
                                ("loopextractor, estimated downbeats", "le_est")):
                    if per_method.get(m) and "two_sdr" in per_method[m][-1]:
                        two_rows[name].append(per_method[m][-1]["two_sdr"])
                two_rows["REPET (period from the beat spectrum)"].append(rep["repet"]["two_sdr"])
                two_rows["REPET (true loop period)"].append(rep["repet_known"]["two_sdr"])
        out.append("")
        out.append(family_table(family, per_method))
        summary[family] = {m: float(np.mean(_pool([r for r in rows if "failed" not in r], "sdr")))
                           for m, rows in per_method.items() if _pool(rows, "sdr").size}
        s = summary[family]
        if "ours_est" in s and "le_est" in s:
            line = (f"| {family} | {s['ours_est']:.1f} | {s['le_est']:.1f} | {s['ours_est'] - s['le_est']:+.1f} "
                    f"| {s['irm']:.1f} | {s['ours_est'] - s['irm']:+.1f} |")
            targets.append(line)
    out.append("\n### REPET and 2-source scoring\n")
    out.append("Songs where some loops play in more than half the bars (REPET's repeating background) "
               "and some do not; every method's tracks are summed into the background loops and the "
               "rest (foreground = mixture − background).\n")
    out.append(two_source_table(two_rows))
    out.append("\n### Targets (mean SDR, dB, estimated downbeats)\n")
    out.append("| family | ours | loopextractor | ours − loopextractor (target ≥ +3) | IRM | ours − IRM (target ≥ −4 on 4-loop layouts) |")
    out.append("|---|---:|---:|---:|---:|---:|")
    out += targets
    out.append(f"\nTotal wall time: {time.perf_counter() - t_start:.0f} s (cached results count their first run's time per song).")
    text = "\n".join(out).replace("{machine}", machine())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    if args.plot:
        plot(summary, Path(args.plot))


# ----------------------------------------------------------------------------- levers

LEVERS = {
    "mask_power": [Options(mask_power=p) for p in (1.0, 1.5, 2.0, 3.0)],
    "purify_kl": [Options(), Options(purify_beta=1.0)],
    "kl_ntd": [Options(), Options(kl_iter=10), Options(kl_iter=30), Options(kl_iter=50), Options(kl_iter=100)],
    "merge": [Options(), Options(merge=1), Options(merge=2), Options(merge=2, merge_by="act*spec")],
    "hpss": [Options(), Options(hpss=True)],
    "bar_choice": [Options(bar_choice=b) for b in ("argmax", "dm", "dm2", "share")],
    "ceiling": [Options(), Options(oracle_layout=True)],
    "seed": [Options(seed=s) for s in range(4)],
    "layout": [Options(), Options(layout_rounds=1), Options(layout_rounds=3), Options(layout_rounds=3, layout_gains=True),
               Options(layout_rounds=3, layout_beta=1.0)],
    "layout2": [Options(), Options(layout_rounds=2), Options(layout_rounds=2, layout_gains=True)],
    "starts": [Options(), Options(starts=4), Options(starts=4, layout_rounds=3)],
    "select": [Options(), Options(starts=4, select="binary"), Options(starts=2, select="binary")],
    "purify_l1": [Options(), Options(core_sparsity=0.5), Options(core_sparsity=1.0), Options(core_sparsity=2.0),
                  Options(core_sparsity=0.5, core_l1=1.0), Options(core_sparsity=1.0, core_l1=1.0)],
    "purify_l1b": [Options(core_sparsity=2.0), Options(core_sparsity=4.0), Options(core_sparsity=8.0),
                   Options(core_sparsity=16.0)],
    "purify_l1c": [Options(core_sparsity=32.0), Options(core_sparsity=128.0)],
    "purify_l1d": [Options(core_sparsity=6.0)],
    "four_loop": [Options(), Options(mask_power=1.5),
                  Options(refine_iter=50, refine_beta=1.0, refine_activations=False)],
    "refine2": [Options(), Options(refine_iter=20, refine_beta=1.0, refine_activations=False),
                Options(refine_iter=50, refine_beta=1.0, refine_activations=False),
                Options(refine_iter=20, refine_beta=2.0, refine_activations=False)],
    "tails": [Options(refine_iter=20, refine_beta=2.0, refine_activations=False),
              Options(refine_iter=10, tails=True), Options(refine_iter=30, tails=True)],
    "purify_starts": [Options(refine_iter=10, tails=True)]
    + [Options(refine_iter=10, tails=True, purify_starts=n) for n in (4, 8, 16, 32)],
    "select2": [Options(), Options(starts=2, select="binary")],
    "rough_starts": [Options(), Options(rough_starts=3), Options(rough_starts=4)],
    "bar_phase": [Options(), Options(bar_phase=True), Options(bar_phase=True, kl_iter=30)],
    "loop_rank": [Options(), Options(loop_rank=2), Options(loop_rank=3)],
    "sparsity": [Options(), Options(core_l1=0.0), Options(core_l1=0.1), Options(core_l1=1.0),
                 Options(core_sparsity=0.0), Options(core_sparsity=0.5)],
    "kl_layout": [Options(), Options(kl_iter=30), Options(kl_iter=30, layout_rounds=3),
                  Options(kl_iter=30, starts=4)],
    "refine": [Options(), Options(refine_iter=50), Options(refine_iter=50, refine_beta=1.0),
               Options(refine_iter=50, refine_beta=1.0, refine_activations=False)],
}


def lever_songs(args) -> list[tuple[str, dict]]:
    counts = dict(zip(FAMILIES, args.songs))
    return [(f, s) for f in FAMILIES for s in song_specs(f, counts[f])]


def _downbeats(song, spec, which: str, use_cache: bool):
    if which == "true":
        return song.downbeats_s, song.meter
    # madmom's own grid, as the first engine (no bar phase choice) kept it; lever runs are
    # cached under "estimated" and must all see the same grid
    first = _cache_path("ours_est", {"song": song_key(spec), "version": CACHE_VERSION})
    if first.exists():
        est = json.loads(first.read_text())
    else:
        est = estimated_grid(song, spec, spec["n_loops"], max(spec["loop_bars"]), use_cache)
    if "failed" in est:
        return None, None
    return np.asarray(est["downbeats_s"]), est["meter"]


def variant_scores(song, spec, opts: Options, which: str, L: int, use_cache: bool, K: int | None = None) -> dict:
    K = K or spec["n_loops"]
    db, meter = _downbeats(song, spec, which, use_cache)
    if db is None:
        return {"failed": "no downbeats"}
    if opts.bar_phase and which == "estimated":
        grid = search_grid(np.abs(stft(song.mix)).mean(axis=0), grid_from_downbeats(db, meter), K, L).grid
        db, meter = grid.downbeats_s, grid.meter

    def compute():
        t0 = time.perf_counter()
        prep = prepare(song.mix, db, meter, L, opts.hpss)
        seeds = [opts.seed] if opts.starts == 1 else list(range(opts.starts))
        model = [cached_model({"song": song_key(spec), "db": which, "L": L, "K": K,
                               **replace(opts, seed=s).ntd_key()},
                              lambda s=s: fit_ntd(prep, K, opts, s)) for s in seeds]
        model = model[0] if len(model) == 1 else model
        sep, _ = run_variant(song.mix, K, db, meter, L, opts, model=model, prep=prep, layout=song.layout)
        elapsed = time.perf_counter() - t0
        return {**score(song, sep, db, two=False, sir_sar=False), "time_s": elapsed}

    late = ("oracle_layout", "seed", "layout_rounds", "layout_iter", "layout_beta", "layout_gains", "starts",
            "bar_phase", "loop_rank", "select", "rough_starts", "tails", "purify_starts")
    defaults = asdict(Options())
    key = {k: v for k, v in asdict(opts).items() if k not in late or v != defaults[k]}  # old keys stay valid
    if opts.layout_rounds:
        key["layout_version"] = 2
    if opts.bar_phase:
        key["bar_phase_version"] = 3  # the grid is extended back to the song's start  # the layout starts from the thresholded activations
    return cached("variant", {"song": song_key(spec), "db": which, "L": L, "K": K, **key}, compute, use_cache)


def lever_table(rows: dict[str, list[tuple[str, dict]]]) -> str:
    lines = ["| variant | composed SDR | factorial SDR | sparse SDR | dense SDR | all SDR (mean) | all SDR (median) "
             "| SI-SDR | layout acc. | clip SI-SDR median | s / song |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, items in rows.items():
        ok = [(f, r) for f, r in items if "failed" not in r]
        fam = [_fmt(_pool([r for f2, r in ok if f2 == f], "sdr")) for f in FAMILIES]
        allr = [r for _, r in ok]
        lines.append(f"| {name} | " + " | ".join(fam) + f" | {_fmt(_pool(allr, 'sdr'), digits=2)} | "
                     f"{_fmt(_pool(allr, 'sdr'), np.median, 2)} | {_fmt(_pool(allr, 'si_sdr'), digits=2)} | "
                     f"{_fmt(_pool(allr, 'layout_acc'), digits=3)} | {_fmt(_pool(allr, 'clip_si_sdr'), np.median, 2)} | "
                     f"{_fmt(_pool(allr, 'time_s'), digits=0)} |")
    return "\n".join(lines)


def cmd_levers(args) -> None:
    songs = lever_songs(args)
    use_cache = not args.no_cache
    out = []
    for lever in args.levers:
        rows: dict[str, list] = {}
        t0 = time.perf_counter()
        if lever in LEVERS:
            for opts in LEVERS[lever]:
                name = ", ".join(f"{k}={v}" for k, v in opts.changed().items()) or "engine defaults"
                rows[name] = []
                for family, spec in songs:
                    song = make_song(**spec)
                    r = variant_scores(song, spec, opts, args.downbeats, max(spec["loop_bars"]), use_cache)
                    rows[name].append((family, r))
                    print(f"{lever} [{name}] {family}: SDR {np.mean(r.get('sdr', [np.nan])):.2f}", flush=True)
            extra = ""
        elif lever == "loop_bars":
            rows, extra = lever_loop_bars(songs, args.downbeats, use_cache)
        elif lever == "loop_count":
            rows, extra = lever_loop_count(songs, args.downbeats, use_cache)
        elif lever == "foreground":
            rows, extra = lever_foreground(songs, args.downbeats, use_cache)
        else:
            raise SystemExit(f"unknown lever {lever!r}; choose from {sorted(LEVERS) + ['loop_bars', 'loop_count', 'foreground']}")
        out.append(f"\n#### Lever: {lever} ({len(songs)} songs, {args.downbeats} downbeats)\n")
        out.append(lever_table(rows))
        if extra:
            out.append("\n" + extra)
        out.append(f"\n{time.perf_counter() - t0:.0f} s wall (with cached runs). {machine()}")
    text = "\n".join(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


def lever_loop_bars(songs, which, use_cache):
    """Loop length: the song's longest loop (oracle), fixed 2 bars, and chosen from the data."""
    rows = {"oracle loop length": [], "fixed 2 bars": [], "chosen from the data": []}
    hits, lines = 0, []
    for family, spec in songs:
        song = make_song(**spec)
        true_L = max(spec["loop_bars"])
        db, meter = _downbeats(song, spec, which, use_cache)
        if db is None:
            continue
        chosen, sim = choose_loop_bars(song.mix, db, meter)
        hits += chosen == true_L
        lines.append(f"| {family} | {true_L} | {chosen} | " + ", ".join(f"{k}: {v:.3f}" for k, v in sim.items()) + " |")
        for name, L in (("oracle loop length", true_L), ("fixed 2 bars", 2), ("chosen from the data", chosen)):
            rows[name].append((family, variant_scores(song, spec, Options(), which, L, use_cache)))
    extra = (f"Loop length chosen correctly in {hits} of {len(lines)} songs.\n\n"
             "| family | true length | chosen | mean bar similarity at lag 1, 2, 4 |\n|---|---:|---:|---|\n"
             + "\n".join(lines))
    return rows, extra


def lever_foreground(songs, which, use_cache):
    """The foreground track (``extract_loops(..., foreground=True)``): the K loop tracks
    scored against the K stems, without it and with it at gains 1 and 2 (the foreground
    track itself is not scored: these songs have none)."""
    variants = {"foreground off (engine)": None, "foreground, gain 1": 1.0, "foreground, gain 2": 2.0}
    rows = {name: [] for name in variants}
    for family, spec in songs:
        song = make_song(**spec)
        K, L = spec["n_loops"], max(spec["loop_bars"])
        db, meter = _downbeats(song, spec, which, use_cache)
        if db is None:
            continue
        for name, gain in variants.items():
            def compute(gain=gain):
                t0 = time.perf_counter()
                kw = {} if gain is None else {"foreground": True, "foreground_gain": gain}
                result = extract_loops(song.mix, K, loop_bars=L, downbeats_s=db, meter=meter, **kw)
                return {**score(song, extraction_separation(result), db, two=False, sir_sar=False),
                        "time_s": time.perf_counter() - t0}
            key = {"song": song_key(spec), "db": which, "L": L, "K": K, "foreground": gain, **ENGINE_KEY}
            rows[name].append((family, cached("foreground", key, compute, use_cache)))
            print(f"foreground [{name}] {family}: SDR {np.mean(rows[name][-1][1].get('sdr', [np.nan])):.2f}", flush=True)
    return rows, ""


def lever_loop_count(songs, which, use_cache, max_loops: int = 12):
    """Loop count from the data (purify to 12, merge activations with cosine > 0.9)."""
    rows = {"true K": [], "estimated K (extra estimates ignored, missing ones silent)": []}
    lines = []
    for family, spec in songs:
        song = make_song(**spec)
        K, L = spec["n_loops"], max(spec["loop_bars"])
        db, meter = _downbeats(song, spec, which, use_cache)
        if db is None:
            continue
        prep = prepare(song.mix, db, meter, L)
        model = cached_model({"song": song_key(spec), "db": which, "L": L, "K": max_loops, **Options().ntd_key()},
                             lambda: fit_ntd(prep, max_loops, Options()))
        k_est = auto_loop_count(model, max_loops)
        lines.append(f"| {family} | {K} | {k_est} |")
        rows["true K"].append((family, variant_scores(song, spec, Options(), which, L, use_cache)))
        r = variant_scores(song, spec, Options(), which, L, use_cache, K=k_est) if k_est >= K else None
        if r is None:  # fewer estimates than loops: pad with silent tracks
            sep, _ = run_variant(song.mix, k_est, db, meter, L, Options(), prep=prep)
            pad = np.zeros((K - k_est,) + sep.tracks.shape[1:], dtype=np.float32)
            sep.tracks = np.concatenate([sep.tracks, pad + 1e-6 * np.random.default_rng(0).standard_normal(pad.shape).astype(np.float32)])
            r = score(song, baselines.Separation(sep.tracks), two=False, sir_sar=False)
        rows["estimated K (extra estimates ignored, missing ones silent)"].append((family, r))
    extra = "| family | true K | estimated K |\n|---|---:|---:|\n" + "\n".join(lines)
    return rows, extra


# ----------------------------------------------------------------------------- check

def cmd_check(args) -> None:
    """The composed pipeline with default options gives extract_loops' tracks."""
    spec = song_specs("composed", 1)[0]
    song = make_song(**spec)
    K, L = spec["n_loops"], max(spec["loop_bars"])
    ref = extract_loops(song.mix, K, loop_bars=L, downbeats_s=song.downbeats_s, meter=song.meter)
    sep, _ = run_variant(song.mix, K, song.downbeats_s, song.meter, L)
    a = np.stack([l.track for l in ref.loops])
    order = [int(np.argmin([np.abs(t - x).max() for x in sep.tracks])) for t in a]
    diff = max(float(np.abs(a[i] - sep.tracks[j]).max()) for i, j in enumerate(order))
    print(f"max |extract_loops − composed| = {diff:.2e} (tracks in [-1, 1])")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="the benchmark tables and plot")
    p.add_argument("--songs", type=int, nargs=4, default=DEFAULT_SONGS, metavar=("COMPOSED", "FACTORIAL", "SPARSE", "DENSE"))
    p.add_argument("--le-true", action="store_true", help="also run loopextractor with the true downbeats")
    p.add_argument("--out", default=str(REPO / "bench" / "out" / "quality_run.md"))
    p.add_argument("--plot", default=str(REPO / "bench" / "quality_sdr.png"))
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--methods", nargs="*", choices=list(METHODS), help="only these methods (default: all)")
    p.add_argument("--engine", nargs="*", metavar="NAME=VALUE",
                   help="extract_loops keyword arguments for ours (a variant; part of the cache key)")
    p.add_argument("--tag", default="", help="a name added to ours' cache key (e.g. the checkout: "
                   "bench/quality.py run from a snapshot of main with --tag before)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("levers", help="measure candidate levers one by one")
    p.add_argument("levers", nargs="+")
    p.add_argument("--songs", type=int, nargs=4, default=DEFAULT_SONGS, metavar=("COMPOSED", "FACTORIAL", "SPARSE", "DENSE"))
    p.add_argument("--downbeats", choices=("true", "estimated"), default="true")
    p.add_argument("--out", default=None)
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=cmd_levers)
    p = sub.add_parser("check", help="composed pipeline == extract_loops")
    p.set_defaults(func=cmd_check)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
