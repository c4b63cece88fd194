"""Each browser tab's songs and choices, kept on disk: a reload, a dropped connection or a
restarted server gives them back, and a song whose analysis was cut off is analysed again.

A tab is known by a random id that its browser keeps in ``sessionStorage`` (one per tab; it
survives reloads and reconnects, not closing the tab, and is never in a URL that could be
shared): a small component (no HTML) reads it, or makes one, and sends it here. What the
tab holds is written under ``<cache dir>/.tabs/<id>/`` (``state.json`` and one file per
song, each written to a temporary name and renamed) at the end of each run of the Unmixer
page when it changed, and read back once by a new session of that tab. Tabs unused for
:data:`KEEP_DAYS` days go, and the oldest go first when all of them pass
:data:`KEEP_MAX_MB`.

The same component heals a page that a server restart left broken: Streamlit's page loads
the code of each kind of element when it first draws one and keeps a failed load failed
("Failed to fetch dynamically imported module" in the element's place, for good); the
page reloads itself once the server answers again, and gets its songs back from here.

Kept: the songs (name, bytes, source; a song opened from a mashup file, which has no audio,
as a one-song mashup file of its loops), the loop count and length of each and its own
transposition, the loops in the mix and their gains, the deck's tempo, length, key, Match
keys and selection number. The analyses themselves
are in the result cache (:mod:`unmixer.cache`); a song whose analysis is not there is
analysed again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from ui import state
from unmixer.cache import default_cache_dir

log = logging.getLogger("unmixer.app")

KEEP_DAYS = 3.0
"""A tab's songs and choices are kept this many days after its last change."""
KEEP_MAX_MB = 4096
"""All tabs together keep at most this many megabytes (the least recently changed go)."""

TAB = "tab"
"""Session key: the tab component's state (its ``tab`` value is the id)."""
RESTORED = "tab_restored"
"""Session key: the id whose store this session has read (once per session)."""
SAVED = "tab_saved"
"""Session key: the JSON last written, to write only changes."""

_CHOICE_PREFIXES = ("n_loops:", "loop_bars:", "in_mix:", "gain:", "semitones:")
_CHOICE_KEYS = (state.DECK_BPM, state.DECK_BARS, state.DECK_SEQ, state.UPLOADER_GEN,
                state.DECK_KEY, state.DECK_MATCH)
_ID = re.compile(r"[0-9a-f]{32}")
_PRUNE_EVERY_S = 600.0
_last_prune = [0.0]

_JS = """
export default function ({ data, setStateValue }) {
  const KEY = "unmixer-tab";
  let id = null;
  try { id = window.sessionStorage.getItem(KEY); } catch (e) { /* storage off */ }
  if (!id || !/^[0-9a-f]{32}$/.test(id)) {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);  // also on plain http (randomUUID is not)
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    try { window.sessionStorage.setItem(KEY, id); } catch (e) { /* storage off */ }
  }
  // Sent again until a run of the page has it: a message sent while the connection is down
  // is dropped ("Cannot send rerun backMessage when disconnected from server"), and a page
  // with no analysis running has nothing else that would run it again (it stayed empty,
  // its songs kept on the server but never given back). Sent once, then again after 5 s
  // in which no run drew the page and none is running or reconnecting (Streamlit's status
  // widget is empty: a busy server's runs are never interrupted, and a running page sends
  // every widget's state with its next run anyway); each try sends a new value (the id and
  // a try number), never taken for an unchanged state.
  const tries = (window.__unmixerTab ||= { timer: null, n: 0 });
  window.clearTimeout(tries.timer);
  if (!data || data.tab !== id) {
    const send = () => {
      tries.n += 1;
      setStateValue("tab", `${id}.${tries.n}`);
    };
    if (tries.n === 0) send();
    const idle = () => {
      const status = document.querySelector("[data-testid=stStatusWidget]");
      return !(status && status.innerText.trim());
    };
    const again = () => {
      if (idle()) send();
      tries.timer = window.setTimeout(again, 5000);
    };
    tries.timer = window.setTimeout(again, 5000);
  }
  healWhenPartsFailed();
}

// Streamlit's page loads the code of each kind of element (a number input, a chart...) the
// first time it draws one, and keeps a failed load failed: a page that was drawing new
// elements as its server went down shows "Failed to fetch dynamically imported module" in
// their place for good, even once it is connected again. Reloading it is what heals it (and
// the tab's songs come back, see ui/sessions.py): once the server answers again, at most
// once every 30 s.
const FAILED = "Failed to fetch dynamically imported module";
function healWhenPartsFailed() {
  if (window.__unmixerHeal) return;
  window.__unmixerHeal = true;
  let healing = false;
  const heal = (text) => {
    if (healing) return;
    healing = true;
    const url = (text.slice(text.indexOf(FAILED)).match(/https?:\/\/[^\s"']+?\.js/)
                 || [window.location.href])[0];
    const tryAgain = async () => {
      let last = 0;
      try { last = Number(window.sessionStorage.getItem("unmixer-healed-at") || 0); } catch (e) {}
      if (Date.now() - last > 30000) {
        try {
          await fetch(url, { cache: "no-store" });  // any answer: the server is back
          try { window.sessionStorage.setItem("unmixer-healed-at", String(Date.now())); } catch (e) {}
          window.location.reload();
          return;
        } catch (e) { /* still down */ }
      }
      window.setTimeout(tryAgain, 1000);
    };
    tryAgain();
  };
  const look = (node) => {
    const text = node && node.textContent;
    if (text && text.includes(FAILED)) heal(text);
  };
  new MutationObserver((changes) => {
    for (const change of changes) change.addedNodes.forEach(look);
  }).observe(document.body, { childList: true, subtree: true });
  look(document.body);
}
"""
_TAB_ID = st.components.v2.component("unmixer_tab_id", js=_JS)


