"""Key matching: which songs sound right together, and how far to transpose each one.

Songs whose keys are the same, relative (C major and A minor: the same seven notes) or a
fifth apart (neighbours on the Camelot wheel: one note differs) mix without clashing
(:func:`key_relation`). Any other song is transposed on the deck by :func:`key_shift`
semitones, the smallest shift (at most ±6) that takes its key to the target key or to the
target's relative key (a transposition keeps the mode, so a minor song goes to the
target's relative minor). Only pitched loops move (:func:`unmixer.loops.key.is_pitched`):
drums and noise keep their sound. The shift itself is done by Rubber Band together with the
time-stretch (:func:`unmixer.mashup.stretch.stretch_loop`). Next: :mod:`unmixer.mashup.mix`.
"""

from __future__ import annotations

from unmixer.loops.key import Key

MAX_SHIFT = 6
"""The largest transposition (semitones, either way) the deck applies or accepts."""

SAME, RELATIVE, FIFTH = "same key", "relative key", "a fifth apart"
"""The key relations :func:`key_relation` names (the compatible ones)."""


def key_shift(source: Key | str, target: Key | str) -> int:
    """Semitones that take ``source`` to ``target`` or to its relative key, the smallest.

    A transposition keeps the mode: a major source goes to the target if that is major,
    else to its relative major (and a minor source likewise), so there is one pitch class to
    reach, and the shift is the one of -6..+5 semitones that reaches it (a tritone goes down).

    Parameters
    ----------
    source, target : Key or str (as :meth:`unmixer.loops.key.Key.parse` reads)

    Returns
    -------
    int, semitones in [-6, 5]

    Raises
    ------
    UnmixerError
        If a key cannot be read.

    Examples
    --------
    >>> key_shift("C major", "D major"), key_shift("A minor", "C major"), key_shift("C# minor", "A minor")
    (2, 0, -4)
    """
    source, target = Key.parse(source), Key.parse(target)
    goal = target if target.mode == source.mode else target.relative
    return (goal.tonic - source.tonic + MAX_SHIFT) % 12 - MAX_SHIFT


def key_relation(a: Key | str, b: Key | str) -> str | None:
    """How two keys go together: :data:`SAME`, :data:`RELATIVE`, :data:`FIFTH` (same mode,
    tonics a fifth apart: next to each other on the Camelot wheel), or None (they clash).

    Examples
    --------
    >>> key_relation("A minor", "C major"), key_relation("8A", "9A"), key_relation("C major", "D major")
    ('relative key', 'a fifth apart', None)
    """
    a, b = Key.parse(a), Key.parse(b)
    if a == b:
        return SAME
    if a.relative == b:
        return RELATIVE
    if a.mode == b.mode and (a.tonic - b.tonic) % 12 in (5, 7):
        return FIFTH
    return None


def compatible(a: Key | str, b: Key | str) -> bool:
    """Whether two keys mix without transposing (:func:`key_relation` is not None)."""
    return key_relation(a, b) is not None


def song_shift(song_key: Key | str | None, target: Key | str | None, match: bool,
               override: int | None = None) -> int:
    """The transposition (semitones) of a song's pitched loops on the deck.

    Parameters
    ----------
    song_key : Key, str or None, the song's key (None: unknown)
    target : Key, str or None, the deck's key
    match : bool, whether the deck matches keys
    override : int, optional, the user's own shift for this song (-6..+6), which wins

    Returns
    -------
    int, semitones: ``override`` if given; else :func:`key_shift` when matching and both keys
    are known; else 0.

    Raises
    ------
    UnmixerError
        If ``override`` is beyond ±:data:`MAX_SHIFT`.
    """
    from unmixer.errors import UnmixerError

    if override is not None:
        if abs(int(override)) > MAX_SHIFT:
            raise UnmixerError(f"Transpose by at most {MAX_SHIFT} semitones either way, "
                               f"not {override:+d}.")
        return int(override)
    if not match or song_key is None or target is None:
        return 0
    return key_shift(song_key, target)


def transposes(label: str, pitched: bool) -> bool:
    """Whether a loop follows its song's transposition: pitched and not labelled drums."""
    return bool(pitched) and label != "drums"


def keeps_formants(label: str) -> bool:
    """Whether a loop's transposition keeps its formants (Rubber Band's ``--formant``): for
    voices, whose vowels live in the spectral envelope and would otherwise sound like a
    smaller or larger singer; instruments shift with their envelope (a plain shift)."""
    return label == "vocal-like"
