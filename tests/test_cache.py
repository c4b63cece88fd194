"""unmixer.cache: content-keyed on-disk cache with a size cap and LRU eviction."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from unmixer import cache as cache_mod
from unmixer.cache import ResultCache, cache_key
from unmixer.errors import UnmixerError


class _Result:
    """A stand-in for Extraction: anything with save(directory) / load(directory)."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def save(self, directory):
        np.save(os.path.join(directory, "values.npy"), self.values)

    @classmethod
    def load(cls, directory):
        return cls(np.load(os.path.join(directory, "values.npy")))


def _put(cache: ResultCache, name: str, n_bytes: int = 40_000, used: float | None = None):
    key = cache_key(name.encode(), {"n_loops": 5})
    cache.put(key, _Result(np.full(n_bytes // 4, len(name), np.float32)).save)
    if used is not None:
        os.utime(cache.path(key), (used, used))
    return key


def test_hit_returns_what_was_stored_and_miss_returns_none(tmp_path):
    cache = ResultCache(tmp_path)
    key = cache_key(b"song bytes", {"n_loops": 5, "loop_bars": 2})
    assert cache.get(key, _Result.load) is None
    values = np.arange(10, dtype=np.float32)
    assert cache.put(key, _Result(values).save) == tmp_path / key
    hit = cache.get(key, _Result.load)
    np.testing.assert_array_equal(hit.values, values)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_key_depends_on_audio_bytes_and_every_parameter_but_not_their_order():
    base = cache_key(b"song", {"n_loops": 5, "loop_bars": 2})
    assert base == cache_key(b"song", {"loop_bars": 2, "n_loops": 5})
    assert base != cache_key(b"song", {"n_loops": 6, "loop_bars": 2})
    assert base != cache_key(b"song", {"n_loops": 5, "loop_bars": 1})
    assert base != cache_key(b"song!", {"n_loops": 5, "loop_bars": 2})
    assert base.split("-")[0] == cache_key(b"song", {}).split("-")[0]  # same audio hash


def test_size_cap_evicts_least_recently_used_first(tmp_path):
    entry = 40_000
    cache = ResultCache(tmp_path, max_bytes=int(2.5 * entry))
    first = _put(cache, "first", entry, used=1_000)
    second = _put(cache, "second", entry, used=2_000)
    # Reading "first" makes it the most recently used, so "second" goes when a third arrives.
    assert cache.get(first, _Result.load) is not None
    third = _put(cache, "third", entry)
    assert cache.path(first).is_dir()
    assert not cache.path(second).exists()
    assert cache.path(third).is_dir()
    assert cache.size_bytes() <= cache.max_bytes


def test_unreadable_entry_is_a_miss_and_is_removed(tmp_path):
    cache = ResultCache(tmp_path)
    key = _put(cache, "song")
    (cache.path(key) / "values.npy").write_bytes(b"not numpy")
    assert cache.get(key, _Result.load) is None
    assert not cache.path(key).exists()


def test_zero_cap_stores_nothing(tmp_path):
    cache = ResultCache(tmp_path, max_bytes=0)
    assert _put(cache, "song") and cache.entries() == []


def test_location_and_cap_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UNMIXER_CACHE_DIR", str(tmp_path / "here"))
    monkeypatch.setenv("UNMIXER_CACHE_MAX_MB", "2")
    cache = ResultCache()
    assert cache.directory == tmp_path / "here"
    assert cache.max_bytes == 2 * 1024 * 1024
    monkeypatch.delenv("UNMIXER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_dir() == tmp_path / "xdg" / "unmixer"
    monkeypatch.setenv("UNMIXER_CACHE_MAX_MB", "lots")
    with pytest.raises(UnmixerError):
        cache_mod.default_max_bytes()


def test_bad_keys_are_refused(tmp_path):
    with pytest.raises(UnmixerError):
        ResultCache(tmp_path).path("../escape")


def _copy_of_the_library(tmp_path: Path) -> Path:
    root = Path(cache_mod.__file__).resolve().parent
    copy = tmp_path / "unmixer"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__", "data", "weights"))
    return copy


def test_the_engine_key_follows_the_engine_and_what_it_imports(tmp_path):
    root = _copy_of_the_library(tmp_path)
    sources = {p.relative_to(root).as_posix() for p in cache_mod.package_sources("unmixer.loops", root)}
    assert {"loops/pipeline.py", "loops/ntd.py", "loops/masks.py", "core/spectrum.py",
            "lab/nmf.py"} <= sources  # the engine, and the STFT and NMF it uses
    assert not sources & {"datasets/synth.py", "mashup/stretch.py", "cli.py", "cache.py"}
    before = cache_mod.package_code_version("unmixer.loops", root)
    for outside in ("datasets/synth.py", "mashup/mix.py", "commands/extract.py"):
        (root / outside).write_text((root / outside).read_text() + "\n# edited\n")
    assert cache_mod.package_code_version("unmixer.loops", root) == before
    for inside in ("loops/cube.py", "core/spectrum.py"):
        edited = root / inside
        original = edited.read_text()
        edited.write_text(original + "\n# edited\n")
        assert cache_mod.package_code_version("unmixer.loops", root) != before
        edited.write_text(original)
    assert cache_mod.package_code_version("unmixer.loops", root) == before
    # a new module in a sub-folder of the engine counts (the old key hashed unmixer/*.py only)
    (root / "loops" / "search").mkdir()
    (root / "loops" / "search" / "__init__.py").write_text("")
    (root / "loops" / "search" / "grids.py").write_text("X = 1\n")
    assert cache_mod.package_code_version("unmixer.loops", root) != before


def test_package_sources_refuses_what_is_not_unmixer(tmp_path):
    with pytest.raises(UnmixerError):
        cache_mod.package_sources("numpy")
    with pytest.raises(UnmixerError):
        cache_mod.package_sources("unmixer.no_such_module")
# ----------------------------------------------------------------- shared by processes
# Each child is a real process (python -c) using the cache as another app replica would.
_CHILD = """
import os, sys, time, zlib
import numpy as np
from pathlib import Path
from unmixer.cache import ResultCache, cache_key
root, role = sys.argv[1], sys.argv[2]
cache = ResultCache(root, max_bytes=int(sys.argv[3]))
signal_file = Path(root).parent / f"{role}-{os.getpid()}.ready"

def save_slowly(key, pause=0.0):
    # a.npy, then b.npy holding a's checksum: an entry is whole only with both
    def saver(d):
        a = np.frombuffer(zlib.crc32(key.encode()).to_bytes(4, "little") * 10_000, np.uint8)
        np.save(d / "a.npy", a)
        signal_file.touch()
        time.sleep(pause)
        np.save(d / "b.npy", np.array([zlib.crc32(a.tobytes())], np.int64))
    return saver

def load_whole(key):
    def loader(d):
        a, b = np.load(d / "a.npy"), np.load(d / "b.npy")
        if int(b[0]) != zlib.crc32(a.tobytes()) or a[:4].tobytes() != zlib.crc32(key.encode()).to_bytes(4, "little"):
            print("HALF OR WRONG ENTRY", key, flush=True)
            sys.exit(3)
        return True
    return loader

if role == "hold":                       # hold the lock until killed or told to stop
    with cache.locked():
        signal_file.touch()
        stop = Path(root).parent / "stop"
        deadline = time.time() + 60
        while not stop.exists() and time.time() < deadline:
            time.sleep(0.05)
elif role == "slow-writer":              # killed halfway through writing its entry
    cache.put(cache_key(b"song", {}), save_slowly(cache_key(b"song", {}), pause=60))
elif role == "busy":                     # writers and readers of a few keys, small cap
    rng = np.random.default_rng(os.getpid())
    for _ in range(int(sys.argv[4])):
        key = cache_key(str(int(rng.integers(6))).encode(), {})
        if rng.random() < 0.5:
            cache.put(key, save_slowly(key, pause=0.005))
        else:
            cache.get(key, load_whole(key))
"""


def _child(tmp_path, role, max_bytes=10**9, *extra):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "cache"), role,
                             str(max_bytes), *map(str, extra)],
                            cwd=Path(__file__).resolve().parents[1])


def _wait_for(predicate, timeout_s=60.0):
    import time

    deadline = time.time() + timeout_s
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_write_waits_for_the_lock_another_process_holds(tmp_path):
    """The lock is across processes (a thread lock would let this put through at once)."""
    import threading

    holder = _child(tmp_path, "hold")
    try:
        _wait_for(lambda: list(tmp_path.glob("hold-*.ready")))
        cache = ResultCache(tmp_path / "cache")
        key = cache_key(b"song", {})
        done = threading.Event()
        threading.Thread(target=lambda: (_put_values(cache, key), done.set()),
                         daemon=True).start()
        assert not done.wait(1.0)            # blocked while the other process holds it
        assert not cache.path(key).exists()
        (tmp_path / "stop").touch()
        assert done.wait(30)
        assert cache.get(key, _Result.load) is not None
    finally:
        holder.kill()
        holder.wait()


def _put_values(cache, key):
    cache.put(key, _Result(np.arange(100, dtype=np.float32)).save)


def test_a_lock_holder_killed_with_sigkill_frees_the_lock(tmp_path):
    import time

    holder = _child(tmp_path, "hold")
    _wait_for(lambda: list(tmp_path.glob("hold-*.ready")))
    holder.kill()                            # SIGKILL while holding the lock
    holder.wait()
    cache = ResultCache(tmp_path / "cache")
    start = time.time()
    key = cache_key(b"song", {})
    _put_values(cache, key)
    assert cache.get(key, _Result.load) is not None and time.time() - start < 5


def test_a_writer_killed_halfway_leaves_nothing_that_is_read(tmp_path):
    writer = _child(tmp_path, "slow-writer")
    _wait_for(lambda: list(tmp_path.glob("slow-writer-*.ready")))  # a.npy written, not b.npy
    writer.kill()
    writer.wait()
    cache = ResultCache(tmp_path / "cache")
    key = cache_key(b"song", {})
    assert list((tmp_path / "cache").glob(".tmp-*"))          # its half entry is left...
    assert cache.get(key, lambda d: pytest.fail("read a half-written entry")) is None
    assert cache.entries() == []                             # ...is no entry...
    cache.evict()
    assert not list((tmp_path / "cache").glob(".tmp-*"))      # ...and goes once it is dead


def test_a_temporary_directory_of_a_live_writer_is_kept(tmp_path):
    cache = ResultCache(tmp_path)
    live = tmp_path / f".tmp-{cache_mod._writer_tag()}abc"
    live.mkdir()
    cache.evict()
    assert live.is_dir()


def test_processes_writing_and_reading_at_once_see_whole_entries_and_keep_the_cap(tmp_path):
    """Four processes put and get six keys at random (each entry written in two steps, a
    loader that checks it is whole); the cap holds two entries and a half."""
    entry = 40_000 + 2 * 128 + 8  # a.npy and b.npy
    cap = int(2.5 * entry)
    children = [_child(tmp_path, "busy", cap, 40) for _ in range(4)]
    codes = [child.wait(timeout=120) for child in children]
    assert codes == [0, 0, 0, 0]             # 3: a reader saw a half or wrong entry
    cache = ResultCache(tmp_path / "cache", max_bytes=cap)
    assert 0 < cache.size_bytes() <= cap
    assert not list((tmp_path / "cache").glob(".tmp-*"))
    assert not list((tmp_path / "cache").glob(".trash-*"))
