"""From the playbook's `issuer: {type: acme}` and the run's resolved secrets to what client.issue takes.

The lead's issue step calls: `acme_settings(loaded, store)`, `state_dir_for(journal_path)` and, for dns-01,
`dns_responder(loaded, store)`; for http-01 it passes its own responder (the token under each server's web
root over the system endpoint; `http01_targets` says which servers get each name's token).
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.acme_issue.client import AcmeSettings
from orchestrator.acme_issue.dns01 import Rfc2136Responder
from orchestrator.playbook import AcmeIssuer, LoadedPlaybook
from orchestrator.secrets_store import ACME_EAB_HMAC, ACME_TSIG_SECRET, SecretStore


def _issuer(loaded: LoadedPlaybook) -> AcmeIssuer:
    issuer = loaded.playbook.issuer
    if not isinstance(issuer, AcmeIssuer):
        raise TypeError(f"the playbook's issuer is {issuer.type}, not acme")
    return issuer


def state_dir_for(journal_path: Path) -> Path:
    """The ACME state folder beside the journal: `.exmig/<playbook>.acme/` (account key, order)."""
    name = journal_path.name.removesuffix(".json").removesuffix(".journal")
    return journal_path.parent / f"{name}.acme"


def acme_settings(loaded: LoadedPlaybook, store: SecretStore) -> AcmeSettings:
    issuer = _issuer(loaded)
    return AcmeSettings(
        directory=issuer.directory,
        contact=issuer.contact,
        eab_kid=issuer.eab.kid if issuer.eab is not None else None,
        eab_hmac=store.secret(ACME_EAB_HMAC) if issuer.eab is not None else None,
        ca_bundle=loaded.resolve(issuer.ca_bundle) if issuer.ca_bundle else None,
        timeout=float(issuer.timeout),
    )


def dns_responder(loaded: LoadedPlaybook, store: SecretStore) -> Rfc2136Responder:
    issuer = _issuer(loaded)
    if issuer.dns is None:
        raise TypeError("the playbook's issuer has no dns: section (challenge http-01)")
    dns = issuer.dns
    return Rfc2136Responder(dns.server, dns.zone, dns.tsig_name, store.secret(ACME_TSIG_SECRET),
                            tsig_algorithm=dns.tsig_algorithm, propagation_timeout=float(dns.propagation_seconds))


def http01_targets(loaded: LoadedPlaybook) -> dict[str, list[str]]:
    """{name: [server names]}: where each name's http-01 token goes (issuer.client_names, else the servers'
    client_names)."""
    issuer = _issuer(loaded)
    playbook = loaded.playbook
    return {name: issuer.servers_for(name, playbook.servers, playbook.certificate)
            for name in playbook.certificate.domains}
