"""`exmig run` options that cannot work are refused in one line, before anything is sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, CliResult


def test_save_pfx_with_a_generated_password_is_refused_before_anything_is_sent(
        exmig: Callable[..., CliResult], tmp_path: Path) -> None:
    # playbooks/lab.yml generates its PFX password, and nothing listens on its ports here: a run that
    # tried to connect would fail otherwise (exit 1), not with this one line (exit 2).
    backup = tmp_path / "backup.pfx"
    result = exmig("run", ROOT / "playbooks" / "lab.yml", "--yes", "--save-pfx", backup)
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1, result.err
    assert "--save-pfx" in result.err and "pfx_password: {env: VARIABLE}" in result.err
    assert "pfx_password: {prompt: true}" in result.err
    assert not backup.exists()
