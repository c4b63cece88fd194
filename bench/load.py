"""Load and fault test of the served app: N browser sessions at once, faults injected.

    .venv/bin/python bench/load.py [--sessions 5] [--engine real|fake] [--json PATH]

Starts the app on 127.0.0.1 (only there) with an empty cache, behind a TCP proxy
(:class:`bench.served.Proxy`), and opens N sessions in Debian's Chromium (Playwright). Each
session uploads its songs at once, watches its place in the queue, and when its first song's
loops come, puts two of them in the mix and presses Play on the deck. Meanwhile these faults
are injected, once each:

- ``corrupt``: session 1 uploads a corrupt MP3 beside its good song;
- ``crash``: session 2 uploads a song on which the engine raises (a 13 s song; the real
  engine is wrapped for that song only);
- ``reload``: session 3 reloads its page while its song is analysed;
- ``reconnect``: every connection between the browsers and the server is cut once, while
  analyses run;
- ``restart``: the server is killed (SIGKILL) while analyses run and started again on the
  same port.

At the end every session must show the loops of each of its good songs, the one-line error
of each bad one, and the loops it put in the mix; a good song without its loops, or a lost
choice, is counted as lost (must be 0). Reported: songs, faults, lost, time to loops per user
(upload to the last of its songs' loops), queue places seen, and the peak memory (PSS) of the
server's process tree, sampled every 0.5 s. (No worker fault here: madmom runs on threads in
the server since issue 15; a Dask worker killed mid-analysis is tests/test_cluster_app.py's.)

``--engine fake`` uses bench/fake_engine.py (each stage ``--stage-s`` seconds): the short
version run by tests/test_load.py. ``UNMIXER_LOAD_DEBUG=1`` prints each session's rounds.

Each session looks at its page with one ``page.evaluate`` per round (on a loaded 2-core
machine one Playwright locator query took up to 26 s). A page that was drawing new kinds of
elements as the server went down shows Streamlit's "Failed to fetch dynamically imported
module" in their place; the page reloads itself once the server answers (ui/sessions.py)
and gets its songs back: counted as ``pages healed``. One still broken after
:data:`STUCK_S` is counted as ``pages stuck`` (must be 0) and reloaded, as a user would.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.served import CHROMIUM, CHROMIUM_ARGS, Proxy, Served, start  # noqa: E402

SHARED_AUDIO = REPO.parent / "shared" / "audio"
LOOPS = 5  # the page's default loop count
STUCK_S = 60.0
"""A page showing failed parts this long after the restart is stuck (see the docstring)."""
FAULTS = ("corrupt", "crash", "reload", "reconnect", "restart")

_CRASH_PRELUDE = """
import ui.engine
from unmixer.loops import pipeline
from bench import fake_engine
def extract_loops(audio, *args, **kwargs):
    if abs(audio.shape[-1] / 44100 - fake_engine.FAULT_DURATION_S) < 0.01:
        raise RuntimeError("injected engine fault")
    return pipeline.extract_loops(audio, *args, **kwargs)
