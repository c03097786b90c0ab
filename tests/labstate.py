"""The emulated servers' own state, normalized so labs with different keys compare equal.

Shared by the end-to-end resume tests and the reliability sweep: it reads the lab's stores, the
services each certificate is enabled for, the certificates the TLS services present and the
server's files, never exmig's own report.
"""

from __future__ import annotations

from typing import Any

from orchestrator.lab.exchange import CA, MY, REQUEST, ROOT, ServerInspector
from orchestrator.lab.site import LabSite


def _subject(view: ServerInspector, thumb: str | None) -> str | None:
    cert = view.certificate(thumb, MY) if thumb else None
    return cert.subject if cert is not None else None


def server_state(view: ServerInspector) -> dict[str, Any]:
    model = view.model
    with model.lock:
        mine = []
        for thumb in view.thumbprints(MY):
            cert = view.certificate(thumb, MY)
            assert cert is not None
            mine.append((cert.subject, cert.services, cert.has_private_key, cert.status))
        requests = []
        for thumb in view.thumbprints(REQUEST):
            cert = view.certificate(thumb, REQUEST)
            assert cert is not None
            requests.append(cert.subject)
        certs_dir = sorted(n for n, _ in model.fs.children("C:\\Certs")) if model.fs.is_dir("C:\\Certs") else []
        return {
            "my": sorted(mine),
            # Subjects, not thumbprints: two labs have different CAs; a duplicate still shows twice.
            "ca": sorted(_store_subjects(view, CA)),
            "root": sorted(_store_subjects(view, ROOT)),
            "requests": sorted(requests),
            "files": certs_dir,
            "all_files": sorted(shown for shown, _ in model.fs.files.values()),
            "serving": sorted((svc, _subject(view, t)) for svc, t in view.serving().items()),
        }


def _store_subjects(view: ServerInspector, store: str) -> list[str]:
    out = []
    for thumb in view.thumbprints(store):
        cert = view.certificate(thumb, store)
        out.append(cert.subject if cert is not None else thumb)
    return out


def site_state(site: LabSite) -> dict[str, Any]:
    """{server name: normalized state} for every emulated server of the site."""
    return {name: server_state(emulated.inspector) for name, emulated in site.servers.items()}
