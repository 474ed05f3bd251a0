"""`cdrwatch`: one command for every service.

    cdrwatch up [--simulate]     the embedded stack: broker, ingest, detector, api (+ dialers)
    cdrwatch ingest | detector | api     one service in the foreground
    cdrwatch simulate            simulated dialers posting CDRs to an ingest URL
    cdrwatch token create        a new bearer token (printed once, stored hashed)
    cdrwatch token list | revoke PREFIX      the tokens (never their secret); revoke one
    cdrwatch topics              create the Kafka topics on the configured broker
    cdrwatch report              the compliance audit pack (json, csv, pdf) to a file

Settings come from the environment (`CDRWATCH_*`, see services/common/settings.py); flags
override the few that matter on a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.common.settings import (
    ApiSettings,
    CommonSettings,
    DetectorSettings,
    IngestSettings,
)

if TYPE_CHECKING:
    from services.common.broker import EmbeddedBroker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdrwatch",
        description="Streaming compliance monitor for outbound call centres.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run the embedded stack (broker, ingest, detector, api) in the foreground",
        description="Start a local Kafka-compatible broker (Tansu, memory storage) unless "
        "CDRWATCH_KAFKA_BOOTSTRAP is set, create the topics, run ingest, detector and api, "
        "print the URLs and fresh tokens, and stop everything on Ctrl-C or SIGTERM.",
    )
    up.add_argument("--simulate", action="store_true", help="also run simulated dialers")
    up.add_argument(
        "--api-port",
        type=int,
        default=8080,
        help="api port (default 8080, or a free port when taken)",
    )
    up.add_argument(
        "--ingest-port",
        type=int,
        default=8081,
        help="ingest port (default 8081, or a free port when taken)",
    )
    up.add_argument(
        "--data-dir", type=Path, default=None, help="state directory (default .cdrwatch)"
    )

    for name, text in (
        ("ingest", "run the ingest HTTP service (POST /v1/cdrs)"),
        ("api", "run the API, dashboard and /metrics"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port")

    det = sub.add_parser(
        "detector",
        help="run one detector worker (faust)",
        description="Run one detector worker; start more for scale-out.",
    )
    det.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the detector's /metrics on 127.0.0.1:PORT",
    )
    det.add_argument(
        "--stage",
        choices=("all", "cdrs", "callees"),
        default=None,
        help="the stages this worker runs (default all; `cdrwatch up` runs a `cdrs` and a "
        "`callees` worker, one core each)",
    )

    sim = sub.add_parser(
        "simulate",
        help="post simulated dialer traffic to ingest",
        description="Post realistic CDRs for several campaigns, one batch "
        "a second, until interrupted.",
    )
    sim.add_argument("--ingest-url", required=True, help="e.g. http://127.0.0.1:8081")
    sim.add_argument(
        "--token",
        default=os.environ.get("CDRWATCH_SIMULATE_TOKEN"),
        help="ingest token (or CDRWATCH_SIMULATE_TOKEN)",
    )
    sim.add_argument("--seed", type=int, default=None, help="random seed")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run")

    tok = sub.add_parser("token", help="manage bearer tokens", description="Manage tokens.")
    tok_sub = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tok_sub.add_parser(
        "create",
        help="create a token and print it once",
        description="Create a token; only its hash is stored.",
    )
    create.add_argument(
        "--role", required=True, choices=("ingest", "viewer", "compliance", "admin")
    )
    create.add_argument("--tenant", default=None, help="bind the token to one tenant")
    create.add_argument(
        "--name", default=None, help='who holds it, e.g. "Giulia Rossi" (acks record it)'
    )
    tok_sub.add_parser(
        "list",
        help="list the tokens: prefix, name, role, tenant, created, revoked",
        description="List every token; the secret is never stored, so never shown.",
    )
    revoke = tok_sub.add_parser(
        "revoke",
        help="revoke a token by its prefix",
        description="Revoke the token(s) with this prefix (as `token list` shows it); "
        "the api refuses it within its 30 s verification cache.",
    )
    revoke.add_argument("prefix", help="the token's prefix, e.g. cdrw_AbC1234")

    _add_import_parser(sub)

    from services.report_cli import add_parser as add_report_parser

    add_report_parser(sub)

    sub.add_parser(
        "topics",
        help="create the Kafka topics (idempotent)",
        description="Create every cdrwatch topic on CDRWATCH_KAFKA_BOOTSTRAP.",
    )
    return parser


def _add_import_parser(sub: Any) -> None:
    from services.ingest.formats import FORMATS

    imp = sub.add_parser(
        "import",
        help="import dialer/PBX files (Asterisk, FreeSWITCH, Kamailio, VICIdial, NDJSON)",
        description="Map dialer files to CDR v1 and send them to the ingest API in batches "
        "(docs/integrations/). Streams large and gzip files, resumes from a checkpoint.",
    )
    imp.add_argument("paths", nargs="+", help="files (or, for freeswitch-json/xml, directories)")
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument(
        "--mapping", default=None, help="TOML mapping file (keys override the default)"
    )
    imp.add_argument(
        "--ingest-url", default=os.environ.get("CDRWATCH_IMPORT_URL", "http://127.0.0.1:8081")
    )
    imp.add_argument(
        "--token",
        default=os.environ.get("CDRWATCH_IMPORT_TOKEN"),
        help="ingest token (or CDRWATCH_IMPORT_TOKEN)",
    )
    imp.add_argument("--dry-run", action="store_true", help="parse, map and validate; send nothing")
    imp.add_argument("--follow", action="store_true", help="keep reading the last file as it grows")
    imp.add_argument("--checkpoint", default=None, help="default: <first path>.cdrwatch-checkpoint")
    imp.add_argument("--no-checkpoint", action="store_true")
    imp.add_argument("--batch-size", type=int, default=1000)
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(argv: Sequence[str] | None = None) -> int:
    from services.common.datadir import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)  # data dir files 0600, dirs 0700, in every child too
    args = _parser().parse_args(argv)
    command = args.command
    if command == "up":
        # Refused before anything starts, not as an api child that keeps dying.
        refusal = _retention_refusal(ApiSettings())
        if refusal is not None:
            print(f"cdrwatch up: {refusal}", file=sys.stderr)
            return 2
        return _up(args)
    if command == "ingest":
        from services.common.logging import configure_logging
        from services.ingest.app import main as ingest_main

        settings = IngestSettings(**_flags(host=args.host, port=args.port))
        configure_logging("ingest", settings.log_json)
        ingest_main(settings)
        return 0
    if command == "api":
        from services.api.app import main as api_main
        from services.common.logging import configure_logging

        api_settings = ApiSettings(**_flags(host=args.host, port=args.port))
        refusal = _retention_refusal(api_settings)
        if refusal is not None:
            print(f"cdrwatch api: {refusal}", file=sys.stderr)
            return 2
        configure_logging("api", api_settings.log_json)
        api_main(api_settings)
        return 0
    if command == "detector":
        from services.common.logging import configure_logging
        from services.detector.app import main as detector_main

        detector_settings = DetectorSettings(
            **_flags(metrics_port=args.metrics_port, stage=args.stage)
        )
        configure_logging("detector", detector_settings.log_json)
        detector_main(detector_settings)
        return 0
    if command == "simulate":
        if not args.token:
            print(
                "cdrwatch simulate: --token (or CDRWATCH_SIMULATE_TOKEN) is required",
                file=sys.stderr,
            )
            return 2
        from services.simulate import run_simulation

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_simulation(
                    args.ingest_url, args.token, seed=args.seed, duration_seconds=args.duration
                )
            )
        return 0
    if command == "import":
        from services.common.gc_tuning import tune_for_throughput
        from services.importer import main as import_main

        tune_for_throughput()  # many short-lived objects a row, as in the ingest
        return import_main(args)
    if command == "report":
        from services.report_cli import main as report_main

        return report_main(args)
    if command == "token":
        return _token_command(args)
    if command == "topics":
        from services.common.kafka import ensure_topics

        common = CommonSettings()
        asyncio.run(
            ensure_topics(
                common.kafka_bootstrap,
                common.kafka_partitions,
                replication_factor=common.kafka_replication_factor,
            )
        )
        print(f"topics ready on {common.kafka_bootstrap}")
        return 0
    raise AssertionError(command)


def _retention_refusal(settings: ApiSettings) -> str | None:
    """Why the api's retention is too short for a shipped profile (`it`: 730 days, Garante
    2014 "conservare per almeno due anni"), naming the profile; None when it is not."""
    from services.detector.core.profiles import retention_refusal

    refusal = retention_refusal(settings.alert_retention_days)
    return None if refusal is None else f"CDRWATCH_ALERT_RETENTION_DAYS: {refusal}"


def _flags(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def _token_command(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    action = args.token_command
    if action == "create":
        try:
            token = asyncio.run(_create_token(settings, args.role, args.tenant, args.name))
        except ValueError as exc:
            print(f"cdrwatch token create: {exc}", file=sys.stderr)
            return 2
        print(token)
        return 0
    if action == "list":
        print(_token_table(asyncio.run(_with_tokens(settings, lambda t: t.list_tokens()))))
        return 0
    revoked = asyncio.run(_with_tokens(settings, lambda t: t.revoke(args.prefix)))
    if not revoked:
        print(f"cdrwatch token revoke: no active token with prefix {args.prefix}", file=sys.stderr)
        return 1
    print(f"revoked {revoked} token(s) with prefix {args.prefix}")
    return 0


def _token_table(tokens: Sequence[Any]) -> str:
    """`token list` as aligned columns; times in UTC to the second."""

    def when(instant: Any) -> str:
        return "-" if instant is None else instant.strftime("%Y-%m-%dT%H:%M:%SZ")

    rows = [("PREFIX", "NAME", "ROLE", "TENANT", "CREATED", "REVOKED")]
    rows += [
        (t.prefix, t.name or "-", t.role, t.tenant_id or "-")
        + (when(t.created_at), when(t.revoked_at))
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _with_tokens(settings: CommonSettings, action: Callable[[Any], Any]) -> Any:
    from services.common.auth import TokenStore
    from services.common.datadir import ensure_private_dir
    from services.common.db import create_engine, migrate

    ensure_private_dir(settings.data_dir)
    engine = create_engine(settings.resolved_database_url())
    try:
        await migrate(engine)
        return await action(TokenStore(engine))
    finally:
        await engine.dispose()


async def _create_token(
    settings: CommonSettings, role: str, tenant: str | None, name: str | None = None
) -> str:
    token: str = await _with_tokens(
        settings,
        lambda tokens: tokens.create(role, tenant, name),
    )
    return token


# -- cdrwatch up --------------------------------------------------------------------------


def _port_or_free(preferred: int) -> int:
    import socket

    from services.common.broker import free_port

    with socket.socket() as sock:
        # As the servers bind (SO_REUSEADDR): a port whose old connections linger in
        # TIME_WAIT after a restart is still ours.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _die_with_parent() -> None:
    """Runs in each child before exec: SIGTERM it if `cdrwatch up` itself dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # Ctrl-C reaches `up` only; `up` stops the children in order


