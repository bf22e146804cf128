"""`cmh clients …`, `cmh keys …` and `cmh token` against a fresh gateway store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jwt
import pytest

from gateway.admin import DEMO_CLIENTS, mint_token, seed_demo_clients
from shared.settings import Settings

ROOT = Path(__file__).parents[2]


def test_version_is_the_package_version(cmh, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as exit_:
        cmh("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cmh-suite {project_version}\n"
    # The command as a process: exit status 0, the same line.
    done = subprocess.run(
        [sys.executable, "-m", "cmh.cli", "--version"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, f"cmh-suite {project_version}\n", "")


def test_clients_lifecycle(cmh) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cmh(
        "clients", "add", "--name", "Preston GP", "--organisation", "p81001", "--kind", "partner_ehr",
        "--scopes", "referral:submit referral:read", "--client-id", "gp-p81001", "--rate-limit", "120",
    )  # fmt: skip
    assert code == 0
    secret = json.loads(out)["client_secret"]
    assert len(secret) >= 40

    code, out, _ = cmh("clients", "list")
    listed = [json.loads(line) for line in out.splitlines()]
    assert listed == [
        {
            "client_id": "gp-p81001",
            "name": "Preston GP",
            "organisation": "P81001",
            "organisation_system": "ods",
            "kind": "partner_ehr",
            "scopes": ["referral:read", "referral:submit"],
            "auth_method": "client_secret",
            "jwks_uri": None,
            "rate_limit_per_minute": 120,
            "disabled": False,
            "previous_secret_valid_until": None,
        }
    ]
    assert secret not in out

    code, out, _ = cmh("clients", "rotate", "gp-p81001", "--grace-hours", "2")
    lines = out.splitlines()
    assert json.loads(lines[0])["client_secret"] != secret
    assert json.loads(lines[1])["previous_secret_valid_until"] is not None

    code, out, _ = cmh("token", "gp-p81001")
    token = out.strip()
    assert "\n" not in token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "gp-p81001" and claims["cmh_org"] == "P81001" and claims["cmh_rate"] == 120

    assert cmh("clients", "disable", "gp-p81001")[0] == 0
    code, out, err = cmh("token", "gp-p81001")
    assert code == 2 and out == "" and "no enabled client" in err


def test_bad_registration_is_refused_with_a_reason(cmh) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cmh(
        "clients", "add", "--name", "x", "--organisation", "RW5", "--kind", "vcfse_partner", "--scopes", "handover:respond"
    )  # fmt: skip
    assert code == 2 and out == "" and "charity or company" in err


def test_keys_rotate_publishes_a_pending_key(cmh) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cmh("keys", "rotate")
    assert code == 0
    states = [json.loads(line)["status"] for line in out.splitlines()[1:]]
    assert sorted(states) == ["active", "pending"]


async def test_demo_clients_one_per_kind_and_token_by_kind(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    secrets = await seed_demo_clients(settings)
    assert {demo.kind for demo in DEMO_CLIENTS} == {
        "partner_ehr",
        "crisis_app",
        "reporting",
        "vcfse_partner",
        "admin",
    }
    assert set(secrets) == {demo.client_id for demo in DEMO_CLIENTS}
    stored = tmp_path / "var" / "demo-clients.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    again = await seed_demo_clients(settings)  # idempotent: same secrets
    assert again == secrets
    token = await mint_token(settings, "crisis_app")
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "demo-crisis-app"
