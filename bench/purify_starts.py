"""How to choose among the core purification's starts: mean SDR per rule on 17 generated songs.

    nice -n 5 .venv/bin/python bench/purify_starts.py true        # true downbeats
    nice -n 5 .venv/bin/python bench/purify_starts.py estimated   # madmom's (with the bar phase)

Songs: bench/quality.py's 9 and bench/engine.py's 8. For each, the engine's NTD (cached in
bench/out/quality_cache) is purified from 16 starts (NNDSVDa, then seeded random ones) and
tail templates are fitted on each chosen start; the rules keep the start with the lowest
purification objective if it is lower than NNDSVDa's by more than a margin (0: always the
lowest; 1.0: always NNDSVDa). Prints each song's ratio best / NNDSVDa objective, the mean SDR
(BSS Eval, full-length tracks) per rule and song, and the means.
"""
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench")); sys.path.insert(0, str(REPO))
MARGINS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 1.0)  # 1.0: always NNDSVDa
def main():
    import quality as q
    import quality_variants as qv
    from engine import SONGS

    from bench.blockeval import bss_eval_blocks
    from unmixer.datasets.synth import make_song
    from unmixer.lab.nmf import beta_nmf
    from unmixer.loops.masks import loop_templates
    from unmixer.loops.ntd import refine_loop_tails
    from unmixer.loops.pipeline import extract_loops
    which = "true" if sys.argv[1] == "true" else "est"
    songs = []
    for fam, cnt in zip(q.FAMILIES, (3, 2, 2, 2)):
        for idx, spec in enumerate(q.song_specs(fam, cnt)):
            songs.append((f"{fam}{idx}", spec, max(spec["loop_bars"]), q.song_key(spec)))
    for i, cfg in enumerate(SONGS):
        songs.append((f"engine{i+1}", cfg, 1 if cfg.get("loop_bars") == 1 else 2, f"engine{i}"))
    rows = {}
    for name, spec, L, key in songs:
        song = make_song(**spec); K = len(song.stems)
        if which == "true":
            db, meter = song.downbeats_s, song.meter
        elif name.startswith("engine"):
            path = REPO / "bench" / "out" / f"grid_{key}.json"
            try:
                d = json.load(open(path))
            except FileNotFoundError:
                r = extract_loops(song.mix, K, loop_bars=L, tracks=False, refine_iter=0)
                d = {"db": [float(x) for x in r.downbeats_s], "meter": int(r.meter)}
                json.dump(d, open(path, "w"))
            db, meter = np.asarray(d["db"]), d["meter"]
        else:
            d = q.estimated_grid(song, spec, K, L, True); db, meter = np.asarray(d["downbeats_s"]), d["meter"]
        prep = qv.prepare(song.mix, db, meter, L)
        model = q.cached_model({"exp": 1, "song": key, "db": which, "L": L, "K": K, "dbh": float(np.sum(db))},
                               lambda: qv.fit_ntd(prep, K, qv.Options()))
        core = np.asarray(model.core, np.float32); D = np.asarray(model.factors[2], np.float32)
        r1, r2, r3 = core.shape
        G3 = np.ascontiguousarray(np.moveaxis(core, 2, 0).reshape(r3, r1 * r2)); scale = float(G3.mean())
        W, H = (np.asarray(f, np.float32) for f in model.factors[:2])
        fits = [beta_nmf(G3 / scale, K, beta=2.0, n_iter=300, init="nndsvda" if s == 0 else "random",
                         l1_H=6.0, random_state=max(s - 1, 0)) for s in range(16)]
        objs = np.array([float(np.nanmin(f.loss)) for f in fits])
        cache = {}
        def sdr(j):
            if j in cache: return cache[j]
            fit = fits[j]
            new_core = np.moveaxis((fit.H * scale).reshape(K, r1, r2), 0, 2)
            Dp = D @ fit.W
            P = loop_templates(np.ascontiguousarray(new_core), W, H)
            Pt, Qt = refine_loop_tails(prep.cube, P, Dp, n_iter=10)
            tr = qv.model_tracks(prep, Pt, Dp, [[k] for k in range(K)], 2.0, song.mix.shape[-1], Qt)
            cache[j] = float(np.mean(bss_eval_blocks(song.stems, tr, sir_sar=False).sdr))
            return cache[j]
        best = int(np.argmin(objs))
        row = {}
        for m in MARGINS:
            j = best if objs[best] < (1 - m) * objs[0] else 0
            row[m] = sdr(j)
        rows[name] = row
        print(name, f"best/nndsvda obj {objs[best]/objs[0]:.3f}", {m: round(v, 2) for m, v in row.items()}, flush=True)
    print("| margin | quality 9 mean | engine 8 mean | all |")
    for m in MARGINS:
        qm = np.mean([r[m] for n, r in rows.items() if not n.startswith("engine")])
        em = np.mean([r[m] for n, r in rows.items() if n.startswith("engine")])
        print(f"| {m} | {qm:.2f} | {em:.2f} | {np.mean([r[m] for r in rows.values()]):.2f} |")
if __name__ == "__main__":
    main()
