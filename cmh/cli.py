"""The `cmh` command: run the suite, serve one process, apply migrations (`cmh = "cmh.cli:main"`,
or `python -m cmh.cli`). The gateway's and the services' own commands are registered by them."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib.metadata import version
from pathlib import Path

from shared.settings import DATABASE_OWNERS, PROCESSES, get_settings


def cmd_run(_args: argparse.Namespace) -> int:
    from cmh.supervisor import Supervisor

    return Supervisor(get_settings()).run()


def cmd_cluster(args: argparse.Namespace) -> int:
    from cmh.supervisor import Supervisor, Topology

    settings = get_settings()
    if not (settings.database_url or "").startswith("postgresql"):
        print(
            "cmh cluster: replicas share one database; set CMH_DATABASE_URL=postgresql://...",
            file=sys.stderr,
        )
        return 2
    return Supervisor(settings, Topology(replicas=args.replicas, nats_nodes=args.nats_nodes)).run()


def cmd_serve(args: argparse.Namespace) -> int:
    from cmh.serving import serve
    from shared.logs import configure_logging

    settings = get_settings()
    configure_logging(args.name, settings.log_level, json_format=settings.log_json)
    default_port = settings.gateway_port if args.name == "gateway" else settings.service_port(args.name)
    serve(args.name, settings, host=args.host or settings.host, port=args.port or default_port)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from cmh.migrations import migrate

    settings = get_settings()
    unknown = sorted(set(args.owners) - set(DATABASE_OWNERS))
    if unknown:
        print(
            f"cmh migrate: unknown {', '.join(unknown)}; choose from {', '.join(DATABASE_OWNERS)}",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        for owner in args.owners or DATABASE_OWNERS:
            await migrate(
                owner,
                settings.database_url_for(owner),
                schema=settings.database_schema_for(owner),
                revision=args.revision,
            )
            print(f"{owner}: at {args.revision}")

    asyncio.run(run())
    return 0


def cmd_seed(_args: argparse.Namespace) -> int:
    from services.directory.seed import seed_database as seed_directory
    from services.registry.seed import seed_database

    report = asyncio.run(seed_database(get_settings()))
    assert report is not None
    print(f"registry: {report.created} created, {report.updated} updated, {report.unchanged} unchanged")
    directory = asyncio.run(seed_directory(get_settings()))
    assert directory is not None
    print(f"directory (needs taxonomy and SAMPLE partner services): {directory.summary()}")
    return 0


def cmd_bus_provision(_args: argparse.Namespace) -> int:
    from cmh.serving import bus_plan
    from shared.broker import beside_the_suite
    from shared.consumer import provision_bus

    settings = beside_the_suite(get_settings())
    count = asyncio.run(provision_bus(settings, bus_plan()))
    print(f"stream {settings.stream_name} and {count} durable consumers provisioned")
    return 0


def cmd_bus_authorization(args: argparse.Namespace) -> int:
    import json

    from cmh.serving import bus_plan
    from shared.bus_access import ADMIN, read_password, server_authorization

    plan = bus_plan()
    passwords = {identity: read_password(args.credentials, identity) for identity in (ADMIN, *plan)}
    print(json.dumps(server_authorization(passwords, plan, get_settings().stream_name), indent=2))
    return 0


def cmd_bus_prepare(args: argparse.Namespace) -> int:
    from cmh.serving import bus_plan
    from shared.bus_access import prepare_closed_bus

    plan = bus_plan()
    credentials, config = prepare_closed_bus(args.dir, plan, get_settings().stream_name)
    print(f"{len(plan) + 1} NATS passwords in {credentials} (made where missing), users in {config}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from cmh.reconcile import run
    from shared.broker import beside_the_suite

    return run(
        beside_the_suite(get_settings()), hours=args.hours, repair=args.repair, processes=args.process or None
    )


def cmd_status(args: argparse.Namespace) -> int:
    from cmh.status import run

    return run(
        get_settings(),
        urls=args.url or (),
        replicas=args.replicas,
        timeout=args.timeout,
        as_json_output=args.json,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmh", description="CMH Suite command line")
    # The installed distribution's version (pyproject.toml's [project] version): `cmh-suite 0.1.0`.
    parser.add_argument("--version", action="version", version=f"cmh-suite {version('cmh-suite')}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the whole suite (bundled NATS, SQLite under var/)")
    run.set_defaults(func=cmd_run)

    cluster = commands.add_parser(
        "cluster",
        help="run the suite as a cluster on this machine: a JetStream cluster, several processes of "
        "every service against PostgreSQL (CMH_DATABASE_URL), behind the gateway",
    )
    cluster.add_argument("--replicas", type=int, default=2, choices=range(1, 10), metavar="N")
    cluster.add_argument("--nats-nodes", type=int, default=3, choices=(1, 3, 5))
    cluster.set_defaults(func=cmd_cluster)
    serve = commands.add_parser("serve", help="serve one service or the gateway in this process")
    serve.add_argument("name", choices=PROCESSES)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("owners", nargs="*", metavar="OWNER", help=f"any of {', '.join(DATABASE_OWNERS)}")
    migrate.add_argument("--revision", default="head", help="target revision (head, base, or an id)")
    migrate.set_defaults(func=cmd_migrate)

    seed = commands.add_parser(
        "seed", help="load the Lancashire and South Cumbria reference and the sample directory (idempotent)"
    )
    seed.set_defaults(func=cmd_seed)

    bus = commands.add_parser("bus", help="the closed event bus (NATS users and durable consumers)")
    bus_commands = bus.add_subparsers(dest="bus_command", required=True)
    provision = bus_commands.add_parser(
        "provision", help="as the admin: make the stream and every process's durable consumers"
    )
    provision.set_defaults(func=cmd_bus_provision)
    authorization = bus_commands.add_parser(
        "authorization",
        help="print the nats-server authorization block (users, bcrypt hashes, permissions) for "
        "an external server, from a directory of <identity>.password files",
    )
    authorization.add_argument("--credentials", type=Path, required=True, metavar="DIR")
    authorization.set_defaults(func=cmd_bus_authorization)
    prepare = bus_commands.add_parser(
        "prepare",
        help="for a nats-server of your own (Docker Compose): a password per identity under "
        "DIR/credentials, made where there is none, and the server's configuration DIR/auth.json",
    )
    prepare.add_argument("--dir", type=Path, required=True, metavar="DIR")
    prepare.set_defaults(func=cmd_bus_prepare)

    reconcile = commands.add_parser(
        "reconcile",
        help="compare every outbox and consumer inbox with the event stream; report (exit 1) or "
        "--repair what is missing (event ids only)",
    )
    reconcile.add_argument("--hours", type=float, default=24.0, help="how far back to look (default 24)")
    reconcile.add_argument("--process", action="append", choices=PROCESSES, help="only these processes")
    reconcile.add_argument("--repair", action="store_true", help="publish each missing event again")
    reconcile.set_defaults(func=cmd_reconcile)

    status = commands.add_parser(
        "status",
        help="scrape every process's /metrics and print the pipeline's health and the alert rules "
        "true now (exit 1 while one is, or a process does not answer)",
    )
    status.add_argument(
        "--url",
        action="append",
        metavar="NAME=URL",
        help="scrape this process at this /metrics address instead (repeat for each); with it, only "
        "the processes given are scraped",
    )
    status.add_argument(
        "--replicas",
        type=int,
        default=1,
        choices=range(1, 10),
        metavar="N",
        help="the processes `cmh cluster --replicas N` runs (default 1: `cmh run`)",
    )
    status.add_argument("--timeout", type=float, default=3.0, help="seconds a scrape may take (default 3)")
    status.add_argument("--json", action="store_true", help="print it as JSON, for scripts")
    status.set_defaults(func=cmd_status)

    # The gateway owns clients, keys and tokens; its commands are registered by it.
    from gateway.admin import register

    register(commands)
    from gateway.audit_chain import register as register_audit

    register_audit(commands)
    from services.directory.cli import register as register_directory

    register_directory(commands)
    from services.reporting.cli import register as register_reporting

    register_reporting(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
