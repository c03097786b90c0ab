"""ACME issuance (RFC 8555) of the Exchange server's own request: client.issue, with a challenge responder.

Responders: dns01.Rfc2136Responder (RFC 2136 + TSIG); http-01 responders put the token under the web root
of the server each name points at (the lab's side: orchestrator/lab/iis_http.py serves it).
"""

from orchestrator.acme_issue.client import AcmeResult, AcmeSettings, ChallengeResponder, issue, signature_hash
from orchestrator.acme_issue.dns01 import Rfc2136Responder

__all__ = ["AcmeResult", "AcmeSettings", "ChallengeResponder", "Rfc2136Responder", "issue", "signature_hash"]