extract_loops.__qualname__ = "real_engine_with_an_injected_fault"
ui.engine.EXTRACT_LOOPS = extract_loops
"""
"""The real engine, raising on a song of ``fake_engine.FAULT_DURATION_S`` seconds."""


@dataclass
class Options:
    sessions: int = 5
    engine: str = "real"           # "real" or "fake"
    stage_s: float = 0.5           # fake engine: seconds per stage
    faults: tuple[str, ...] = FAULTS
    timeout_s: float = 900.0       # for the whole run
    workdir: Path | None = None
    screenshots: Path | None = None
    browser_nice: int = 19         # the browsers' CPU priority (users' browsers are elsewhere)


@dataclass
class SongPlan:
    name: str
    data: bytes = field(repr=False)
    good: bool = True

    @property
    def sid(self) -> str:
        from ui.state import song_id

        return song_id(self.data)


@dataclass
class SessionReport:
    index: int
    songs: list[str]
    good: int = 0
    bad: int = 0
    loops_shown: int = 0           # good songs showing their loops at the end
    errors_shown: int = 0          # bad songs showing one line at the end
    still_analysing: int = 0       # good songs whose card still waits at the end (queued)
    choices_kept: bool = False
    seconds_to_loops: float | None = None
    queue_lines: list[str] = field(default_factory=list)
    pages_healed: int = 0          # pages whose parts failed to load, reloaded by themselves
    pages_stuck: int = 0           # ... still broken after STUCK_S: reloaded by the test
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    sessions: int
    engine: str
    songs: int
    good_songs: int
    faults: dict[str, int]
    songs_lost: int
    still_analysing: int
    choices_lost: int
    seconds_to_loops: list[float | None]
    peak_mib: float
    wall_s: float
    pages_healed: int
    pages_stuck: int
    per_session: list[SessionReport] = field(default_factory=list)

    def markdown(self) -> str:
        times = [t for t in self.seconds_to_loops if t is not None]
        faults = ", ".join(f"{k} x{v}" for k, v in self.faults.items() if v) or "none"
        lines = [
            "| sessions | songs (good) | faults injected | songs lost (of which still "
            "analysing) | choices lost | "
            "time to loops per user (s) | peak memory (MiB, PSS) | wall (s) | "
            "pages healed (stuck) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {self.sessions} | {self.songs} ({self.good_songs}) | {faults} | "
            f"{self.songs_lost} ({self.still_analysing}) | {self.choices_lost} | "
            + (", ".join(f"{t:.0f}" for t in self.seconds_to_loops if t is not None)
               + (f" (median {np.median(times):.0f})" if times else ""))
            + f" | {self.peak_mib:.0f} | {self.wall_s:.0f} | "
            f"{self.pages_healed} ({self.pages_stuck}) |",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- songs
def _wav(seconds: float, freq: float, seed: int) -> bytes:
    import soundfile as sf

    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    beat = (np.sin(2 * np.pi * 2 * t) > 0.9).astype(np.float32) * rng.uniform(0.2, 0.5)
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2
    x = (x + beat * rng.standard_normal(t.size) * 0.3).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, x]).T, sr, format="WAV")
    return buf.getvalue()


def _real_songs(n: int) -> list[tuple[str, bytes]]:
    """Real songs: ../shared/audio, then generated ones (unmixer.datasets.synth)."""
    found = [(p.name, p.read_bytes()) for p in sorted(SHARED_AUDIO.glob("*.ogg"))]
    seed = 300
    while len(found) < n:
        from unmixer.datasets.synth import make_song

        song = make_song(seed=seed, bpm=float(96 + 8 * (seed % 5)), n_bars=24)
        buf = io.BytesIO()
        import soundfile as sf

        sf.write(buf, np.asarray(song.mix).T, 44100, format="WAV")
        found.append((f"generated {seed}.wav", buf.getvalue()))
        seed += 1
    return found[:n]


def plan(options: Options) -> list[list[SongPlan]]:
    """The songs of each session: one good song each; session 0 adds a corrupt MP3 and
    session 1 a song the engine crashes on (when those faults are on)."""
    from bench.fake_engine import FAULT_DURATION_S

    n = options.sessions
    if options.engine == "fake":
        goods = [(f"session {i + 1} song.wav", _wav(20.0 + 2 * i, 180.0 + 40 * i, i))
                 for i in range(n)]
    else:
        goods = _real_songs(n)
    sessions = [[SongPlan(name, data)] for name, data in goods]
    if "corrupt" in options.faults:
        sessions[0].append(SongPlan("broken.mp3", b"ID3 this is not an mp3 " * 400, good=False))
    if "crash" in options.faults and n > 1:
        sessions[1].append(SongPlan("crashes the engine.wav",
                                    _wav(FAULT_DURATION_S, 500.0, 99), good=False))
    return sessions


# --------------------------------------------------------------------------- memory
def _tree_pss_mib(pid: int) -> float:
    from bench.engine import _tree_rss_kib

    return _tree_rss_kib(pid) / 1024


class MemorySampler:
    """Peak PSS (MiB) of a process tree, sampled every 0.5 s in a thread (follows restarts:
    :attr:`pid` may be changed)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak = max(self.peak, _tree_pss_mib(self.pid))
            except OSError:
                pass

    def stop(self) -> float:
        self._stop.set()
        return self.peak


