"""Real music with exact stems (issue 14): build the corpus, score methods, print tables.

    .venv/bin/python bench/real.py build             # download the pinned Debian packages, render the corpus
    .venv/bin/python bench/real.py list              # the corpus table (Markdown)
    nice -n 10 .venv/bin/python bench/real.py run    # score every method on excerpts and songs
    nice -n 10 .venv/bin/python bench/real.py run --kind excerpt --methods ours2 ours1
    nice -n 10 .venv/bin/python bench/real.py run --kind excerpt --limit 6 --methods ours ours_fg ours_fg2 irm irm_ours
    .venv/bin/python bench/real.py scan              # re-apply the selection rule (prints MANIFEST)

The corpus (bench/out/real, git-ignored; see ``real_corpus``'s docstring for how pieces are
rendered and cut) is game music from Debian 12 packages: tracker modules rendered one
instrument at a time by libopenmpt, MIDI files one channel at a time by FluidSynth, 30-s
excerpts and whole songs (2-5 min). The held-out packages of issue 14 are never downloaded
(``real_corpus.EXCLUDED_PACKAGES``, asserted).

**Selection rule** (``scan``; its result is frozen as ``real_corpus.MANIFEST``): the pinned
packages in alphabetical order, each package's music files in path order (for freedink-data
only the files whose licence its copyright lists). Excerpts: round robin over the packages,
each turn taking the package's next file that yields an excerpt with at least 3 stems (a
window chosen by ``real_corpus.choose_excerpt`` among starts in the first 120 s), until
:data:`N_EXCERPTS`; every file at most once. Songs: the same round robin over files of 2-5
minutes with one tempo over 95% of them and at least 3 stems, files not used as excerpts
first, until :data:`N_SONGS`.

**Score**: grouped SI-SDR improvement (``unmixer.core.metrics.grouped_si_sdri``): each stem
linked to the track it correlates with most and each track to its stem; each connected group
scores SI-SDR(stems summed, tracks summed) - SI-SDR(stems summed, mixture); the mean over the
groups; one group scores 0. Every method gets K = 5.

**Methods**: ``ours``: ``extract_loops(mix, 5, loop_bars="auto")``, the engine as the CLI
and the app ship it; ``ours_fg`` / ``ours_fg2``: the same model with the foreground track
(gain 1 / 2) as a sixth track (:func:`run_foreground` runs the three from one model per
piece); ``le``: the public loopextractor configuration (``bench.baselines.loopextractor``)
on the downbeats that ``ours`` found (``ours2``'s when ``ours`` is not run), as
bench/quality.py does; ``ours2``: ``extract_loops(mix, 5)`` (2-bar loops); ``ours1``: 1-bar
loops; ``irm``: the ideal ratio mask of every stem (the ceiling of full separation, grouped
by the same rule); ``irm_ours``: the ideal ratio mask of the groups ``ours`` (or ``ours2``)
found (the ceiling of a method that finds exactly those groups). ``--limit N`` scores the
first N pieces of each kind only (manifest order).

Scores are cached per piece and method as JSON in bench/out/real/scores, keyed by the piece,
the method's code (ours: every file of unmixer/loops and unmixer/core; the baselines: their
function's source and, for ``le`` and ``irm_ours``, what they take from ``ours2``) and the
metric's code: a re-run recomputes only what changed. To score
another separation, call :func:`evaluate` (or :func:`score_tracks` on one piece)::

    import sys; sys.path.insert(0, "bench")
    import real
    def separate(piece, mix):                     # mix: (2, n) float32 at 44.1 kHz
        return my_tracks                          # (K, 2, n)
    rows = real.evaluate("mine", separate, kind="excerpt", version="v1")
    print(real.mean_row(rows))
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import real_corpus as rc  # noqa: E402
from real_corpus import Piece, load_corpus  # noqa: E402,F401  (the public face)

N_EXCERPTS, N_SONGS = 24, 12
K = 5
SCORES = rc.OUT / "scores"
CACHE_VERSION = 1
SCORE_VERSION = 1
"""Part of every score's cache key: bump it when :func:`score_tracks` changes what it
returns (the metric's own code, ``grouped_si_sdri_from_gram``, is hashed)."""
METHODS = {
    "ours": "ours as shipped (loop length auto)",
    "ours_fg": "ours + foreground track (gain 1)",
    "ours_fg2": "ours + foreground track (gain 2)",
    "le": "public loopextractor configuration",
    "ours2": "ours as shipped (2-bar loops)",
    "ours1": "ours, 1-bar loops",
    "irm": "ideal ratio mask, every stem",
    "irm_ours": "ideal ratio mask on the groups ours found",
}


# ----------------------------------------------------------------------------- corpus

def _candidates(package: str) -> list[str]:
    files = rc.music_files(package)
    if rc.PACKAGES[package][1] == "see FILE_LICENCES":
        files = [f for f in files if f"{package}/{f}" in rc.FILE_LICENCES]
    return files


def _duration_s(path: Path) -> float:
    """The file's length (s); 0 for a file that its renderer cannot read (skipped)."""
    try:
        if path.suffix.lower() == ".mid":
            import mido

            return float(mido.MidiFile(str(path), clip=True).length)
        return rc.TrackerModule(path.read_bytes()).duration_s
    except Exception:
        return 0.0


def _make(kind: str, package: str, path: str, log=print) -> Piece | None:
    src = rc.source_path(package, path)
    try:
        r = rc.render_source(src, max_s=150.0 if kind == "excerpt" else None)
    except Exception as err:  # a file a renderer cannot read is skipped by the rule
        log(f"  {package}/{path}: cannot render ({err})")
        return None
    try:
        return rc.make_piece(kind, package, path, r, log=log)
    finally:
        r.close()


def scan(log=print) -> list[tuple[str, str, str]]:
    """Apply the selection rule (module docstring) to the pinned packages; build the pieces
    it chooses and return the manifest."""
    rc.fetch_packages(log=log)
    packages = sorted(rc.PACKAGES)
    cands = {p: _candidates(p) for p in packages}
    durations = {(p, f): _duration_s(rc.source_path(p, f)) for p in packages for f in cands[p]}
    manifest: list[tuple[str, str, str]] = []
    for kind, quota, ok in (("excerpt", N_EXCERPTS, lambda d: d >= rc.EXCERPT_S + 1),
                            ("song", N_SONGS, lambda d: rc.SONG_MIN_S <= d <= rc.SONG_MAX_S + 20)):
        used = {f for _, _, f in manifest}
        queue = {p: [f for f in cands[p] if ok(durations[(p, f)])] for p in packages}
        if kind == "song":
            queue = {p: [f for f in q if f not in used] + [f for f in q if f in used] for p, q in queue.items()}
        n = 0
        while n < quota and any(queue.values()):
            for p in packages:
                while queue[p] and n < quota:
                    f = queue[p].pop(0)
                    log(f"{kind} candidate {p}/{f}")
                    if _make(kind, p, f, log) is not None:
                        manifest.append((kind, p, f))
                        n += 1
                        break
    _write_index(manifest)
    return manifest


def build(log=print) -> list[Piece]:
    """Download the pinned packages and render :data:`real_corpus.MANIFEST`.

    Raises
    ------
    RuntimeError
        If a manifest piece no longer qualifies (the tools or packages changed).
    """
    rc.check_packages()
    if not rc.MANIFEST:
        raise RuntimeError("real_corpus.MANIFEST is empty: run `bench/real.py scan` and freeze its output")
    rc.fetch_packages(sorted({p for _, p, _ in rc.MANIFEST}), log=log)
    for kind, package, path in rc.MANIFEST:
        t0 = time.perf_counter()
        if _make(kind, package, path, log) is None:
            raise RuntimeError(f"{kind} {package}/{path} no longer qualifies")
        log(f"{kind:7s} {package}/{path}  {time.perf_counter() - t0:.1f} s")
    _write_index(rc.MANIFEST)
    return load_corpus("all")


def _write_index(manifest) -> None:
    keys = [rc._slug(p, f, k) for k, p, f in manifest]
    index = {"pieces": keys,
             "packages": {p: rc.PACKAGES[p][0] for p in sorted({p for _, p, _ in manifest})},
             "tools": {"libopenmpt": rc.openmpt_version(), "fluidsynth": rc.fluidsynth_version(),
                       "soundfont": str(rc.SOUNDFONT)}}
    (rc.OUT / "corpus.json").write_text(json.dumps(index, indent=1))


def corpus_table(pieces: list[Piece]) -> str:
    """Markdown: one row per piece (package, licence, length, stems), then the packages."""
    out = ["| piece | kind | package | licence | start (s) | length (s) | tempo (BPM) | stems (share of the mixture's energy) |",
           "|---|---|---|---|---:|---:|---:|---|"]
    for p in pieces:
        stems = ", ".join(f"{n} {s:.0%}" for n, s in zip(p.stem_names, p.meta["stem_shares"]))
        out.append(f"| {p.name.split(' (')[0]} | {p.kind} | {p.package} | {p.licence} | {p.offset_s:.1f} | "
                   f"{p.duration_s:.1f} | {p.bpm:.0f} | {len(p.stem_names)}: {stems} |")
    pk = sorted({(p.package, p.version) for p in pieces})
    out += ["", "| package (Debian 12) | version | licence | excerpts | songs |", "|---|---|---|---:|---:|"]
    for name, version in pk:
        ex = sum(p.package == name and p.kind == "excerpt" for p in pieces)
        so = sum(p.package == name and p.kind == "song" for p in pieces)
        licences = ", ".join(sorted({p.licence for p in pieces if p.package == name}))
        out.append(f"| {name} | {version} | {licences} | {ex} | {so} |")
    trk = [p.meta["render_residual_db"] for p in pieces if not p.source.lower().endswith(".mid")]
    mid = [p.meta["render_residual_db"] for p in pieces if p.source.lower().endswith(".mid")]
    out += ["", f"{len(pieces)} pieces; sum of the parts against the one-pass render: tracker "
            f"{max(trk) if trk else float('nan'):.0f} dB at worst, MIDI {min(mid) if mid else float('nan'):.0f} "
            f"to {max(mid) if mid else float('nan'):.0f} dB (the mixture is the sum of the stems either way); "
            f"tracker renders deterministic: {all(p.meta['deterministic'] for p in pieces if p.meta['deterministic'] is not None)}; "
            f"energy dropped with a small 'other': {max(p.meta['dropped_share'] for p in pieces):.1%} at most."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- scoring

def score_tracks(piece: Piece, tracks: np.ndarray, block: int = 1 << 18) -> dict:
    """Grouped SI-SDR improvement of ``tracks`` on ``piece``.

    Parameters
    ----------
    piece : Piece
    tracks : np.ndarray, shape=(K, 2, n), float32, n = the piece's length in samples

    Returns
    -------
    dict: ``score_db``, ``n_groups``, ``groups`` (list of [stem indices, track indices]),
    ``per_group_db`` (list), ``estimate_db``, ``mixture_db`` (lists), ``group_names``

    The stems are read block by block, never all at once.
    """
    import soundfile as sf

    from unmixer.core.metrics import grouped_si_sdri_from_gram

    tracks = np.asarray(tracks, dtype=np.float32)
    S = len(piece.stem_names)
    files = [sf.SoundFile(str(piece.directory / f"stem_{i:02d}.flac")) for i in range(S)]
    mixf = sf.SoundFile(str(piece.directory / "mix.flac"))
    n = mixf.frames
    if tracks.ndim != 3 or tracks.shape[1:] != (2, n):
        raise ValueError(f"tracks must have shape (K, 2, {n}), not {tracks.shape}")
    G = np.zeros((S + len(tracks) + 1,) * 2)
    try:
        for a in range(0, n, block):
            m = min(block, n - a)
            rows = [f.read(m, dtype="float32", always_2d=True).T.reshape(-1) for f in files]
            rows += [t[:, a:a + m].reshape(-1) for t in tracks]
            rows.append(mixf.read(m, dtype="float32", always_2d=True).T.reshape(-1))
            x = np.stack(rows).astype(np.float64)
            G += x @ x.T
    finally:
        for f in files + [mixf]:
            f.close()
    g = grouped_si_sdri_from_gram(G, S, len(tracks))
    return {"score_db": g.score_db, "n_groups": g.n_groups,
            "groups": [[list(s), list(t)] for s, t in g.groups],
            "per_group_db": [round(float(x), 3) for x in g.per_group_db],
            "estimate_db": [round(float(x), 3) for x in g.estimate_db],
            "mixture_db": [round(float(x), 3) for x in g.mixture_db],
            "group_names": [" + ".join(piece.stem_names[i] for i in s) for s, _ in g.groups]}


def _hash(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _code_hash(*objects) -> str:
    return _hash(*[inspect.getsource(o) for o in objects])


def _package_hash(root: Path) -> str:
    return _hash(*[(str(p.relative_to(root)), p.read_text()) for p in sorted(root.rglob("*.py"))])


def _metric_key() -> str:
    from unmixer.core import metrics

    return _hash(SCORE_VERSION, _code_hash(metrics.grouped_si_sdri_from_gram, metrics._si_sdr_from_products))


def evaluate(method: str, separate: Callable, kind: str = "excerpt", *, version: str = "",
             use_cache: bool = True, pieces: list[Piece] | None = None, log=print) -> list[dict]:
    """Score ``separate`` on every piece of ``kind`` (cached per piece).

    Parameters
    ----------
    method : str, a name for the cache and the tables
    separate : callable(piece, mix) -> tracks (K, 2, n) or (tracks, info dict); ``mix`` is
        the piece's mixture, shape (2, n), float32, 44.1 kHz
    kind : "excerpt", "song" or "all"
    version : str, part of the cache key: change it when ``separate`` changes
    use_cache : bool, reuse stored scores whose key matches
    pieces : optional list of pieces (default: :func:`load_corpus` of ``kind``)

    Returns
    -------
    list of dicts, one per piece: ``piece`` (key), ``name``, ``kind``, ``time_s``, the
    :func:`score_tracks` fields, and whatever ``info`` ``separate`` returned (or ``failed``:
    the error message, scored as 0 dB in one group)
    """
    rows = []
    for piece in pieces if pieces is not None else load_corpus(kind):
        key = {"v": CACHE_VERSION, "method": method, "version": version, "metric": _metric_key(),
               "piece": _hash((piece.directory / "meta.json").read_text())}
        path = SCORES / method / f"{piece.key}.json"
        if use_cache and path.exists():
            row = json.loads(path.read_text())
            if row.get("key") == key:
                rows.append(row)
                continue
        mix = piece.mix
        t0 = time.perf_counter()
        row = {"piece": piece.key, "name": piece.name, "kind": piece.kind, "key": key}
        try:
            out = separate(piece, mix)
            tracks, info = out if isinstance(out, tuple) else (out, {})
            row["time_s"] = round(time.perf_counter() - t0, 2)
            row.update(info)
            row.update(score_tracks(piece, tracks))
            del tracks, out
        except Exception as err:
            from unmixer.errors import UnmixerError

            if not isinstance(err, UnmixerError):
                raise
            row.update(failed=str(err), score_db=0.0, n_groups=1, time_s=round(time.perf_counter() - t0, 2))
        del mix
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
        log(f"  {method:8s} {piece.name:50s} {row['score_db']:6.2f} dB  {row['n_groups']} groups  "
            f"{row.get('time_s', 0):.0f} s" + (f"  FAILED: {row['failed']}" if "failed" in row else ""))
        rows.append(row)
    return rows


def mean_row(rows: list[dict]) -> dict:
    """Mean score (dB) and mean number of groups over ``rows``."""
    return {"score_db": float(np.mean([r["score_db"] for r in rows])) if rows else float("nan"),
            "n_groups": float(np.mean([r["n_groups"] for r in rows])) if rows else float("nan"),
            "n": len(rows)}


# ----------------------------------------------------------------------------- methods

def _ours(loop_bars: int):
    def separate(piece, mix):
        from unmixer.loops.pipeline import extract_loops

        res = extract_loops(mix, K, loop_bars=loop_bars)
        info = {"bpm": round(float(res.bpm), 2), "meter": int(res.meter), "n_bars": int(res.n_bars),
                "downbeats_s": [round(float(x), 4) for x in res.downbeats_s],
                "labels": [loop.label for loop in res.loops]}
        return np.stack([loop.track for loop in res.loops]), info
    return separate


def _loopextractor(downbeats: dict):
    def separate(piece, mix):
        from bench import baselines
        from unmixer.errors import UnmixerError

        db = downbeats.get(piece.key)
        if db is None:
            raise UnmixerError("ours (2-bar) found no grid, so loopextractor has no downbeats")
        return baselines.loopextractor(mix, K, np.asarray(db)).tracks, {"n_bars": len(db) - 1}
    return separate


def _irm(piece, mix):
    from bench import baselines

    return baselines.ideal_ratio_mask(mix, piece.stems).tracks


def _irm_groups(groups: dict):
    def separate(piece, mix):
        from bench import baselines

        stems = piece.stems
        g = groups.get(piece.key) or [[list(range(len(stems))), []]]
        refs = np.stack([stems[s].sum(axis=0) for s, _ in g])
        del stems
        return baselines.ideal_ratio_mask(mix, refs).tracks, {"groups_of": "ours2"}
    return separate


FOREGROUND_VARIANTS = {"ours": None, "ours_fg": 1.0, "ours_fg2": 2.0}
"""The shipped engine and its foreground variants (name -> foreground gain, None: off)."""


def run_foreground(kind: str, limit: int | None = None, use_cache: bool = True, log=print) -> dict[str, list[dict]]:
    """The shipped engine (``extract_loops(mix, 5, loop_bars="auto")``) and its foreground
    variants, piece by piece: the stages up to the loop model run once per piece, then
    :func:`unmixer.loops.pipeline.build_loops` once per variant (the foreground changes only
    the masks), so before and after come from one run on the same model. A variant with a
    foreground scores K + 1 tracks (the K loops and the foreground).

    Parameters
    ----------
    kind : "excerpt" or "song"
    limit : int, optional: the first ``limit`` pieces of ``kind`` in manifest order
    use_cache : bool, reuse stored scores (keyed by the engine's code, as ``ours2``)

    Returns
    -------
    dict: method name -> rows as :func:`evaluate` returns them (plus ``explained``, the
    share of the song the loop model explains, and ``foreground_energy``)
    """
    from dataclasses import replace

    import unmixer
    from unmixer.core.spectrum import stft
    from unmixer.errors import UnmixerError
    from unmixer.loops import pipeline as pl

    root = Path(unmixer.__file__).parent
    engine = _hash(_package_hash(root / "loops"), _package_hash(root / "core"), (root / "errors.py").read_text())
    pieces = load_corpus(kind)[:limit]
    results: dict[str, list[dict]] = {m: [] for m in FOREGROUND_VARIANTS}
    for piece in pieces:
        keys = {m: {"v": CACHE_VERSION, "method": m, "version": engine, "metric": _metric_key(),
                    "piece": _hash((piece.directory / "meta.json").read_text())} for m in FOREGROUND_VARIANTS}
        paths = {m: SCORES / m / f"{piece.key}.json" for m in FOREGROUND_VARIANTS}
        cached = {m: json.loads(paths[m].read_text()) for m in FOREGROUND_VARIANTS if use_cache and paths[m].exists()}
        if all(m in cached and cached[m].get("key") == keys[m] for m in FOREGROUND_VARIANTS):
            for m in FOREGROUND_VARIANTS:
                results[m].append(cached[m])
            continue
        mix = piece.mix
        t0 = time.perf_counter()
        rows = {}
        try:  # extract_loops(mix, K, loop_bars="auto"), stage by stage
            settings = pl.EngineSettings()
            audio = pl._checked_request(mix, K, pl.AUTO, settings)
            tracked = pl.track_grid(audio)
            mix_spec = stft(audio)
            magnitude = np.abs(mix_spec).mean(axis=0)
            grid = pl.choose_grid(magnitude, tracked, K, pl.AUTO, move_bar_lines=True, seed=0,
                                  duration_s=audio.shape[-1] / rc.SR)
            cube = pl.build_cube(magnitude, grid)
            del magnitude
            model = pl.fit_loop_model(pl.decompose(cube, grid.n_loops, settings), cube, grid.n_loops, settings)
            base_s = time.perf_counter() - t0
            for m, gain in FOREGROUND_VARIANTS.items():
                t1 = time.perf_counter()
                s = settings if gain is None else replace(settings, foreground=True, foreground_gain=gain)
                loops, rest = pl.build_loops(model, cube, mix_spec, grid, audio, s)
                tracks = np.stack([lp.track for lp in loops] + ([rest.track] if rest.track is not None else []))
                row = {"piece": piece.key, "name": piece.name, "kind": piece.kind, "key": keys[m],
                       "time_s": round(base_s + time.perf_counter() - t1, 2),
                       "bpm": round(float(grid.beats.bpm), 2), "meter": int(grid.beats.meter),
                       "n_bars": int(grid.beats.n_bars), "loop_bars": int(grid.loop_bars),
                       "downbeats_s": [round(float(x), 4) for x in grid.beats.downbeats_s],
                       "fit_explained": round(rest.fit_explained, 4), "foreground_energy": round(rest.energy, 4),
                       "explained": round(1.0 - min(max(grid.heldout_error, 0.0), 1.0), 4)
                       if np.isfinite(grid.heldout_error) else None,
                       "labels": [lp.label for lp in loops]}
                row.update(score_tracks(piece, tracks))
                rows[m] = row
                del tracks, loops, rest
            del cube, mix_spec, model
        except UnmixerError as err:
            rows = {m: {"piece": piece.key, "name": piece.name, "kind": piece.kind, "key": keys[m],
                        "failed": str(err), "score_db": 0.0, "n_groups": 1,
                        "time_s": round(time.perf_counter() - t0, 2)} for m in FOREGROUND_VARIANTS}
        for m, row in rows.items():
            paths[m].parent.mkdir(parents=True, exist_ok=True)
            paths[m].write_text(json.dumps(row))
            results[m].append(row)
        log(f"  {piece.name:50s} " + "  ".join(f"{m} {r['score_db']:6.2f} dB/{r['n_groups']}" for m, r in rows.items())
            + f"  explained {rows['ours'].get('explained') or float('nan'):.2f} (fit {rows['ours'].get('fit_explained', float('nan')):.2f})"
            f"  {time.perf_counter() - t0:.0f} s")
        del mix
    return results


def run_methods(methods: list[str], kind: str, use_cache: bool = True, log=print,
                limit: int | None = None) -> dict[str, list[dict]]:
    """The built-in methods on ``kind`` pieces (the first ``limit`` in manifest order, if
    given). ``le`` and ``irm_ours`` take the grid and groups of ``ours`` (the shipped engine)
    when it is asked for, else of ``ours2`` (run first); ``ours`` and its foreground variants
    run together (:func:`run_foreground`)."""
    import unmixer
    from bench import baselines

    root = Path(unmixer.__file__).parent  # the engine's code: any change re-runs ours
    engine = _hash(_package_hash(root / "loops"), _package_hash(root / "core"), (root / "errors.py").read_text())
    pieces = load_corpus(kind)[:limit]
    results = {}
    ref = "ours" if "ours" in methods or "ours2" not in methods and any(m in FOREGROUND_VARIANTS for m in methods) else "ours2"
    if any(m in FOREGROUND_VARIANTS for m in methods) or (ref == "ours" and any(m in ("le", "irm_ours") for m in methods)):
        log(f"ours + foreground variants ({kind})")
        results.update(run_foreground(kind, limit, use_cache, log))
    need_ours2 = "ours2" in methods or ref == "ours2" and any(m in ("le", "irm_ours") for m in methods)
    order = (["ours2"] if need_ours2 else []) + [m for m in methods if m != "ours2" and m not in FOREGROUND_VARIANTS]
    for m in order:
        log(f"{m}: {METHODS[m]} ({kind})")
        if m in ("ours2", "ours1"):
            rows = evaluate(m, _ours(2 if m == "ours2" else 1), kind, version=engine, use_cache=use_cache,
                            pieces=pieces, log=log)
        elif m == "le":
            db = {r["piece"]: r.get("downbeats_s") for r in results[ref]}
            rows = evaluate(m, _loopextractor(db), kind, use_cache=use_cache, log=log, pieces=pieces,
                            version=_hash(_code_hash(baselines.loopextractor), db))
        elif m == "irm":
            rows = evaluate(m, _irm, kind, version=_code_hash(baselines.ideal_ratio_mask), use_cache=use_cache,
                            pieces=pieces, log=log)
        elif m == "irm_ours":
            groups = {r["piece"]: r.get("groups") for r in results[ref]}
            rows = evaluate(m, _irm_groups(groups), kind, use_cache=use_cache, log=log, pieces=pieces,
                            version=_hash(_code_hash(baselines.ideal_ratio_mask), groups))
        else:
            raise ValueError(m)
        results[m] = rows
    return {m: results[m] for m in methods}


def results_tables(by_kind: dict[str, dict[str, list[dict]]]) -> str:
    """Markdown: the mean table (methods × kinds), then per-piece rows per kind."""
    methods = list(next(iter(by_kind.values())).keys())
    ref = "ours" if "ours" in methods else "ours2"
    out = ["| method (K = 5) | " + " | ".join(f"{k}s: grouped SI-SDRi | groups" for k in by_kind) + " |",
           "|---|" + "---:|---:|" * len(by_kind)]
    for m in methods:
        cells = []
        for k, res in by_kind.items():
            mr = mean_row(res[m])
            cells += [f"{mr['score_db']:.2f} dB", f"{mr['n_groups']:.2f}"]
        out.append(f"| {METHODS.get(m, m)} | " + " | ".join(cells) + " |")
    for k, res in by_kind.items():
        out += ["", f"**{k}s** (grouped SI-SDRi dB / groups; ours: tempo found, bars)", "",
                "| piece | stems | source tempo | " + " | ".join(methods) + f" | {ref} tempo, bars | explained |",
                "|---|---:|---:|" + "---:|" * len(methods) + "---|---:|"]
        pieces = {p.key: p for p in load_corpus(k)}
        for i, row0 in enumerate(res[methods[0]]):
            p = pieces[row0["piece"]]
            cells = []
            for m in methods:
                r = res[m][i]
                cells.append("fail" if "failed" in r else f"{r['score_db']:.1f} / {r['n_groups']}")
            o2 = next((r for r in res.get(ref, []) if r["piece"] == p.key), None)
            grid = f"{o2['bpm']:.0f} BPM, {o2['n_bars']} bars" if o2 and "bpm" in o2 else ""
            if o2 and "loop_bars" in o2:
                grid += f", {o2['loop_bars']}-bar loops"
            expl = f"{o2['explained']:.2f}" if o2 and o2.get("explained") is not None else ""
            out.append(f"| {p.name} | {len(p.stem_names)} | {p.bpm:.0f} | " + " | ".join(cells) + f" | {grid} | {expl} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="download the packages and render the corpus")
    sub.add_parser("scan", help="apply the selection rule (prints the manifest to freeze)")
    sub.add_parser("list", help="print the corpus table")
    r = sub.add_parser("run", help="score methods and print the tables")
    r.add_argument("--kind", choices=["excerpt", "song", "all"], default="all")
    r.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--out", type=Path, help="also write the tables to this file")
    r.add_argument("--limit", type=int, help="only the first LIMIT pieces of each kind (manifest order)")
    args = ap.parse_args(argv)
    if args.cmd == "scan":
        t0 = time.perf_counter()
        manifest = scan()
        print("\nMANIFEST = [")
        for e in manifest:
            print(f"    {e!r},")
        print("]")
        print(f"# {time.perf_counter() - t0:.0f} s")
    elif args.cmd == "build":
        t0 = time.perf_counter()
        pieces = build()
        print(f"\n{len(pieces)} pieces built in {time.perf_counter() - t0:.0f} s "
              f"(libopenmpt {rc.openmpt_version()}, fluidsynth {rc.fluidsynth_version()})")
        print(corpus_table(pieces))
    elif args.cmd == "list":
        print(corpus_table(load_corpus("all")))
    else:
        kinds = ["excerpt", "song"] if args.kind == "all" else [args.kind]
        by_kind = {k: run_methods(args.methods, k, use_cache=not args.no_cache, limit=args.limit) for k in kinds}
        text = results_tables(by_kind)
        text += f"\n\nMachine: {platform.machine()}, {platform.python_version()}; scores cached in {SCORES}"
        print("\n" + text)
        if args.out:
            args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
