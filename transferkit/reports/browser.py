"""Load a report in headless Chromium and check it: console errors, images, outside requests;
take a screenshot. No dependency beyond the standard library and a Chromium binary.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages terminated by a NUL byte, commands on file descriptor 3, replies and events on 4),
so no websocket client and no debugging port are needed.

Used by the report test (``tests/reports/test_report_browser.py``) and to take the README's
screenshot of the demo report::

    python -m transferkit.reports.browser runs/demo/report.html --screenshot demo.png
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """``$TRANSFERKIT_CHROMIUM``, else the first Chromium-like browser on ``PATH``."""
    env = os.environ.get("TRANSFERKIT_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer."""


# Puts our pipe ends on fds 3 and 4, where Chromium expects them, then becomes Chromium (no
# preexec_fn: it is unsafe with threads; no shell: dash cannot redirect fds above 9).
_TRAMPOLINE = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(x), fcntl.F_DUPFD, 10) for x in sys.argv[1:3])
for x in sys.argv[1:3]:
    os.close(int(x))
os.dup2(r, 3)
os.dup2(w, 4)
os.close(r)
os.close(w)
os.execvp(sys.argv[3], sys.argv[3:])
"""


class _DevTools:
    """A DevTools-protocol connection over ``--remote-debugging-pipe``."""

    def __init__(self, exe: str, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="tk-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        args = [
            exe, "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
            # the page is our own generated file; the sandbox needs privileges containers lack
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio", "about:blank",
        ]
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(to_child_r), str(from_child_w), *args],
                                         pass_fds=(to_child_r, from_child_w),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._w = os.fdopen(to_child_w, "wb", buffering=0)
        self._r = os.fdopen(from_child_r, "rb", buffering=0)
        self._q: queue.Queue = queue.Queue()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._id = 0
        self.events: list[dict] = []

    def _reader(self) -> None:
        buf = b""
        while True:
            chunk = self._r.read(65536)
            if not chunk:
                self._q.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._q.put(json.loads(msg))

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            self._w.write(json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited: {self.stderr_tail()}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._get(deadline, method)
            if m.get("id") == self._id:
                if "error" in m:
                    raise BrowserError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, session: str | None = None) -> dict:
        for i, m in enumerate(self.events):
            if m.get("method") == method and (session is None or m.get("sessionId") == session):
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._get(deadline, method)
            if m.get("method") == method and (session is None or m.get("sessionId") == session):
                return m
            self.events.append(m)

    def _get(self, deadline: float, what: str) -> dict:
        try:
            m = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrowserError(f"no answer from Chromium to {what} within {self.timeout:.0f} s") from None
        if m is None:
            raise BrowserError(f"Chromium closed the connection during {what}: {self.stderr_tail()}")
        return m

    def stderr_tail(self) -> str:
        return b"".join(self._stderr[-5:]).decode(errors="replace").strip()[-800:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._id += 1
                    self._w.write(json.dumps({"id": self._id, "method": "Browser.close"}).encode() + b"\0")
                except OSError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            for f in (self._w, self._r):
                try:
                    f.close()
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)


_IMAGES_JS = """
Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() =>
  JSON.stringify(Array.from(document.images).map(i => ({
    src: i.currentSrc.slice(0, 40), complete: i.complete, naturalWidth: i.naturalWidth,
    naturalHeight: i.naturalHeight, alt: i.alt}))))
"""


def inspect_page(path: str | os.PathLike, *, screenshot: str | os.PathLike | None = None, width: int = 1200,
                 height: int = 900, full_page: bool = True, max_height: int | None = None, scale: float = 1.0,
                 chromium: str | None = None, timeout: float = 60.0) -> dict:
    """Open ``path`` in headless Chromium; return what a person would notice.

    Returns
    -------
    dict
        ``console_errors`` (console ``error``/``assert`` calls, uncaught exceptions, log
        entries of level ``error``), ``images`` (``src`` prefix, ``complete``,
        ``naturalWidth``/``naturalHeight`` of every ``<img>``), ``requests`` (URLs the page
        requested that are not ``data:``, ``file:`` or ``about:``: a self-contained page has
        none), ``title``, ``page_size`` and ``screenshot`` (the PNG path, when asked).
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserError("no Chromium found on PATH (apt-get install chromium, or set TRANSFERKIT_CHROMIUM).")
    url = Path(path).resolve().as_uri()
    dt = _DevTools(exe, timeout=timeout)
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable", session=sid)
        dt.send("Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=sid)
        dt.events.clear()  # events of about:blank
        dt.send("Page.navigate", {"url": url}, session=sid)
        dt.wait_event("Page.loadEventFired", session=sid)
        res = dt.send("Runtime.evaluate", {"expression": _IMAGES_JS, "awaitPromise": True, "returnByValue": True},
                      session=sid)
        images = json.loads(res["result"]["value"])
        title = dt.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                        session=sid)["result"].get("value")
        metrics = dt.send("Page.getLayoutMetrics", session=sid)
        size = metrics.get("cssContentSize") or metrics.get("contentSize")
        page_w, page_h = int(size["width"]), int(size["height"])
        shot = None
        if screenshot is not None:
            h = page_h if full_page else height
            if max_height:
                h = min(h, max_height)
            clip = {"x": 0, "y": 0, "width": max(page_w, width), "height": h, "scale": scale}
            data = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip},
                           session=sid)["data"]
            shot = Path(screenshot)
            shot.parent.mkdir(parents=True, exist_ok=True)
            shot.write_bytes(base64.b64decode(data))
        errors, requests = [], []
        for m in dt.events:
            meth, p = m.get("method"), m.get("params", {})
            if meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif meth == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif meth == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
            elif meth == "Network.requestWillBeSent":
                u = p.get("request", {}).get("url", "")
                if not u.startswith(("data:", "file:", "about:")):
                    requests.append(u)
        return {"console_errors": errors, "images": images, "requests": requests, "title": title,
                "page_size": (page_w, page_h), "screenshot": str(shot) if shot else None}
    finally:
        dt.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="check an HTML report in headless Chromium; optionally screenshot it")
    p.add_argument("html")
    p.add_argument("--screenshot", help="PNG path")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--max-height", type=int, default=None, help="cut the screenshot at this many CSS pixels")
    p.add_argument("--scale", type=float, default=1.0, help="screenshot scale (0.5 halves each side)")
    a = p.parse_args(argv)
    res = inspect_page(a.html, screenshot=a.screenshot, width=a.width, height=a.height, max_height=a.max_height,
                       scale=a.scale)
    bad = [i for i in res["images"] if not (i["complete"] and i["naturalWidth"] > 0)]
    print(json.dumps({k: v for k, v in res.items() if k != "images"}, indent=2))
    print(f"images: {len(res['images'])}, not rendered: {len(bad)}")
    return 1 if res["console_errors"] or bad or res["requests"] else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
