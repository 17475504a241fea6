"""Turn ``results.json`` (``benchmarks/harness.py``) into RESULTS.md, a plot and README's table.

    python benchmarks/report.py [RESULTS_DIR] [--no-readme]

(``scripts/bench --report-only`` runs this with the bench venv.) The README table is
only rewritten from a complete default run (no ``--only``, not ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

CONTENDER_ORDER = (
    "default",
    "persistent",
    "persistent+hc",
    "django-pool",
    "dbcp",
    "pgbouncer",
    "sapool",
    "pg-real-pool",
    "sapool-txn",
)
WORKER_ORDER = ("sync", "gthread", "gthread-io")
VIEW_ORDER = ("one", "ten", "write", "io")
#: The contender the others are compared with, per view (default: sapool). On /io it is
#: django_sapool lending per transaction (issue 15).
REFERENCE = {"io": "sapool-txn"}
#: The cells of the headline table (one-query view), when they were measured.
HEADLINE = (
    ("pg", "sync"),
    ("pg", "gthread"),
    ("mariadb", "sync"),
    ("mariadb", "gthread"),
    ("pg-tls", "sync"),
)
VIEW_TEXT = {
    "one": "/one (1 query)",
    "ten": "/ten (10 queries)",
    "write": "/write (INSERT + UPDATE in atomic())",
    "io": "/io (query, 50 ms sleep, query)",
}

Cell = tuple[str, str, str]  # target, worker, view


def _order(key: str, order: tuple[str, ...]) -> int:
    return order.index(key) if key in order else len(order)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def reference(view: str) -> str:
    """The contender whose req/s the ratios of that view's cells divide."""
    return REFERENCE.get(view, "sapool")


