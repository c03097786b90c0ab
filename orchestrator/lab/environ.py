"""Environment variables set for a while and restored after.

MIT krb5 and pyspnego read their files from the environment (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME,
KRB5RCACHEDIR, NTLM_USER_FILE) when a context is made, so the lab points them at its own files
around the calls that need them. The environment is process-wide: callers that may run side by
side hold a lock of their own (the acceptors' in auth.py).

The acceptors switch their variables on server threads while client threads may iterate os.environ
(requests does on every request, to find proxies), and iterating while another thread adds or deletes
a key fails with KeyError or RuntimeError. So the acceptors' variables (`ACCEPTOR`) are created once,
empty, on import (before any server thread exists) and are only ever changed in value: "unset" is
"empty" for them, which pyspnego and MIT's acceptor read as not set. The clients' variables
(KRB5_CONFIG, KRB5CCNAME) are set and removed on the main thread around a whole run instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

ACCEPTOR = ("NTLM_USER_FILE", "KRB5_KTNAME", "KRB5RCACHEDIR")


def reserve(keys: Iterable[str] = ACCEPTOR) -> None:
    for key in keys:
        os.environ.setdefault(key, "")


@contextmanager
def overridden(values: dict[str, str], keep_keys: bool = False) -> Iterator[None]:
    """`values` for the duration; after it the previous values, and where there was none the key is
    removed, or with `keep_keys` (the acceptors') left empty."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is not None:
                os.environ[key] = value
            elif keep_keys:
                os.environ[key] = ""
            else:
                os.environ.pop(key, None)


reserve()
