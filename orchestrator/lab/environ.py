"""Environment variables set for a while and restored after.

MIT krb5 and pyspnego read their files from the environment (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME,
KRB5RCACHEDIR, NTLM_USER_FILE) when a context is made, so the lab points them at its own files
around the calls that need them. The environment is process-wide: callers that may run side by
side hold a lock of their own (the acceptors' in auth.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def overridden(values: dict[str, str]) -> Iterator[None]:
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
