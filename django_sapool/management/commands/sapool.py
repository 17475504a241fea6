"""``manage.py sapool``: settings, pools and a live check of django_sapool's aliases.

    manage.py sapool                         # effective options and this process's pools
    manage.py sapool --check                 # connect, ping, server version and limits
    manage.py sapool --check --workers 4     # ... and will 4 worker processes fit?
    manage.py sapool --json                  # the same facts, machine-readable

The password is never shown: only ENGINE, NAME, HOST, PORT and USER are, and an
error message that happens to contain the password gets it masked.

This module parses the options and renders; the facts come from
django_sapool.aliases (settings), django_sapool.livecheck (the servers, through
each backend's ``sapool_server_facts``) and django_sapool.capacity (arithmetic).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from importlib import import_module
from typing import Any

import django
import sqlalchemy
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

import django_sapool
from django_sapool.aliases import AliasInfo, describe
from django_sapool.capacity import ServerCapacity, capacity, thread_notes
from django_sapool.livecheck import LiveCheck, live_check


def native_paths() -> dict[str, str]:
    """Return which path each native (ctypes) helper takes; {} before drivers/native.py."""
    try:
        module = import_module("django_sapool.drivers.native")
    except ModuleNotFoundError as exc:
        if exc.name != "django_sapool.drivers.native":
            raise
        return {}
    return dict(module.native_paths())


def _show(value: object) -> str:
    """Format a POOL_OPTIONS value for the text tables (strings quoted, as in Python)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: object) -> str:
    """Format a statistic (floats without trailing zeros, buckets comma-separated)."""
    if isinstance(value, tuple):
        return ",".join(_number(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        invalid = [info.alias for info in infos if info.errors]
        if options["check"]:
            for info in infos:
                if info.pooled and not info.errors:
                    password = databases[info.alias].get("PASSWORD")
                    checks[info.alias] = live_check(info.alias, password, reported=invalid)
        workers, threads = options["workers"], options["threads"]
        processes = (workers or 0) + options["processes"]
        servers = capacity(infos, checks, processes, options["check"], threads) if processes else []
        notes = thread_notes(infos, threads, processes) if threads else []
        pools = [p for p in django_sapool.pool_status() if p.alias in aliases]
        if options["json"]:
            report = {
                "django_sapool": django_sapool.__version__,
                "pid": os.getpid(),
                "native": native_paths(),
                "databases": [asdict(i) for i in infos],
                "checks": [asdict(c) for c in checks.values()],
                "capacity": {
                    "workers": workers,
                    "processes": options["processes"],
                    "threads": threads,
                    "servers": [asdict(s) for s in servers],
                    "notes": notes,
                },
                "pools": [asdict(p) for p in pools],
            }
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            out = _header()
            out += _settings(infos)
            out += _live(checks, invalid)
            out += _capacity(servers, workers or 0, options["processes"])
            out += notes
            out += _pools(pools)
            self.stdout.write("\n".join(out))
        problems = []
        if invalid:
            problems.append(f"invalid settings for alias {', '.join(map(repr, invalid))}")
        failed = [repr(c.alias) for c in checks.values() if not c.ok]
        if failed:
            problems.append(f"live check failed for alias {', '.join(failed)}")
        if problems:
            raise CommandError(f"django_sapool: {'; '.join(problems)}")


def _header() -> list[str]:
    """Versions, this process, and the native paths in use."""
    out = [
        f"django_sapool {django_sapool.__version__} (Django {django.get_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}), process {os.getpid()}"
    ]
    native = native_paths()
    if native:
        out.append("Native helpers: " + "; ".join(f"{k}: {v}" for k, v in native.items()))
    return [*out, ""]


def _settings(infos: Sequence[AliasInfo]) -> list[str]:
    """The effective options of our aliases, one column each; the others named."""
    ours = [i for i in infos if i.vendor]
    if not ours:
        out = ["No django_sapool alias in settings.DATABASES."]
    else:
        out = ["Settings (effective POOL_OPTIONS; the password is never shown)"]
        rows = [["", *(i.alias for i in ours)]]
        for label in ("ENGINE", "NAME", "HOST", "PORT", "USER"):
            rows.append([label, *(getattr(i, label.lower()) for i in ours)])
        keys = next((list(i.options) for i in ours if i.options), [])
        for key in keys:
            rows.append([key, *(_show(i.options[key]) if i.options else "-" for i in ours)])
        out += _table(rows)
        for info in ours:
            if info.note:
                out.append(f"{info.alias}: {info.note}")
            out += [f"error: {info.alias}: {error}" for error in info.errors]
    others = [i for i in infos if not i.vendor]
    if others:
        out.append(
            "Not pooled: " + ", ".join(f"{i.alias} ({i.engine or 'no ENGINE'})" for i in others)
        )
    return out


def _live(checks: Mapping[str, LiveCheck], invalid: Sequence[str]) -> list[str]:
    """The live check, one column per alias; nothing without --check."""
    if not checks:
        return []
    # Their errors are listed under Settings, once; the others are checked as usual.
    skipped = [f"not checked: {alias} (invalid settings, see above)" for alias in invalid]
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
    errors = [f"error: {c.alias}: {c.error}" for c in checks.values() if c.error]
    return ["", "Live check", *_table(rows), *errors, *skipped]


def _capacity(servers: Sequence[ServerCapacity], workers: int, others: int) -> list[str]:
    """The capacity table and verdicts; nothing without --workers or --processes."""
    if not (workers or others):
        return []
    described = " + ".join(
        text
        for count, text in ((workers, f"{workers} worker"), (others, f"{others} other"))
        if count
    )
    out = ["", f"Capacity: {described} processes, each with its own pools"]
    if not servers:
        return [*out, "No pooled server alias (SQLite opens no server connections)."]
    rows = [["server", "aliases", "per process", "total", "max_connections", "in use"]]
    for s in servers:
        rows.append(
            [
                s.server,
                ", ".join(s.aliases),
                "unbounded" if s.per_process is None else str(s.per_process),
                "unbounded" if s.total is None else str(s.total),
                "-" if s.max_connections is None else str(s.max_connections),
                "-" if s.connections_in_use is None else str(s.connections_in_use),
            ]
        )
    return [*out, *_table(rows), *(s.message for s in servers)]


def _pools(pools: Sequence[Any]) -> list[str]:
    """This process's pools (PoolStatus), one column each."""
    out = ["", "Pools in this process"]
    if not pools:
        return [
            *out,
            "none yet: pools are per process, and this one has not connected "
            "(in a running process, call django_sapool.pool_status())",
        ]
    rows = [["", *(p.alias for p in pools)]]
    for name in (f.name for f in fields(pools[0]) if f.name != "alias"):
        rows.append([name, *(_number(getattr(p, name)) for p in pools)])
    return [*out, *_table(rows)]
