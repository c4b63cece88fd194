"""Train the drum-transcription CNN and export it to ONNX: ``python -m training.drums.train``.

Needs PyTorch (``pip install -r requirements-train.txt``). With the defaults it generates
1,000 eight-second patterns (half with six GM kits, half with 60 synthetic kits; the GM
TR-808 kit and synthetic seeds >= 1,000,000 are held out), trains for 2,200 steps of 16 random
3-s crops with Adam and a one-cycle learning rate (5 % warm-up, cosine decay), tunes one
peak-picking threshold per class on 120 validation patterns, and writes

* ``unmixer/drums/weights/drum_cnn.onnx`` (weights + thresholds in the metadata),
* ``unmixer/drums/weights/drum_cnn.pt`` (the PyTorch state dict, for the export test),
* ``unmixer/drums/weights/reference_output.npy`` (the model's output on
  :func:`reference_input`, checked by the torch-free test),
* ``unmixer/drums/weights/training_summary.json`` (losses, validation F-measures, times).

It takes about 40 min on two shared CPU cores with one torch thread (``--threads 2`` is
faster on an idle machine). The seed trains with SGD at a learning rate of 1e-4 on a large
proprietary set; to fit a CPU in under an hour we use Adam (lr 2e-3) with batch normalisation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from training.drums.data import feature_example, training_kits
from unmixer.datasets.drums import generate_example
from unmixer.drums import CLASSES
from unmixer.drums.features import N_MELS
from unmixer.drums.transcribe import WEIGHTS, onset_scores, pick_peaks

CROP_FRAMES = 256
"""Frames per training crop (3 s): the seed's random slicing."""

THRESHOLD_GRID = np.round(np.arange(0.15, 0.91, 0.05), 2)


def reference_input() -> np.ndarray:
    """A fixed CNN input, shape=(1, 1, N_MELS, 200), float32, for export checks."""
    rng = np.random.default_rng(1234)
    base = rng.gamma(1.0, 0.6, size=(N_MELS, 200)).astype(np.float32)
    base[:, ::20] += 3.0  # broadband "hits" every 20 frames
    return base[None, None]