# --------------------------------------------------------------------------- one session
_QUEUE = re.compile(r"\d+ songs? ahead of yours, about \d+ (s|min)|yours is next")


_SNAPSHOT_JS = """
(sids) => {
  const cards = {};
  for (const sid of sids) {
    const card = document.querySelector(`.st-key-song_${sid}`);
    if (!card) { cards[sid] = null; continue; }
    const boxes = [...card.querySelectorAll("[data-testid=stCheckbox]")]
      .filter((b) => b.innerText.trim() === "In the mix")
      .map((b) => { const i = b.querySelector("input"); return !!(i && i.checked); });
    cards[sid] = {boxes, refining: card.innerText.includes("refining…"),
                  error: !!card.querySelector("[data-testid=stAlertContentError]")};
  }
  const status = [...document.querySelectorAll(
    "[data-testid=stStatusWidget], [data-testid=stExpander], [data-testid=stStatus]")]
    .map((e) => e.innerText).join(" ");
  const text = document.body.innerText;
  return {cards, status, mix: text.match(/Your mix · (\\d+) loops?,/),
          broken: text.includes("Failed to fetch dynamically imported module"),
          where: (() => {
            const hit = [...document.querySelectorAll("[data-testid]")].filter(
              (e) => e.innerText && e.innerText.includes("Failed to fetch dynamically"));
            return hit.map((e) => e.getAttribute("data-testid")).join(" > ");
          })()};
}
"""
"""One look at the page (one round trip, however busy the machine): per song card, its
'In the mix' boxes (checked or not), whether it is refining and whether it shows an
error; the queue lines; the deck's 'Your mix · N loops' count."""


async def _look(page, songs: list[SongPlan]) -> tuple[list[str], dict | None, str, int]:
    """(state of each song: 'loops' (all its loop tiles, refined), 'error' (its one line),
    'waiting' (its card, without either) or 'absent' (no card: the server does not hold the
    song, or the page is not drawn yet); the first song's boxes; the status text; loops in
    the deck's mix)."""
    try:
        seen = await page.evaluate(_SNAPSHOT_JS, [s.sid for s in songs])
    except Exception:  # noqa: BLE001 - the page is reloading or reconnecting
        return ["absent"] * len(songs), None, "", 0
    states = []
    for song in songs:
        card = seen["cards"].get(song.sid)
        if card and len(card["boxes"]) >= LOOPS and not card["refining"]:
            states.append("loops")
        elif card and card["error"]:
            states.append("error")
        elif card:
            states.append("waiting")
        else:
            states.append("absent")
    mix = int(seen["mix"][1]) if seen.get("mix") else 0
    if seen.get("broken"):
        states = ["broken"] * len(songs)
    return states, seen["cards"].get(songs[0].sid), seen["status"], mix


