"""Whether a server trusts a chain, read from its stores' objects: pure rules, no files, no sessions.

orchestrator/roots.py finds the CA's root on the workstation; this module is what the step
decisions (orchestrator/steps.py) and the fact parsers (orchestrator/reads.py) need of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature


def signed(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def trusted(store: Iterable[x509.Certificate], top: x509.Certificate) -> bool:
    """Whether a root in `store` (a server's \\Root) signed `top` (or `top` is itself there)."""
    return any(r == top or signed(top, r) for r in store)


def store_certificates(objects: Iterable[Any]) -> list[x509.Certificate]:
    """Get-ChildItem Cert:\\LocalMachine\\Root output -> certificates (from RawData; others are skipped)."""
    out = []
    for obj in objects:
        getter = getattr(obj, "get", None)
        raw = getter("RawData") if callable(getter) else None
        if isinstance(raw, (bytes, bytearray)) and raw:
            try:
                out.append(x509.load_der_x509_certificate(bytes(raw)))
            except ValueError:
                continue
    return out


def split_stores(objects: Iterable[Any]) -> dict[str, list[Any]] | None:
    """Get-ChildItem Cert:\\LocalMachine\\CA, Cert:\\LocalMachine\\Root output -> {"CA": [...], "Root": [...]}
    by each object's PSParentPath (...Certificate::LocalMachine\\CA); None when an object does not carry it."""
    out: dict[str, list[Any]] = {"CA": [], "Root": []}
    for obj in objects:
        getter = getattr(obj, "get", None)
        parent = str(getter("PSParentPath") or "") if callable(getter) else ""
        store = parent.replace("/", "\\").rsplit("\\", 1)[-1].lower()
        if store == "ca":
            out["CA"].append(obj)
        elif store == "root":
            out["Root"].append(obj)
        else:
            return None
    return out
