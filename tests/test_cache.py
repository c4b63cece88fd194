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
