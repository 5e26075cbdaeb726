"""report.html in a real headless browser (Debian's chromium over the DevTools protocol): it loads from disk
with no console errors and plotly draws every figure.

The DevTools client is a minimal websocket client on the standard library, so the test needs no extra package.
Skipped, saying why, when no chromium is installed (CI installs it: .ci/run).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from kdtune.report import write_report
from tests.test_report import METRIC_COLUMNS, OBJECTIVES, SEARCH_PARAMS, TEACHER, make_records

CHROMIUM = os.environ.get("KDTUNE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--enable-unsafe-swiftshader",  # software WebGL for the 3-D figure (no GPU in CI)
    "--window-size=1280,900", "--remote-debugging-port=0",
]

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH: install it with `apt-get install -y chromium` (as .ci/run does)"
    ),
    pytest.mark.slow,  # a headless browser: seconds to start
]


class DevTools:
    """One page of a headless chromium, driven over the DevTools protocol (a websocket, text frames only)."""

    def __init__(self, profile: Path, *, timeout: float = 60.0):
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.events: list[dict] = []
        self._next_id = 0
        port = self._wait_for_port(profile / "DevToolsActivePort", timeout)
        pages = self._page_targets(port, timeout)
        self._connect(pages[0]["webSocketDebuggerUrl"], timeout)

    def _wait_for_port(self, path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.process.returncode}): {self.process.stderr.read()[-2000:]!r}")
            if path.exists() and (lines := path.read_text().split()):
                return int(lines[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _page_targets(self, port: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages
            time.sleep(0.1)
        raise TimeoutError("chromium opened no page")

    def _connect(self, url: str, timeout: float) -> None:
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket handshake refused: {head[:200]!r}")

    def _send(self, message: dict) -> None:
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                  bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                  bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            data += chunk
        return data

    def _receive(self) -> dict:
        payload = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload += self._read(n)  # the server never masks
            if first & 0x80:  # FIN: the message is complete
                return json.loads(payload)

    def call(self, method: str, **params) -> dict:
        """Send a command and return its result; events that arrive meanwhile go to ``self.events``."""
        self._next_id += 1
        self._send({"id": self._next_id, "method": method, "params": params})
        while True:
            message = self._receive()
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, path: Path, *, ready: str, timeout: float = 60.0) -> None:
        """Load ``path`` and wait until the JavaScript expression ``ready`` is true."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"document.readyState === 'complete' && ({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page not ready after {timeout:.0f} s: {ready}")
            time.sleep(0.2)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries seen so far."""
        self.call("Runtime.evaluate", expression="0")  # flush events queued before now
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
        return found

    def requested(self) -> list[str]:
        """Every URL the page requested so far."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


PLOTS_DRAWN = ("Array.from(document.querySelectorAll('.plotly-graph-div'))"
               ".every(d => d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg'))")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("browser")
    written = write_report(
        out_dir / "report", study_name="demo <study>", records=make_records(), objectives=OBJECTIVES,
        search_params=SEARCH_PARAMS, teacher_metrics=TEACHER, meta={"machine": "test box"},
        metric_columns=METRIC_COLUMNS, study_path="studies/demo.yaml",
    )
    browser = DevTools(out_dir / "profile")
    try:
        browser.open(written["report_html"], ready=PLOTS_DRAWN)
        yield browser, written, out_dir
    finally:
        browser.close()


def test_page_loads_without_console_errors(page):
    browser, _, _ = page
    assert browser.errors() == []
    assert browser.evaluate("document.title") == "kdtune report: demo <study>"
    assert browser.evaluate("typeof Plotly") == "object"  # the embedded bundle ran
    requested = browser.requested()
    assert requested and all(url.startswith(("file://", "data:", "blob:")) for url in requested), requested


def test_plotly_draws_every_figure(page):
    browser, written, _ = page
    html = written["report_html"].read_text(encoding="utf-8")
    n_divs = html.count('class="plotly-graph-div"')
    figures = [name for name in written if not name.endswith(("_csv", "_md", "_html"))]
    assert n_divs == len(figures) == 7  # 3 pairs, the 3-D front, robust curves, hypervolume, importance
    assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == n_divs
    assert browser.evaluate("document.querySelectorAll('.js-plotly-plot svg.main-svg').length") >= n_divs
    assert browser.evaluate("document.querySelectorAll('#plot-front_3d canvas').length") >= 1  # WebGL scene
    assert browser.evaluate("document.querySelectorAll('img').length") == 0  # no PNG fallback needed
    points = browser.evaluate(
        "document.querySelectorAll('#plot-front_val-acc__latency-ms_b1 .scatterlayer .point').length")
    assert points >= 10  # every complete trial with both values, the front on top, the pick and the teacher


def test_screenshot_is_not_blank(page):
    browser, _, out_dir = page
    from matplotlib.image import imread

    image = imread(browser.screenshot(out_dir / "report.png"))
    assert image.shape[0] > 2000 and image.shape[1] >= 1000  # the whole page, not the viewport
    assert image.std() > 0.05
