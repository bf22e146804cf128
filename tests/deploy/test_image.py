"""deploy/Dockerfile and its build-context filter, read as text (no Docker here): two stages on
python:3.11-slim (pinned by digest once `make pin-image` has run; the version: test_versions.py),
the package installed from the first stage's wheels without the test extra, a numeric non-root
user, no HEALTHCHECK, `cmh` as the entrypoint, and a context holding the package sources and the
runtime lock and nothing else (no .venv, var/, tests, .git or secrets).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.settings import DEFAULT_SERVICE_PORTS, Settings

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE_FILE = ROOT / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        logical.append(pending)
        pending = ""
    assert not pending
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stay within one path segment,
    `**` spans any number of them."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last matching pattern
    wins, `!` re-includes, and a pattern matching a directory matches what is inside it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for line in IGNORE_FILE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        include = pattern.startswith("!")
        regex = pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not include
    return result


def test_two_stages_on_python_slim() -> None:
    steps = instructions()
    default_image = next(args for name, args in steps if name == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+-slim(@sha256:[0-9a-f]{64})?", default_image)
    stages = [args for name, args in steps if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_the_package_is_installed_from_the_built_wheel_without_test_extras() -> None:
    text = DOCKERFILE.read_text()
    runs = [args for name, args in instructions() if name == "RUN"]
    assert any(run.startswith("pip wheel --wheel-dir /wheels -c requirements/runtime.txt .") for run in runs)
    install = next(run for run in runs if "pip install" in run)
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install
    assert "--no-index --find-links=/wheels cmh-suite" in install
    assert "[test]" not in text and ".[" not in text


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = [args for name, args in instructions() if name == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    steps = instructions()
    user_index = steps.index(("USER", user))
    runtime_index = steps.index(("FROM", "${PYTHON_IMAGE} AS runtime"))
    assert user_index > runtime_index
    assert all(name not in ("RUN", "COPY", "ADD") for name, _ in steps[user_index + 1 :])


def test_entrypoint_command_and_stop_signal() -> None:
    steps = dict(instructions()[::-1])  # the last of each instruction wins
    assert json.loads(steps["ENTRYPOINT"]) == ["cmh"]
    assert json.loads(steps["CMD"]) == ["serve", "gateway", "--port", "8000"]
    assert steps["STOPSIGNAL"] == "SIGTERM"
    assert "HEALTHCHECK" not in steps  # the orchestrators probe /health and /ready


def test_environment_is_settings_and_ports_are_the_processes() -> None:
    environment = " ".join(args for name, args in instructions() if name == "ENV")
    variables = dict(re.findall(r"(\w+)=(\S+)", environment))
    for variable in variables:
        if variable.startswith("CMH_"):
            assert variable.removeprefix("CMH_").lower() in Settings.model_fields
    assert variables["CMH_HOST"] == "0.0.0.0"
    assert variables["CMH_VAR_DIR"].startswith("/tmp/")
    (exposed,) = [args for name, args in instructions() if name == "EXPOSE"]
    ports = {Settings.model_fields["gateway_port"].default, *DEFAULT_SERVICE_PORTS.values()}
    assert {int(port) for port in exposed.split()} == ports


def test_the_build_context_holds_the_package_sources_only() -> None:
    copies = [args.split()[:-1] for name, args in instructions() if name == "COPY"]
    sources = [source for words in copies for source in words]
    assert sources == [
        "pyproject.toml", "README.md", "requirements/runtime.txt", "cmh", "shared", "gateway", "services",
    ]  # fmt: skip
    for path in [
        "pyproject.toml",
        "README.md",
        "requirements/runtime.txt",
        "cmh/cli.py",
        "shared/settings.py",
        "gateway/app.py",
        "services/triage/app.py",
        "services/triage/migrations/env.py",
        "services/registry/reference/lsc-organisation.json",
    ]:
        assert (ROOT / path).exists() and not ignored(path), path
    for path in [
        ".venv/bin/python",
        ".git/config",
        "var/gateway.db",
        "tests/conftest.py",
        "bench/run.py",
        "tools/directory_reference.py",
        "deploy/secrets/reporting-pseudonym.key",
        "deploy/kubernetes/overlays/production/secrets/reporting-pseudonym.key",
        "shared/__pycache__/settings.cpython-312.pyc",
        "cmh_suite.egg-info/PKG-INFO",
        "Makefile",
        "requirements/lock.txt",
    ]:
        assert ignored(path), path
