"""`python -m unmixer batch`: a folder of songs on a Dask LocalCluster of worker processes.

Real files in and out: generated songs written as WAV (two with the same name in different
folders), a corrupt file, the real engine on two worker processes, one of them killed in the
middle of a song; then a rerun, and the outputs against `extract`'s for the same song.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import REPO, synth_song

from unmixer import batch
from unmixer.batch import Settings, run_batch

SONGS = {  # path in the library -> make_song seed; short songs (10.7 s, 8 bars) keep it fast
    "a/groove.wav": 201, "b/groove.wav": 202, "b/deep/night.flac": 203, "c/day.wav": 204}
CORRUPT = "c/broken.mp3"


def _library(root: Path) -> Path:
    for name, seed in SONGS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        song = synth_song(seed=seed, n_bars=8, bpm=180)
        sf.write(path, song.mix.T, song.sr, subtype="PCM_16")
    (root / CORRUPT).write_bytes(b"ID3 this is not an mp3 " * 200)
    (root / "c" / "notes.txt").write_text("not a song")
    return root


def _manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as f:
        return {Path(r["song"]).relative_to(out.parent / "lib").as_posix(): r
                for r in csv.DictReader(f)}


def _workers_of(pid: int) -> list:
    """The Dask worker processes a batch started (children spawned by its nannies)."""
    import psutil

    return [p for p in psutil.Process(pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unmixer", *args], cwd=REPO, text=True,
                          capture_output=True, **kw)


def test_batch_on_two_workers_survives_a_killed_worker_and_resumes(tmp_path):
    lib, out = _library(tmp_path / "lib"), tmp_path / "out"
    cmd = [sys.executable, "-m", "unmixer", "batch", str(lib), "--out", str(out),
           "--workers", "2", "--loops", "3", "--loop-bars", "1", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:  # kill a worker in the middle of a song: once both workers are into the engine
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            workers = _workers_of(proc.pid)
            busy = [w for w in workers if sum(w.cpu_times()[:2]) > 4.0]
            if len(workers) == 2 and busy:
                os.kill(busy[0].pid, signal.SIGKILL)
                break
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=1200)  # minutes on a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "retry:" in stderr and "its Dask worker" in stderr and "Dask runs it once more" in stderr
    rows = _manifest(out)
    assert sorted(rows) == sorted([*SONGS, CORRUPT])          # notes.txt is not a song
    assert {name: r["status"] for name, r in rows.items()} == {
        **{name: "done" for name in SONGS}, CORRUPT: "error"}, (rows, stderr[-3000:])
    assert rows[CORRUPT]["error"].startswith("broken.mp3 is not a readable audio file")
    assert f"error: {lib / CORRUPT}: broken.mp3 is not a readable audio file" in stderr
    assert "4 done, 1 error in" in stdout
    # two songs named "groove" keep two folders
    assert rows["a/groove.wav"]["out"] == "groove" and rows["b/groove.wav"]["out"] == "groove (2)"
    for name in SONGS:
        row = rows[name]
        info = json.loads((out / row["out"] / "loop_map.json").read_text())
        assert len(info["activations"]) == int(row["loops"]) == 3 and info["loop_bars"] == 1
        assert abs(float(row["bpm"]) - 180) < 2 and row["meter"] == "4" and row["key"] == ""
        assert len(list((out / row["out"] / "tracks").glob("loop_*.wav"))) == 3
        assert float(row["total_s"]) > 0 and float(row["worker_peak_mb"]) > 100
        assert len(row["sha256"]) == 64
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]  # no half-written song

    # The outputs are those of `extract` for the same song and seed, byte for byte (with one
    # BLAS thread, as in a Dask worker: the sums' order, hence the last bit, follows it).
    single = _cli("extract", str(lib / "b/groove.wav"), "--loops", "3", "--loop-bars", "1",
                  "--out", str(tmp_path / "extract"), "-q", timeout=300,
                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-2000:]
    mine, theirs = tmp_path / "extract", out / "groove (2)"
    files = sorted(p.relative_to(mine) for p in mine.rglob("*.*") if p.name != "loop_map.json")
    assert len(files) == 7 and files == sorted(p.relative_to(theirs) for p in theirs.rglob("*.*")
                                               if p.name != "loop_map.json")
    for rel in files:
        assert (mine / rel).read_bytes() == (theirs / rel).read_bytes(), rel
    a, b = (json.loads((d / "loop_map.json").read_text()) for d in (mine, theirs))
    assert a.pop("timings_s").keys() == b.pop("timings_s").keys() and a == b

    # A rerun does no work (no cluster is started) and says so; the manifest stays as it was.
    before = (out / "manifest.csv").read_bytes()
    again = _cli("batch", str(lib), "--out", str(out), "--loops", "3", "--loop-bars", "1",
                 timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (f"Nothing to do: the 5 songs are done or listed in "
                                    f"{out / 'manifest.csv'} (1 listed as errors: --retry-errors "
                                    "tries them again).")
    assert "5 songs: 0 to analyse, 4 already done, 1 listed as errors" in again.stderr
    assert (out / "manifest.csv").read_bytes() == before


def crashing_task(task: batch.SongTask) -> dict:
    """A stand-in for :func:`unmixer.batch.process_song`: kills its worker on "crash" songs,
    writes a tiny folder for the others."""
    if "crash" in Path(task.path).name:
        os.kill(os.getpid(), signal.SIGKILL)
    Path(task.out).mkdir(parents=True, exist_ok=True)
    (Path(task.out) / "loop_map.json").write_text("{}")
    return {"status": "done", "error": "", "sha256": task.sha256, "loops": "5"}


def test_a_song_that_kills_its_worker_twice_is_an_error_and_the_rest_is_done(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    for name, data in (("one.wav", b"1"), ("two.wav", b"2"), ("crash.wav", b"3"),
                       ("copy of one.wav", b"1")):
        (lib / name).write_bytes(data)
    class Retries(batch.Reporter):
        def __init__(self):
            self.paths = []

        def retrying(self, path, why):
            self.paths.append(Path(path).name)

    retries = Retries()
    with batch.local_cluster(2) as cluster:  # as --scheduler: a cluster that is already there
        report = run_batch(lib, out, Settings(n_loops=5), scheduler=cluster.scheduler_address,
                           task=crashing_task, reporter=retries)
    rows = _manifest(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "copy of one.wav": "done", "two.wav": "done", "crash.wav": "error", "one.wav": "skipped"}
    assert rows["crash.wav"]["error"] == ("it stopped its Dask worker twice (out of memory, or a "
                                          "crash in the engine); not tried again")
    # the same audio twice: analysed once (the first path in sorted order), the other refers to it
    assert rows["one.wav"]["error"] == f"same audio as {lib / 'copy of one.wav'}"
    assert rows["one.wav"]["out"] == rows["copy of one.wav"]["out"] == "copy of one"
    assert (report.done, report.errors, report.skipped) == (2, 1, 1)
    # the crash song's first loss is counted (its second is the error); a good song that the
    # scheduler had queued on the same worker (the other one restarting) lost it too, was run
    # again and is done
    assert "crash.wav" in retries.paths and len(set(retries.paths)) == len(retries.paths)
    assert report.worker_losses == len(retries.paths)
    assert all(rows[name]["status"] == "done" for name in retries.paths if name != "crash.wav")
    # a rerun with --retry-errors runs only the failed song again
    calls = run_batch(lib, out, Settings(n_loops=5), retry_errors=True, workers=1,
                      task=crashing_task)
    assert (calls.submitted, calls.already_done, calls.errors, calls.skipped) == (1, 2, 1, 1)


def test_resume_plan_reuses_hashes_and_redoes_changed_songs(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    out.mkdir()
    for name in ("x.wav", "y.ogg"):
        (lib / name).write_bytes(name.encode() * 10)
    (out / "x").mkdir()   # a folder that is not ours: never written into
    settings = Settings(n_loops=4)
    report = batch.BatchReport()
    plan = batch._plan(batch.find_songs(lib), out, {}, settings, False, report, batch.Reporter())
    assert [Path(t.out).name for t in plan.todo] == ["x (2)", "y"]
    rows = plan.rows
    for t in plan.todo:
        Path(t.out).mkdir()
        rows[t.path].update(status="done")
    batch.write_manifest(out / "manifest.csv", rows)
    assert batch.read_manifest(out / "manifest.csv") == rows
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    (lib / "y.ogg").write_bytes(b"new content")                 # y changes: done again
    again = batch._plan(batch.find_songs(lib), out, batch.read_manifest(out / "manifest.csv"),
                        settings, False, batch.BatchReport(), batch.Reporter())
    assert [Path(t.out).name for t in again.todo] == ["y"]       # the same folder
    other = batch._plan(batch.find_songs(lib), out, batch.read_manifest(out / "manifest.csv"),
                        Settings(n_loops=6), False, batch.BatchReport(), batch.Reporter())
    assert len(other.todo) == 2                                  # other settings: all again


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "error: No such folder: "),
        ([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "error: No audio files (wav,"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--loops", "13"], "error: --loops must be"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0"], "error: --workers must"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "2", "--scheduler",
          "tcp://127.0.0.1:1"], "error: Give --workers (a cluster started here) or --scheduler"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--memory-limit", "lots"],
         "error: --memory-limit must be like 4GB"),
    ]
    for args, start in cases:
        proc = _cli("batch", *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), (args, proc.stderr)
    sf.write(tmp_path / "song.wav", np.zeros((44100, 2), np.float32), 44100)
    proc = _cli("batch", str(tmp_path), "--out", str(tmp_path / "o"), "--scheduler",
                "tcp://127.0.0.1:9", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: Cannot reach the Dask scheduler at tcp://127.0.0.1:9")