def root() -> Path:
    """Where the tabs are kept: ``.tabs`` in the cache directory."""
    return default_cache_dir() / ".tabs"


def tab_id() -> str | None:
    """This tab's id, None until its browser sent it (see :func:`keep`): the component
    sends ``<id>.<try number>``."""
    known = st.session_state.get(TAB) or {}
    known = known.get("tab") if hasattr(known, "get") else None
    found = _ID.fullmatch(known.split(".")[0]) if isinstance(known, str) else None
    return found.group(0) if found else None


def keep() -> None:
    """At the top of the Unmixer page: draw the component that sends the tab's id (in the
    sidebar, below the navigation: no HTML, nothing to see); give a new session of this tab
    back what it held (songs it already has stay, and win); then write what the callbacks
    of this run changed (a run can be cut short by the next one, or by a reload)."""
    tab = tab_id()
    with st.sidebar:
        _TAB_ID(key=TAB, data={"tab": tab}, on_tab_change=lambda: None)
    if tab is not None and st.session_state.get(RESTORED) != tab:
        st.session_state[RESTORED] = tab
        try:
            restore(tab)
        except Exception:  # noqa: BLE001 - a damaged store must never break the page
            log.exception("restoring tab %s failed", tab)
    save()


def restore(tab: str) -> int:
    """Read tab ``tab``'s songs and choices into this session; returns the songs added."""
    folder = root() / tab
    try:
        kept = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    ss = st.session_state
    added = []
    for meta in kept.get("songs", []):
        sid = str(meta.get("id", ""))
        if not re.fullmatch(r"[0-9a-f]{16}", sid) or sid in state.songs():
            continue
        try:
            data = (folder / "songs" / sid).read_bytes()
        except OSError:
            continue
        if meta.get("source") == "mashup":  # opened from a mashup file: its loops, kept as one
            opened = _opened_song(data, sid)
            if opened is not None:
                state.add_opened_song(opened)
                added.append(sid)
            continue
        if state.song_id(data) != sid:  # damaged: leave it out
            continue
        state.add_song(str(meta.get("name", "song")), data,
                       source=str(meta.get("source", "upload")), upload_id=meta.get("upload_id"))
        added.append(sid)
    for key, value in kept.get("choices", {}).items():
        if not _is_choice(key):
            continue
        if any(sid in key for sid in added) or (key in _CHOICE_KEYS and key not in ss):
            ss[key] = value
    ss[state.UPLOAD_IDS_SEEN] = set(ss.get(state.UPLOAD_IDS_SEEN, set())) \
        | set(kept.get("upload_ids_seen", []))
    if not ss.get(state.UPLOAD_IDS_LAST):
        ss[state.UPLOAD_IDS_LAST] = list(kept.get("upload_ids_last", []))
    ss[SAVED] = None  # write it back as this session sees it
    return len(added)


