"""Headless Chromium driven over the DevTools protocol (websocket-client), to look at a report as a browser does.

What a page did comes from the browser's own events, not from reading the HTML: every request the page made
(Network.requestWillBeSent; the CSP-blocked ones show up as console errors, Log.entryAdded), every console
message and uncaught exception (Runtime.*), and then the DOM as rendered (Runtime.evaluate) and a screenshot.
CDP: https://chromedevtools.github.io/devtools-protocol/ (Network, Log, Runtime, Page domains).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 20.0  # seconds for Chromium to open its DevTools port
PAGE_TIMEOUT = 20.0  # seconds for one page to load
SETTLE = 0.3  # after the load event: late console messages or requests (none are expected; a little slack)


def require_chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        reason = "headless Chromium is not installed: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    return path


@dataclass
class PageVisit:
    url: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, the document included
    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text): console API and browser log
    exceptions: list[str] = field(default_factory=list)
    loaded: bool = False

    @property
    def other_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url]

    @property
    def errors(self) -> list[str]:
        return [f"{level}: {text}" for level, text in self.console if level in ("error", "warning", "assert")] \
            + self.exceptions


class Chromium:
    def __init__(self, binary: str, profile: Path) -> None:
        self._profile = profile
        # The flags keep Chromium's own background traffic (updates, sync, field trials) from starting at all.
        self._proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
             "--window-size=1280,1600", f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self._wait_port()
        self._ws = websocket.create_connection(self._page_socket(), timeout=PAGE_TIMEOUT, suppress_origin=True)
        self._id = 0
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _wait_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode}")
            if marker.exists():
                lines = marker.read_text().splitlines()
                if lines and lines[0].isdigit():
                    return int(lines[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium opened no DevTools port within {START_TIMEOUT:.0f} s")

    def _page_socket(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as reply:
                pages = [t for t in json.load(reply) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise RuntimeError("chromium has no page target")

    def _send(self, method: str, params: dict[str, Any] | None = None) -> int:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        return self._id

    def call(self, method: str, params: dict[str, Any] | None = None, visit: PageVisit | None = None
             ) -> dict[str, Any]:
        wanted = self._send(method, params)
        deadline = time.monotonic() + PAGE_TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if visit is not None:
                self._note(message, visit)
        raise TimeoutError(method)

    @staticmethod
    def _note(message: dict[str, Any], visit: PageVisit) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            visit.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            visit.console.append((params.get("type", "log"), text))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            visit.console.append((entry.get("level", "info"), entry.get("text", "")))
        elif method == "Runtime.exceptionThrown":
            visit.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Page.loadEventFired":
            visit.loaded = True

    def visit(self, path: Path) -> PageVisit:
        """Open the file, wait for its load event and a moment more, noting everything the page did."""
        visit = PageVisit(path.resolve().as_uri())
        self.call("Page.navigate", {"url": visit.url}, visit)
        deadline = time.monotonic() + PAGE_TIMEOUT
        self._ws.settimeout(0.1)
        settle_until: float | None = None
        try:
            while time.monotonic() < deadline:
                if visit.loaded and settle_until is None:
                    settle_until = time.monotonic() + SETTLE
                if settle_until is not None and time.monotonic() >= settle_until:
                    break
                try:
                    self._note(json.loads(self._ws.recv()), visit)
                except websocket.WebSocketTimeoutException:
                    continue
        finally:
            self._ws.settimeout(PAGE_TIMEOUT)
        return visit

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, out: Path) -> Path:
        """The whole page as PNG (beyond the window: the report is long)."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator[Chromium]:
    binary = require_chromium()
    with tempfile.TemporaryDirectory(prefix="exmig-chromium-") as profile:  # a fresh profile every time
        browser = Chromium(binary, Path(profile))
        try:
            yield browser
        finally:
            browser.close()
