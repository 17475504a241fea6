"""Will the pools fit? Connections per process and per server, against max_connections.

Pure arithmetic on what ``manage.py sapool`` gathered: the aliases' effective
options (``AliasInfo``) and, after ``--check``, the servers' limits
(``LiveCheck``). Each process has its own pools, so a server sees up to
processes x (POOL_SIZE + MAX_OVERFLOW) connections per alias; a thread holds at
most one connection per alias, so threads per process cap that sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends import BACKENDS

if TYPE_CHECKING:
    from .aliases import AliasInfo
    from .livecheck import LiveCheck

#: Share of max_connections above which the capacity verdict warns.
TIGHT = 0.8
_DEFAULT_PORTS = {b.vendor: b.default_port for b in BACKENDS if b.default_port is not None}


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


def server_key(vendor: str, host: str, port: str) -> str:
    """Name a server the way the capacity table does: vendor host:port."""
    port = port or str(_DEFAULT_PORTS.get(vendor, ""))
    where = f"{host}:{port}" if host else f"local socket{':' + port if port else ''}"
    return f"{vendor} {where}"


def per_process(options: Mapping[str, Any], threads: int | None) -> tuple[int | None, str]:
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


def verdict(total: int, max_connections: int) -> str:
    """Return "exceeds", "tight" (above TIGHT of the limit) or "ok"."""
    if total > max_connections:
        return "exceeds"
    return "tight" if total > TIGHT * max_connections else "ok"


def _message(
    server: str,
    found: str,
    at_most: str,
    total: int | None,
    max_connections: int | None,
    unbounded: Sequence[str],
    checked: bool,
) -> str:
    """Explain a verdict in one line, saying what to change when it warns."""
    if found == "unbounded":
        return (
            f"WARNING: {server}: no upper bound: MAX_OVERFLOW=-1 on alias "
            f"{', '.join(map(repr, unbounded))} lets every process open one connection "
            f"per thread that asks for one."
        )
    if found == "unknown":
        why = "the live check failed" if checked else "run with --check to compare"
        return f"{server}: {at_most}; max_connections unknown ({why})."
    assert total is not None and max_connections is not None
    if found == "exceeds":
        return (
            f"WARNING: {server}: {at_most}, more than max_connections={max_connections}: "
            f"under load the server will refuse connections. Lower POOL_SIZE + "
            f"MAX_OVERFLOW or the number of processes, or raise max_connections."
        )
    share = f"{100 * total // max_connections}% of max_connections={max_connections}"
    if found == "tight":
        return (
            f"WARNING: {server}: {at_most}, {share}: little room left for other clients "
            f"(migrations, shells, monitoring, a deploy's overlapping workers)."
        )
    return f"OK: {server}: {at_most}, {share}."


def capacity(
    infos: Sequence[AliasInfo],
    checks: Mapping[str, LiveCheck],
    processes: int,
    checked: bool,
    threads: int | None = None,
) -> list[ServerCapacity]:
    """Sum processes x (POOL_SIZE + MAX_OVERFLOW) per server and compare with its limit.

    With ``threads``, each alias counts min(threads, POOL_SIZE + MAX_OVERFLOW).
    SQLite aliases open no server connections and are left out.
    """
    servers: dict[str, list[AliasInfo]] = {}
    for info in infos:
        if info.pooled and info.options is not None and info.vendor != "sqlite":
            servers.setdefault(server_key(info.vendor, info.host, info.port), []).append(info)
    found = []
    for server, members in servers.items():
        names = [m.alias for m in members]
        sized = [(m.alias, *per_process(m.options, threads)) for m in members if m.options]
        unbounded = [alias for alias, cap, _ in sized if cap is None]
        per = None if unbounded else sum(cap for _, cap, _ in sized if cap is not None)
        total = None if per is None else processes * per
        live = [checks[a] for a in names if a in checks and checks[a].max_connections]
        max_connections = live[0].max_connections if live else None
        # Each alias's check counted the sessions open then; the checks run one
        # after another and keep their pooled connections, so the highest count
        # (usually the last) includes those of every alias checked before it.
        in_use = [c.connections_in_use for c in live if c.connections_in_use is not None]
        sizes = " + ".join(f"{alias} {formula}" for alias, _, formula in sized)
        at_most = f"at most {processes} processes x ({sizes}) = {total} connections"
        if total is None:
            outcome = "unbounded"
        elif max_connections is None:
            outcome = "unknown"
        else:
            outcome = verdict(total, max_connections)
        found.append(
            ServerCapacity(
                server=server,
                aliases=names,
                per_process=per,
                processes=processes,
                total=total,
                max_connections=max_connections,
                connections_in_use=max(in_use) if in_use else None,
                verdict=outcome,
                message=_message(
                    server, outcome, at_most, total, max_connections, unbounded, checked
                ),
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
