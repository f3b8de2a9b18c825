"""Load a report page in a real headless Chromium and say what a reader would see go wrong.

:func:`browser_check` starts ``chromium --headless`` with a fresh profile and talks the Chrome DevTools protocol to it
over ``--remote-debugging-pipe`` (NUL-terminated JSON on file descriptors 3 and 4; Python's standard library only):
it opens the page, waits for the load event, collects console errors and uncaught exceptions, lists the images
that did not decode, measures the layout a reader sees (:data:`_LAYOUT_JS`: page width against the window, text
below a size, each image's natural and shown width) and writes a screenshot of the ``width`` × ``height`` viewport.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

from ..errors import LoupeBenchError
from ..utils.io import atomic_write_bytes

#: where Debian's ``chromium`` package puts the browser (``apt-get install -y chromium``)
CHROMIUM = "/usr/bin/chromium"

#: flags of every launch: headless, no sandbox (containers), no network side traffic, a throwaway profile
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-pipe")

#: the page-side test of an image: decoded (``complete``) with a non-zero natural width
_IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt || i.src.slice(0, 40), "
              "ok: i.complete && i.naturalWidth > 0})))")


#: the page-side layout measure: the page's scroll width against the window's, the visible text elements whose
#: computed font size is below 9 px, and each image's natural against shown width
_LAYOUT_JS = (
    "JSON.stringify({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, "
    "smallText: Array.from(document.body.querySelectorAll('*')).filter(e => "
    "Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim()) && "
    "e.getClientRects().length > 0 && parseFloat(getComputedStyle(e).fontSize) < 9)"
    ".map(e => e.tagName + ': ' + e.textContent.trim().slice(0, 40)), "
    "images: Array.from(document.images).map(i => ({alt: i.alt, natural: i.naturalWidth, "
    "shown: i.getBoundingClientRect().width}))})")


#: run in a child Python: put the two pipe ends on fds 3 and 4, close the copies, exec the browser
_TRAMPOLINE = ("import os, sys\n"
               "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
               "os.dup2(r, 3)\nos.dup2(w, 4)\nos.close(r)\nos.close(w)\n"
               "os.execv(sys.argv[3], sys.argv[3:])\n")


class BrowserCheck(NamedTuple):
    """What the browser saw: console errors and uncaught exceptions, images, the screenshot written."""

    console_errors: List[str]
    broken_images: List[str]          # alt text (or the start of the src) of each image that did not decode
    n_images: int
    title: str
    screenshot: Optional[Path]
    layout: Dict[str, Any] = {}       # _LAYOUT_JS: scrollWidth, innerWidth, smallText, images (natural/shown width)


def find_chromium(path: Optional[str] = None) -> str:
    """The Chromium binary: ``path``, else ``chromium`` on PATH, else :data:`CHROMIUM`.

    Raises:
        LoupeBenchError: when none exists (says how to install it).
    """
    for cand in (path, shutil.which("chromium"), CHROMIUM):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise LoupeBenchError("Chromium not found (install it: apt-get install -y chromium)")


class _Pipe:
    """The DevTools protocol over the browser's pipe: send commands, wait for replies, keep events."""

    def __init__(self, write_fd: int, read_fd: int, timeout: float):
        self.w, self.r, self.timeout = write_fd, read_fd, timeout
        self.buf = b""
        self.next_id = 0
        self.events: List[Dict[str, Any]] = []

    def _read_message(self, deadline: float) -> Dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoupeBenchError("Chromium did not answer in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise LoupeBenchError("Chromium closed the DevTools pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw.decode("utf-8"))

    def call(self, method: str, session: Optional[str] = None, **params) -> Dict[str, Any]:
        self.next_id += 1
        msg: Dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode("utf-8") + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise LoupeBenchError(f"Chromium: {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: Optional[str] = None) -> Dict[str, Any]:
        for ev in self.events:
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
        deadline = time.monotonic() + self.timeout
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev


def _console_errors(events: List[Dict[str, Any]]) -> List[str]:
    """Console ``error``/``assert`` calls, uncaught exceptions and browser log entries of level ``error``."""
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params") or {}
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                  for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails") or {}
            out.append("exception: " + str((d.get("exception") or {}).get("description") or d.get("text")))
        elif m == "Log.entryAdded" and (p.get("entry") or {}).get("level") == "error":
            e = p["entry"]
            out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
    return out


def browser_check(html_path, screenshot=None, *, chromium: Optional[str] = None, width: int = 1280,
                  height: int = 2000, timeout: float = 60.0) -> BrowserCheck:
    """Open ``html_path`` in headless Chromium; return console errors, broken images and the screenshot path.

    Args:
        html_path: the page (a local file).
        screenshot: where to write a PNG of the ``width`` × ``height`` viewport (None: no screenshot).
        chromium: the browser binary (default: :func:`find_chromium`).
        timeout: seconds to wait for each answer of the browser.

    Raises:
        LoupeBenchError: when Chromium is missing, does not start, or does not load the page in time.
    """
    binary = find_chromium(chromium)
    page = Path(html_path).resolve()
    if not page.is_file():
        raise LoupeBenchError(f"{page}: no such page")
    profile = tempfile.mkdtemp(prefix="loupe-chromium-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # the browser reads commands on fd 3 and writes replies on fd 4: copies above 10 (never 3 or 4) go to a small
    # Python trampoline that moves them there and execs the browser (no preexec_fn, no shell)
    hi_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    hi_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(hi_r), str(hi_w), *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(hi_r, hi_w), close_fds=True)
    for fd in {to_browser_r, from_browser_w, hi_r, hi_w}:
        os.close(fd)
    pipe = _Pipe(to_browser_w, from_browser_r, timeout)
    try:
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            pipe.call(method, session)
        pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        pipe.events.clear()
        nav = pipe.call("Page.navigate", session, url=page.as_uri())
        if nav.get("errorText"):
            raise LoupeBenchError(f"Chromium could not open {page}: {nav['errorText']}")
        pipe.wait_event("Page.loadEventFired", session)
        res = pipe.call("Runtime.evaluate", session, expression=_IMAGES_JS, returnByValue=True)
        images = json.loads(res["result"]["value"])
        title = pipe.call("Runtime.evaluate", session, expression="document.title", returnByValue=True)
        layout = json.loads(pipe.call("Runtime.evaluate", session, expression=_LAYOUT_JS,
                                      returnByValue=True)["result"]["value"])
        shot_path = None
        if screenshot is not None:
            data = pipe.call("Page.captureScreenshot", session, format="png")["data"]
            shot_path = atomic_write_bytes(screenshot, base64.b64decode(data))
        try:
            pipe.call("Browser.close")
        except LoupeBenchError:          # the browser may close the pipe before it answers
            pass
    finally:
        for fd in (to_browser_w, from_browser_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return BrowserCheck(_console_errors(pipe.events), [i["alt"] for i in images if not i["ok"]], len(images),
                        str(title["result"].get("value", "")), shot_path, layout)
