"""http-01 (RFC 8555 §8.3) on Exchange's IIS: where the token goes and what makes IIS serve it.

The CA fetches http://<name>/.well-known/acme-challenge/<token> and expects the key authorization
(trailing whitespace is ignored: RFC 8555 §8.3, so Set-Content's CRLF is harmless). On an Exchange
server that URL is the Default Web Site, whose folder is C:\\inetpub\\wwwroot. IIS's static file
handler serves no file without an extension unless a MIME type is mapped to "." (Certify The Web's
docs, "How Http Validation works"), so a web.config goes into the challenge folder with the token; it
removes an inherited "." mapping first, since a duplicate <mimeMap> entry is a configuration error.

The Exchange-side responder (files over the server's system endpoint) is the issue step's; this module
gives it the paths and contents, so the lab (orchestrator/lab/iis_http.py) and a real server see the
same files.
"""

from __future__ import annotations

import re

WEB_ROOT = "C:\\inetpub\\wwwroot"
CHALLENGE_FOLDER = WEB_ROOT + "\\.well-known\\acme-challenge"
WEB_CONFIG_PATH = CHALLENGE_FOLDER + "\\web.config"
WEB_CONFIG = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    "<configuration>\r\n"
    "  <system.webServer>\r\n"
    "    <staticContent>\r\n"
    '      <remove fileExtension="." />\r\n'
    '      <mimeMap fileExtension="." mimeType="text/plain" />\r\n'
    "    </staticContent>\r\n"
    "  </system.webServer>\r\n"
    "</configuration>"
)
# RFC 8555 §8.1: a token is base64url; anything else is not put into a path on a server.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


class BadToken(ValueError):
    pass


def token_path(token: str) -> str:
    """The Windows path of a token's file under the web root."""
    if not _TOKEN.fullmatch(token):
        raise BadToken(f"the CA's http-01 token {token[:40]!r} is not base64url text; it is not written anywhere")
    return CHALLENGE_FOLDER + "\\" + token


def url_path(token: str) -> str:
    return "/.well-known/acme-challenge/" + token