def summarize(data: dict[str, Any]) -> dict[Cell, dict[str, dict[str, Any]]]:
    """Per cell and contender: medians over rounds, and the reference's per-round ratios.

    The reference is sapool, or on /io sapool-txn (:data:`REFERENCE`).
    """
    runs: dict[Cell, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in data["runs"]:
        runs[(r["target"], r["worker"], r["view"])][r["contender"]].append(r)
    cells: dict[Cell, dict[str, dict[str, Any]]] = {}
    for cell, by_contender in runs.items():
        ref = reference(cell[2])
        ref_by_round = {
            r["round"]: r["rps"] for r in by_contender.get(ref, []) if "failed" not in r
        }
        out: dict[str, dict[str, Any]] = {}
        for contender, rs in by_contender.items():
            ok = [r for r in rs if "failed" not in r]
            s: dict[str, Any] = {
                "rounds": len(ok),
                "failed": [r["failed"] for r in rs if "failed" in r],
                "errors": sum(sum(r["errors"].values()) for r in ok),
            }
            if ok:
                rps = [r["rps"] for r in ok]
                s.update(
                    rps=median(rps),
                    rps_min=min(rps),
                    rps_max=max(rps),
                    p50_ms=median([r["wrk"]["p50_us"] / 1000 for r in ok]),
                    p99_ms=median([r["wrk"]["p99_us"] / 1000 for r in ok]),
                    connections_per_1k=median([r["connections_per_1k"] for r in ok]),
                    statements_per_request=median(
                        [
                            r["statements_per_request"]
                            for r in ok
                            if r["statements_per_request"] is not None
                        ]
                    ),
                    pings_per_request=median(
                        [r["pings_per_request"] for r in ok if "pings_per_request" in r]
                    ),
                    background_per_s=max(
                        (r["background_per_s"] for r in ok if "background_per_s" in r), default=None
                    ),
                    evicted=any(r.get("statements_evicted") for r in ok),
                )
                peaks = [r["sessions_peak"] for r in ok if r.get("sessions_peak") is not None]
                if peaks:
                    # The most server sessions seen in any round, and the median of
                    # the rounds' peaks and of their means.
                    s.update(
                        sessions_peak=max(peaks),
                        sessions_peak_median=median(peaks),
                        sessions_mean=median(
                            [r["sessions_mean"] for r in ok if r.get("sessions_mean") is not None]
                        ),
                    )
                if any("server_cap" in r for r in ok):
                    s["server_cap"] = ok[0].get("server_cap")
                sampler_errors = [r["sessions_error"] for r in ok if "sessions_error" in r]
                if sampler_errors:
                    s["sessions_error"] = sampler_errors[0]
                ratios = [
                    ref_by_round[r["round"]] / r["rps"]
                    for r in ok
                    if r["round"] in ref_by_round and r["rps"]
                ]
                if ratios and contender != ref:
                    s.update(ratio=median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
            out[contender] = s
        cells[cell] = dict(sorted(out.items(), key=lambda kv: _order(kv[0], CONTENDER_ORDER)))
    return dict(
        sorted(
            cells.items(),
            key=lambda kv: (
                list(data["targets"]).index(kv[0][0]),
                _order(kv[0][1], WORKER_ORDER),
                _order(kv[0][2], VIEW_ORDER),
            ),
        )
    )


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio_text(s: dict[str, Any]) -> str:
    if "ratio" not in s:
        return ""
    return f"{s['ratio']:.2f}× ({s['ratio_min']:.2f}–{s['ratio_max']:.2f})"


def worker_text(data: dict[str, Any], worker: str) -> str:
    w = data["parameters"]["workers"][worker]
    threads = f" x {w['threads']} threads" if (w.get("kind") or worker) == "gthread" else ""
    cap = (
        f"; every pool capped at {w['pool_cap']} connections per worker"
        if w.get("pool_cap") is not None
        else ""
    )
    return f"{worker} workers ({w['workers']}{threads}{cap}; wrk -c{w['connections']})"


def sessions_text(s: dict[str, Any]) -> str:
    """Peak server sessions (max over rounds; median of the rounds' peaks) / cap."""
    if s.get("sessions_peak") is None:
        return "n/a" + (f" ({s['sessions_error'][:60]})" if s.get("sessions_error") else "")
    text = f"{s['sessions_peak']}"
    if (
        s.get("sessions_peak_median") is not None
        and s["sessions_peak_median"] != s["sessions_peak"]
    ):
        text += f" ({s['sessions_peak_median']:g})"
    cap = s.get("server_cap")
    text += f" / {cap}" if cap is not None else " / no cap"
    if cap is not None and s["sessions_peak"] > cap:
        text += " ⚠"
    return text


def cell_table(
    data: dict[str, Any], stats: dict[str, dict[str, Any]], vendor: str, view: str = "one"
) -> list[str]:
    pings = vendor == "mysql"
    ref = reference(view)
    sampled = any("sessions_peak" in s or "sessions_error" in s for s in stats.values())
    head = "| contender | req/s median (min–max) | p50 ms | p99 ms | conns / 1k req | stmts / req |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if pings:
        head += " of which pings |"
        rule += "---:|"
    if sampled:
        head += " peak server sessions / cap |"
        rule += "---:|"
    head += f" {ref} ÷ contender, req/s: median (min–max over rounds) |"
    rule += "---:|"
    lines = [head, rule]
    for contender, s in stats.items():
        name = f"**{contender}**" if contender == ref else contender
        if not s["rounds"]:
            lines.append(
                f"| {name} | failed: {s['failed'][0].splitlines()[0][:120]} |"
                + " |" * (6 + pings + sampled)
            )
            continue
        flags = []
        if s["errors"]:
            flags.append(f"{s['errors']} HTTP/socket errors")
        if s["failed"]:
            flags.append(f"{len(s['failed'])} round(s) failed")
        flag = f" ⚠ {', '.join(flags)}" if flags else ""
        row = (
            f"| {name}{flag} | {num(s['rps'])} ({num(s['rps_min'])}–{num(s['rps_max'])}) "
            f"| {num(s['p50_ms'], 2)} | {num(s['p99_ms'], 2)} | {num(s['connections_per_1k'], 1)} "
            f"| {num(s['statements_per_request'], 2)} |"
        )
        if pings:
            row += f" {num(s['pings_per_request'], 2)} |"
        if sampled:
            row += f" {sessions_text(s)} |"
        row += f" {ratio_text(s)} |"
        lines.append(row)
    return lines


def io_worker(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The /io comparison's worker type (the one whose pools are capped), if the run had it."""
    return next((w for w in parameters["workers"].values() if w.get("pool_cap") is not None), None)


def io_layout(parameters: dict[str, Any]) -> str:
    """The /io worker layout, e.g. "2 worker processes x 16 threads"."""
    io = io_worker(parameters)
    if io is None:
        return "threads"
    processes = "process" if io["workers"] == 1 else "processes"
    return f"{io['workers']} worker {processes} x {io['threads']} threads"


def headline(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]]) -> list[str]:
    """Rows: contenders; columns: the one-query cells; each: req/s (sapool ÷ it)."""
    cols = [(t, w) for t, w in HEADLINE if (t, w, "one") in cells]
    if not cols:
        return []
    contenders = [c for c in CONTENDER_ORDER if any(c in cells[(t, w, "one")] for t, w in cols)]
    titles = {t: data["targets"][t]["title"].replace(" (sslmode=require)", "") for t, _ in cols}
    lines = [
        "| /one: req/s (sapool ÷ it: median, min–max) | "
        + " | ".join(f"{titles[t]}, {w}" for t, w in cols)
        + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for contender in contenders:
        row = [f"**{contender}**" if contender == "sapool" else contender]
        for t, w in cols:
            s = cells[(t, w, "one")].get(contender)
            if not s or not s["rounds"]:
                row.append("—" if not s else "failed")
            elif "ratio" in s:
                row.append(
                    f"{num(s['rps'])} ({s['ratio']:.2f}×, "
                    f"{s['ratio_min']:.2f}–{s['ratio_max']:.2f})"
                )
            else:
                row.append(f"**{num(s['rps'])}**")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def io_headline(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]]) -> list[str]:
    """Rows: contenders; columns: the /io cells; each: req/s (sapool-txn ÷ it), peak sessions."""
    cols = [(t, w) for t, w, v in cells if v == "io"]
    if not cols:
        return []
    ref = REFERENCE["io"]
    contenders = [c for c in CONTENDER_ORDER if any(c in cells[(t, w, "io")] for t, w in cols)]
    lines = [
        f"| /io: req/s ({ref} ÷ it: median, min–max); peak server sessions / cap | "
        + " | ".join(f"{data['targets'][t]['title']}, {w}" for t, w in cols)
        + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for contender in contenders:
        row = [f"**{contender}**" if contender == ref else contender]
        for t, w in cols:
            s = cells[(t, w, "io")].get(contender)
            if not s or not s["rounds"]:
                row.append("—" if not s else "failed")
                continue
            speed = f"**{num(s['rps'])}**" if contender == ref else num(s["rps"])
            if "ratio" in s:
                speed += f" ({s['ratio']:.2f}×, {s['ratio_min']:.2f}–{s['ratio_max']:.2f})"
            row.append(f"{speed}; {sessions_text(s)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def target_check(cells: dict[Cell, dict[str, dict[str, Any]]]) -> list[str]:
    """Per cell: sapool against the best other contender and against `persistent`."""
    lines = [
        "| cell | best other contender | sapool ÷ best (min–max) | sapool ÷ persistent (min–max) |",
        "|---|---|---:|---:|",
    ]
    for (target, worker, view), stats in cells.items():
        if reference(view) != "sapool":
            continue  # /io: io_check()
        others = {c: s for c, s in stats.items() if c != "sapool" and s.get("rps") and "ratio" in s}
        if "sapool" not in stats or not others:
            continue
        best = max(others, key=lambda c: others[c]["rps"])
        persistent = others.get("persistent")
        lines.append(
            f"| {target} {worker} /{view} | {best} ({num(others[best]['rps'])} req/s) "
            f"| {ratio_text(others[best])} | {ratio_text(persistent) if persistent else 'n/a'} |"
        )
    return lines


def io_check(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]]) -> list[str]:
    """Issue 15's goal per /io cell: sapool-txn's req/s ≥ 1.00× every contender's, with
    no more server sessions than its pool size (the cap times the workers)."""
    ref = REFERENCE["io"]
    lines = []
    for (target, worker, view), stats in cells.items():
        if view != "io":
            continue
        title = f"{data['targets'][target]['title']} · {worker_text(data, worker)}"
        mine = stats.get(ref)
        if not mine or not mine.get("rounds"):
            lines += [
                "",
                f"- {title}: {ref} did not run"
                + (
                    f" (failed: {mine['failed'][0].splitlines()[0][:200]})"
                    if mine and mine["failed"]
                    else ""
                )
                + ".",
            ]
            continue
        lines += [
            "",
            f"**{title}**",
            "",
            f"| contender | req/s median (min–max) | {ref} ÷ contender: median (min–max) "
            "| peak server sessions / cap |",
            "|---|---:|---:|---:|",
        ]
        behind = []
        for contender, s in stats.items():
            if not s.get("rounds"):
                lines.append(f"| {contender} | failed | | |")
                continue
            name = f"**{contender}**" if contender == ref else contender
            lines.append(
                f"| {name} | {num(s['rps'])} ({num(s['rps_min'])}–{num(s['rps_max'])}) "
                f"| {ratio_text(s) or '—'} | {sessions_text(s)} |"
            )
            if "ratio" in s and s["ratio"] < 1:
                behind.append(f"{contender} ({s['ratio']:.2f}×)")
        cap, peak = mine.get("server_cap"), mine.get("sessions_peak")
        lines.append("")
        lines.append(
            f"- {ref} ≥ 1.00× every contender (median of per-round ratios): "
            + ("**yes**" if not behind else f"**no**: behind {', '.join(behind)}")
            + "; its worst round against each is the min in its row."
        )
        if peak is None:
            lines.append(f"- {ref}'s server sessions: not sampled.")
        else:
            lines.append(
                f"- {ref}'s peak server sessions: {peak}, pool size {cap}: "
                + ("**within**" if cap is not None and peak <= cap else "**over**")
                + "."
            )
    if not lines:
        return []
    return [
        "",
        '## LEND = "transaction" on /io (issue 15)',
        "",
        '`sapool-txn` (django_sapool with `LEND = "transaction"`) against every contender '
        "on the view that waits 50 ms between its two queries, with more threads than "
        "connections: every pooled contender (dbcp, django-pool, pg-real-pool, sapool, "
        "sapool-txn) holds at most the same number of connections per worker, PgBouncer "
        "that number times the workers; `default` and the `persistent` ones have no pool "
        "(one session per busy thread: no cap). Peak server sessions: the most sessions "
        "connected to the bench database in any 0.1 s sample of any round (in parentheses "
        "the median of the rounds' peaks, when it differs) / the most the contender may "
        "open. Goal: ≥ 1.00× every contender, peak ≤ the pool size.",
        *lines,
    ]


