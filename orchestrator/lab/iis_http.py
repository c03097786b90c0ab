"""The emulated IIS's plain-HTTP side: the server's web root (C:\\inetpub\\wwwroot) served on a loopback port.

ACME's http-01 (RFC 8555 §8.3) fetches http://<name>/.well-known/acme-challenge/<token> over plain HTTP
on port 80; on an Exchange server that is IIS's Default Web Site, whose content is the folder
C:\\inetpub\\wwwroot. The lab serves that folder of the server's emulated file system (winfs.py), so a
token written with the lab's Set-Content (over the system endpoint, as exmig does on a real server) is
what pebble fetches. Only GET and HEAD of files; everything binds to loopback.

Where real IIS refuses, so does the lab:
- a file without an extension is not served by IIS's static file handler (HTTP 404.3) unless a
  web.config in its folder (or above, inside the web root) maps the extension "." to a MIME type
  (`<mimeMap fileExtension="." ...>`), which is what ACME clients for IIS write next to the token
  (Certify The Web's docs, "How Http Validation works": "The file does not have an extension ... a
  static file handler usually needs to be configured to handle extension-less files");
- after `Enable-ExchangeCertificate -Services IIS` without -DoNotRequireSsl the Default Web Site
  requires SSL (the server model's `iis_require_ssl`): plain HTTP gets 403.4, which fails http-01.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from orchestrator.acme_issue.http01 import WEB_ROOT
from orchestrator.lab.exchange.winfs import PathError, WindowsFileSystem, normalize, parent
from orchestrator.lab.tls_services import check_loopback

REQUEST_TIMEOUT = 10.0
# IIS's own static MIME map has hundreds of entries; these are the ones a web root of this kind holds.
_MIME = {".txt": "text/plain", ".htm": "text/html", ".html": "text/html", ".xml": "text/xml",
         ".json": "application/json", ".cer": "application/x-x509-ca-cert", ".crl": "application/pkix-crl",
         ".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg", ".css": "text/css"}
_EXTENSIONLESS = re.compile(r"<mimeMap\s[^>]*fileExtension\s*=\s*[\"']\.[\"'][^>]*>", re.IGNORECASE)
_MIME_TYPE = re.compile(r"mimeType\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def web_path(url_path: str, web_root: str = WEB_ROOT) -> str | None:
    """The Windows path a URL path names under `web_root`; None when it leaves the web root."""
    text = unquote(url_path.split("?", 1)[0])
    if "\\" in text or "\x00" in text:
        return None
    try:
        path = normalize(web_root + "\\" + text.lstrip("/").replace("/", "\\"))
    except PathError:
        return None
    root = normalize(web_root)
    if path.lower() != root.lower() and not path.lower().startswith(root.lower() + "\\"):
        return None
    return path


def extensionless_type(fs: WindowsFileSystem, folder: str, web_root: str = WEB_ROOT) -> str | None:
    """The MIME type a web.config in `folder` or above (inside the web root) gives files without extension."""
    root = normalize(web_root).lower()
    current = folder
    while True:
        config = fs.read(current + "\\web.config")
        if config is not None:
            text = config.decode("utf-8-sig", "replace")
            match = _EXTENSIONLESS.search(text)
            if match is not None:
                found = _MIME_TYPE.search(match.group(0))
                return found.group(1) if found else "application/octet-stream"
        if current.lower() == root or len(current) <= 3:
            return None
        current = parent(current)


class IisHttp:
    """Plain HTTP for one emulated server's Default Web Site, on `host`:`port` (0: any free port).

    `fs` is the server's file system; `require_ssl` says whether the site requires SSL now (the model's
    iis_require_ssl; asked per request, so Enable-ExchangeCertificate takes effect at once)."""

    def __init__(self, server_name: str, fs: WindowsFileSystem, host: str = "127.0.0.1", port: int = 0,
                 require_ssl: Callable[[], bool] = lambda: False, lock: Any = None,
                 web_root: str = WEB_ROOT) -> None:
        check_loopback(host)
        self.server_name = server_name
        self.fs = fs
        self.host = host
        self.requested_port = port
        self.require_ssl = require_ssl
        self.web_root = web_root
        self._lock = lock if lock is not None else threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # (path, status) of the latest requests, for tests and the lab's log; bounded like every lab record.
        self.requests: deque[tuple[str, int]] = deque(maxlen=1000)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.server_name}: the IIS HTTP listener is not running")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def respond(self, method: str, target: str) -> tuple[int, str, bytes, str]:
        """(status, reason, body, content type) for one request: the rules, without the sockets."""
        if method not in ("GET", "HEAD"):
            return 405, "Method Not Allowed", b"", "text/html"
        if self.require_ssl():
            return 403, "Forbidden", b"403.4 - SSL required", "text/html"
        path = web_path(urlsplit(target).path, self.web_root)
        with self._lock:
            data = self.fs.read(path) if path is not None else None
            if path is None or data is None:
                return 404, "Not Found", b"404 - File or directory not found.", "text/html"
            name = path.rsplit("\\", 1)[-1]
            extension = "." + name.rsplit(".", 1)[1].lower() if "." in name.strip(".") else ""
            if name.lower() == "web.config":
                return 404, "Not Found", b"404.8 - Hidden Namespace", "text/html"  # IIS never serves web.config
            if extension:
                content_type = _MIME.get(extension)
            else:
                content_type = extensionless_type(self.fs, parent(path), self.web_root)
        if content_type is None:
            return 404, "Not Found", b"404.3 - MIME map policy prevents this request", "text/html"
        return 200, "OK", data, content_type

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "Microsoft-IIS/7.5"
            sys_version = ""
            timeout = REQUEST_TIMEOUT

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, head_only: bool) -> None:
                status, reason, body, content_type = owner.respond(self.command, self.path)
                owner.requests.append((self.path, status))
                self.send_response(status, reason)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(True)

            def do_POST(self) -> None:  # noqa: N802
                self._answer(False)

        server = ThreadingHTTPServer((self.host, self.requested_port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"iis-http-{self.server_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
