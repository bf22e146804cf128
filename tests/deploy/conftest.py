"""The rendered Kubernetes manifests, built once per test module (tests/deploy/kustomize.py)."""

from __future__ import annotations

import pytest

from tests.deploy.kustomize import BASE, PRODUCTION, Build, build


@pytest.fixture(scope="module")
def base() -> Build:
    return build(BASE)


@pytest.fixture(scope="module")
def production() -> Build:
    return build(PRODUCTION)


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request: pytest.FixtureRequest) -> Build:
    return request.getfixturevalue(request.param)
