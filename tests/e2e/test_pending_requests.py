"""A pending request on the source is adopted only when it is exactly this playbook's: same CN (parsed, not a
substring of the subject) and the same names; anything else that looks like it stops the run by thumbprint."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Lab, props, raw_invoke, raw_pool


def _stray_request(lab: Lab, subject: str, names: list[str]) -> str:
    """Someone else's pending request on EX2010, made with plain pypsrp; its thumbprint."""
    with raw_pool(lab.server("EX2010"), "Microsoft.Exchange") as pool:
        raw_invoke(pool, "New-ExchangeCertificate", GenerateRequest=None, SubjectName=subject, DomainName=names,
                   PrivateKeyExportable=True, Server="EX2010")
        pending = [props(o) for o in raw_invoke(pool, "Get-ExchangeCertificate", Server="EX2010")
                   if str(props(o).get("Status")) == "PendingRequest"]
    assert len(pending) == 1
    return str(pending[0]["Thumbprint"])


def _pending(lab: Lab) -> list[dict[str, Any]]:
    with raw_pool(lab.server("EX2010"), "Microsoft.Exchange") as pool:
        return [props(o) for o in raw_invoke(pool, "Get-ExchangeCertificate", Server="EX2010")
                if str(props(o).get("Status")) == "PendingRequest"]


def test_a_request_whose_cn_only_starts_with_ours_is_not_adopted(lab: Lab) -> None:
    stray = _stray_request(lab, "C=US, O=Other, CN=mail.mitserv.network", ["mail.mitserv.network"])
    proc, events = lab.run_json("--step", "request")
    assert proc.returncode == 0, proc.stderr
    request = next(e for e in events if e["event"] == "step" and e.get("phase") == "end")
    assert request["outcome"] == "changed", request  # a request of its own, not the stray one adopted
    assert stray in {str(p["Thumbprint"]) for p in _pending(lab)}  # someone else's request stays as it was
    assert len(_pending(lab)) == 2


def test_a_request_with_our_cn_but_other_names_stops_the_run_naming_it(lab: Lab) -> None:
    stray = _stray_request(lab, "CN=mail.mitserv.net", ["mail.mitserv.net"])
    proc, _ = lab.run_json("--step", "request")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("exmig: error:")]
    assert len(lines) == 1 and stray in lines[0] and "remove the stray one" in lines[0], proc.stderr
    assert len(_pending(lab)) == 1  # nothing was requested, nothing removed
