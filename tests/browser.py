"""A real headless Chromium for tests, driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages, NUL-terminated, on the child's fds 3 and 4), so no
WebSocket client is needed. ``load(path)`` opens a page and returns what the tests check: console
errors and uncaught exceptions, every image's decoded size, the page's text and a full-page screenshot."""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((shutil.which(b) for b in BINARIES if shutil.which(b)), None)


class Browser:
    def __init__(self, binary: str, timeout: float = 60):
        self.timeout, self._id, self._buf, self.events = timeout, 0, b"", []
        # Short and fixed: Chromium's singleton socket lives in it (a socket path has at most 107 bytes,
        # and the test's TMPDIR may be a long pytest folder).
        self._profile = tempfile.mkdtemp(prefix="chr-", dir="/tmp")
        # Its own home, temp and XDG folders: the test process's TMPDIR/XDG_* point into other tests'
        # work folders, which come and go.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": self._profile,
               "TMPDIR": self._profile, **{f"XDG_{k}_HOME": f"{self._profile}/{k.lower()}" for k in ("CONFIG", "CACHE", "DATA")}}
        self._log = Path(self._profile) / "chromium.log"
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds():  # the protocol's fixed descriptors in the child (via fresh copies: the pipe's own
            # numbers may be 3 or 4 already, and dup2 onto itself would keep close-on-exec)
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
             f"--user-data-dir={self._profile}/profile", "about:blank"],
            preexec_fn=fds, close_fds=False, env=env, stdout=subprocess.DEVNULL, stderr=open(self._log, "wb"))
        os.close(to_child)
        os.close(from_child)

    def _read(self) -> dict:
        deadline = time.time() + self.timeout
        while b"\0" not in self._buf:
            if not select.select([self._r], [], [], max(0.0, deadline - time.time()))[0]:
                raise TimeoutError("chromium sent nothing in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                tail = self._log.read_text(errors="replace").splitlines()[-15:] if self._log.exists() else []
                raise RuntimeError("chromium closed its DevTools pipe; its last lines:\n" + "\n".join(tail))
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read()
            if e.get("method") == method:
                return e
            self.events.append(e)

    def load(self, path: str | Path, width: int = 1280, height: int = 900) -> dict:
        self.events = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=s)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=s)
        self.send("Page.navigate", {"url": Path(path).absolute().as_uri()}, session=s)
        self.wait_event("Page.loadEventFired")
        images = self.send("Runtime.evaluate", {"expression": (
            "Promise.all([...document.images].map(i => i.decode().then(() => [i.alt, i.naturalWidth, i.naturalHeight],"
            " () => [i.alt, 0, 0])))"), "awaitPromise": True, "returnByValue": True}, session=s)["result"]["value"]
        text = self.send("Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True},
                         session=s)["result"]["value"]
        shot = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                          session=s)["data"])
        errors = [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
        return {"images": images, "text": text, "screenshot": shot, "errors": errors}

    def visit(self, url: str, until=(), seconds: float = 60, width: int = 1400, height: int = 1000,
              images=()) -> dict:
        """Open ``url`` (a live page: a single-page app fills itself in after its load event) and wait
        until its text holds every string of ``until`` and every image named in ``images`` (alt or
        src) has loaded (a viewer lists a file before it inserts its picture); returns its text, images
        (alt or src, decoded size), screenshot and errors as :meth:`load` does, and ``url``: where the
        page ended up."""
        self.events = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable", session=s)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=s)
        self.send("Page.navigate", {"url": url}, session=s)

        def value(expression: str, promise: bool = False):
            return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                  "awaitPromise": promise}, session=s)["result"].get("value")

        deadline, text = time.time() + seconds, ""
        while time.time() < deadline:
            text = value("document.body ? document.body.innerText : ''") or ""
            loaded = value("[...document.images].filter(i => i.complete && i.naturalWidth > 0)"
                           ".map(i => i.alt || i.src)") or [] if images else []
            if all(u in text for u in until) and all(i in loaded for i in images):
                break
            time.sleep(0.5)
        images = value("Promise.all([...document.images].map(i => i.decode().then(() => [i.alt || i.src, "
                       "i.naturalWidth, i.naturalHeight], () => [i.alt || i.src, 0, 0])))", promise=True)
        shot = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"])
        where = value("location.href")
        self.send("Target.closeTarget", {"targetId": target})
        return {"text": text, "images": images, "screenshot": shot, "url": where,
                "missing": [u for u in until if u not in text]}

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self._profile, ignore_errors=True)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
