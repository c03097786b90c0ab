"""What a server's error text means and what the admin can do about it.

Exchange 2010 wraps its certificate-service errors as "A special Rpc error occurs on server <server>:
<inner text>" (reference §3.2 [S9]); the inner text is what says what went wrong. exmig classifies on
that text only: error ids and categories differ between versions and builds (2013+ add a
"[Server=...,RequestId=...]" prefix to the id), and the same id can carry several situations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RPC_PREFIX = re.compile(r"^\s*A special Rpc error occurs on server (?P<server>[^:]+):\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Known:
    kind: str
    pattern: re.Pattern[str]
    fix: str


def _known(kind: str, pattern: str, fix: str) -> Known:
    return Known(kind, re.compile(pattern, re.IGNORECASE), fix)


# Inner texts as real servers print them (issue 16's quotes from Q&A threads, reference §3.2), plus the
# lab's own wording where no real text is known (marked).
KNOWN: tuple[Known, ...] = (
    _known("pfx-password", r"^The source data cannot be imported or the wrong password was specified",
           "the PFX password does not open this PFX (or it is AES-encrypted, which Windows 2008 cannot read): "
           "let exmig export it again in this run (pfx_password) and import with that password"),
    _known("already-present", r"^Cannot import certificate\. A certificate with the thumbprint \w+ already exists",
           "the certificate is already on this server: run exmig again (the import step then finds it), or "
           "remove the copy without its key with Remove-ExchangeCertificate -Confirm:$false first"),
    _known("key-not-exportable", r"^The private key couldn't be exported as PKCS-12",
           "the source's private key is not exportable: request the certificate again with "
           "certificate.private_key_exportable: true"),
    _known("private-key-missing", r"\(reason: PrivateKeyMissing\)",
           "the certificate is on this server without its private key: complete the request on the server that "
           "made it, or import the PFX exported from there"),
    # The lab's wording (the real text is not known); the trust check before the run makes it rare.
    _known("untrusted-root", r"chain doesn't end at a root certificate",
           "add the CA's root to LocalMachine\\Root on this server, or set issuer.install_root: true"),
    _known("export-needs-password", r"specify the Password parameter to export it",
           "export with -Password (exmig always does; a script without it gets this error)"),
    _known("prompt", r"^A command that prompts the user failed because the host program",
           "the server asked for confirmation: Enable-ExchangeCertificate needs -Force and "
           "Remove-ExchangeCertificate -Confirm:$false in a remote session"),
    _known("in-use", r"^You can't remove the certificate .* because it's being used",
           "enable another certificate for those services first"),
)


def inner_text(message: str) -> str:
    """The error text without 2010's RPC wrapping, on one line."""
    return " ".join(_RPC_PREFIX.sub("", message, count=1).split())


def classify(message: str) -> Known | None:
    inner = inner_text(message)
    return next((k for k in KNOWN if k.pattern.search(inner)), None)


def one_line(server: str, command: str, message: str) -> str:
    """`server: command: inner text; fix` — the line the admin sees."""
    inner = inner_text(message) or "the command failed"
    known = classify(message)
    line = f"{server}: {command}: {inner}"
    return f"{line.rstrip('.')}; {known.fix}" if known else line
