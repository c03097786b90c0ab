"""The secrets store: resolved once and sealed; a user without a password (a Kerberos ticket) is no crash."""

from __future__ import annotations

import pytest

from orchestrator.errors import ExmigError
from orchestrator.playbook import Credentials, SecretRef, load_playbook
from orchestrator.secrets_store import SecretStore
from tests.conftest import ROOT


def test_a_user_without_a_password_resolves_to_none() -> None:
    playbook = load_playbook(ROOT / "playbooks" / "lab.yml").playbook
    ticket = playbook.source.model_copy(update={"credentials": Credentials.model_construct(
        username="administrator@EXAMPLE.COM", password=None)})
    store = SecretStore(playbook, interactive=False)
    store.resolve([ticket], pfx_password=True)
    assert store.password(ticket) is None and store.username(ticket) == "administrator@EXAMPLE.COM"
    assert None not in store.all_values() and len(store.all_values()) == 1  # the generated PFX password


def test_after_resolve_no_prompt_comes_in_the_middle_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "lab.yml").playbook
    asked = playbook.targets[0].model_copy(update={"credentials": Credentials(
        username="administrator", password=SecretRef(prompt=True))})
    monkeypatch.setattr("getpass.getpass", lambda text: pytest.fail(f"prompted mid-run: {text}"))
    store = SecretStore(playbook, interactive=True)
    store.resolve([], pfx_password=False)
    with pytest.raises(ExmigError, match="was not asked for before the run started"):
        store.password(asked)