async def run_session(index: int, context, url: str, songs: list[SongPlan], tmp: Path,
                      options: Options, events: dict) -> SessionReport:
    report = SessionReport(index, [s.name for s in songs],
                           good=sum(s.good for s in songs), bad=sum(not s.good for s in songs))
    page = await context.new_page()
    page.set_default_timeout(120_000)
    if os.environ.get("UNMIXER_LOAD_DEBUG"):
        page.on("console", lambda m: print(f"session {index + 1} console {m.type}: {m.text[:300]}",
                                           file=sys.stderr, flush=True)
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: print(f"session {index + 1} pageerror: {str(e)[:300]}",
                                             file=sys.stderr, flush=True))
    files = []
    for song in songs:
        path = tmp / f"s{index}" / song.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(song.data)
        files.append(str(path))
    await _again_until_it_loads(lambda: page.goto(url, wait_until="domcontentloaded"))
    # the first look at the page (5 pages at once on a loaded 2-core machine: minutes)
    await page.get_by_role("button", name="Try the demo song").wait_for(timeout=400_000)
    started = time.time()
    await page.locator("input[type=file]").set_input_files(files)
    deadline = started + options.timeout_s
    first_done, chose, reloaded, broken_since = None, False, False, None
    debug = os.environ.get("UNMIXER_LOAD_DEBUG")
    while time.time() < deadline:
        if index == 2 and "reload" in options.faults and not reloaded \
                and events.get("analysing", {}).get(index):
            reloaded = True
            events["faults"]["reload"] += 1
            if debug:
                print(f"{time.time() - started:.1f} s session {index + 1}: reload", file=sys.stderr,
                      flush=True)
            await _again_until_it_loads(lambda: page.reload(wait_until="domcontentloaded"))
        states, _boxes, status, _mix = await _look(page, songs)
        if "broken" in states:
            if broken_since is None:
                broken_since = time.time()
                report.pages_healed += 1
                if debug:
                    print(f"{time.time() - started:.1f} s session {index + 1}: broken page",
                          file=sys.stderr, flush=True)
            elif time.time() - broken_since > STUCK_S:
                report.pages_healed -= 1
                report.pages_stuck += 1
                report.problems.append("page stayed broken: reloaded by the test")
                broken_since = None
                await _again_until_it_loads(lambda: page.reload(wait_until="domcontentloaded"))
            await asyncio.sleep(1.0)
            continue
        broken_since = None
        for line in _QUEUE.finditer(status):
            if line.group(0) not in report.queue_lines:
                report.queue_lines.append(line.group(0))
        # the faults come once the server holds this session's songs (each has its card)
        # and analyses run: a connection cut during the upload itself loses the upload in
        # Streamlit's uploader, before the app has seen it
        if "absent" not in states and "waiting" in states:
            events.setdefault("analysing", {})[index] = True
        good_done = [st == "loops" for st, s in zip(states, songs) if s.good]
        if good_done and good_done[0] and not chose:
            chose = await _choose(page, songs[0], report)
        if first_done is None and all(good_done):
            first_done = time.time() - started
        if debug:
            print(f"{time.time() - started:.1f} s session {index + 1}: {states} chose={chose} "
                  f"quiet={events.get('quiet')} {status[:80]!r}", file=sys.stderr, flush=True)
        if all(st in ("loops", "error") for st in states) and chose and events.get("quiet"):
            break
        await asyncio.sleep(1.0)
    report.seconds_to_loops = first_done
    for _ in range(30):  # the last look, once the page is connected (after a late fault)
        states, boxes, _status, mix = await _look(page, songs)
        if all(st in ("loops", "error") for st in states) or time.time() > deadline + 60:
            break
        await asyncio.sleep(1.0)
    report.loops_shown = sum(st == "loops" for st, s in zip(states, songs) if s.good)
    report.errors_shown = sum(st == "error" for st, s in zip(states, songs) if not s.good)
    report.still_analysing = sum(st == "waiting" for st, s in zip(states, songs) if s.good)
    checked = (boxes or {}).get("boxes", [])
    report.choices_kept = (len(checked) >= LOOPS and checked[0] and checked[2]
                           and not checked[1] and mix == 2)
    if not report.choices_kept:
        report.problems.append(f"choices: boxes {checked}, {mix} loops in the mix")
    if report.loops_shown < report.good:
        report.problems.append(f"loops missing: {states}")
    if options.screenshots:
        options.screenshots.mkdir(parents=True, exist_ok=True)
        try:
            await page.screenshot(path=str(options.screenshots / f"load_session_{index + 1}.png"),
                                  full_page=True, timeout=30_000)
        except Exception as err:  # noqa: BLE001 - a screenshot is not a result
            report.problems.append(f"screenshot: {type(err).__name__}")
    return report


