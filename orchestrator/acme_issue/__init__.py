"""ACME issuance (RFC 8555) of the Exchange server's own request: client.issue, with a challenge responder.

Responders: dns01.Rfc2136Responder (RFC 2136 + TSIG); http-01 responders put the token under the web root
of the server each name points at (orchestrator/acme_http.py; the lab's side: orchestrator/lab/iis_http.py).

The names below are loaded on first use (PEP 562): importing a pure part (http01's paths, for the plan) must
not bring in the network client.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "AcmeResult": "orchestrator.acme_issue.client", "AcmeSettings": "orchestrator.acme_issue.client",
    "ChallengeResponder": "orchestrator.acme_issue.client", "issue": "orchestrator.acme_issue.client",
    "signature_hash": "orchestrator.acme_issue.client", "Rfc2136Responder": "orchestrator.acme_issue.dns01",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
