"""Every example in docs/*.md runs here, and README.md's Python blocks too.

The convention: an HTML comment on the line right before a fenced code block or a
Markdown table says how to test it. It does not render, so readers never see it::

    <!-- doc-test: KIND [ARGUMENT] -->

KIND is one of:

``settings``
    Python that defines ``DATABASES``. It is loaded through Django's own
    ``ConnectionHandler`` (creating each alias's wrapper parses ``POOL_OPTIONS`` and
    refuses ``CONN_MAX_AGE``/``OPTIONS["pool"]``), ``check_settings()`` runs, and then
    every alias connects and runs ``SELECT 1`` on the local test server of its
    vendor: NAME, USER, PASSWORD, HOST and PORT are replaced by the local server's
    (PORT 6432 means PgBouncer: scripts/ensure-pgbouncer's), everything else
    (OPTIONS, POOL_OPTIONS, DISABLE_SERVER_SIDE_CURSORS...) is used as written.
    ``settings nodb`` stops before connecting.
``refused TEXT``
    Python that defines ``DATABASES`` which must be refused: ImproperlyConfigured,
    with TEXT in its message.
``exec``
    Python that only has to run (settings of the library you migrate from).
``run``
    Python that runs as it is, asserting what it needs.
``hooks``
    Python that defines server or worker hooks. It runs (with a stand-in for
    ``uwsgidecorators``, which exists only inside uWSGI), then every function it
    defines is called, with None for each required positional argument.
``arithmetic``
    A table with the columns ``name``, ``formula`` and ``value``: each formula, a
    Python expression over the names of earlier rows of the same file, must equal
    its value (a number, True or False). Worked examples are recomputed this way.
``mapping``
    A table with a ``django_sapool`` column: every ENGINE module, POOL_OPTIONS key
    (or Django database setting) and ``django_sapool.`` attribute it names in
    backticks must exist.
``shell pgbouncer``
    A shell block run with bash against the local PgBouncer.
``pgbouncer-ini``
    An ini block: every key of its ``[pgbouncer]`` section must be one the local
    PgBouncer knows (``SHOW CONFIG``), and every ``[databases]`` entry key=value pairs.
``skip REASON``
    Not run.

Every ``python`` block in docs/*.md must carry a marker: an example nobody runs
is an error. Other blocks without one (ini for uWSGI, ...) are not run.

README.md has no markers (it is edited elsewhere, and parsed at test time): each
of its Python blocks must compile; one that defines ``DATABASES`` is tested as
``settings nodb``, and as ``settings`` (connected) when it pools another backend
or names a ``PASSWORD_PROVIDER`` (what those do happens at connect time); one whose
first line is a comment naming a module's path (``# myproject/db/base.py``) is that
module: they are all written under a temporary directory on ``sys.path`` for the
README's other blocks, and each is imported; any other runs as ``hooks``, keeping
only imports, definitions, assignments and statements that use ``django_sapool`` at
the top level (the ``multiprocessing.Pool`` of its example is not started).

Settings are loaded with the example's other upper-case names (``DATABASE_ROUTERS``,
``TENANT_LIMIT_SET_CALLS``...) in force, and, when an alias pools another backend,
with ``WRAPPED_BACKEND_APPS`` installed.
"""

from __future__ import annotations

import ast
import configparser
import copy
import importlib
import inspect
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import override_settings

from .test_pgbouncer import PgBouncer, pgbouncer  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

