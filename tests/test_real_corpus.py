"""bench/real_corpus.py's rules on small generated inputs (no packages, no rendering)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real_corpus as rc  # noqa: E402


def test_held_out_packages_are_not_in_the_corpus():
    rc.check_packages()
    assert not set(rc.EXCLUDED_PACKAGES) & set(rc.PACKAGES)
    assert len({p for _, p, _ in rc.MANIFEST}) >= 8
    assert sum(k == "excerpt" for k, _, _ in rc.MANIFEST) >= 20
    assert sum(k == "song" for k, _, _ in rc.MANIFEST) >= 10


def test_small_parts_go_into_other_and_the_stem_count_is_capped():
    # 3 loud parts, 7 at 3% (named), 3 tiny ones (1%): 10 named + other > 8 stems
    energy = np.array([30, 20, 10] + [3] * 7 + [1, 1, 1], dtype=float)
    groups, has_other, dropped = rc.group_parts(energy / energy.sum())
    assert len(groups) == rc.MAX_STEMS and has_other and dropped == 0.0
    assert groups[:3] == [[0], [1], [2]]
    assert sorted(groups[-1]) == [7, 8, 9, 10, 11, 12]  # the 3 quietest named ones + the tiny ones


def test_a_small_other_is_dropped():
    groups, has_other, dropped = rc.group_parts(np.array([60.0, 39.0, 0.5, 0.5]))
    assert groups == [[0], [1]] and not has_other
    assert dropped == pytest.approx(0.01)


def test_it_random_variation_is_zeroed():
    n_orders, n_instruments = 2, 2
    head = bytearray(0xC0 + n_orders + 4 * n_instruments)
    head[:4] = b"IMPM"
    struct.pack_into("<2H", head, 0x20, n_orders, n_instruments)
    instruments = []
    for i in range(n_instruments):
        ins = bytearray(0x40)
        ins[:4] = b"IMPI"
        ins[0x1A], ins[0x1B] = (25, 10) if i == 0 else (0, 0)
        instruments.append(ins)
    offsets = [len(head), len(head) + 0x40]
    struct.pack_into("<2I", head, 0xC0 + n_orders, *offsets)
    data = bytes(head + instruments[0] + instruments[1])
    patched, changed = rc.zero_it_random_variation(data)
    assert changed == 1
    assert patched[offsets[0] + 0x1A: offsets[0] + 0x1C] == b"\0\0"
    assert patched[: offsets[0]] == data[: offsets[0]]
    assert rc.zero_it_random_variation(b"M.K." + data[4:]) == (b"M.K." + data[4:], 0)


def test_steady_fraction_of_tempo_segments():
    starts = np.array([0, 100, 150])
    tempo_id = np.array([0, 1, 0])
    assert rc.steady_fraction(starts, tempo_id, 0, 100) == 1.0
    assert rc.steady_fraction(starts, tempo_id, 0, 200) == pytest.approx(150 / 200)


def test_a_midi_part_keeps_one_channel_and_the_bar_lines(tmp_path):
    mido = pytest.importorskip("mido")
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500000))  # 120 BPM
    track.append(mido.MetaMessage("time_signature", numerator=3, denominator=4))
    for bar in range(4):
        for ch in (0, 9):
            track.append(mido.Message("note_on", channel=ch, note=60, velocity=90, time=0))
        track.append(mido.Message("note_off", channel=0, note=60, time=480))
        track.append(mido.Message("note_off", channel=9, note=60, time=960))
    mid.tracks.append(track)
    src = tmp_path / "song.mid"
    mid.save(str(src))
    info = rc.midi_structure(src)
    assert info["channels"] == [0, 9] and info["names"][9] == "drums"
    np.testing.assert_array_equal(info["starts"][:4], np.round(np.arange(4) * 1.5 * rc.SR))  # 3/4 at 120 BPM
    assert info["bpm"] == pytest.approx(120.0)
    rc.midi_part_file(info["mid"], tmp_path / "drums.mid", 9, end_s=3.0)
    part = mido.MidiFile(str(tmp_path / "drums.mid"))
    notes = [m for m in part.tracks[0] if m.type == "note_on"]
    assert notes and all(m.channel == 9 for m in notes)
    assert part.length == pytest.approx(3.0, abs=0.01)
