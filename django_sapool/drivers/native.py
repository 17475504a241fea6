"""Native (ctypes) helpers the drivers use where the pure-Python call costs more.

Two helpers, each with a pure-Python path the pool takes without it:

``poll``
    libc's poll(2) called with the GIL held, for the zero-timeout socket check
    before trusting a recently used connection. Without it: ``select.poll``,
    which releases the GIL (see ``HeldPoll``).
``mariadb``
    libmariadb's server status flags and ``mysql_reset_connection`` through
    mysqlclient's native handle; the flags and the last error code are read in
    the connection's MYSQL struct where libmariadb's accessors show their place.
    Without it, mysqlclient cannot tell whether a transaction is open, so a
    ``ROLLBACK`` is sent on every return (as where mysqlclient is not linked
    with MariaDB Connector/C), and ``RESET_ON_RETURN = "reset"`` raises
    NotImplementedError.

Switch them off with the environment variable ``DJANGO_SAPOOL_NATIVE``, read once
when this module is imported: ``off`` switches off both, ``no-poll`` or
``no-mariadb`` one (comma-separated: ``no-poll,no-mariadb``); unset, empty or
``on`` keeps both wherever they work. Any other word raises ImproperlyConfigured.
``native_paths()`` says which path each helper takes in this process
(``manage.py sapool`` shows it).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import select
import sys
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: The environment variable that switches the helpers off.
ENV = "DJANGO_SAPOOL_NATIVE"
#: The helpers, by the name a ``no-`` word switches off.
HELPERS = ("poll", "mariadb")


def parse_switch(value: str) -> frozenset[str]:
    """Return the helpers that ``DJANGO_SAPOOL_NATIVE=value`` switches off."""
    off: set[str] = set()
    for word in (word.strip().lower() for word in value.split(",")):
        if word in ("", "on"):
            continue
        if word == "off":
            off.update(HELPERS)
        elif word.startswith("no-") and word[3:] in HELPERS:
            off.add(word[3:])
        else:
            raise ImproperlyConfigured(
                f"{ENV}={value!r}: unknown word {word!r}; use 'off', or any of "
                + ", ".join(f"'no-{name}'" for name in HELPERS)
                + " separated by commas"
            )
    return frozenset(off)


_SETTING = os.environ.get(ENV, "")
#: The helpers switched off in this process (read once, at import).
SWITCHED_OFF = parse_switch(_SETTING)


def switched_off(helper: str) -> str:
    """Return the setting that switched ``helper`` off (``DJANGO_SAPOOL_NATIVE=...``), or ''."""
    return f"{ENV}={_SETTING}" if helper in SWITCHED_OFF else ""


# -- poll(2), GIL kept ---------------------------------------------------------


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def _libc_poll() -> Any:
    """libc's poll(2) called with the GIL held (ctypes.PyDLL), or None where unavailable."""
    try:
        function = ctypes.PyDLL(None).poll
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc
        return None
    # No argtypes: HeldPoll passes ready-made C values and the timeout as a
    # Python int, which ctypes passes as a C int without any argtypes
    # conversion (that costs ~3,500 instructions a poll).
    function.restype = ctypes.c_int
    return function


#: poll(2)'s nfds, as a C value (see HeldPoll.poll).
_ONE_FD = ctypes.c_ulong(1)


_POLL: Any = None if "poll" in SWITCHED_OFF else _libc_poll()


class HeldPoll:
    """A zero-timeout poll(2) of one socket that keeps the GIL.

    select.poll() releases the GIL around the system call even with timeout 0;
    in a busy threaded server (gunicorn gthread) another thread then takes the
    GIL and this one waits for it back, up to the 5 ms switch interval, at every
    checkout. A zero-timeout poll never blocks, so there is nothing to release
    the GIL for. Not monkey-patched by gevent either, so it never yields.
    """

    __slots__ = ("_fds", "poll")

    def __init__(self, fd: int) -> None:
        self._fds = _PollFd(fd, select.POLLIN | select.POLLPRI, 0)
        #: ``poll(0)``, as select.poll()'s: libc's poll(2) of this one socket,
        #: called with the timeout given (0: never blocks) and no Python frame
        #: in between. > 0: readable or hung up; < 0: poll failed. Either way
        #: (true), worth a ping.
        self.poll = functools.partial(_POLL, ctypes.byref(self._fds), _ONE_FD)


