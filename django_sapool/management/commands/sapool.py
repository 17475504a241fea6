"""``manage.py sapool``: settings, pools and a live check of django_sapool's aliases.

    manage.py sapool                         # effective options and this process's pools
    manage.py sapool --check                 # connect, ping, server version and limits
    manage.py sapool --check --workers 4     # ... and will 4 worker processes fit?
    manage.py sapool --json                  # the same facts, machine-readable

The password is never shown: only ENGINE, NAME, HOST, PORT and USER are, and an
error message that happens to contain the password gets it masked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import django
import sqlalchemy
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

import django_sapool
from django_sapool.checks import (
    backend_kind,
    is_in_memory_sqlite,
    pool_options_errors,
    wrapper_class,
)
from django_sapool.conf import conn_max_age_error, django_pool_error, read_pool_options
from django_sapool.wrapper import PooledDatabaseWrapperMixin

#: Share of max_connections above which the capacity verdict warns.
TIGHT = 0.8
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_VENDORS = {
    "postgresql": "postgresql",
    "postgis": "postgresql",
    "mysql": "mysql",
    "mysql_gis": "mysql",
    "sqlite3": "sqlite",
    "spatialite": "sqlite",
}


@dataclass
class AliasInfo:
    """What the settings say about one alias (never the password)."""

    alias: str
    engine: str
    name: str
    host: str
    port: str
    user: str
    pooled: bool
    vendor: str
    note: str | None = None
    options: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class LiveCheck:
    """The outcome of connecting to one alias."""

    alias: str
    ok: bool = False
    error: str | None = None
    connect_ms: float | None = None
    ping_ms: float | None = None
    server_version: str | None = None
    max_connections: int | None = None
    connections_in_use: int | None = None


@dataclass
class ServerCapacity:
    """Connections the given processes may open to one server, against its limit."""

    server: str
    aliases: list[str]
    per_process: int | None  # None: MAX_OVERFLOW=-1 somewhere, no upper bound
    processes: int
    total: int | None
    max_connections: int | None
    connections_in_use: int | None
    verdict: str  # ok, tight, exceeds, unbounded, unknown
    message: str


def _text(value: object) -> str:
    """Return a setting as text, None as the empty string."""
    return "" if value is None else str(value)


def _show(value: object) -> str:
    """Format a POOL_OPTIONS value for the text tables (strings quoted, as in Python)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: object) -> str:
    """Format a statistic (floats without trailing zeros) for the text tables."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _vendor(engine: str) -> str:
    """Return the vendor of a django_sapool ENGINE (a subclass's, by importing it)."""
    if engine.startswith("django_sapool.backends."):
        return _VENDORS.get(engine.rsplit(".", 1)[-1], engine)
    wrapper = wrapper_class(engine)
    return str(getattr(wrapper, "vendor", engine))


def _mask(text: str, password: object) -> str:
    """Flatten a driver's error message to one line, masking the password if it has it."""
    text = " ".join(text.split())
    if isinstance(password, str) and password:
        return text.replace(password, "********")
    return text


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Return rows as lines with left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _at_least(minimum: int) -> Any:
    """Return an argparse type that accepts integers >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def describe(alias: str, settings_dict: Mapping[str, Any]) -> AliasInfo:
    """Return what the settings of one alias say, validated like the backend does."""
    engine = _text(settings_dict.get("ENGINE"))
    kind = backend_kind(engine)
    info = AliasInfo(
        alias=alias,
        engine=engine,
        name=_text(settings_dict.get("NAME")),
        host=_text(settings_dict.get("HOST")),
        port=_text(settings_dict.get("PORT")),
        user=_text(settings_dict.get("USER")),
        pooled=kind is not None,
        vendor=_vendor(engine) if kind is not None else "",
    )
    if kind is None:
        info.note = "not a django_sapool ENGINE"
    elif kind == "sqlite" and is_in_memory_sqlite(settings_dict.get("NAME")):
        info.pooled = False
        info.note = "in-memory SQLite: not pooled"
    else:
        for problem in (conn_max_age_error, django_pool_error):
            message = problem(alias, settings_dict)
            if message is not None:
                info.errors.append(message)
        info.errors += pool_options_errors(alias, settings_dict)
        if not info.errors:
            info.options = read_pool_options(alias, settings_dict).as_settings()
    return info


def _server_facts(wrapper: Any) -> tuple[str, int | None, int | None]:
    """Return the server's version, max_connections and connections in use."""
    with wrapper.cursor() as cursor:
        if wrapper.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = f"PostgreSQL {cursor.fetchone()[0]}"
            cursor.execute("SHOW max_connections")
            max_connections = int(cursor.fetchone()[0])
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
            return version, max_connections, int(cursor.fetchone()[0])
        if wrapper.vendor == "mysql":
            cursor.execute("SELECT VERSION(), @@max_connections")
            raw_version, max_connections = cursor.fetchone()
            version = raw_version if "mariadb" in raw_version.lower() else f"MySQL {raw_version}"
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            return version, int(max_connections), int(cursor.fetchone()[1])
        cursor.execute("SELECT sqlite_version()")
        return f"SQLite {cursor.fetchone()[0]}", None, None


def live_check(alias: str, password: object) -> LiveCheck:
    """Connect through the pool, ping, and ask the server for its version and limits."""
    result = LiveCheck(alias)
    try:
        wrapper = connections[alias]
        if not isinstance(wrapper, PooledDatabaseWrapperMixin):
            raise ImproperlyConfigured(f"alias {alias!r} is not a django_sapool backend")
        # Called from a running process (call_command), this thread may already
        # hold a connection: use it, and leave it as it was.
        was_connected = wrapper.connection is not None
        started = time.perf_counter()
        wrapper.ensure_connection()
        result.connect_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            pings = []
            for _ in range(3):
                started = time.perf_counter()
                wrapper.sapool_driver.ping(wrapper.connection)
                pings.append((time.perf_counter() - started) * 1000)
            result.ping_ms = round(statistics.median(pings), 3)
            facts = _server_facts(wrapper)
            result.server_version, result.max_connections, result.connections_in_use = facts
        finally:
            if not was_connected:
                wrapper.close()
        result.ok = True
    except Exception as exc:  # any failure is the finding; report it, don't crash
        result.error = _mask(f"{type(exc).__name__}: {exc}".strip(), password)
    return result


def _server_key(info: AliasInfo) -> str:
    port = info.port or str(DEFAULT_PORTS.get(info.vendor, ""))
    where = f"{info.host}:{port}" if info.host else f"local socket{':' + port if port else ''}"
    return f"{info.vendor} {where}"


def _per_process(options: Mapping[str, Any], threads: int | None) -> tuple[int | None, str]:
    """Return the most connections one process opens for an alias, and how it is derived.

    A thread holds at most one connection per alias, so threads cap a process
    below POOL_SIZE + MAX_OVERFLOW (and bound MAX_OVERFLOW=-1).
    """
    size, overflow = options["POOL_SIZE"], options["MAX_OVERFLOW"]
    cap = None if overflow < 0 else size + overflow
    formula = f"{size}+{overflow}" if overflow >= 0 else f"{size}+unlimited"
    if threads is not None and (cap is None or threads < cap):
        return threads, f"min({threads} threads, {formula})"
    return cap, formula


def capacity(
    infos: Sequence[AliasInfo],
    checks: Mapping[str, LiveCheck],
    processes: int,
    checked: bool,
    threads: int | None = None,
) -> list[ServerCapacity]:
    """Sum processes x (POOL_SIZE + MAX_OVERFLOW) per server and compare with its limit.

    With ``threads``, each alias counts min(threads, POOL_SIZE + MAX_OVERFLOW).
    """
    servers: dict[str, list[AliasInfo]] = {}
    for info in infos:
        if info.pooled and info.options is not None and info.vendor != "sqlite":
            servers.setdefault(_server_key(info), []).append(info)
    found = []
    for server, members in servers.items():
        names = [m.alias for m in members]
        sized = [(m.alias, *_per_process(m.options, threads)) for m in members if m.options]
        unbounded = [alias for alias, cap, _ in sized if cap is None]
        per_process = None
        if not unbounded:
            per_process = sum(cap for _, cap, _ in sized if cap is not None)
        total = None if per_process is None else processes * per_process
        live = [checks[a] for a in names if a in checks and checks[a].max_connections]
        max_connections = live[0].max_connections if live else None
        in_use = live[0].connections_in_use if live else None
        sizes = " + ".join(f"{alias} {formula}" for alias, _, formula in sized)
        at_most = f"at most {processes} processes x ({sizes}) = {total} connections"
        if total is None:
            verdict = "unbounded"
            message = (
                f"WARNING: {server}: no upper bound: MAX_OVERFLOW=-1 on alias "
                f"{', '.join(map(repr, unbounded))} lets every process open one connection "
                f"per thread that asks for one."
            )
        elif max_connections is None:
            verdict = "unknown"
            why = "the live check failed" if checked else "run with --check to compare"
            message = f"{server}: {at_most}; max_connections unknown ({why})."
        elif total > max_connections:
            verdict = "exceeds"
            message = (
                f"WARNING: {server}: {at_most}, more than max_connections={max_connections}: "
                f"under load the server will refuse connections. Lower POOL_SIZE + "
                f"MAX_OVERFLOW or the number of processes, or raise max_connections."
            )
        elif total > TIGHT * max_connections:
            verdict = "tight"
            message = (
                f"WARNING: {server}: {at_most}, {100 * total // max_connections}% of "
                f"max_connections={max_connections}: little room left for other clients "
                f"(migrations, shells, monitoring, a deploy's overlapping workers)."
            )
        else:
            verdict = "ok"
            message = (
                f"OK: {server}: {at_most}, {100 * total // max_connections}% of "
                f"max_connections={max_connections}."
            )
        found.append(
            ServerCapacity(
                server=server,
                aliases=names,
                per_process=per_process,
                processes=processes,
                total=total,
                max_connections=max_connections,
                connections_in_use=in_use,
                verdict=verdict,
                message=message,
            )
        )
    return found


def thread_notes(infos: Sequence[AliasInfo], threads: int, processes: int) -> list[str]:
    """Explain, per alias, what happens when threads outnumber a process's connections."""
    notes = []
    for info in infos:
        o = info.options
        if o is None or o["MAX_OVERFLOW"] < 0:
            continue
        cap = o["POOL_SIZE"] + o["MAX_OVERFLOW"]
        if threads > cap:
            notes.append(
                f"note: {threads} threads per process share at most {cap} connections of "
                f"alias {info.alias!r} (POOL_SIZE={o['POOL_SIZE']} + "
                f"MAX_OVERFLOW={o['MAX_OVERFLOW']}); when more than {cap} run queries at "
                f"once, the others wait up to TIMEOUT={o['TIMEOUT']:g}s."
            )
    if threads > 1 and processes:
        notes.append(
            f"note: Django's default backend would hold one connection per thread: up to "
            f"{processes} processes x {threads} threads = {processes * threads} per alias."
        )
    return notes


class Command(BaseCommand):
    help = (
        "Show django_sapool's effective pool options per alias and this process's pools; "
        "with --check, connect to each pooled alias and compare the pool sizes with the "
        "server's max_connections. Never shows the password."
    )
    # Report bad pool settings instead of refusing to run on their system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="connect to each pooled alias: connect and ping time, server version, "
            "max_connections and connections in use; exit 1 if one fails",
        )
        parser.add_argument(
            "--workers",
            type=_at_least(1),
            metavar="N",
            help="worker processes serving the site (gunicorn --workers, uWSGI --processes); "
            "each has its own pools. Prints N x (POOL_SIZE + MAX_OVERFLOW) per server and, "
            "with --check, compares it with max_connections",
        )
        parser.add_argument(
            "--processes",
            type=_at_least(0),
            default=0,
            metavar="P",
            help="other processes using these settings (Celery workers, cron jobs), each "
            "with its own pools; added to --workers",
        )
        parser.add_argument(
            "--threads",
            type=_at_least(1),
            metavar="T",
            help="threads per worker process; they share their process's pool, and a process "
            "never needs more connections per alias than it has threads",
        )
        parser.add_argument(
            "--database",
            action="append",
            dest="aliases",
            metavar="ALIAS",
            help="only this alias (repeatable); default: every alias",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")

    def handle(self, *args: Any, **options: Any) -> None:
        databases: Mapping[str, Mapping[str, Any]] = settings.DATABASES
        aliases = options["aliases"] or list(databases)
        unknown = [a for a in aliases if a not in databases]
        if unknown:
            raise CommandError(
                f"unknown alias {unknown[0]!r}; settings.DATABASES has "
                f"{', '.join(map(repr, databases))}"
            )
        infos = [describe(alias, databases[alias]) for alias in aliases]
        checks: dict[str, LiveCheck] = {}
        if options["check"]:
            for info in infos:
                if info.pooled and not info.errors:
                    checks[info.alias] = live_check(
                        info.alias, databases[info.alias].get("PASSWORD")
                    )
        processes = (options["workers"] or 0) + options["processes"]
        servers = (
            capacity(infos, checks, processes, options["check"], options["threads"])
            if processes
            else []
        )
        notes = thread_notes(infos, options["threads"], processes) if options["threads"] else []
        pools = django_sapool.pool_status()
        pools = [p for p in pools if p.alias in aliases]
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "django_sapool": django_sapool.__version__,
                        "pid": os.getpid(),
                        "databases": [asdict(i) for i in infos],
                        "checks": [asdict(c) for c in checks.values()],
                        "capacity": {
                            "workers": options["workers"],
                            "processes": options["processes"],
                            "threads": options["threads"],
                            "servers": [asdict(s) for s in servers],
                            "notes": notes,
                        },
                        "pools": [asdict(p) for p in pools],
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            self._print(infos, checks, servers, notes, pools, options)
        problems = []
        invalid = [repr(info.alias) for info in infos if info.errors]
        if invalid:
            problems.append(f"invalid settings for alias {', '.join(invalid)}")
        failed = [repr(c.alias) for c in checks.values() if not c.ok]
        if failed:
            problems.append(f"live check failed for alias {', '.join(failed)}")
        if problems:
            raise CommandError(f"django_sapool: {'; '.join(problems)}")

    def _print(
        self,
        infos: Sequence[AliasInfo],
        checks: Mapping[str, LiveCheck],
        servers: Sequence[ServerCapacity],
        notes: Sequence[str],
        pools: Sequence[Any],
        options: Mapping[str, Any],
    ) -> None:
        out: list[str] = [
            f"django_sapool {django_sapool.__version__} (Django {django.get_version()}, "
            f"SQLAlchemy {sqlalchemy.__version__}), process {os.getpid()}",
            "",
        ]
        pooled = [i for i in infos if i.engine and backend_kind(i.engine) is not None]
        if pooled:
            out.append("Settings (effective POOL_OPTIONS; the password is never shown)")
            rows = [["", *(i.alias for i in pooled)]]
            for label in ("ENGINE", "NAME", "HOST", "PORT", "USER"):
                rows.append([label, *(getattr(i, label.lower()) for i in pooled)])
            keys = next((list(i.options) for i in pooled if i.options), [])
            for key in keys:
                rows.append([key, *(_show(i.options[key]) if i.options else "-" for i in pooled)])
            out += _table(rows)
            for info in pooled:
                if info.note:
                    out.append(f"{info.alias}: {info.note}")
                out += [f"error: {info.alias}: {error}" for error in info.errors]
        else:
            out.append("No django_sapool alias in settings.DATABASES.")
        others = [i for i in infos if backend_kind(i.engine) is None]
        if others:
            out.append(
                "Not pooled: " + ", ".join(f"{i.alias} ({i.engine or 'no ENGINE'})" for i in others)
            )
        if checks:
            out += ["", "Live check"]
            rows = [["", *checks]]
            rows.append(["result", *("ok" if c.ok else "FAILED" for c in checks.values())])
            for label, attr, fmt in (
                ("connect ms", "connect_ms", "{:.1f}"),
                ("ping ms", "ping_ms", "{:.2f}"),
                ("server", "server_version", "{}"),
                ("max_connections", "max_connections", "{}"),
                ("connections in use", "connections_in_use", "{}"),
            ):
                values = [getattr(c, attr) for c in checks.values()]
                rows.append([label, *("-" if v is None else fmt.format(v) for v in values)])
            out += _table(rows)
            out += [f"error: {c.alias}: {c.error}" for c in checks.values() if c.error]
        workers, others = options["workers"] or 0, options["processes"]
        if workers or others:
            described = " + ".join(
                text
                for count, text in ((workers, f"{workers} worker"), (others, f"{others} other"))
                if count
            )
            out += ["", f"Capacity: {described} processes, each with its own pools"]
            if servers:
                rows = [["server", "aliases", "per process", "total", "max_connections", "in use"]]
                for s in servers:
                    rows.append(
                        [
                            s.server,
                            ", ".join(s.aliases),
                            "unbounded" if s.per_process is None else str(s.per_process),
                            "unbounded" if s.total is None else str(s.total),
                            _text(s.max_connections) or "-",
                            _text(s.connections_in_use) or "-",
                        ]
                    )
                out += _table(rows)
                out += [s.message for s in servers]
            else:
                out.append("No pooled server alias (SQLite opens no server connections).")
        out += notes
        out += ["", "Pools in this process"]
        if pools:
            rows = [["", *(p.alias for p in pools)]]
            for name in asdict(pools[0]):
                if name != "alias":
                    rows.append([name, *(_number(getattr(p, name)) for p in pools)])
            out += _table(rows)
        else:
            out.append(
                "none yet: pools are per process, and this one has not connected "
                "(in a running process, call django_sapool.pool_status())"
            )
        self.stdout.write("\n".join(out))