def settings_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| contender | DATABASES['default'] (PostgreSQL; MariaDB the same, "
        "with the mysql backends) |",
        "|---|---|",
    ]
    for contender, db in data["contender_settings"].items():
        shown = {k: v for k, v in db.items() if k not in ("NAME", "HOST", "PORT", "USER")}
        if contender == "pgbouncer":
            shown["(HOST, PORT)"] = "PgBouncer, transaction pooling"
        lines.append(f"| {contender} | `{json.dumps(shown)}` |")
    io_settings = data.get("contender_settings_io")
    if io_settings and any(cell_view == "io" for _, _, cell_view in summarize(data)):
        p = data["parameters"]
        io = io_worker(p)
        bouncer = "PgBouncer, transaction pooling"
        if io:
            bouncer += f", default_pool_size {io['pool_cap'] * io['workers']} (set at run time" + (
                f"; {p['pgbouncer_default_pool_size']} for the other runs)"
                if p.get("pgbouncer_default_pool_size")
                else ")"
            )
        lines += [
            "",
            "In the /io comparison (pools capped per worker process; `default` and the "
            "`persistent` ones as above):",
            "",
            "| contender | DATABASES['default'] |",
            "|---|---|",
        ]
        for contender, db in io_settings.items():
            shown = {k: v for k, v in db.items() if k not in ("NAME", "HOST", "PORT", "USER")}
            if contender == "pgbouncer":
                shown["(HOST, PORT)"] = bouncer
            lines.append(f"| {contender} | `{json.dumps(shown)}` |")
    return lines


