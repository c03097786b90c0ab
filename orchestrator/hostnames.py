"""Which DNS name a certificate's subjectAltName covers: one rule for the issue step and for verify.

RFC 6125 §6.4.3 as browsers apply it (CA/Browser Forum Baseline Requirements §3.2.2.6): a wildcard is
the whole left-most label (`*.example.com`, not `f*.example.com`), it stands for exactly one label,
and it needs at least two labels below it, so `*.com` covers nothing. Without a public-suffix list a
registry wildcard such as `*.co.uk` cannot be told from `*.example.com`; the CA must not issue it.
"""

from __future__ import annotations

from collections.abc import Iterable


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


def name_covers(pattern: str, host: str) -> bool:
    """Whether the certificate name `pattern` (exact or wildcard) covers `host`."""
    have, want = _normal(pattern), _normal(host)
    if not have or not want:
        return False
    if "*" not in have:
        return have == want
    first, _, rest = have.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    label, _, parent = want.partition(".")
    return bool(label) and label != "*" and parent == rest


def any_covers(patterns: Iterable[str], host: str) -> bool:
    return any(name_covers(p, host) for p in patterns)
