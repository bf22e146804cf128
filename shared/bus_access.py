"""The closed event bus: who may connect to NATS, and what each identity may publish and read.

Every process connects as its own NATS user (the gateway, each service) and may only:

- publish its own events, `cmh.<identity>.>` (so the subject an event arrives on names its
  producer), and park dead letters of its own durable consumers;
- read through its own durable consumers, which it binds to but can neither create nor change
  (so it cannot widen what it reads), and its own reply inbox (`_INBOX_<identity>.>`), never
  another's;
- hear the gateway's token revocation snapshots (only the gateway may publish them).

The stream and every durable consumer are made by the `admin` identity (`cmh bus provision`, run
by `cmh run` and by the Kubernetes migrate job) from the processes' declared subscriptions. The
permissions are a pure function of the identity and its durable names, written here once and
rendered into the server's configuration, which holds only bcrypt hashes of the passwords.

Without `CMH_NATS_CREDENTIALS_DIR` the bus is open: each process makes its own stream and
consumers, as a development bus with no users needs. Production refuses an open bus.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.events import SUBJECT_PREFIX, dead_letter_subject
from shared.revocation import REVOCATION_PUBLISHER, REVOCATIONS_SUBJECT

ADMIN = "admin"
_IDENTITY = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_PASSWORD_SUFFIX = ".password"  # noqa: S105 - a file name suffix, not a secret
BCRYPT_ROUNDS = 10  # checked once per connection, never per message


def _check_identity(identity: str) -> str:
    if not _IDENTITY.match(identity):
        raise ValueError(f"invalid bus identity {identity!r}: lowercase letters, digits and _ only")
    return identity


def inbox_prefix(identity: str) -> str:
    """Replies (JetStream acks, pulled messages) come to this identity's inbox alone."""
    return f"_INBOX_{_check_identity(identity)}"


@dataclass(frozen=True)
class BusPermissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_config(self) -> dict[str, Any]:
        return {"publish": {"allow": list(self.publish)}, "subscribe": {"allow": list(self.subscribe)}}


def permissions(identity: str, durables: Sequence[str], stream: str) -> BusPermissions:
    """What one process may do on the bus: its own subjects, its own durables, its own inbox."""
    _check_identity(identity)
    publish = [
        f"{SUBJECT_PREFIX}.{identity}.>",
        f"$JS.API.STREAM.INFO.{stream}",  # readiness
    ]
    for durable in sorted(set(durables)):
        publish += [
            dead_letter_subject(durable),
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    if identity == REVOCATION_PUBLISHER:
        publish.append(REVOCATIONS_SUBJECT)
    return BusPermissions(
        publish=tuple(publish), subscribe=(f"{inbox_prefix(identity)}.>", REVOCATIONS_SUBJECT)
    )


# --- credentials --------------------------------------------------------------------------------


def password_file(directory: Path, identity: str) -> Path:
    return Path(directory) / f"{_check_identity(identity)}{_PASSWORD_SUFFIX}"


def read_password(directory: Path, identity: str) -> str:
    """The identity's password (a mounted Secret in Kubernetes, a file under var/ for `cmh run`)."""
    path = password_file(directory, identity)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"no NATS credentials for {identity!r} at {path}") from None
    if not value:
        raise ValueError(f"the NATS password file {path} is empty")
    return value


def ensure_credentials(directory: Path, identities: Sequence[str]) -> dict[str, str]:
    """Each identity's password, made (256 random bits, file mode 0600) where there is none."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    found: dict[str, str] = {}
    for identity in identities:
        path = password_file(directory, identity)
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        found[identity] = read_password(directory, identity)
    return found


def server_authorization(
    passwords: Mapping[str, str],
    durables: Mapping[str, Sequence[str]],
    stream: str,
    *,
    rounds: int = BCRYPT_ROUNDS,
) -> dict[str, Any]:
    """The `authorization` block of the nats-server configuration: one user per identity with its
    permissions, and the admin with all of them. Passwords are stored as bcrypt hashes."""
    import bcrypt

    users: list[dict[str, Any]] = []
    for identity, password in sorted(passwords.items()):
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
        user: dict[str, Any] = {"user": identity, "password": hashed}
        if identity != ADMIN:
            user["permissions"] = permissions(identity, durables.get(identity, ()), stream).as_config()
        users.append(user)
    return {"authorization": {"users": users, "timeout": 2}}


def write_server_config(path: Path, authorization: Mapping[str, Any]) -> Path:
    """nats-server reads JSON as its configuration format; written 0600 (it holds hashes only, but
    they are still not for anyone to read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(authorization, handle, indent=2)
    return path


def prepare_closed_bus(
    directory: Path, durables: Mapping[str, Sequence[str]], stream: str, *, rounds: int = BCRYPT_ROUNDS
) -> tuple[Path, Path]:
    """For a bundled nats-server: each identity's password under `directory/credentials` (kept
    across restarts) and the server configuration naming them. Returns (credentials, config)."""
    credentials = Path(directory) / "credentials"
    passwords = ensure_credentials(credentials, [ADMIN, *durables])
    authorization = server_authorization(passwords, durables, stream, rounds=rounds)
    return credentials, write_server_config(Path(directory) / "auth.json", authorization)