async def _again_until_it_loads(navigate, timeout_s: float = 120.0) -> None:
    """A navigation (goto, reload) tried again, as a user presses reload again, while the
    connection is being cut or the server restarts (net::ERR_CONNECTION_RESET/REFUSED)."""
    from playwright.async_api import Error

    deadline = time.time() + timeout_s
    while True:
        try:
            await navigate()
            return
        except Error:
            if time.time() > deadline:
                raise
            await asyncio.sleep(1.0)


async def _choose(page, song: SongPlan, report: SessionReport) -> bool:
    """Loops 1 and 3 of the session's first song into the mix, and Play on the deck; each
    step waits 20 s at most (the page may be reconnecting: tried again on the next round,
    from where it stopped). A checkbox is clicked by its label, as a user does (Streamlit
    hides the input itself under its styled box)."""
    card = page.locator(f".st-key-song_{song.sid}")
    try:
        boxes = card.get_by_label("In the mix")
        labels = card.get_by_text("In the mix", exact=True)
        for loop in (0, 2):
            if not await boxes.nth(loop).is_checked(timeout=20_000):
                await labels.nth(loop).click(timeout=20_000)
                await page.wait_for_function(
                    "([sid, n]) => [...document.querySelectorAll("
                    "`.st-key-song_${sid} [data-testid=stCheckbox] input`)][n]?.checked",
                    arg=[song.sid, loop], timeout=20_000)
        await page.get_by_text("Your mix · 2 loops").first.wait_for(timeout=20_000)
        await page.locator(".deck-play").click(timeout=20_000)
        return True
    except Exception as err:  # noqa: BLE001 - tried again on the next round
        report.problems.append(f"choose: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
        return False


# --------------------------------------------------------------------------- faults
async def inject(server: dict, proxy: Proxy, options: Options, events: dict,
                 start_server) -> None:
    """The server-side faults, once analyses run: a cut network, a killed and restarted
    server; then 'quiet' (the sessions may finish)."""
    faults = events["faults"]

    async def analysing(n: int = 1, timeout_s: float = 300.0) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if sum(bool(v) for v in events.get("analysing", {}).values()) >= n:
                return True
            await asyncio.sleep(0.5)
        return False

    # Every session's songs reached the server first: a connection cut while a file is
    # uploaded loses that file in Streamlit's uploader (its request is refused, the file
    # leaves the list) before the app ever sees it; what is tested here is what the app holds.
    await analysing(options.sessions)
    if "reconnect" in options.faults:
        await asyncio.sleep(2.0)
        if proxy.cut():
            faults["reconnect"] += 1
    if "restart" in options.faults:
        await asyncio.sleep(5.0)
        app: Served = server["app"]
        if os.environ.get("UNMIXER_LOAD_DEBUG"):
            print(f"{time.strftime('%H:%M:%S')} restart", file=sys.stderr, flush=True)
        app.stop(signal.SIGKILL)
        server["app"] = await asyncio.to_thread(start_server)
        server["sampler"].pid = server["app"].proc.pid
        faults["restart"] += 1
    events["quiet"] = True


# --------------------------------------------------------------------------- the run
def _niced_chromium(tmp: Path, options: Options) -> str:
    """Chromium with the lowest share of the CPU (``options.browser_nice``): the users'
    browsers run on their own machines, not on the server's two cores; here they share them,
    and five headless pages redrawing plotly figures in software took most of the CPU from
    the analyses (load 10-13, no song analysed within 900 s). ``nice`` alone does not hold
    (Chromium, run as root, sets its own processes' priorities, some to -8), so Chromium gets
    a session of its own whose autogroup is niced (the kernel shares the CPU between
    autogroups first: bench/prio.sh does the opposite for timings)."""
    if not options.browser_nice:
        return CHROMIUM
    wrapper = tmp / "chromium-niced"
    wrapper.write_text("#!/bin/sh\n"
                       f"exec setsid -w sh -c 'echo {int(options.browser_nice)} > /proc/$$/autogroup; "
                       f'exec {CHROMIUM} "$@"\' chromium "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def _run(options: Options, tmp: Path) -> Report:
    from playwright.async_api import async_playwright

    sessions = plan(options)
    env = {"UNMIXER_CACHE_DIR": str(tmp / "cache"), "UNMIXER_FAKE_STAGE_S": str(options.stage_s)}
    prelude = ""
    if options.engine == "fake":
        from bench.fake_engine import PRELUDE

        prelude = PRELUDE
    elif "crash" in options.faults:
        prelude = _CRASH_PRELUDE
    from bench.served import free_port

    port = free_port()

    def start_server() -> Served:
        return start(tmp / "logs", env=env, prelude=prelude, port=port)

    server = {"app": start_server()}
    server["sampler"] = MemorySampler(server["app"].proc.pid)
    proxy = Proxy(port)
    events = {"faults": {k: 0 for k in options.faults}, "analysing": {}}
    events["faults"]["corrupt"] = int("corrupt" in options.faults)
    events["faults"]["crash"] = int("crash" in options.faults and options.sessions > 1)
    t0 = time.time()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=_niced_chromium(tmp, options),
                                               args=CHROMIUM_ARGS)
            contexts = [await browser.new_context(viewport={"width": 1300, "height": 2000})
                        for _ in sessions]
            runs = [run_session(i, c, proxy.url, s, tmp, options, events)
                    for i, (c, s) in enumerate(zip(contexts, sessions))]
            faults = inject(server, proxy, options, events, start_server)
            *reports, _ = await asyncio.wait_for(asyncio.gather(*runs, faults),
                                                 timeout=options.timeout_s + 120)
            await browser.close()
    finally:
        peak = server["sampler"].stop()
        proxy.close()
        server["app"].stop()
    good = sum(r.good for r in reports)
    return Report(
        sessions=options.sessions, engine=options.engine,
        songs=sum(len(s) for s in sessions), good_songs=good,
        faults={k: v for k, v in events["faults"].items() if k in options.faults},
        songs_lost=sum(r.good - r.loops_shown for r in reports)
        + sum(r.bad - r.errors_shown for r in reports),
        still_analysing=sum(r.still_analysing for r in reports),
        choices_lost=sum(not r.choices_kept for r in reports),
        seconds_to_loops=[r.seconds_to_loops for r in reports], peak_mib=peak,
        wall_s=time.time() - t0, per_session=reports,
        pages_healed=sum(r.pages_healed for r in reports),
        pages_stuck=sum(r.pages_stuck for r in reports))


def run(options: Options) -> Report:
    """Run the load test (see the module's docstring)."""
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(options, options.workdir))
    with tempfile.TemporaryDirectory(prefix="unmixer-load-") as tmp:
        return asyncio.run(_run(options, Path(tmp)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--engine", choices=("real", "fake"), default="real")
    parser.add_argument("--stage-s", type=float, default=0.5)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated, from: " + ", ".join(FAULTS))
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--browser-nice", type=int, default=19,
                        help="CPU priority of the browsers (0: as the server's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    faults = tuple(f for f in args.faults.split(",") if f)
    report = run(Options(args.sessions, args.engine, args.stage_s, faults, args.timeout_s,
                         screenshots=REPO / "test-artifacts", browser_nice=args.browser_nice))
    print(report.markdown())
    for s in report.per_session:
        print(f"session {s.index + 1}: {', '.join(s.songs)}; loops {s.loops_shown}/{s.good}, "
              f"errors {s.errors_shown}/{s.bad}, still analysing {s.still_analysing}, "
              f"choices kept {s.choices_kept}, "
              f"to loops {s.seconds_to_loops and round(s.seconds_to_loops)} s, "
              f"queue seen {s.queue_lines[:3]}" + (f", problems {s.problems}" if s.problems else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=1, default=str))
    return 0 if report.songs_lost == 0 and report.choices_lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
