from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.lab.ca import LabCA
from orchestrator.lab.exchange import ExchangeServerModel, LabSettings, build_registry
from orchestrator.lab.registry import Registry


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def settings(lab_ca: LabCA) -> LabSettings:
    return LabSettings(third_party_roots=(lab_ca.root_pem,))


ServerFactory = Callable[..., tuple[ExchangeServerModel, Registry]]


@pytest.fixture
def make_server(tmp_path: Path, settings: LabSettings) -> ServerFactory:
    def make(version: str = "2010", name: str | None = None, lab_settings: LabSettings | None = None,
             state: Path | None = None) -> tuple[ExchangeServerModel, Registry]:
        name = name or ("EX2010A" if version == "2010" else "EX2007A")
        model = ExchangeServerModel.load_or_create(
            state or tmp_path / name, name=name, version=version, fqdn=f"{name.lower()}.mitserv.net"
        )
        return model, build_registry(model, lab_settings or settings)

    return make
