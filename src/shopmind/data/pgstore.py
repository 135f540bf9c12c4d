"""The PostgreSQL store (psycopg 3): the same tables and the same `Store` interface as the embedded DuckDB file,
chosen by `store.url = "postgresql://…"` (env SHOPMIND_STORE_URL). Several hosts can share it.

shopmind's SQL is written once, in the dialect both engines share (`= ANY(?)`, `EXISTS`, `FILTER`, `ON CONFLICT`).
What differs lives here: `?` placeholders become `%s`; DuckDB's zero-copy `register(name, arrow)` becomes a
temporary table filled with COPY; the DDL's DuckDB type names map to PostgreSQL's; text columns use the "C"
collation so that ORDER BY gives the byte order DuckDB gives (splits and seeds do not depend on a server locale).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa

URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***@"
    return urlunsplit((parts.scheme, user + netloc[-1], parts.path, parts.query, ""))


_TYPE_WORDS = [(re.compile(r"\bVARCHAR\b"), 'TEXT COLLATE "C"'), (re.compile(r"\bJSON\b"), "TEXT"),
               (re.compile(r"\bBLOB\b"), "BYTEA"), (re.compile(r"\bFLOAT\[\]"), "REAL[]"),
               (re.compile(r"\bDOUBLE\b(?! PRECISION)"), "DOUBLE PRECISION")]


def ddl(statements: str) -> str:
    """DuckDB DDL (as the store and the knowledge tables write it) in PostgreSQL's type names. JSON columns stay
    text, as DuckDB hands them back: the code parses them itself."""
    for pattern, word in _TYPE_WORDS:
        statements = pattern.sub(word, statements)
    return statements.replace('TEXT COLLATE "C"[]', 'TEXT[] COLLATE "C"')


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """`?` placeholders (outside quoted text) to psycopg's `%s`; a literal `%` doubled."""
    out, quote = [], None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _arrow_pg_type(t: pa.DataType) -> str:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _arrow_pg_type(t.value_type) + "[]"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "text"
    if pa.types.is_floating(t):
        return "real" if t.bit_width == 32 else "double precision"
    if pa.types.is_integer(t):
        return "bigint" if t.bit_width > 32 else "integer"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytea"
    raise TypeError(f"no PostgreSQL type for Arrow {t}")


_NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
_TIMESTAMP_OIDS = {1114, 1184}
_ARRAY_DTYPES = {1009: object, 1015: object, 1021: np.float32, 1022: np.float64, 1007: np.int32, 1016: np.int64}


class PgCursor:
    """A finished statement: rows as DuckDB's cursor gives them (`fetchall`, `fetchone`, `description`, `df`).
    A statement without a result gives [(rows affected,)], as DuckDB does for INSERT/UPDATE/DELETE."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.description = cur.description

    def fetchall(self) -> list[tuple]:
        if self._cur.description is None:
            return [(self._cur.rowcount,)]
        return self._cur.fetchall()

    def fetchone(self) -> tuple | None:
        if self._cur.description is None:
            return (self._cur.rowcount,)
        return self._cur.fetchone()

    def df(self) -> pd.DataFrame:
        cols = [d.name for d in self._cur.description]
        frame = pd.DataFrame.from_records(self._cur.fetchall(), columns=cols)
        for d in self._cur.description:
            if d.type_code in _NUMERIC_OIDS and frame[d.name].dtype == object:
                frame[d.name] = pd.to_numeric(frame[d.name].astype("float64"), errors="coerce")
            elif d.type_code == 1700:
                frame[d.name] = frame[d.name].astype("float64")
            elif d.type_code in _TIMESTAMP_OIDS:
                frame[d.name] = pd.to_datetime(frame[d.name])
            elif d.type_code in _ARRAY_DTYPES:  # DuckDB hands lists to pandas as numpy arrays
                dtype = _ARRAY_DTYPES[d.type_code]
                frame[d.name] = [None if v is None else np.array(v, dtype=dtype) for v in frame[d.name]]
        return frame


class PgConnection:
    """The subset of DuckDB's connection API that shopmind uses, over one psycopg connection in autocommit
    mode (the store's `transaction()` sends BEGIN/COMMIT itself, as with DuckDB)."""

    def __init__(self, url: str, read_only: bool = False) -> None:
        import psycopg

        self._psycopg = psycopg
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="shopmind")
        if read_only:
            self.conn.execute("SET default_transaction_read_only = on")

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgCursor:
        cur = self.conn.cursor()
        if params:
            cur.execute(translate(sql), list(params))
        else:
            cur.execute(sql)
        return PgCursor(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(translate(sql), [list(r) for r in rows])

    def register(self, name: str, table: pa.Table) -> None:
        """A temporary table `name` holding `table`'s rows, loaded with COPY (DuckDB scans Arrow in place)."""
        from psycopg import sql

        types = [_arrow_pg_type(f.type) for f in table.schema]
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(t))
                                  for f, t in zip(table.schema, types))
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(sql.Identifier(name), cols))
        copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(name))
        with self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(types)
            for batch in table.to_batches(max_chunksize=10_000):
                columns = [c.to_pylist() for c in batch.columns]
                for row in zip(*columns):
                    copy.write_row(row)

    def unregister(self, name: str) -> None:
        from psycopg import sql

        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator["PgConnection"]:
        self.conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            if not self.conn.closed:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


def _store_classes():
    from .store import _DDL, SCHEMA_VERSION, Store, StoreError

    return _DDL, SCHEMA_VERSION, Store, StoreError


_DDL_LOCK = 0x5E0_1D  # an advisory lock key: two processes creating the tables at once wait for each other


class PgStore(_store_classes()[2]):  # type: ignore[misc]
    """The store on a PostgreSQL server. `path` holds the URL without its password."""

    dialect = "postgres"
    row_key = "ctid"

    def __init__(self, url: str, read_only: bool = False) -> None:  # noqa: D401 - same contract as Store
        base_ddl, version_wanted, _, store_error = _store_classes()
        import psycopg

        self.url = url
        self.path = redact(url)
        try:
            self.con = PgConnection(url)
        except psycopg.Error as e:
            raise store_error(f"cannot open store {self.path}: {str(e).strip().splitlines()[0]}") from None
        try:
            if not read_only:
                with self.con.transaction():
                    self.con.execute("SELECT pg_advisory_xact_lock(?)", [_DDL_LOCK])
                    self.con.execute(ddl(base_ddl))
                    self.con.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                                     [str(version_wanted)])
            try:
                version = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
            except psycopg.errors.UndefinedTable:
                raise store_error(f"{self.path} is not a shopmind store (no meta table)") from None
            if read_only:
                self.con.execute("SET default_transaction_read_only = on")
            self._check_version(version)
        except BaseException:
            self.con.close()
            raise

    def create_tables(self, statements: str) -> None:
        with self.con.transaction():
            self.con.execute("SELECT pg_advisory_xact_lock(?)", [_DDL_LOCK])
            self.con.execute(ddl(statements))

    def _delete_rows(self, table: str, keys: list[Any]) -> None:
        self.con.execute(f"DELETE FROM {table} WHERE ctid = ANY(?::tid[])", [[str(k) for k in keys]])
