"""Settings for every process of the suite, read once from `CMH_*` environment variables.

One class serves the gateway, every service and the `cmh` command so that a variable means the
same thing everywhere. Database URLs are per service with a global fallback: on SQLite each
service gets its own file (`{service}` in the URL is replaced by the service name); on PostgreSQL
each service lives in its own schema named after it, so services never share tables even when
they share a server and a URL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.http import parse_trusted_proxies, public_base

SERVICES: tuple[str, ...] = ("triage", "careplan", "registry", "directory", "reporting", "notify")
# The gateway owns a store too (client registry, audit), migrated like a service.
DATABASE_OWNERS: tuple[str, ...] = (*SERVICES, "gateway")
# Every process `cmh serve` runs: each is one NATS identity on a closed bus.
PROCESSES: tuple[str, ...] = ("gateway", *SERVICES)

DEFAULT_SERVICE_PORTS: dict[str, int] = {
    "triage": 8101,
    "careplan": 8102,
    "registry": 8103,
    "directory": 8104,
    "reporting": 8105,
    "notify": 8106,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMH_", extra="ignore", populate_by_name=True)

    # --- where things live -------------------------------------------------------------------
    var_dir: Path = Field(default=Path("var"), description="Runtime files: SQLite databases, NATS store.")
    database_url: str | None = Field(
        default=None,
        description="Global fallback database URL. `{service}` is replaced by the service name. "
        "Default: a SQLite file per service under CMH_VAR_DIR.",
    )
    triage_database_url: str | None = None
    careplan_database_url: str | None = None
    registry_database_url: str | None = None
    directory_database_url: str | None = None
    reporting_database_url: str | None = None
    notify_database_url: str | None = None
    gateway_database_url: str | None = None
    database_schema_prefix: str = Field(
        default="", description="PostgreSQL only: prefix of each service's schema name (isolates test runs)."
    )
    database_pool_size: int = 10
    database_busy_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long a request waits for a database lock or a pooled connection before it is "
        "answered 503 with Retry-After (SQLite's busy timeout, PostgreSQL's lock_timeout, the pool's).",
    )

    # --- messaging ---------------------------------------------------------------------------
    nats_url: str | None = Field(
        default=None,
        description="NATS server(s), comma separated. Unset under `cmh run`: start the bundled one.",
    )
    nats_credentials_dir: Path | None = Field(
        default=None,
        description="Directory of `<identity>.password` files (one per process, and `admin`): the bus "
        "is closed, each process connecting as its own NATS user. Unset: an open development bus. "
        "`cmh run` makes them under CMH_VAR_DIR.",
    )
    nats_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle for TLS to NATS (with tls:// URLs); production requires TLS."
    )
    stream_name: str = "CMH"
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas (3 in a cluster).")
    stream_duplicate_window_seconds: float = 600.0
    outbox_poll_seconds: float = Field(default=1.0, gt=0, description="Relay fallback poll interval.")
    outbox_batch_size: int = Field(default=200, ge=1)
    outbox_retention_days: float = 7.0
    consumer_max_deliveries: int = Field(
        default=5, ge=1, description="Tries before an event is dead-lettered."
    )
    consumer_retry_base_seconds: float = Field(default=1.0, gt=0)
    consumer_ack_wait_seconds: float = 30.0
    # Events fetched and applied in one transaction: a commit (an fsync) per batch is most of a
    # catch-up's wall time, so more per batch catches up faster (issue 23); at most the consumer's
    # max_ack_pending (1000).
    consumer_batch_size: int = Field(default=250, ge=1, le=1000)
    inbox_retention_days: float = 30.0
    reporting_pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Key of the keyed hash that stands for a person in reporting (default: var/reporting-pseudonym.key).",
    )
    triage_backdate_limit_days: float = Field(
        default=30.0,
        ge=0,
        description="How far back a referral's received time may be given without a reason for the delay.",
    )
    careplan_clock_scan_seconds: float = Field(
        default=60.0, gt=0, description="How often careplan checks the four-week plan clocks."
    )
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait for a webhook receiver."
    )
    webhook_retry_base_seconds: float = Field(default=2.0, gt=0, description="First retry delay (doubles).")
    webhook_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest delay between retries."
    )
    webhook_retry_window_seconds: float = Field(
        default=86_400.0, gt=0, description="How long a notification is retried before it is given up."
    )
    webhook_failures_to_disable: int = Field(
        default=10, ge=1, description="Consecutive failed attempts that put a subscription in error."
    )
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="Delivery worker fallback poll.")
    webhook_allow_private_addresses: bool = Field(
        default=False,
        description="Allow webhook endpoints on loopback/private addresses (development and tests only).",
    )
    idempotency_retention_hours: float = Field(
        default=24.0, gt=0, description="How long a create's Idempotency-Key replays its first result."
    )
    broker_backoff_max_seconds: float = 15.0

    # --- network -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    gateway_port: int = 8000
    metrics_port_offset: int = Field(
        default=1000,
        ge=0,
        le=20_000,
        description="Each process serves /metrics on its API port plus this (never on the API port); 0: none.",
    )
    triage_port: int = DEFAULT_SERVICE_PORTS["triage"]
    careplan_port: int = DEFAULT_SERVICE_PORTS["careplan"]
    registry_port: int = DEFAULT_SERVICE_PORTS["registry"]
    directory_port: int = DEFAULT_SERVICE_PORTS["directory"]
    reporting_port: int = DEFAULT_SERVICE_PORTS["reporting"]
    notify_port: int = DEFAULT_SERVICE_PORTS["notify"]
    triage_url: str | None = None
    careplan_url: str | None = None
    registry_url: str | None = None
    directory_url: str | None = None
    reporting_url: str | None = None
    notify_url: str | None = None
    public_url: str | None = Field(
        default=None,
        description="The gateway's address as callers know it: every absolute URL the suite hands out "
        "starts with it (shared/http.py public_base). Required in production. Default: the gateway's own "
        "address.",
    )
    upstream_connect_timeout_seconds: float = 3.0
    upstream_timeout_seconds: float = 30.0
    upstream_max_connections: int = 200
    trusted_proxies: str = Field(
        default="",
        description="Addresses or CIDRs (comma separated) of the proxies whose X-Forwarded-For is "
        "believed; never `*`. Default: none, the TCP peer is the caller.",
    )

    # --- traces (shared/tracing.py): off unless an OTLP endpoint is given ----------------------
    traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CMH_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces): spans are exported there. "
        "Also read from the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. Unset: no span is recorded.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="The standard OTLP base URL; traces go to its /v1/traces unless CMH_TRACES_ENDPOINT is set.",
    )

    # --- people signing in (gateway/web): an OpenID Connect provider ------------------------
    oidc_issuer: str | None = Field(
        default=None,
        description="The OpenID Connect provider people sign in with (its issuer URL; discovery at "
        "/.well-known/openid-configuration). `cmh run` starts a development one. Unset: no sign-in.",
    )
    oidc_client_id: str = Field(default="cmh-suite", description="The suite's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(default=None, description="The suite's client secret there.")
    oidc_scopes: str = Field(default="openid profile email", description="Scopes asked of the provider.")
    oidc_provider_name: str = Field(
        default="your organisation's account", description="How the sign-in page names the provider."
    )
    single_point_of_access: str = Field(
        default="RW5",
        description="ODS codes (comma separated) of the organisations running the single point of access: "
        "only their staff may be triage or crisis practitioners (those roles read every referral).",
    )
    oidc_organisation_claim: str | None = Field(
        default=None,
        description="A claim naming the person's organisation (ODS code, or charity/company number); with "
        "CMH_OIDC_ROLES_CLAIM, people unknown to `cmh users` are mapped from the provider's claims.",
    )
    oidc_roles_claim: str | None = Field(
        default=None,
        description="A claim listing the person's CMH Suite roles (a list or a space-separated string).",
    )
    oidc_team_claim: str | None = Field(default=None, description="A claim naming a team member's team id.")
    dev_oidc_provider: bool = Field(
        default=False,
        description="Set by `cmh run`: the provider is the development one (demo people); production refuses it.",
    )
    dev_oidc_port: int = Field(
        default=9400,
        ge=1,
        le=65535,
        description="Where `cmh run` starts its development OpenID Connect provider (when CMH_OIDC_ISSUER is unset).",
    )
    session_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="A person's session ends after this long without a request."
    )
    session_absolute_hours: float = Field(
        default=12.0,
        gt=0,
        le=24,
        description="A person's session ends this long after sign-in, whatever happens.",
    )

    # --- security ----------------------------------------------------------------------------
    token_issuer: str = Field(default="https://cmh-suite.local/oauth2", description="`iss` of access tokens.")
    token_audience: str = Field(default="cmh-suite-api", description="`aud` of access tokens.")
    token_lifetime_seconds: int = Field(default=300, ge=30, le=3600)
    token_leeway_seconds: int = Field(default=30, ge=0, le=300, description="Clock skew allowed on exp/nbf.")
    jwks_url: str | None = Field(
        default=None, description="Where services fetch the signing keys; default: the gateway's JWKS."
    )
    jwks_refresh_seconds: float = Field(
        default=30.0, gt=0, description="How often services refetch the JWKS (keep below the key lead time)."
    )
    jwks_min_refresh_seconds: float = Field(
        default=1.0, ge=0, description="Floor between unknown-kid refetches."
    )
    signing_key_lead_seconds: float = Field(
        default=60.0, ge=0, description="A new signing key is published this long before it signs."
    )
    client_assertion_max_seconds: int = Field(default=300, description="Longest private_key_jwt assertion.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Request body limit (gateway and services)."
    )
    # --- issue 18 §6: slow clients (shared/middleware.py RequestLimitsMiddleware, cmh/serving.py)
    body_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A request body must arrive within this."
    )
    keep_alive_timeout_seconds: int = Field(
        default=5, ge=1, description="Idle keep-alive connections close after this."
    )
    max_header_bytes: int = Field(
        default=16_384, ge=4096, description="Largest request head uvicorn buffers."
    )
    max_concurrency: int = Field(
        default=1000, ge=10, description="Connections plus tasks before uvicorn answers 503."
    )
    rate_limit_per_minute: int = Field(default=600, ge=1, description="Default per-client request rate.")
    public_rate_limit_per_minute: int = Field(
        default=300, ge=1, description="Per-address rate, public reads."
    )
    # --- the token endpoint under guessing (gateway/tokens.py) -------------------------------
    token_failure_limit: int = Field(
        default=10, ge=1, description="Failed secret attempts per client id in the window before 429."
    )
    token_failure_window_seconds: float = Field(
        default=60.0, gt=0, description="The window of CMH_TOKEN_FAILURE_LIMIT."
    )
    token_verify_workers: int = Field(
        default=2, ge=1, description="Threads checking old (Argon2) secret hashes."
    )
    token_verify_queue: int = Field(
        default=8, ge=0, description="Argon2 checks that may wait for a thread before 503."
    )
    # --- issue 18 §5: signing keys sealed at rest (gateway/keys.py) ---------------------------
    environment: Literal["development", "production"] = Field(
        default="development",
        description="production: no key is made up on the spot (the gateway refuses to start without "
        "its key-encryption key).",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) sealing the gateway's signing keys, comma separated, the first "
        "sealing and every one opening (rotation).",
    )
    key_encryption_key_file: Path | None = Field(
        default=None, description="A mounted file of such keys, one a line, the first sealing."
    )

    # --- operation ---------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = True
    ready_timeout_seconds: float = 60.0
    shutdown_drain_seconds: float = Field(
        default=3.0,
        ge=0,
        description="On SIGTERM, how long a process keeps serving with /ready false, so load balancers "
        "stop sending it requests before it stops listening.",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="How long in-flight requests, events and the outbox get to finish."
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("CMH_PUBLIC_URL is an http(s) address with no query: https://cmh.example.nhs.uk")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)  # ValueError: refused at startup, not at the first request
        return value

    def service_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    @property
    def single_point_of_access_codes(self) -> frozenset[str]:
        return frozenset(
            code.strip().upper() for code in self.single_point_of_access.split(",") if code.strip()
        )

    def service_urls(self, service: str) -> list[str]:
        """Base URLs of a service's replicas (`CMH_<SERVICE>_URL` may list several, comma separated:
        the gateway spreads requests over them and skips one that refuses connections)."""
        explicit = getattr(self, f"{service}_url", None)
        urls = [url.strip().rstrip("/") for url in (explicit or "").split(",") if url.strip()]
        return urls or [f"http://{self.host}:{self.service_port(service)}"]

    def service_url(self, service: str) -> str:
        """Base URL the gateway uses to reach a service (its first replica)."""
        return self.service_urls(service)[0]

    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def bus_closed(self) -> bool:
        """Each process connects to NATS as its own user (shared/bus_access.py)."""
        return self.nats_credentials_dir is not None

    def public_gateway_url(self) -> str:
        """The public address with no request to go by (`shared.http.public_base`)."""
        return public_base(self)

    def effective_jwks_url(self) -> str:
        return self.jwks_url or f"{self.gateway_url()}/.well-known/jwks.json"

    def database_url_for(self, owner: str) -> str:
        """The database URL of one service (or the gateway), with the global fallback applied."""
        if owner not in DATABASE_OWNERS:
            raise ValueError(f"unknown database owner {owner!r}")
        url = getattr(self, f"{owner}_database_url", None) or self.database_url
        if url is None:
            url = f"sqlite+aiosqlite:///{(self.var_dir / '{service}.db').as_posix()}"
        return url.replace("{service}", owner)

    def database_schema_for(self, owner: str) -> str:
        """The PostgreSQL schema holding one service's tables (ignored on SQLite)."""
        return f"{self.database_schema_prefix}{owner}"


def check_production(settings: Settings) -> None:
    """What production refuses to start without, checked as each process's app is made (the
    gateway's and every service's): the public address, so no absolute URL the suite hands out
    (links, Locations, webhook notifications) is ever made from a guess. The bus is checked as it is
    joined (`shared.broker.check_bus_settings`), the gateway's key-encryption key as its keys are
    opened (`gateway.keys`)."""
    if settings.environment != "production":
        return
    if settings.dev_oidc_provider:
        raise RuntimeError(
            "production refuses the development OpenID Connect provider (CMH_DEV_OIDC_PROVIDER): "
            "configure the organisation's provider with CMH_OIDC_ISSUER"
        )
    if settings.oidc_issuer and not settings.oidc_issuer.startswith("https://"):
        raise RuntimeError("production requires an https CMH_OIDC_ISSUER")
    if not settings.public_url:
        raise RuntimeError(
            "production requires CMH_PUBLIC_URL: the address partners reach the gateway at "
            "(every absolute URL the suite hands out starts with it)"
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
