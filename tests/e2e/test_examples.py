"""The integration guide's examples (docs/integration/README.md, examples/) run against the whole
suite, as a partner would run them: make a key, register it, get a token with private_key_jwt,
subscribe, send the referral in examples/fhir_referral.json, follow its Task and receive a
notification verified with the Standard Webhooks library. So the guide cannot rot."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import HTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from examples import get_token, make_key, send_referral, subscribe, verify_webhook
from gateway.clients import add_client
from shared.fhir_terms import CMH_CODES
from shared.nats_server import free_port
from tests.e2e.conftest import Suite, read_models_filled
from tests.support import eventually


async def test_the_guides_examples_run_against_the_suite(
    suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await eventually(lambda: read_models_filled(suite.triage_app), timeout=30)
    printed: list[str] = []

    def output() -> str:
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    # 1. The partner makes a key; the operator registers its public JWKS (cmh clients add --jwks-file).
    private, public = tmp_path / "private.pem", tmp_path / "jwks.json"
    assert make_key.main(["guide-key-1", str(private), str(public)]) == 0
    assert "kid guide-key-1" in output()
    async with suite.apps["gateway"].state.db.transaction() as session:
        await add_client(
            session,
            client_id="guide-ehr",
            name="Guide EHR",
            organisation="P81001",
            organisation_system="ods",
            kind="partner_ehr",
            scopes="referral:submit referral:read subscription:manage",
            jwks=json.loads(public.read_text()),
        )
    for name, value in {
        "CMH_GATEWAY_URL": suite.url,
        "CMH_CLIENT_ID": "guide-ehr",
        "CMH_PRIVATE_KEY_FILE": str(private),
        "CMH_KEY_ID": "guide-key-1",
    }.items():
        monkeypatch.setenv(name, value)

    # 2. A token with private_key_jwt (the examples are synchronous: run off the suite's loop).
    assert await asyncio.to_thread(get_token.main) == 0
    assert re.search(r"token granted: scope .*referral:submit", output())

    # 3. Subscribe, then receive with the verifying receiver.
    port = free_port()
    assert await asyncio.to_thread(subscribe.main, [f"http://127.0.0.1:{port}/"]) == 0
    found = re.search(
        r"Subscription/(\S+) active; webhook secret \(shown once: store it\): (whsec_\S+)", output()
    )
    assert found, printed
    secret = found.group(2)
    monkeypatch.setenv("CMH_WEBHOOK_SECRET", secret)
    servers: list[HTTPServer] = []
    receiver = threading.Thread(target=verify_webhook.main, args=([str(port)], servers.append), daemon=True)
    receiver.start()
    try:
        await eventually(lambda: bool(servers), timeout=5)

        # 4. The referral from examples/fhir_referral.json, and its Task.
        assert await asyncio.to_thread(send_referral.main, ["GUIDE-REF-1"]) == 0
        # Two lines, matched apart: the receiver thread may print a notification between them.
        sent = re.search(r"referral ServiceRequest/(\S+): active", output())
        task = re.search(r"triage Task/(\S+): requested", output())
        assert sent and task, printed
        referral_id = sent.group(1)
        assert task.group(1) == referral_id
        # Sent in SNOMED CT, read back with the partner's codings beside the suite's.
        async with httpx.AsyncClient(base_url=suite.url, timeout=15) as http:
            token = {"Authorization": f"Bearer {await suite.token('gp-ehr')}"}
            back = (await http.get(f"/fhir/ServiceRequest/{referral_id}", headers=token)).json()
        reasons = {(c["system"], c["code"]) for r in back["reasonCode"] for c in r["coding"]}
        assert reasons >= {("http://snomed.info/sct", "366979004"), (CMH_CODES + "need", "low_mood")}

        # 5. The notification arrives, verified.
        await eventually(lambda: f"notified: ServiceRequest/{referral_id} is active" in output(), timeout=15)
    finally:
        for server in servers:
            server.shutdown()
        receiver.join(timeout=5)

    # The verifier accepts what the secret signed, and refuses a changed body and an old timestamp.
    body = json.dumps({"entry": []})
    webhook = Webhook(secret)

    def signed(at: datetime) -> dict[str, str]:
        stamp = str(int(at.timestamp()))
        return {
            "webhook-id": "msg-1",
            "webhook-timestamp": stamp,
            "webhook-signature": webhook.sign("msg-1", at, body),
        }

    now = datetime.now(UTC)
    assert verify_webhook.verify_notification(secret, body.encode(), signed(now)) == {"entry": []}
    with pytest.raises(WebhookVerificationError):
        verify_webhook.verify_notification(secret, body.encode() + b" ", signed(now))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook.verify_notification(secret, body.encode(), signed(now - timedelta(minutes=10)))
    # The referral body is the one file the guide names.
    assert Path(send_referral.__file__).with_name("fhir_referral.json") == send_referral.REFERRAL_FILE
