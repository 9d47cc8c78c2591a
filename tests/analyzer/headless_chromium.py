"""Headless Chromium driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended
by NUL on file descriptors 3 and 4), so a test can open report.html, type into its filters and read what it shows,
with no websocket library and no port. Used by the report's tests and by bench/bench_report.py."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def find() -> str | None:
    """The Chromium binary, or None (.ci/run installs Debian's ``chromium``)."""
    for name in CANDIDATES:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and Path(path).exists():
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page. ``with Chromium() as page: page.open(url); page.js("...")``."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 1000) -> None:
        binary = binary or find()
        if binary is None:
            raise BrowserError("chromium not found (apt-get install -y chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="jitrace-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def as_fds_3_and_4() -> None:  # in the child, before exec: the pipe ends Chromium expects
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-extensions", "--disable-sync", "--no-first-run", "--mute-audio", "--remote-debugging-pipe",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=as_fds_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrowserError, OSError):
                self.call("Browser.close", timeout=10)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    # --- the protocol -------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited (code {self.proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, session: bool = False, timeout: float = 60, **params: Any) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept for ``wait_event``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == self.session:
                    return self._events.pop(i)
            event = self._read(deadline)
            if "method" in event:
                self._events.append(event)

    # --- the page -----------------------------------------------------------------------------------------------
    def open(self, url: str, ready: str = "true", timeout: float = 60) -> float:
        """Load ``url`` and wait until its load event has fired and the expression ``ready`` is true; returns the
        seconds from the navigation's start to then."""
        # from a blank page: a URL that differs from the current one by its #fragment only would not load again
        self.call("Page.navigate", session=True, url="about:blank")
        self.wait_event("Page.loadEventFired", timeout)
        self._events.clear()
        started = time.perf_counter()
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired", timeout)
        self.wait_for(ready, timeout - (time.perf_counter() - started))
        return time.perf_counter() - started

    def js(self, expression: str, timeout: float = 60) -> Any:
        """The value of a JavaScript expression in the page (returned by value; promises awaited)."""
        result = self.call("Runtime.evaluate", session=True, timeout=timeout, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not true in {timeout:.0f} s: {expression}")
            time.sleep(0.02)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as a user would (an input event per insertion)."""
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session=True, text=text)

    def screenshot(self, path: Path, selector: str | None = None) -> None:
        """A PNG of the viewport, or of the box of ``selector``: the viewport is made as tall as the page first, so
        the box is laid out as it is shown and lies inside it."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            width = self.js("window.innerWidth")
            height = min(self.js("document.documentElement.scrollHeight"), 16384)
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                          ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
                          "width: r.width, height: r.height}; })()")
            params["clip"] = {**box, "scale": 1}
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