def save() -> None:
    """Write this tab's songs and choices if they changed (cheap when they did not: called
    after the songs come in and at the end of the page too)."""
    ss = st.session_state
    tab = ss.get(RESTORED)  # only once this session has read the tab's store
    if tab is None:
        return
    songs = state.songs()
    snapshot = {
        "songs": [{"id": s.id, "name": s.name, "source": s.source, "upload_id": s.upload_id}
                  for s in songs.values()],
        "choices": {k: ss[k] for k in list(ss.keys()) if isinstance(k, str) and _is_choice(k)
                    and isinstance(ss[k], (bool, int, float, str))},
        "upload_ids_seen": sorted(str(i) for i in ss.get(state.UPLOAD_IDS_SEEN, ())),
        "upload_ids_last": [str(i) for i in ss.get(state.UPLOAD_IDS_LAST, [])],
    }
    text = json.dumps(snapshot, sort_keys=True)
    if ss.get(SAVED) == text:
        return
    try:
        write(tab, snapshot, {s.id: s.data if s.can_analyse else (lambda s=s: _mashup_file(s))
                              for s in songs.values()})
        ss[SAVED] = text
    except OSError as err:  # a full disk must not break the page
        log.warning("keeping tab %s failed: %s", tab, err)
    _maybe_prune()


def _mashup_file(song: state.Song) -> bytes:
    """A song opened from a mashup file (no audio, its loops only) as a one-song mashup file."""
    from unmixer import mashup

    result = state.results()[song.id]
    return mashup.save_mashup(mashup.Mashup(120.0, state.DEFAULT_DECK_BARS, None, False, [
        mashup.MashupSong(song.id, song.name, result.n_loops, result.extraction,
                          loop_bars=result.loop_bars)]))


def _opened_song(data: bytes, sid: str):
    """The song ``sid`` of a one-song mashup file written by :func:`_mashup_file`, or None
    if the file is not that."""
    from unmixer import mashup
    from unmixer.errors import UnmixerError

    try:
        (song,) = mashup.open_mashup(data).songs
    except (UnmixerError, ValueError):
        return None
    return song if song.id == sid else None


def write(tab: str, snapshot: dict, song_bytes: dict[str, bytes | Callable[[], bytes]]) -> None:
    """Write a tab's ``state.json`` and its missing song files (atomically; a callable gives
    a file's bytes when it is missing), and delete the files of songs it no longer holds."""
    folder = root() / tab
    songs_dir = folder / "songs"
    songs_dir.mkdir(parents=True, exist_ok=True)
    for sid, data in song_bytes.items():
        if not (songs_dir / sid).is_file():
            _write_atomic(songs_dir / sid, data() if callable(data) else data)
    for path in songs_dir.iterdir():
        if path.name not in song_bytes:
            with contextlib.suppress(OSError):
                path.unlink()
    _write_atomic(folder / "state.json", json.dumps(snapshot).encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _is_choice(key: str) -> bool:
    return key.startswith(_CHOICE_PREFIXES) or key in _CHOICE_KEYS


def prune(now: float | None = None) -> list[Path]:
    """Delete tabs unchanged for :data:`KEEP_DAYS`, then the least recently changed ones
    while all together pass :data:`KEEP_MAX_MB`. Returns the folders deleted."""
    now = time.time() if now is None else now
    base = root()
    if not base.is_dir():
        return []
    tabs = []
    for folder in base.iterdir():
        try:
            changed = (folder / "state.json").stat().st_mtime
        except OSError:
            changed = 0.0
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        tabs.append((changed, size, folder))
    tabs.sort()
    total = sum(size for _c, size, _f in tabs)
    removed = []
    for changed, size, folder in tabs:
        if now - changed > KEEP_DAYS * 86400 or total > KEEP_MAX_MB * 1024 * 1024:
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder)
    return removed


def _maybe_prune() -> None:
    now = time.time()
    if now - _last_prune[0] > _PRUNE_EVERY_S:
        _last_prune[0] = now
        try:
            prune(now)
        except OSError as err:
            log.warning("pruning kept tabs failed: %s", err)
