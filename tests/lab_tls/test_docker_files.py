"""Static checks of docker/ (no Docker daemon is needed): the container keeps the lab's loopback-only rule."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_runs_the_lab_on_host_loopback_without_publishing() -> None:
    compose = YAML(typ="safe").load((DOCKER / "compose.yaml").read_text())
    lab = compose["services"]["lab"]
    assert lab["command"] == ["lab", "serve", "playbooks/lab.yml", "--state", "/state"]
    # Published ports would need the lab to bind the container's bridge address; host networking keeps
    # it on the host's 127.0.0.1 (see docker/README.md).
    assert lab["network_mode"] == "host" and "ports" not in lab
    assert "lab-state:/state" in lab["volumes"] and "lab-state" in compose["volumes"]
    assert (DOCKER / lab["build"]["context"] / lab["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (DOCKER / "../playbooks").is_dir()


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    lines = [ln.strip() for ln in (DOCKER / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(ln.startswith("RUN pip install .") for ln in lines)
    assert "USER exmig" in lines and 'VOLUME ["/state"]' in lines
    assert 'ENTRYPOINT ["exmig"]' in lines