def markdown(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]]) -> str:
    p = data["parameters"]
    m = data["machine"]
    v = data["versions"]
    lines = [
        "# django_sapool HTTP benchmark results",
        "",
        "Generated by `benchmarks/report.py` from `results.json`; how it works and what each "
        "column means: [benchmarks/README.md](../README.md)."
        if not data["quick"]
        else "A `--quick` smoke run: 1 round of short runs, not for comparisons.",
        "",
        f"- Command: `{data['command']}`",
        f"- Date: {data['started']} – {data['finished']} (UTC)",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory']}; {m['os']}, Linux {m['kernel']}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- Servers: "
        + "; ".join(f"{name} at {at}" for name, at in data.get("servers", {}).items()),
        f"- git: {data['git']['commit']}"
        + (
            " (with uncommitted changes in django_sapool/)"
            if data["git"].get("django_sapool_uncommitted")
            else ""
        ),
        f"- Load: wrk, {p['duration_s']:g} s per run after "
        f"{p['warmup_s_per_view']:g} s of warm-up per view, "
        f"{p['rounds']} round(s), contenders interleaved (each once per round, order rotated); "
        "gunicorn "
        + "; ".join(
            worker_text(data, w)
            for w in p["workers"]
            if any(cell_worker == w for _, cell_worker, _ in cells)
        ),
    ]
    if p["only"]:
        lines.append(f"- Subset: --only {p['only']}")
    notes = [n for t in data["targets"].values() for n in t["notes"]]
    for name, err in data.get("statements_errors", {}).items():
        notes.append(f"{name}: statements not counted: {err}")
    background = [
        (cell, c, s["background_per_s"])
        for cell, stats in cells.items()
        for c, s in stats.items()
        if s.get("background_per_s") is not None
    ]
    if background:
        worst = max(background, key=lambda x: x[2])
        if worst[2] < 1:
            notes.append(
                "MariaDB's counters are global, and nothing else used the server: in a quiet "
                "0.3 s right after each run, other traffic was 0 statements/s."
            )
        else:
            notes.append(
                "MariaDB's counters are global: other clients' traffic, measured in a quiet "
                f"0.3 s right after each run, peaked at {worst[2]:.0f} statements/s "
                f"({' '.join(worst[0])}, {worst[1]}); a few statements/s is the server's own "
                "background, much more means someone else was using the server and the "
                "MariaDB statement/connection figures of that round are inflated (medians "
                "damp one such round)."
            )
    evicted = [r for r in data["runs"] if r.get("statements_evicted")]
    if evicted:
        notes.append(
            f"pg_stat_statements evicted entries (pg_stat_statements.max reached, other "
            f"databases' statements) during {len(evicted)} of {len(data['runs'])} runs; had "
            "one of ours been evicted, that run's stmts / req would be low: compare it with "
            "the same cell's other rounds in results.json (`statements_evicted`)."
        )
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    head = headline(data, cells)
    if head:
        lines += [
            "",
            "## One-query view (headline)",
            "",
            "Requests per second (median over rounds) and, in parentheses, sapool's req/s "
            "divided by that contender's in the same round: median and min–max of the "
            "per-round ratios (> 1: sapool faster).",
            "",
            *head,
        ]
    check = target_check(cells)
    if len(check) > 2:  # more than the table's head
        lines += [
            "",
            "## sapool against the best other contender and against `persistent`",
            "",
            "Goal: sapool ≥ 1.00× the best contender and ≥ 0.98× persistent in every cell.",
            "",
            *check,
        ]
    lines += [
        *io_check(data, cells),
        "",
        "## Every cell",
        "",
        "req/s: median over rounds (min–max). p50/p99: wrk's latency percentiles (median over "
        "rounds). conns / 1k req: server sessions opened per 1000 requests. stmts / req: "
        "statements the server executed per request"
        + (
            " (MariaDB: including COM_PING, counted again under 'of which pings')."
            if any(t["vendor"] == "mysql" for t in data["targets"].values())
            else "."
        ),
    ]
    for (target, worker, view), stats in cells.items():
        t = data["targets"][target]
        lines += [
            "",
            f"### {t['title']} · {worker_text(data, worker)} · {VIEW_TEXT.get(view, view)}",
            "",
            *cell_table(data, stats, t["vendor"], view),
        ]
    lines += ["", "## Contenders' settings", "", *settings_table(data), ""]
    return "\n".join(lines)


