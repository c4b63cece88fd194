"""The app as a served product, for the browser tests and the load test: start
``streamlit run streamlit_app.py`` on a free port of 127.0.0.1, and drive Debian's Chromium
with Playwright (never a downloaded browser).

    with serve(tmp_dir, env={"UNMIXER_CACHE_DIR": ...}) as app:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(app.url + "/nmf_lab")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

_STREAMLIT = """
import sys
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", *sys.argv[1:]]
main(prog_name="streamlit")
"""
"""Runs ``streamlit run ARGS`` in this process (a prelude may patch the app first)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    """A running app: its URL, its server process and the file its output goes to."""

    url: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """Stop the server and the processes it started (its process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        # workers left behind by a SIGKILLed server (same group)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start(workdir: Path, *, env: Mapping[str, str] | None = None, prelude: str = "",
          port: int | None = None, args: tuple[str, ...] = (),
          startup_timeout_s: float = 90.0) -> Served:
    """Start the app (``streamlit run streamlit_app.py``) and wait until it answers.

    ``workdir`` receives the server's log; ``env`` is added to this process's environment;
    ``prelude`` is Python run in the server process before Streamlit starts (to patch the
    engine, say); ``args`` go to ``streamlit run``. The server is its own process group, so
    :meth:`Served.stop` also ends madmom's worker processes.

    Raises RuntimeError (with the end of the log) when the server does not come up.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"streamlit-{port}.log"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", prelude + _STREAMLIT, "streamlit_app.py",
             "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", *args],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    served = Served(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.time() + startup_timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{served.url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return served
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            served.stop()
            raise RuntimeError("the app did not start:\n" + served.log_tail())
        time.sleep(0.3)


@contextlib.contextmanager
def serve(workdir: Path, **kwargs) -> Iterator[Served]:
    """:func:`start` as a context manager: the server is stopped on leaving."""
    served = start(workdir, **kwargs)
    try:
        yield served
    finally:
        served.stop()


@contextlib.contextmanager
def chromium():
    """A headless Debian Chromium driven by Playwright (its sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Proxy:
    """A TCP proxy from a free port of 127.0.0.1 to ``target_port``: the browser talks to
    :attr:`url`, and :meth:`cut` drops every connection open now, as a network blip or a
    Wi-Fi hand-over does (new connections go through again)."""

    def __init__(self, target_port: int):
        import threading

        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._open.discard(sock)

    def cut(self) -> int:
        """Drop every open connection; returns how many there were."""
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(socks) // 2

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