MARKER = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>[\w-]+)(?:\s+(?P<arg>.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
KINDS = (
    "settings",
    "refused",
    "exec",
    "run",
    "hooks",
    "arithmetic",
    "mapping",
    "shell",
    "pgbouncer-ini",
    "skip",
)
TABLE_KINDS = ("arithmetic", "mapping")
#: DATABASES keys a mapping table may name besides POOL_OPTIONS keys.
#: A README block that is a module: its first line names its path in a package.
MODULE_PATH = re.compile(r"^#\s*(?P<path>\w+(?:/\w+)+\.py)\s*$")
#: Apps a wrapped backend may need at import time (django-tenants' imports the
#: ContentType model); installed while settings that pool another backend load.
WRAPPED_BACKEND_APPS = ["django.contrib.contenttypes"]
DJANGO_DB_SETTINGS = frozenset(
    "ENGINE NAME USER PASSWORD HOST PORT OPTIONS TEST TIME_ZONE ATOMIC_REQUESTS AUTOCOMMIT "
    "CONN_MAX_AGE CONN_HEALTH_CHECKS DISABLE_SERVER_SIDE_CURSORS POOL_OPTIONS".split()
)


@dataclass(frozen=True)
class Example:
    """A fenced code block or a marked table of a Markdown file."""

    path: Path
    line: int  # 1-based: the opening fence, or the table's first row
    lang: str  # the fence's language, or "table"
    kind: str | None  # from the marker; None when unmarked
    arg: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse(path: Path) -> tuple[list[Example], list[str]]:
    """Return a file's examples, and problems with its markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i - 1]) if i else None
        kind, arg = (marker["kind"], marker["arg"] or "") if marker else (None, "")
        fence = FENCE.match(lines[i])
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence["fence"]):
                end += 1
            body = "\n".join(lines[i + 1 : end]) + "\n"
            examples.append(Example(path, i + 1, fence["lang"] or "text", kind, arg, body))
            i = end + 1
            continue
        if lines[i].startswith("|") and kind:
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            examples.append(Example(path, i + 1, "table", kind, arg, "\n".join(lines[i:end])))
            i = end
            continue
        if MARKER.match(lines[i]):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if not (FENCE.match(nxt) or nxt.startswith("|")):
                problems.append(f"{path.name}:{i + 1}: marker not right before a block or table")
        i += 1
    for ex in examples:
        if ex.kind is None:
            continue
        if ex.kind not in KINDS:
            problems.append(f"{ex.id}: unknown doc-test kind {ex.kind!r}")
        elif (ex.lang == "table") != (ex.kind in TABLE_KINDS):
            problems.append(f"{ex.id}: kind {ex.kind!r} does not fit a {ex.lang} example")
    return examples, problems


def doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def doc_examples() -> list[Example]:
    return [ex for path in doc_files() for ex in parse(path)[0] if ex.kind is not None]


def readme_python() -> list[Example]:
    if not README.exists():
        return []
    return [ex for ex in parse(README)[0] if ex.lang in ("python", "py")]


# -- structure -------------------------------------------------------------------


def test_docs_exist() -> None:
    names = {path.name for path in doc_files()}
    assert {"migration.md", "sizing.md", "pgbouncer.md"} <= names


def test_every_python_block_is_tested() -> None:
    problems: list[str] = []
    for path in doc_files():
        examples, marker_problems = parse(path)
        problems += marker_problems
        problems += [
            f"{ex.id}: a python block without a doc-test marker"
            for ex in examples
            if ex.lang in ("python", "py") and ex.kind is None
        ]
    assert not problems, "\n".join(problems)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_resolve() -> None:
    """Relative links in docs/ point at files that exist, and anchors at headings."""
    problems: list[str] = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        prose = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked (no network)
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}: link to missing {target}")
                continue
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+\s+(.*)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    problems.append(f"{path.name}: no heading for #{anchor} in {linked.name}")
    assert not problems, "\n".join(problems)


# -- settings ----------------------------------------------------------------------


def _exec(example: Example, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    namespace = {"__name__": "doc_example"} if namespace is None else namespace
    exec(compile(example.text, example.id, "exec"), namespace)
    return namespace


def _databases(example: Example) -> dict[str, dict[str, Any]]:
    databases = _exec(example).get("DATABASES")
    assert isinstance(databases, dict) and databases, f"{example.id} defines no DATABASES"
    return databases


def _other_settings(example: Example) -> dict[str, Any]:
    """The example's upper-case names besides DATABASES (DATABASE_ROUTERS, TENANT_...)."""
    return {k: v for k, v in _exec(example).items() if k.isupper() and k != "DATABASES"}


def _wraps(databases: dict[str, dict[str, Any]]) -> bool:
    """Whether an alias pools another backend (the generic ENGINE or a project's module)."""
    from django_sapool.backends import BACKENDS

    ours = {backend.engine for backend in BACKENDS}
    return any(db.get("ENGINE") not in ours for db in databases.values())


@contextmanager
def django_settings(databases: dict[str, dict[str, Any]], other: dict[str, Any]) -> Iterator[None]:
    """The example's other settings in force, and the apps a wrapped backend needs."""
    overrides = dict(other)
    if _wraps(databases):
        overrides.setdefault("INSTALLED_APPS", WRAPPED_BACKEND_APPS)
    if not overrides:
        yield
        return
    with override_settings(**overrides):
        yield


def _handler(databases: dict[str, dict[str, Any]]) -> Any:
    from django.db.utils import ConnectionHandler

    # ConnectionHandler fills in defaults in place: keep the example's dicts intact.
    return ConnectionHandler(copy.deepcopy(databases))


def validate(databases: dict[str, dict[str, Any]]) -> None:
    """What Django does with these settings at startup; raises ImproperlyConfigured."""
    from django_sapool.conf import PoolOptions, parse_pool_options
    from django_sapool.wrapper import PooledDatabaseWrapperMixin

    handler = _handler(databases)
    for alias in databases:
        wrapper = handler[alias]  # the wrapper parses POOL_OPTIONS in __init__
        assert isinstance(wrapper, PooledDatabaseWrapperMixin), alias  # ours, or wrapped
        wrapper.check_settings()
        assert isinstance(parse_pool_options(alias, wrapper.settings_dict), PoolOptions)


def _local(request: pytest.FixtureRequest, tmp_path: Path, db: dict[str, Any]) -> dict[str, Any]:
    """The same settings, pointed at the local test server of the engine's vendor."""
    from django_sapool.backends import backend_for

    backend = backend_for(db["ENGINE"], db)  # a wrapped backend's too
    vendor = backend.vendor if backend else ""
    if vendor == "postgresql":
        pg = request.getfixturevalue("pg")
        where = {"NAME": pg.admin_db, "USER": pg.user, "PASSWORD": pg.password}
        # A multi-host PORT ("5432,5432") is pointed at the local server too.
        if int(str(db.get("PORT") or 5432).split(",")[0]) == 6432:
            bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
            return {**db, **where, "HOST": bouncer.host, "PORT": bouncer.port}
        return {**db, **where, "HOST": pg.host, "PORT": pg.port}
    if vendor == "mysql":
        my = request.getfixturevalue("mysql")
        return {
            **db,
            "NAME": "mysql",
            "USER": my.user,
            "PASSWORD": my.password,
            "HOST": my.host,
            "PORT": my.port,
        }
    return {**db, "NAME": str(tmp_path / f"{db['ENGINE'].rsplit('.', 1)[-1]}.sqlite3")}


def connect_each(
    request: pytest.FixtureRequest, tmp_path: Path, databases: dict[str, dict[str, Any]]
) -> None:
    import django_sapool

    local = {alias: _local(request, tmp_path, db) for alias, db in databases.items()}
    handler = _handler(local)
    try:
        for alias in local:
            with handler[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone()[0] == 1
            # Through the pool: the connection is now one of its idle connections.
            handler[alias].close()
            pools = [
                s
                for s in django_sapool.pool_status(alias)
                if s.database == str(local[alias]["NAME"])
            ]
            assert pools and pools[0].size >= 1, f"alias {alias!r} did not pool"
    finally:
        handler.close_all()
        for alias in local:
            django_sapool.dispose(alias)


def load_settings(
    example: Example, request: pytest.FixtureRequest, tmp_path: Path, connect: bool
) -> None:
    """Validate the example's DATABASES (and connect each alias) with its settings in force."""
    databases = _databases(example)
    with django_settings(databases, _other_settings(example)):
        validate(databases)
        if connect:
            connect_each(request, tmp_path, databases)


# -- hooks -------------------------------------------------------------------------


@pytest.fixture
def fake_uwsgidecorators(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """``uwsgidecorators`` exists only inside uWSGI; record what ``@postfork`` gets."""
    registered: list[Callable[..., Any]] = []
    module = types.ModuleType("uwsgidecorators")

    def postfork(func: Callable[..., Any]) -> Callable[..., Any]:
        registered.append(func)
        return func

    module.postfork = postfork  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgidecorators", module)
    return registered


def call_hooks(namespace: dict[str, Any]) -> list[str]:
    """Call every function the example defined; return their names."""
    from django.db import connections

    # after_fork() forgets the calling thread's checked-out connections (it is
    # meant for a fresh child): return them to their pools first.
    connections.close_all()
    called = []
    for name, obj in list(namespace.items()):
        if not inspect.isfunction(obj) or obj.__module__ != namespace["__name__"]:
            continue  # imported, not defined by the example
        required = [
            p
            for p in inspect.signature(obj).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        obj(*[None] * len(required))
        called.append(name)
    return called


def run_hooks(example: Example, registered: list[Callable[..., Any]]) -> None:
    namespace = _exec(example)
    called = call_hooks(namespace)
    assert called, f"{example.id} defines no function to call"
    assert all(f.__name__ in called for f in registered)


# -- tables ------------------------------------------------------------------------


def table(example: Example) -> list[dict[str, str]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in example.text.splitlines()
    ]
    header, body = rows[0], [r for r in rows[2:] if r]
    assert all(set(c) <= set("-: ") for c in rows[1]), f"{example.id}: no header separator"
    for row in body:
        assert len(row) == len(header), f"{example.id}: row {row} has {len(row)} cells"
    return [dict(zip(header, row, strict=True)) for row in body]


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell.strip())
    assert match, f"expected one `code` span, got {cell!r}"
    return match[1]


def _value(cell: str) -> Any:
    if cell in ("True", "False"):
        return cell == "True"
    match = re.match(r"-?\d[\d,]*(?:\.\d+)?", cell)
    assert match, f"no number in {cell!r}"
    text = match[0].replace(",", "")
    return float(text) if "." in text else int(text)


def check_arithmetic(path: Path) -> int:
    """Recompute every arithmetic table of a file, in order; return the row count."""
    functions = {"min": min, "max": max, "abs": abs, "round": round}
    names: dict[str, Any] = {}
    rows = 0
    for example in parse(path)[0]:
        if example.kind != "arithmetic":
            continue
        for row in table(example):
            name, formula, expected = _code(row["name"]), _code(row["formula"]), row["value"]
            assert name.isidentifier() and name not in names, f"{example.id}: name {name!r}"
            got = eval(formula, {"__builtins__": {}, **functions}, dict(names))  # noqa: S307
            want = _value(expected)
            if isinstance(want, bool):
                assert got is want, f"{example.id}: {name} = {formula} is {got}, not {want}"
            else:
                assert got == pytest.approx(want), f"{example.id}: {name} = {formula} = {got}"
            names[name] = got
            rows += 1
    return rows


def check_mapping(example: Example) -> int:
    """Everything named in the django_sapool column exists; return how many names."""
    import importlib.util

    import django_sapool
    from django_sapool.conf import VALID_KEYS

    checked = 0
    for row in table(example):
        for token in re.findall(r"`([^`]+)`", row["django_sapool"]):
            if token.startswith("django_sapool.backends."):
                try:
                    spec = importlib.util.find_spec(f"{token}.base")
                except ModuleNotFoundError:
                    spec = None
                assert spec is not None, f"{example.id}: no ENGINE {token}"
            elif token.startswith("django_sapool."):
                attribute = token.removeprefix("django_sapool.").split("(")[0]
                assert hasattr(django_sapool, attribute), f"{example.id}: no {token}"
            elif re.fullmatch(r"[A-Z][A-Z0-9_]*", token):
                known = token in VALID_KEYS or token in DJANGO_DB_SETTINGS
                assert known, f"{example.id}: {token} is no POOL_OPTIONS key or DB setting"
            else:
                continue  # a value, an expression
            checked += 1
    return checked


# -- PgBouncer -------------------------------------------------------------------


def pgbouncer_settings(bouncer: PgBouncer) -> dict[str, str]:
    import psycopg

    with psycopg.connect(bouncer.conninfo("pgbouncer"), autocommit=True) as admin:
        return {row[0]: row[1] for row in admin.execute("SHOW CONFIG").fetchall()}


def check_pgbouncer_ini(example: Example, bouncer: PgBouncer) -> None:
    parser = configparser.ConfigParser(comment_prefixes=(";", "#"), interpolation=None)
    parser.read_string(example.text)
    known = pgbouncer_settings(bouncer)
    unknown = [key for key in parser["pgbouncer"] if key not in known]
    assert not unknown, f"{example.id}: PgBouncer has no setting {unknown}"
    assert parser["pgbouncer"].get("pool_mode") in (None, "session", "transaction", "statement")
    for name, entry in parser["databases"].items():
        pairs = entry.split()
        assert pairs and all(re.fullmatch(r"\w+=\S+", p) for p in pairs), f"{name} = {entry}"


# -- the tests that run examples -----------------------------------------------------


@pytest.mark.parametrize(
    "example", [ex for ex in doc_examples() if ex.lang != "table"], ids=lambda ex: ex.id
)
def test_doc_example(
    example: Example,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fake_uwsgidecorators: list[Callable[..., Any]],
) -> None:
    kind, arg = example.kind, example.arg
    if kind == "skip":
        pytest.skip(arg or "marked skip")
    elif kind == "settings":
        load_settings(example, request, tmp_path, connect=arg != "nodb")
    elif kind == "refused":
        assert arg, f"{example.id}: refused needs the text the error must contain"
        with pytest.raises(ImproperlyConfigured) as refused:
            load_settings(example, request, tmp_path, connect=False)
        assert arg in str(refused.value)
    elif kind in ("exec", "run"):
        _exec(example)
    elif kind == "hooks":
        run_hooks(example, fake_uwsgidecorators)
    elif kind == "shell":
        assert arg == "pgbouncer", f"{example.id}: shell needs a server to run against"
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        if bouncer.port != 6432:
            pytest.skip("the example names port 6432; SAPOOL_PGBOUNCER_PORT differs")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", example.text],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        print(proc.stdout)
        assert proc.returncode == 0, f"{example.id} failed:\n{proc.stdout}\n{proc.stderr}"
    elif kind == "pgbouncer-ini":
        check_pgbouncer_ini(example, request.getfixturevalue("pgbouncer"))
    else:
        pytest.fail(f"{example.id}: cannot run kind {kind!r}")


@pytest.mark.parametrize(
    "example", [ex for ex in doc_examples() if ex.kind == "mapping"], ids=lambda ex: ex.id
)
def test_doc_mapping(example: Example) -> None:
    assert check_mapping(example) > 0


@pytest.mark.parametrize(
    "path",
    [p for p in doc_files() if any(ex.kind == "arithmetic" for ex in parse(p)[0])],
    ids=lambda p: p.name,
)
def test_doc_arithmetic(path: Path) -> None:
    assert check_arithmetic(path) > 0


# -- README.md ---------------------------------------------------------------------


def _readme_definitions(example: Example) -> Example:
    """The block with only the top-level statements that are safe to run here."""
    tree = ast.parse(example.text, example.id)

    def uses_sapool(node: ast.stmt) -> bool:
        return any(isinstance(n, ast.Name) and n.id == "django_sapool" for n in ast.walk(node))

    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    tree.body = [n for n in tree.body if isinstance(n, keep) or uses_sapool(n)]
    return Example(example.path, example.line, "python", "hooks", "", ast.unparse(tree) + "\n")


def _defines(example: Example, name: str) -> bool:
    tree = ast.parse(example.text)
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
        for n in tree.body
    )


def module_path(example: Example) -> str | None:
    """The path a README block that is a module names on its first line, or None."""
    match = MODULE_PATH.match(example.text.split("\n", 1)[0])
    return match["path"] if match else None


@pytest.fixture(scope="module")
def readme_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Write the README's module blocks as a package tree on sys.path; remove it after."""
    root = tmp_path_factory.mktemp("readme_modules")
    paths = {path: ex for ex in readme_python() if (path := module_path(ex))}
    for path, example in paths.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(example.text, encoding="utf-8")
    for path in paths:
        for package in Path(path).parents[:-1]:
            (root / package / "__init__.py").touch(exist_ok=True)
    top = {Path(path).parts[0] for path in paths}
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.split(".")[0] in top]:
            del sys.modules[name]


def _connects(databases: dict[str, dict[str, Any]]) -> bool:
    """Whether what the settings are about happens at connect time."""
    providers = any(
        "PASSWORD_PROVIDER" in (db.get("POOL_OPTIONS") or {}) for db in databases.values()
    )
    return _wraps(databases) or providers


@pytest.mark.parametrize("example", readme_python(), ids=lambda ex: ex.id)
def test_readme_python(
    example: Example,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    readme_modules: Path,
    fake_uwsgidecorators: list[Callable[..., Any]],
) -> None:
    compile(example.text, example.id, "exec")
    path = module_path(example)
    if path:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert Path(str(module.__file__)).is_relative_to(readme_modules), module.__file__
        return
    if _defines(example, "DATABASES"):
        # Validated; connected (to the local servers) when the point is what
        # happens then: a wrapped backend, a password provider.
        load_settings(example, request, tmp_path, connect=_connects(_databases(example)))
        return
    safe = _readme_definitions(example)
    namespace = _exec(safe)
    call_hooks(namespace)


def test_readme_found() -> None:
    """The README parser still finds the README's Python examples."""
    examples = readme_python()
    assert any(_defines(ex, "DATABASES") for ex in examples)
