"""Open a local HTML file in headless Chromium and read what a person would see.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe``:
Chromium reads commands on file descriptor 3 and writes replies and events on 4, as
JSON messages ending in a NUL byte. That needs no port, no websocket client and no
extra package: only the standard library and Debian's ``chromium``.

    with open_page(path, offline=True) as page:
        page.errors       # console errors, uncaught exceptions, failed loads, CSP reports
        page.requests     # every URL the page asked for
        page.evaluate("document.title")

Pages holding Plotly figures are read only once every figure has drawn its SVG.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
]

# True once every Plotly figure on the page has finished drawing its SVG.
PLOTLY_READY = """(() => {
  if (document.readyState !== 'complete') return false;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.length > 0 && plots.every(gd => gd._fullLayout && gd.querySelector('.main-svg')
      && !(gd._transitionData && gd._transitionData._frameWaitingCnt));
})()"""

# The texts each figure's SVG displays: tick labels, heatmap cell texts, titles, legends.
SVG_TEXTS = """(() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
  id: gd.id,
  xticks: [...gd.querySelectorAll('.xtick text, .x2tick text')].map(t => t.textContent),
  yticks: [...gd.querySelectorAll('.ytick text, .y2tick text')].map(t => t.textContent),
  cells: [...gd.querySelectorAll('.heatmaplayer text, .textpoint text, .bartext')].map(t => t.textContent),
  all: [...gd.querySelectorAll('svg text')].map(t => t.textContent),
})))()"""


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


class BrowserError(RuntimeError):
    """Chromium could not be started, answered with an error, or timed out."""


@dataclass
class Page:
    """One page open in headless Chromium, with everything it logged so far."""

    _browser: _Pipe
    _session: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self._browser.call(method, params, session=self._session, timeout=timeout, on_event=self._on_event)

    def evaluate(self, expression: str, timeout: float = 30.0):
        """Run JavaScript in the page and return its (JSON-serialisable) value."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in reply:
            raise BrowserError(f"JavaScript failed: {_describe_exception(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {expression!r}; errors: {self.errors}")
            time.sleep(interval)

    def text(self) -> str:
        """The page's visible text (HTML outside the figures), as the browser lays it out."""
        return self.evaluate("document.body.innerText")

    def svg_texts(self) -> list[dict]:
        """Per Plotly figure: its id and the texts its SVG shows (see ``SVG_TEXTS``)."""
        return self.evaluate(SVG_TEXTS)

    def hover(self, div_id: str, xval: float, yval: float, subplot: str = "xy") -> list[str]:
        """Hover the figure ``div_id`` at data coordinates; return the hover label's text lines."""
        return self.evaluate(f"""(() => {{
          const gd = document.getElementById({json.dumps(div_id)});
          Plotly.Fx.hover(gd, {{xval: {xval}, yval: {yval}}}, {json.dumps(subplot)});
          return [...gd.querySelectorAll('.hoverlayer text')].flatMap(t => {{
            const lines = [...t.querySelectorAll('tspan.line')];
            return lines.length ? lines.map(l => l.textContent) : [t.textContent];
          }});
        }})()""")

    def _on_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(_describe_value(a) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + _describe_exception(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.errors.append(f"network: {params.get('errorText')} ({params.get('blockedReason', '')})")


class _Pipe:
    """The DevTools protocol over Chromium's fd 3 (commands in) and fd 4 (messages out)."""

    def __init__(self, write_fd: int, read_fd: int):
        self._write_fd, self._read_fd = write_fd, read_fd
        self._buffer = b""
        self._next_id = 0

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30.0, on_event=None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write_fd, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if on_event is not None and "method" in reply:
                on_event(reply)

    def _receive(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read_fd], [], [], remaining)[0]:
                raise BrowserError(f"no reply from Chromium to {waiting_for}")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the DevTools pipe while waiting for {waiting_for}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)


@contextmanager
def _chromium() -> Iterator[_Pipe]:
    """Start headless Chromium with a fresh profile; always stop it and remove the profile."""
    if not chromium_available():
        raise BrowserError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds() -> None:  # runs in the child before exec: put the pipe ends on fds 3 and 4
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    with tempfile.TemporaryDirectory(prefix="gpt2probe-chromium-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4), preexec_fn=child_fds,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(to_chrome_w, from_chrome_r)
        try:
            yield pipe
        finally:
            try:
                pipe.call("Browser.close", timeout=5)
            except BrowserError:
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stderr.close()
            os.close(to_chrome_w)
            os.close(from_chrome_r)


@contextmanager
def open_page(path: str | Path, *, offline: bool = True, wait_for: str | None = PLOTLY_READY,
              timeout: float = 60.0) -> Iterator[Page]:
    """Open ``path`` (a local file) in headless Chromium and yield the :class:`Page`.

    ``offline`` cuts the page off the network before it loads; ``wait_for`` is a
    JavaScript expression polled until true (by default: every Plotly figure drawn).
    """
    url = Path(path).resolve().as_uri()
    with _chromium() as browser:
        target = browser.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(browser, session)
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.send(f"{domain}.enable")
        if offline:
            page.send("Network.emulateNetworkConditions",
                      {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        page.send("Page.navigate", {"url": url})
        if wait_for is not None:
            page.wait_for(wait_for, timeout=timeout)
        else:
            page.wait_for("document.readyState === 'complete'", timeout=timeout)
        yield page


def _describe_value(arg: dict) -> str:
    return str(arg.get("value", arg.get("description", arg.get("type", "?"))))


def _describe_exception(details: dict) -> str:
    exception = details.get("exception") or {}
    return f"{details.get('text', '')} {exception.get('description', '')}".strip()