def make_set(kits, n: int, seed: int, duration_s: float = 8.0, log_every: int = 200):
    """``n`` examples as (features list, targets list, onsets list); even examples use the GM
    kits in turn, odd ones the synthetic kits (so real drum samples make half the data)."""
    gm = [k for k in kits if k.name.startswith("gm-")] or kits
    synth = [k for k in kits if not k.name.startswith("gm-")] or kits
    xs, ys, onsets = [], [], []
    t0 = time.time()
    for i in range(n):
        kit = gm[(i // 2) % len(gm)] if i % 2 == 0 else synth[(i // 2) % len(synth)]
        ex = generate_example(kit, seed + i, duration_s, stems=False)
        x, y = feature_example(ex)
        xs.append(x)
        ys.append(y)
        onsets.append(ex.onsets)
        if log_every and (i + 1) % log_every == 0:
            print(f"  generated {i + 1}/{n} examples ({time.time() - t0:.0f} s)", flush=True)
    return xs, ys, onsets


def _batch(xs, ys, rng, batch: int):
    idx = rng.integers(0, len(xs), batch)
    bx = np.zeros((batch, 1, N_MELS, CROP_FRAMES), dtype=np.float32)
    by = np.zeros((batch, len(CLASSES), CROP_FRAMES), dtype=np.float32)
    for b, i in enumerate(idx):
        n = xs[i].shape[1]
        s = int(rng.integers(0, max(n - CROP_FRAMES, 0) + 1))
        seg = xs[i][:, s:s + CROP_FRAMES]
        bx[b, 0, :, :seg.shape[1]] = seg
        by[b, :, :seg.shape[1]] = ys[i][:, s:s + CROP_FRAMES]
    return bx, by


def predict(model, xs) -> list[np.ndarray]:
    """The model's onset profiles (5, T) for each feature matrix, in eval mode."""
    import torch

    model.eval()
    with torch.no_grad():
        return [model(torch.from_numpy(x[None, None])).numpy()[0] for x in xs]


def tune_thresholds(profiles, onsets) -> tuple[np.ndarray, dict[str, float]]:
    """Per-class threshold maximising the mean onset F-measure (50 ms) over examples."""
    best_thr, best_f = np.full(len(CLASSES), 0.5, dtype=np.float32), {}
    scores = np.zeros((len(THRESHOLD_GRID), len(CLASSES)))
    for j, thr in enumerate(THRESHOLD_GRID):
        for prof, ref in zip(profiles, onsets):
            est, _ = pick_peaks(prof, float(thr))
            s = onset_scores(ref, est)
            scores[j] += [s[c][0] for c in CLASSES]
    scores /= len(profiles)
    for c, cls in enumerate(CLASSES):
        j = int(np.argmax(scores[:, c]))
        best_thr[c] = THRESHOLD_GRID[j]
        best_f[cls] = round(float(scores[j, c]), 4)
    return best_thr, best_f


def export_onnx(model, path: Path, thresholds: np.ndarray) -> None:
    """Export to ONNX (dynamic frame axis) with the thresholds in the metadata; writes the
    reference output and the PyTorch state dict (``.pt``) next to it."""
    import onnx
    import torch

    model.eval()
    dummy = torch.from_numpy(reference_input())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (dummy,), str(path), input_names=["mel"], output_names=["onset"],
                      dynamic_axes={"mel": {3: "frames"}, "onset": {2: "frames"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    meta = {"thresholds": json.dumps([round(float(t), 3) for t in thresholds]),
            "classes": ",".join(CLASSES), "n_mels": str(N_MELS),
            "source": "python -m training.drums.train"}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    with torch.no_grad():
        ref = model(dummy).numpy()[0]
    np.save(path.with_name("reference_output.npy"), ref.astype(np.float32))
    torch.save(model.state_dict(), path.with_suffix(".pt"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.drums.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="training patterns (8 s each)")
    parser.add_argument("--val", type=int, default=120, help="validation patterns")
    parser.add_argument("--synth-kits", type=int, default=60, help="synthetic training kits")
    parser.add_argument("--steps", type=int, default=2200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="ONNX file to write")
    args = parser.parse_args(argv)

    import torch

    from training.drums.model import DrumCNN

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    kits = training_kits(args.synth_kits, seed=args.seed)
    print(f"{len(kits)} training kits: {', '.join(k.name for k in kits[:8])}, ...", flush=True)
    xs, ys, _ = make_set(kits, args.examples, seed=args.seed * 100_000 + 1)
    vx, vy, von = make_set(kits, args.val, seed=args.seed * 100_000 + 50_000, log_every=0)
    t_data = time.time() - t_start
    print(f"data: {t_data:.0f} s", flush=True)

    model = DrumCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    pos_weight = torch.full((len(CLASSES), 1), 4.0)
    log, t_train = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        bx, by = _batch(xs, ys, rng, args.batch)
        logits = model.logits(torch.from_numpy(bx))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(by), pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == args.steps:
            with torch.no_grad():
                model.eval()
                vl = float(np.mean([torch.nn.functional.binary_cross_entropy_with_logits(
                    model.logits(torch.from_numpy(x[None, None])), torch.from_numpy(y[None]),
                    pos_weight=pos_weight) for x, y in zip(vx[:40], vy[:40])]))
            log.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(vl, 4),
                        "elapsed_s": round(time.time() - t_train, 1)})
            print(json.dumps(log[-1]), flush=True)

    profiles = predict(model, vx)
    thresholds, val_f = tune_thresholds(profiles, von)
    print(f"thresholds {thresholds.tolist()}  validation F {val_f}", flush=True)
    export_onnx(model, args.out, thresholds)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "parameters": n_params,
               "data_s": round(t_data, 1), "train_s": round(time.time() - t_train, 1),
               "total_s": round(time.time() - t_start, 1), "thresholds": thresholds.tolist(),
               "validation_f": val_f, "log": log,
               "onnx_bytes": args.out.stat().st_size}
    args.out.with_name("training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out} ({summary['onnx_bytes'] / 1e6:.2f} MB) in {summary['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