def plot(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((t, w) for t, w, _ in cells))
    views = [v for v in VIEW_ORDER if any(v == cv for _, _, cv in cells)]
    views += sorted({cv for _, _, cv in cells} - set(views))
    fig, axes = plt.subplots(
        len(groups),
        len(views),
        figsize=(max(4.6 * len(views), 9.0), 3.0 * len(groups)),
        squeeze=False,
    )
    # tab10 without its red, which is sapool's alone.
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]
    colors = dict(zip(CONTENDER_ORDER, palette, strict=False))
    colors["sapool"] = "#d62728"
    colors["sapool-txn"] = "#8b0000"  # dark red: sapool lending per transaction
    for i, (target, worker) in enumerate(groups):
        for j, view in enumerate(views):
            ax = axes[i][j]
            stats = cells.get((target, worker, view))
            if not stats:
                ax.axis("off")
                continue
            names = [c for c, s in stats.items() if s.get("rps")]
            values = [stats[c]["rps"] for c in names]
            low = [stats[c]["rps"] - stats[c]["rps_min"] for c in names]
            high = [stats[c]["rps_max"] - stats[c]["rps"] for c in names]
            ax.bar(
                range(len(names)),
                values,
                yerr=[low, high],
                capsize=3,
                color=[colors.get(c, "grey") for c in names],
            )
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{data['targets'][target]['title']}\n{worker} · /{view}", fontsize=9)
            ax.set_ylabel("req/s", fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"django_sapool HTTP benchmark ({data['started'][:10]}): median req/s, bars = min–max over "
        f"{data['parameters']['rounds']} rounds",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    fig.savefig(path, dpi=80)
    plt.close(fig)


def readme_section(data: dict[str, Any], cells: dict[Cell, dict[str, dict[str, Any]]]) -> str:
    p = data["parameters"]
    return "\n".join(
        [
            START,
            f"Measured {data['started'][:10]} on {data['machine']['cpus']} CPUs "
            f"({data['machine']['cpu']}), "
            f"django_sapool {data['versions'].get('django-sapool', '?')} "
            f"at {data['git']['commit']}, Django {data['versions'].get('Django', '?')}, "
            f"{p['rounds']} rounds of {p['duration_s']:g} s per contender, interleaved. "
            "Requests/s of the one-query view (median over rounds), and in parentheses "
            "sapool's req/s divided by that contender's in the same round: the median and "
            "the range over rounds (a wide range means a noisy machine: then trust the "
            "connection and statement counts in RESULTS.md more than the speeds).",
            "Servers: "
            + "; ".join(f"{name} at {at}" for name, at in data.get("servers", {}).items())
            + ".",
            "",
            *headline(data, cells),
            *(
                [
                    "",
                    '`LEND = "transaction"` (`sapool-txn`) on `/io` (a query, 50 ms of '
                    f"simulated I/O, a query; {io_layout(p)}, every pool capped at "
                    f"{p.get('io_pool_cap', '?')} connections per worker):",
                    "",
                    *io_headline(data, cells),
                ]
                if io_headline(data, cells)
                else []
            ),
            "",
            "Every cell (10-query and write views, latencies, connections opened and statements "
            "per request), the spread over rounds, versions and the plot: "
            "[benchmarks/results/RESULTS.md](benchmarks/results/RESULTS.md). Rerun: "
            f"`{data['command']}`.",
            END,
        ]
    )


def replace_readme_section(section: str, readme: Path = README) -> bool:
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"report: {readme} has no {START} ... {END} markers; not updated")
        return False
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(before + section + after)
    return True


def write_all(data: dict[str, Any], out: Path, update_readme: bool) -> None:
    cells = summarize(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(markdown(data, cells))
    print(f"report: wrote {out / 'RESULTS.md'}")
    try:
        plot(data, cells, out / "results.png")
        print(f"report: wrote {out / 'results.png'}")
    except ImportError as exc:
        print(f"report: no plot ({exc}); matplotlib is installed by scripts/bench")
    if update_readme and replace_readme_section(readme_section(data, cells)):
        print(f"report: updated the benchmark table in {README}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results_dir", nargs="?", type=Path, default=ROOT / "benchmarks" / "results"
    )
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    data = json.loads((args.results_dir / "results.json").read_text())
    write_all(
        data, args.results_dir, update_readme=data.get("complete", False) and not args.no_readme
    )


if __name__ == "__main__":
    main()
