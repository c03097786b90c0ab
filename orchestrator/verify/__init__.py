"""`exmig verify`: proof that every service presents the new certificate, for every name, with its chain.

Public surface (the CLI command and the management-session checks build on these):

- `probe(host, port, service, sni, timeout, *, roots, now, chain_reader) -> Presented`  (tls_probe)
- `assess(chain, sni, roots, now) -> ChainAssessment`                                   (tls_probe)
- `judge(presented, expected_thumbprint, expected_intermediates, sni, warn_days, *, server) -> Finding`
- `Verdict`, `Finding`, `findings_table`, `render_json`, `render_json_lines`, `summary`, `exit_code` (report)
- `TlsCheck`, `run_tls_checks`                                                           (checks)
- `run_s_client`, `parse_s_client`, `openssl_verdict`                                    (openssl)
"""

from orchestrator.verify.checks import TlsCheck, run_tls_checks
from orchestrator.verify.report import (
    Finding,
    Verdict,
    exit_code,
    findings_table,
    judge,
    render_json,
    render_json_lines,
    summary,
)
from orchestrator.verify.tls_probe import (
    DEFAULT_PORTS,
    SERVICE_KINDS,
    ChainAssessment,
    Presented,
    ServiceKind,
    assess,
    probe,
    system_roots,
)

__all__ = [
    "DEFAULT_PORTS",
    "SERVICE_KINDS",
    "ChainAssessment",
    "Finding",
    "Presented",
    "ServiceKind",
    "TlsCheck",
    "Verdict",
    "assess",
    "exit_code",
    "findings_table",
    "judge",
    "probe",
    "render_json",
    "render_json_lines",
    "run_tls_checks",
    "summary",
    "system_roots",
]
