"""What a certificate's Status, as Exchange reports it, means for the migration.

Valid is success; RevocationCheckFailure is a warning with its cause: the server could not reach the CA's
revocation list (CRL/OCSP), which is common for Exchange servers without internet access. The certificate
works, and clients that can reach the list still check it; it is never reported as plain success, and
never as a failure. Every other status (Untrusted, Invalid, DateInvalid, Revoked, ...) is a problem.
"""

from __future__ import annotations

REVOCATION_CHECK_FAILURE = "RevocationCheckFailure"


def warning(status: str | None) -> str | None:
    if status == REVOCATION_CHECK_FAILURE:
        return ("status RevocationCheckFailure: the server cannot reach the CA's revocation list (CRL/OCSP; no "
                "internet access?); the certificate works and clients that reach the list still check it; allow "
                "the server HTTP access to the CA's CRL and OCSP addresses to clear it")
    return None


# What the other statuses mean on a server a migration just touched, and the fix.
_CAUSES = {
    "Untrusted": "the server does not trust the CA's root: add it to LocalMachine\\Root (issuer.install_root: true)",
    "Invalid": "the chain does not build on the server: an intermediate is missing from LocalMachine\\CA "
               "(run the install-chain step)",
    "DateInvalid": "the certificate or a CA certificate is outside its validity period (check the server's clock)",
    "Revoked": "the CA has revoked the certificate: ask it for a new one",
}


def problem(status: str | None) -> str | None:
    """None when the status is fine (or only a warning); else `status X: cause; fix`."""
    if status in (None, "Valid") or warning(status) is not None:
        return None
    cause = _CAUSES.get(status)
    return f"status {status}: {cause}" if cause else f"status {status}"


def certificate_problems(has_private_key: bool | None, status: str | None) -> list[str]:
    """What makes a certificate on a server unusable for Exchange: a missing key, a Status that is a problem
    (what a run's verify step and `exmig verify` both judge)."""
    found = ["no private key"] if has_private_key is False else []
    trouble = problem(status)
    return found + ([trouble] if trouble else [])