def held_poll(fd: int) -> HeldPoll | None:
    """Return a GIL-keeping poll of ``fd``, or None when switched off or unavailable."""
    return None if _POLL is None else HeldPoll(fd)


# -- libmariadb through mysqlclient ----------------------------------------------


#: A value no status flags or error code take: _field_offset() looks for it.
_MARK = 0x5A5A5A5A


def _field_offset(read: Callable[[int], int], handle: int, size: int) -> int | None:
    """Return where, in the MYSQL struct at ``handle``, lies the field ``read(address)`` returns.

    libmariadb's struct layout is not part of its API, but its accessors are.
    On a copy of the struct (its pointers stay valid: they are the live
    connection's), each 32-bit word that holds the field's current value is
    marked in turn, and the accessor is asked: the word whose mark it returns
    is the field. None: no word or several (another library, another layout),
    so the field is not read in place.
    """
    value = read(handle)
    words = (ctypes.c_uint32 * (size // 4)).from_buffer_copy(ctypes.string_at(handle, size))
    found = []
    for index, word in enumerate(words):
        if word != value:
            continue
        words[index] = _MARK
        if read(ctypes.addressof(words)) == _MARK:
            found.append(index * 4)
        words[index] = word
    return found[0] if len(found) == 1 else None


class MariaDBClient:
    """Zero-round-trip access to libmariadb through mysqlclient's native handle.

    mysqlclient exposes neither the server status flags (is a transaction open?)
    nor ``mysql_reset_connection``; MariaDB Connector/C, which it links on
    Debian, has both. The server status arrives with every OK packet, so reading
    it costs nothing. Loading raises where the library is not libmariadb.
    """

    SERVER_STATUS = 30  # enum mariadb_value: MARIADB_CONNECTION_SERVER_STATUS
    AUTOCOMMIT = 0x0002  # SERVER_STATUS_AUTOCOMMIT

    def __init__(self) -> None:
        # By its own name: sys.modules["MySQLdb"] is PyMySQL after a late
        # pymysql.install_as_MySQLdb(), while Django's backend uses mysqlclient.
        native = importlib.import_module("MySQLdb._mysql")
        lib = ctypes.CDLL(native.__file__)  # resolves libmariadb's symbols it links
        # Reading the status flags is local and never blocks: keep the GIL
        # (PyDLL) rather than hand it to another thread and wait to get it back.
        held = ctypes.PyDLL(native.__file__)
        self.get_info = held.mariadb_get_infov
        self.get_info.restype = ctypes.c_char
        self.errno = held.mysql_errno
        self.errno.argtypes = [ctypes.c_void_p]
        self.errno.restype = ctypes.c_uint
        self.reset = lib.mysql_reset_connection
        self.reset.argtypes = [ctypes.c_void_p]
        self.reset.restype = ctypes.c_int
        # Variadic: no argtypes, every argument passed as a ready-made C value.
        self._get_option = held.mysql_get_optionv
        self._get_option.restype = ctypes.c_int
        self._capsule = ctypes.pythonapi.PyCapsule_GetPointer
        self._capsule.restype = ctypes.c_void_p
        self._capsule.argtypes = [ctypes.py_object, ctypes.c_char_p]
        self._set_option = held.mysql_options
        self._set_option.restype = ctypes.c_int
        self._set_option.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self._ssl_cipher = held.mysql_get_ssl_cipher
        self._ssl_cipher.restype = ctypes.c_char_p
        self._ssl_cipher.argtypes = [ctypes.c_void_p]
        self._server_status = ctypes.c_int(self.SERVER_STATUS)
        #: mysqlclient's connection object, whose MYSQL struct lies within it.
        self._object_size = native.connection.__basicsize__
        #: Where the status flags and the last error code lie in a MYSQL struct
        #: (None: unknown), found by locate() through libmariadb's accessors.
        self.status_offset: int | None = None
        self.errno_offset: int | None = None

    def handle(self, conn: Any) -> int:
        return int(
            self._capsule(conn._get_native_connection(), b"_mysql.connection.native_connection")
        )

    def locate(self, conn: Any) -> None:
        """Find where the status flags and the last error code lie, on connection ``conn``.

        Where they cannot be found, they stay unknown and are read through the
        accessors: the rest of the helper works as well without them.
        """
        try:
            handle = self.handle(conn)
            # The struct ends where mysqlclient's connection object does, or before.
            size = id(conn) + self._object_size - handle
            self.status_offset = _field_offset(self.status_at, handle, size)
            self.errno_offset = _field_offset(self.errno, handle, size)
        except Exception:
            self.status_offset = self.errno_offset = None

    MYSQL_INIT_COMMAND = 3  # enum mysql_option
    IO_TIMEOUTS = {"read_timeout": 11, "write_timeout": 12}  # MYSQL_OPT_READ/WRITE_TIMEOUT

    def lift_tls_timeouts(self, conn: Any, names: tuple[str, ...]) -> bool:
        """Set the ``read_timeout``s / ``write_timeout``s named back to none; False if it can't.

        Only on a TLS connection: libmariadb reads these options at each TLS
        read and write, but copies them into a plain socket when it connects,
        where they would stay.
        """
        handle = ctypes.c_void_p(self.handle(conn))
        if self._ssl_cipher(handle) is None:
            return False
        none = ctypes.c_uint(0)
        for name in names:
            if self._set_option(handle, self.IO_TIMEOUTS[name], ctypes.byref(none)):
                raise OSError(f"mysql_options({name}=0) failed")
        return True

    def init_commands(self, conn: Any) -> list[bytes]:
        """Return the statements libmariadb ran after the login, in order (its init commands).

        OPTIONS['init_command'] and an option file's ``init-command``
        (``read_default_file``, ``read_default_group``): a session reset
        undoes what they set, and only libmariadb knows the option file's.
        """
        commands = ctypes.POINTER(ctypes.c_char_p)()
        count = ctypes.c_uint(0)
        failed = self._get_option(
            ctypes.c_void_p(self.handle(conn)),
            ctypes.c_int(self.MYSQL_INIT_COMMAND),
            ctypes.byref(commands),
            ctypes.byref(count),
        )
        if failed:
            raise OSError("mysql_get_optionv(MYSQL_INIT_COMMAND) failed")
        return [commands[i] or b"" for i in range(count.value)]

    def status_at(self, handle: int) -> int:
        """Return the status flags of the MYSQL struct at ``handle``, through libmariadb."""
        flags = ctypes.c_uint(0)
        failed = self.get_info(ctypes.c_void_p(handle), self._server_status, ctypes.byref(flags))
        if failed != b"\0":
            raise OSError("mariadb_get_infov(MARIADB_CONNECTION_SERVER_STATUS) failed")
        return flags.value

    def view(
        self, handle: int, offset: int | None, accessor: Callable[[int], int]
    ) -> ctypes.c_uint32 | None:
        """Return a view of the field at ``offset`` of the MYSQL struct at ``handle``.

        None when the offset is unknown, or the view disagrees with libmariadb's
        ``accessor`` on this very struct: then the field is not read in place.
        """
        if offset is None:
            return None
        field = ctypes.c_uint32.from_address(handle + offset)
        return field if field.value == accessor(handle) else None

    def server_status(self, conn: Any) -> int:
        """Return the server status flags of the last reply on ``conn`` (no round trip)."""
        return self.status(conn).read()

    def status(self, conn: Any) -> ServerStatus:
        """Return ``conn``'s ServerStatus, made (and kept on it) the first time."""
        status: ServerStatus | None = getattr(conn, STATUS_ATTRIBUTE, None)
        if status is None:
            status = ServerStatus(self, conn)
            setattr(conn, STATUS_ATTRIBUTE, status)
        return status


#: Where a mysqlclient connection keeps its ServerStatus (MysqlclientOps reads it too).
STATUS_ATTRIBUTE = "_sapool_status"


class ServerStatus:
    """One mysqlclient connection's status flags and last error code; kept on it.

    mysqlclient embeds its MYSQL struct in the connection object, so the struct
    lives exactly as long as the connection that keeps this. Where a field's
    place is known (``MariaDBClient.view``), it is read in place: the read at
    every return is an attribute of a ctypes view, not a ctypes call (2,300
    instructions). Elsewhere the flags are read through ``mariadb_get_infov``
    into a buffer made once, and the error code is not kept (``errno`` None).
    """

    __slots__ = ("flags", "_refresh", "errno")

    def __init__(self, client: MariaDBClient, conn: Any) -> None:
        handle = client.handle(conn)
        flags = client.view(handle, client.status_offset, client.status_at)
        self._refresh: Any = None
        if flags is None:
            flags = ctypes.c_uint32(0)
            self._refresh = functools.partial(
                client.get_info,
                ctypes.c_void_p(handle),
                client._server_status,
                ctypes.byref(flags),
            )
        #: The status flags (``.value``): in place, or the buffer that
        #: ``read()`` refreshes first.
        self.flags = flags
        #: The last error code, in place (``.value``), or None.
        self.errno = client.view(handle, client.errno_offset, client.errno)

    @property
    def in_place(self) -> bool:
        """Whether both fields are read in place (``.flags.value``, ``.errno.value``)."""
        return self._refresh is None and self.errno is not None

    def read(self) -> int:
        """Return the server status flags of the last reply."""
        refresh = self._refresh  # read, then called: CPython 3.11 specialises that
        if refresh is not None and refresh() != b"\0":
            raise OSError("mariadb_get_infov(MARIADB_CONNECTION_SERVER_STATUS) failed")
        return int(self.flags.value)


#: The probe's outcome: None (not probed yet), the helper, or why there is none.
_mariadb: MariaDBClient | str | None = "switched off" if "mariadb" in SWITCHED_OFF else None


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def mariadb_client(conn: Any) -> MariaDBClient | None:
    """Return the libmariadb helper if it works with mysqlclient connection ``conn``, else None.

    Probed once per process, at the first connection; None when switched off.
    """
    global _mariadb
    if _mariadb is None:
        try:
            client = MariaDBClient()
            client.locate(conn)  # before the first ServerStatus, made just below
            # Sanity check against a flag mysqlclient itself reports.
            autocommit = bool(client.server_status(conn) & client.AUTOCOMMIT)
            if autocommit == bool(conn.get_autocommit()):
                _mariadb = client
            else:
                _mariadb = "the status flags disagree with mysqlclient's get_autocommit()"
        except Exception as exc:
            _mariadb = _why(exc)
    return _mariadb if isinstance(_mariadb, MariaDBClient) else None


# -- what is in use ----------------------------------------------------------------


def native_paths() -> dict[str, str]:
    """Say which path each native helper takes in this process, and why."""
    if _POLL is not None:
        poll = "libc poll(2), GIL kept"
    else:
        poll = f"select.poll ({switched_off('poll') or 'libc poll(2) unavailable'})"
    return {"socket poll": poll, "mysqlclient status": _mariadb_path()}


def _mariadb_path() -> str:
    if "mariadb" in SWITCHED_OFF:
        return (
            f"off ({switched_off('mariadb')}): ROLLBACK on every return, no RESET_ON_RETURN='reset'"
        )
    if isinstance(_mariadb, MariaDBClient):
        if _mariadb.status_offset is not None and _mariadb.errno_offset is not None:
            return "libmariadb status flags and error code read in place, mysql_reset_connection"
        return "libmariadb mariadb_get_infov, mysql_reset_connection"
    if _mariadb is not None:
        return f"unavailable: {_mariadb}"
    # Not probed: no mysqlclient connection yet. Say what the probe would find,
    # without importing a driver the process does not use.
    if "MySQLdb._mysql" not in sys.modules:
        return "not probed (mysqlclient not imported)"
    try:
        MariaDBClient()
    except Exception as exc:
        return f"unavailable: {_why(exc)}"
    return "libmariadb mariadb_get_infov, mysql_reset_connection (checked at the first connection)"