class _Stack:
    """The children of `cdrwatch up`, supervised: a service that dies is restarted after a
    back-off (0.5 s, doubling, at most `MAX_BACKOFF` s; reset once it ran `STABLE` s), for
    as long as the stack runs, as systemd's Restart=always would. Restarts are scheduled,
    never slept on, so the loop keeps watching the broker meanwhile."""

    MAX_BACKOFF = 3.0
    STABLE = 10.0

    def __init__(self, log_dir: Path, run_dir: Path) -> None:
        self.log_dir = log_dir
        self.run_dir = run_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.started: dict[str, float] = {}
        self.quick_deaths: dict[str, int] = {}
        self.due: dict[str, float] = {}

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.specs[name] = (args, env)
        self.due.pop(name, None)
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "services.cli", *args],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        self.children[name] = proc
        self.started[name] = time.monotonic()
        _write_private(self.run_dir / f"{name}.pid", f"{proc.pid}\n")

    def respawn(self, name: str) -> None:
        args, env = self.specs[name]
        args = list(args)
        for index, arg in enumerate(args[:-1]):
            if arg in ("--port", "--metrics-port"):
                # Taken by someone else meanwhile (another stack on this machine)? Move.
                args[index + 1] = str(_port_or_free(int(args[index + 1])))
        self.spawn(name, args, env)

    def dead(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.children.items() if p.poll() is not None]

    def supervise(self) -> None:
        """Schedule the restart of dead children; start those whose back-off is over."""
        now = time.monotonic()
        for name, code in self.dead():
            if name in self.due:
                continue
            ran = now - self.started.get(name, now)
            quick = 0 if ran >= self.STABLE else self.quick_deaths.get(name, 0) + 1
            self.quick_deaths[name] = quick
            delay = min(self.MAX_BACKOFF, 0.5 * 2 ** max(quick - 1, 0)) if quick else 0.2
            self.due[name] = now + delay
            print(
                f"{name} exited with {code}; restarting it in {delay:.1f} s "
                f"(see {self.log_dir / (name + '.log')})",
                file=sys.stderr,
                flush=True,
            )
        for name, when in list(self.due.items()):
            if when <= now:
                self.respawn(name)

    def kill(self, name: str, grace: float = 0.0) -> None:
        """Stop one child (SIGTERM and `grace` seconds, else SIGKILL at once); no restart."""
        proc = self.children.get(name)
        self.due.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        if grace > 0:
            proc.terminate()
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self.due.clear()
        for proc in reversed(self.children.values()):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for name, proc in reversed(self.children.items()):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (CONTRACT decision 8)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _wait_ready(url: str, stack: _Stack, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A child that dies while starting (a port taken meanwhile by another program) is
        # restarted; one that keeps dying at once fails the start.
        stack.supervise()
        failing = [name for name, count in stack.quick_deaths.items() if count >= 5]
        if failing:
            raise RuntimeError(f"service exited during start-up: {failing}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


TOKENS_FILE = "tokens"
_UP_ROLES = ("admin", "compliance", "viewer", "ingest")
# Tables of the api store that are derived from the topics: rebuilt by replaying the
# archive into a fresh broker. Tokens, campaign settings, alerts with their history,
# acknowledgements and notes are user data and are kept. Of `rejections`, the rows of the
# stages the replay derives again are emptied (services.common.db.rejections).
DERIVED_TABLES = ("minute_stats", "window_stats", "consumer_positions")


async def _prepare_store(settings: CommonSettings, *, reset_derived: bool) -> dict[str, str]:
    """Migrate the store, empty its derived tables when asked, and return the stack's
    tokens: those kept in data_dir/tokens when they still verify, else new ones (the file
    is rewritten, 0600)."""
    from services.common.auth import TokenStore
    from services.common.db import (
        REJECTION_STAGES_NOT_REPLAYED,
        create_engine,
        migrate,
        minute_stats,
        rejections,
    )

    engine = create_engine(settings.resolved_database_url())
    try:
        await migrate(engine)
        if reset_derived:
            async with engine.begin() as conn:
                for name in DERIVED_TABLES:
                    await conn.execute(minute_stats.metadata.tables[name].delete())
                await conn.execute(
                    rejections.delete().where(
                        rejections.c.stage.not_in(REJECTION_STAGES_NOT_REPLAYED)
                    )
                )
        store = TokenStore(engine, cache_ttl_seconds=0)
        path = settings.data_dir / TOKENS_FILE
        kept: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                role, _, token = line.strip().partition(" ")
                principal = await store.verify(token.strip()) if token else None
                if principal is not None and principal.role == role and principal.tenant_id is None:
                    kept[role] = token.strip()
        tokens = {
            role: kept.get(role) or await store.create(role)  # type: ignore[arg-type]
            for role in _UP_ROLES
        }
        if tokens != kept:
            _write_private(path, "".join(f"{role} {token}\n" for role, token in tokens.items()))
        return tokens
    finally:
        await engine.dispose()


async def _rebuild_topics(settings: CommonSettings, bootstrap: str, archive: bool) -> str:
    """Create the topics on a fresh broker and replay the archive into it."""
    from services.common.archive import Archive
    from services.common.kafka import ensure_topics
    from services.common.replay import replay_archive

    await ensure_topics(bootstrap, settings.kafka_partitions)
    if not archive:
        return "archive off: nothing replayed"
    with Archive.in_data_dir(settings.data_dir) as store:
        result = await replay_archive(
            store, settings.model_copy(update={"kafka_bootstrap": bootstrap})
        )
    return (
        f"replayed {result.cdrs} CDRs and {result.settings} campaign settings "
        f"in {result.seconds:.1f} s"
    )


def _up(args: argparse.Namespace) -> int:
    from services.common.broker import EmbeddedBroker
    from services.common.kafka import ensure_topics
    from services.common.logging import configure_logging

    env = dict(os.environ)
    if args.data_dir is not None:
        env["CDRWATCH_DATA_DIR"] = str(args.data_dir)
    embedded = "CDRWATCH_KAFKA_BOOTSTRAP" not in os.environ
    if embedded:
        # The embedded broker keeps topics in memory: the archive is what survives it.
        env.setdefault("CDRWATCH_ARCHIVE", "true")
    settings = CommonSettings(_env_file=None, **_env_overrides(env))  # type: ignore[call-arg, arg-type]
    configure_logging("up", settings.log_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from services.common.datadir import ensure_private_dir, secure_data_dir

    data_dir = secure_data_dir(settings.data_dir.resolve())
    log_dir = ensure_private_dir(data_dir / "logs")
    run_dir = ensure_private_dir(data_dir / "run")
    env["CDRWATCH_DATA_DIR"] = str(data_dir)
    settings = settings.model_copy(update={"data_dir": data_dir})
    marker = run_dir / "recovering"
    marker.unlink(missing_ok=True)
    env["CDRWATCH_RECOVERY_MARKER"] = str(marker)

    stopping = False

    def _on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    broker: EmbeddedBroker | None = None
    stack = _Stack(log_dir, run_dir)
    try:
        if not embedded:
            bootstrap = os.environ["CDRWATCH_KAFKA_BOOTSTRAP"]
            print(f"Using Kafka at {bootstrap}", flush=True)
            asyncio.run(ensure_topics(bootstrap, settings.kafka_partitions))
        else:
            broker = EmbeddedBroker(log_path=log_dir / "broker.log")
            bootstrap = broker.start()
            _write_private(run_dir / "broker.pid", f"{broker.pid}\n")
            env["CDRWATCH_KAFKA_IDEMPOTENCE"] = "false"
            # A fresh broker: what the detector and the api derived from the previous one
            # is rebuilt from the archive (never merged with it).
            shutil.rmtree(data_dir / "detector", ignore_errors=True)
            print(asyncio.run(_rebuild_topics(settings, bootstrap, settings.archive)), flush=True)
        env["CDRWATCH_KAFKA_BOOTSTRAP"] = bootstrap

        tokens = asyncio.run(_prepare_store(settings, reset_derived=embedded))
        from services.ingest.app import load_pseudonym_key

        load_pseudonym_key(IngestSettings(data_dir=data_dir))  # created once, shared

        api_port = _port_or_free(args.api_port)
        ingest_port = _port_or_free(args.ingest_port)
        metrics_port = _port_or_free(9102)
        callee_metrics_port = _port_or_free(9103)
        # The detector's two stages in two processes: each runs Python on its own core.
        stack.spawn(
            "detector", ["detector", "--stage", "cdrs", "--metrics-port", str(metrics_port)], env
        )
        stack.spawn(
            "detector-callees",
            ["detector", "--stage", "callees", "--metrics-port", str(callee_metrics_port)],
            env,
        )
        stack.spawn("ingest", ["ingest", "--port", str(ingest_port)], env)
        stack.spawn("api", ["api", "--port", str(api_port)], env)
        api_url = f"http://127.0.0.1:{api_port}"
        ingest_url = f"http://127.0.0.1:{ingest_port}"
        _wait_ready(f"{ingest_url}/readyz", stack)
        _wait_ready(f"{api_url}/readyz", stack)
        if args.simulate:
            sim_env = dict(env, CDRWATCH_SIMULATE_TOKEN=tokens["ingest"])
            stack.spawn("simulate", ["simulate", "--ingest-url", ingest_url], sim_env)

        print(
            "\n".join(
                [
                    "",
                    "cdrwatch is running.",
                    f"  API and dashboard: {api_url}",
                    f"  Ingest (POST /v1/cdrs, also served by the API): {ingest_url}",
                    f"  Detector metrics: http://127.0.0.1:{metrics_port}/metrics (CDR "
                    f"stage), http://127.0.0.1:{callee_metrics_port}/metrics (per-callee stage)",
                    f"  Kafka bootstrap: {bootstrap}",
                    f"  Data and logs: {data_dir}",
                    f"  Tokens (kept in {data_dir / TOKENS_FILE}; create more with "
                    "`cdrwatch token create`):",
                    *(f"    {role:<10} {token}" for role, token in tokens.items()),
                    f"  Try: curl -H 'Authorization: Bearer {tokens['viewer']}' "
                    f"{api_url}/v1/alerts",
                    "Press Ctrl-C to stop.",
                    "",
                ]
            ),
            flush=True,
        )
        while not stopping:
            if broker is not None and not broker.is_running():
                _recover_broker(broker, stack, settings, run_dir, marker, lambda: stopping)
            stack.supervise()
            time.sleep(0.1)
        return 0
    except Exception as exc:  # start-up failed: say why, stop what started
        print(f"cdrwatch up failed: {exc} (logs in {log_dir})", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        if broker is not None:
            broker.stop()
            (run_dir / "broker.pid").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        print("cdrwatch stopped.", flush=True)


# Services that hold state derived from the broker's topics: stopped while the broker is
# rebuilt, started again afterwards (the detector rebuilds its tables from the replayed
# topics, the api reads them again into its emptied derived tables).
_DERIVED_SERVICES = ("detector", "detector-callees", "api")


def _recover_broker(
    broker: EmbeddedBroker,
    stack: _Stack,
    settings: CommonSettings,
    run_dir: Path,
    marker: Path,
    stopping: Callable[[], bool],
) -> None:
    """The embedded broker died (its topics with it): restart it on the same port, create
    the topics, empty the derived state, replay the archive, restart the detector and the
    api. While this runs the recovery marker exists: ingest answers 503 and every
    /readyz says `recovering`. A failed attempt is retried until it succeeds or `up` stops."""
    port = broker.port
    code = broker._process.returncode if broker._process is not None else None  # noqa: SLF001
    print(
        f"the broker exited with {code}; restarting it on port {port} and replaying the archive",
        file=sys.stderr,
        flush=True,
    )
    _write_private(marker, "broker restart\n")
    for name in _DERIVED_SERVICES:
        stack.kill(name, grace=0.0 if name.startswith("detector") else 5.0)
    delay = 0.2
    while not stopping():
        try:
            broker.stop()
            broker.start(port=port)
            _write_private(run_dir / "broker.pid", f"{broker.pid}\n")
            shutil.rmtree(settings.data_dir / "detector", ignore_errors=True)
            asyncio.run(_prepare_store(settings, reset_derived=True))
            summary = asyncio.run(_rebuild_topics(settings, broker.bootstrap, settings.archive))
            break
        except Exception as exc:
            print(f"broker recovery failed: {exc}; retrying", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
    else:
        return
    for name in _DERIVED_SERVICES:
        stack.respawn(name)
    marker.unlink(missing_ok=True)
    print(f"broker restarted: {summary}", file=sys.stderr, flush=True)


def _env_overrides(env: dict[str, str]) -> dict[str, str]:
    """Settings read from `env` rather than os.environ (--data-dir, the archive default)."""
    return {
        field: env[name]
        for field, name in (("data_dir", "CDRWATCH_DATA_DIR"), ("archive", "CDRWATCH_ARCHIVE"))
        if env.get(name)
    }


if __name__ == "__main__":
    sys.exit(main())
