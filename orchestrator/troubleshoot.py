"""-v/--verbose and --debug: the WinRM conversation for an admin who debugs it, never a secret.

`-v`: one line per WSMan request and server (action, HTTP status, milliseconds) and one per retry with
its cause, on stderr (stdout keeps the run's display or its --json events). `--debug`: the clients' own
logs as well (pypsrp logs whole WSMan envelopes, pywinrm, pyspnego, requests/urllib3), through one
handler that redacts on the way out: the run's secrets in the forms they travel in, byte arrays
(<BA>: PFX, certificates, encrypted session keys), SecureStrings (<SS>), WinRS stdin (the PFX password),
authorization tokens, and every long base64 run (PSRP fragments carry the objects above base64-encoded
once more, so no inner pattern would find them).

The request lines come from wrapping the instances the transports create (`watch_wsman`,
`watch_protocol`): the action is known there before NTLM message encryption hides the envelope.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

log = logging.getLogger("exmig.wire")

CLIENT_LOGGERS = ("pypsrp", "winrm", "spnego", "requests", "urllib3", "requests_credssp", "psrpcore")

_BLOB_ELEMENT = re.compile(r"(<(?:\w+:)?(?:BA|SS)\b[^>]*>)[^<]*(</)")
_STDIN = re.compile(r"(<(?:\w+:)?Stream\b[^>]*Name=\"stdin\"[^>]*>)[^<]*(</)")
_AUTH = re.compile(r"\b(Negotiate|NTLM|Kerberos|Basic|CredSSP|Bearer)\s+[A-Za-z0-9+/=._-]{12,}", re.IGNORECASE)
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{96,}={0,2}")
_ACTION = re.compile(r"<(?:\w+:)?Action\b[^>]*>([^<]+)</")


def _forms(secret: str) -> set[str]:
    utf8, utf16 = secret.encode(), secret.encode("utf-16-le")
    return {secret, base64.b64encode(utf8).decode(), base64.b64encode(utf16).decode(), utf8.hex()}


class Redactor(logging.Filter):
    """Rewrites every record that reaches the troubleshooting handler; the record keeps no arguments."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: list[str]) -> None:
        with self._lock:
            for value in values:
                if value:
                    self._secrets |= _forms(value)

    def redact(self, text: str) -> str:
        with self._lock:
            known = sorted(self._secrets, key=len, reverse=True)
        for value in known:
            text = text.replace(value, "<redacted secret>")
        text = _BLOB_ELEMENT.sub(r"\1<redacted bytes>\2", text)
        text = _STDIN.sub(r"\1<redacted stdin>\2", text)
        text = _AUTH.sub(r"\1 <redacted token>", text)
        return _LONG_BASE64.sub(lambda m: f"<{len(m.group(0))} base64 characters redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a library's malformed record: drop its arguments, keep a note
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info:
            record.msg += "\n" + self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


REDACTOR = Redactor()
_verbose = False


def configure(verbose: bool, debug: bool, stream: IO[str] | None = None) -> None:
    """Turn the troubleshooting output on (once per process; the CLI calls it before anything connects)."""
    global _verbose
    if not (verbose or debug):
        return
    _verbose = True
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(REDACTOR)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(name)s %(message)s", "%H:%M:%S"))
    exmig = logging.getLogger("exmig")
    exmig.setLevel(logging.INFO)
    exmig.addHandler(handler)
    exmig.propagate = False
    if debug:
        for name in CLIENT_LOGGERS:
            client = logging.getLogger(name)
            client.setLevel(logging.DEBUG)
            client.addHandler(handler)
            client.propagate = False  # only through the redacting handler


def add_secrets(values: list[str]) -> None:
    """The run's secret values, once resolved: redacted wherever a client's log would show them."""
    REDACTOR.add(values)


def _short(action: str) -> str:
    return action.rstrip("/").rsplit("/", 1)[-1]


def _outcome(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return f"HTTP {code}"
    if type(exc).__name__ in ("WSManFaultError", "WinRMOperationTimeoutError"):
        return "HTTP 500 (WSMan fault)"
    return f"failed ({type(exc).__name__})"


def _request(server: str, action: str, start: float, outcome: str) -> None:
    log.info("%s %s %s %d ms", server, _short(action), outcome, round((time.monotonic() - start) * 1000))


T = TypeVar("T")


def watch_wsman(wsman: T, server: str) -> T:
    """pypsrp's WSMan: every request goes through its invoke(action, ...)."""
    if not _verbose:
        return wsman
    original = wsman.invoke  # type: ignore[attr-defined]

    def invoke(action: str, *args: Any, **kwargs: Any) -> Any:
        return _timed(server, action, lambda: original(action, *args, **kwargs))

    wsman.invoke = invoke  # type: ignore[attr-defined]
    return wsman


def _timed(server: str, action: str, call: Callable[[], Any]) -> Any:
    """One request line for `call`: its action, outcome and milliseconds, whether it returns or raises."""
    start = time.monotonic()
    try:
        result = call()
    except BaseException as exc:
        _request(server, action, start, _outcome(exc))
        raise
    _request(server, action, start, "HTTP 200")
    return result


def watch_protocol(protocol: T, server: str) -> T:
    """pywinrm's Protocol: every request goes through its send_message(xml)."""
    if not _verbose:
        return protocol
    original = protocol.send_message  # type: ignore[attr-defined]

    def send_message(message: str) -> Any:
        found = _ACTION.search(message)
        return _timed(server, found.group(1) if found else "request", lambda: original(message))

    protocol.send_message = send_message  # type: ignore[attr-defined]
    return protocol


def retry(server: str, step: str, attempt: int, cause: str, delay: float) -> None:
    log.info("%s %s: retry %d in %.1f s: %s", server, step, attempt + 1, delay, cause)
