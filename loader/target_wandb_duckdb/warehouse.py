"""DuckDB side: column types from Singer schemas, tables, and keyed upserts of NDJSON batches."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

# Every table gets these (as target-duckdb 0.8.0 with add_metadata_columns: true);
# _sdc_deleted_at is the record's own text, as target-duckdb keeps it.
METADATA = {
    "_sdc_batched_at": "TIMESTAMP",
    "_sdc_deleted_at": "VARCHAR",
    "_sdc_extracted_at": "TIMESTAMP",
}
SEQUENCE = "_sdc_sequence"  # the input line number, written into batch files only
# Types an existing column may have for the type a schema asks for (target-duckdb's tables
# have HUGEINT integers and must keep loading).
COMPATIBLE = {"BIGINT": {"BIGINT", "HUGEINT", "INTEGER", "SMALLINT"}}
# A JSON number read as text is accepted for an integer column only if it is whole.
WHOLE = r"-?[0-9]+(\.0*)?"


class LoadError(Exception):
    """A batch DuckDB refused, or a schema it cannot take; the message says what and where."""


def column_type(prop: dict) -> str:
    """DuckDB type of one JSON-schema property (target-duckdb's mapping; integers BIGINT,
    several types at once JSON)."""
    types = prop.get("type")
    if types is None:  # anyOf, {}: anything
        return "JSON"
    kinds = {types} if isinstance(types, str) else set(types)
    kinds.discard("null")
    if kinds == {"integer", "number"}:
        return "DOUBLE"
    if len(kinds) != 1 or kinds & {"object", "array"}:
        return "JSON"
    kind = kinds.pop()
    if kind == "string":
        return {"date-time": "TIMESTAMP", "time": "TIME"}.get(prop.get("format"), "VARCHAR")
    return {"integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}[kind]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Table:
    """A stream's table as its latest SCHEMA message describes it."""

    stream: str
    name: str
    columns: dict[str, str]  # record key -> DuckDB type (metadata columns included)
    keys: list[str]

    @classmethod
    def from_schema(cls, stream: str, schema: dict, keys: list[str]) -> Table:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            raise LoadError(f"stream {stream}: its SCHEMA has no properties object")
        columns = {key: column_type(prop) for key, prop in properties.items()}
        columns.update(METADATA)
        lowered = [key.lower() for key in columns]
        if len(set(lowered)) != len(lowered):
            raise LoadError(
                f"stream {stream}: property names differ only in case: {sorted(columns)}"
            )
        missing = [key for key in keys if key not in properties]
        if missing:
            raise LoadError(f"stream {stream}: key_properties {missing} are not in its schema")
        name = re.sub(r"[^a-z0-9_]", "_", stream.lower())
        return cls(stream, name, dict(sorted(columns.items())), list(keys))


@dataclass
class Batch:
    """Records of one stream written to an NDJSON file, loaded together."""

    table: Table
    path: Path
    rows: int = 0
    longest: int = 0  # bytes of the longest line, for read_json's object size limit


@dataclass
class Warehouse:
    connection: duckdb.DuckDBPyConnection
    schema: str
    hard_delete: bool
    known: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type

    @classmethod
    def open(cls, path: str, schema: str, hard_delete: bool) -> Warehouse:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(Path(path).expanduser()))
        # One thread: the loader runs beside the tap and Meltano, and DuckDB's threads then only
        # contend for the same cores (history file under load: 7-8 CPU s against 10.6-10.9,
        # bench/RESULTS.md). Loading stays ahead of the tap even so.
        connection.execute("SET threads = 1")
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        return cls(connection, schema, hard_delete)

    def load(self, tables: list[Table], batches: list[Batch]) -> dict[str, int]:
        """In one transaction: the tables created or given new columns (as target-duckdb, a
        stream's table exists once its SCHEMA came, records or not), then for every batch its
        keys deleted from its table and the last row per key inserted (tombstones left out if
        hard_delete). Rows written per table."""
        con = self.connection
        batched_at = datetime.now(UTC).replace(tzinfo=None)
        landed = {}
        con.execute("BEGIN TRANSACTION")
        try:
            for table in tables:
                self._prepare(table)
            for batch in batches:
                self._prepare(batch.table)
                landed[batch.table.name] = self._upsert(batch, batched_at)
            con.execute("COMMIT")
        except duckdb.Error as error:
            con.execute("ROLLBACK")
            self.known.clear()  # the rolled-back DDL
            raise LoadError(self._explain(error, batches)) from None
        return landed

    def _prepare(self, table: Table) -> None:
        """Create the table, or add the columns a newer schema has; a changed type is an error."""
        target = f"{quote(self.schema)}.{quote(table.name)}"
        if table.name not in self.known:
            found = self.connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                [self.schema, table.name],
            ).fetchall()
            if not found:
                columns = [f"{quote(k.lower())} {t}" for k, t in table.columns.items()]
                if table.keys:
                    columns.append(
                        f"PRIMARY KEY ({', '.join(quote(k.lower()) for k in table.keys)})"
                    )
                self.connection.execute(f"CREATE TABLE {target} ({', '.join(columns)})")
                found = [(k.lower(), t) for k, t in table.columns.items()]
            self.known[table.name] = dict(found)
        existing = self.known[table.name]
        for key, wanted in table.columns.items():
            have = existing.get(key.lower())
            if have is None:
                self.connection.execute(
                    f"ALTER TABLE {target} ADD COLUMN {quote(key.lower())} {wanted}"
                )
                existing[key.lower()] = wanted
            elif have != wanted and have not in COMPATIBLE.get(wanted, ()):
                raise LoadError(
                    f"stream {table.stream}: column {key} of {self.schema}.{table.name} is {have}, "
                    f"but the stream's SCHEMA now makes it {wanted}. DuckDB cannot change it in "
                    "place: alter or drop the column (or the table) and load again."
                )

    def _staged(self, batch: Batch) -> str:
        """SELECT of the batch file's rows, typed. Integers are read as text and cast only if
        whole: DuckDB would round 1.5 into an integer column."""
        table = batch.table
        read = {SEQUENCE: "BIGINT"}
        selected = [quote(SEQUENCE)]
        for name, kind in table.columns.items():
            if name == "_sdc_batched_at":
                continue
            column = quote(name)
            read[name] = "VARCHAR" if kind == "BIGINT" else kind
            if kind == "BIGINT":
                complaint = (f"concat({literal(f'stream {table.stream}, column {name}: ')}, "
                             f"{column}, ' is not an integer (input line ', {quote(SEQUENCE)}, "
                             "')')")  # fmt: skip
                column = (f"CASE WHEN {column} IS NULL OR regexp_full_match({column}, "
                          f"{literal(WHOLE)}) THEN CAST({column} AS BIGINT) "
                          f"ELSE error({complaint}) END AS {column}")  # fmt: skip
            selected.append(column)
        return f"SELECT {', '.join(selected)} FROM {_read_json(batch, read)}"

    def _upsert(self, batch: Batch, batched_at: datetime) -> int:
        table, con = batch.table, self.connection
        target = f"{quote(self.schema)}.{quote(table.name)}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE batch_rows AS {self._staged(batch)}")
        columns = [c for c in table.columns if c != "_sdc_batched_at"]
        insert = (f"INSERT INTO {target} ({', '.join(quote(c.lower()) for c in columns)}, "
                  f"_sdc_batched_at) SELECT {', '.join(map(quote, columns))}, ? FROM ")  # fmt: skip
        if not table.keys:
            con.execute(insert + "batch_rows", [batched_at])
            return batch.rows
        keys = [quote(k) for k in table.keys]
        match = " AND ".join(f"t.{quote(k.lower())} = b.{quote(k)}" for k in table.keys)
        con.execute(f"DELETE FROM {target} AS t USING batch_rows AS b WHERE {match}")
        last = (f"(SELECT * FROM batch_rows QUALIFY row_number() OVER (PARTITION BY "
                f"{', '.join(keys)} ORDER BY {quote(SEQUENCE)} DESC) = 1) AS last")  # fmt: skip
        where = " WHERE _sdc_deleted_at IS NULL" if self.hard_delete else ""
        return con.execute(insert + last + where, [batched_at]).fetchone()[0]

    def _explain(self, error: duckdb.Error, batches: list[Batch]) -> str:
        """DuckDB's message, with the stream, column, input line and value it concerns."""
        message = str(error).strip().replace("\n", " ")
        for batch in batches:
            table = batch.table
            if str(batch.path) not in message and f" {table.name}." not in message:
                continue
            for name, wanted in table.columns.items():
                if name in ("_sdc_batched_at", SEQUENCE) or wanted in ("VARCHAR", "JSON"):
                    continue
                found = self._first_unconvertible(batch, name, wanted)
                if found:
                    line, value = found
                    return (f"stream {table.stream}, column {name} ({wanted}), input line "
                            f"{line}: {value!r} is not a {wanted} value. {message}")  # fmt: skip
            return f"stream {table.stream}: {message}"
        return message

    def _first_unconvertible(self, batch: Batch, name: str, wanted: str) -> tuple | None:
        """(input line, text) of the batch's first value of ``name`` DuckDB cannot convert."""
        source = _read_json(batch, {SEQUENCE: "BIGINT", name: "VARCHAR"})
        column = quote(name)
        return self.connection.execute(
            f"SELECT {quote(SEQUENCE)}, {column} FROM {source} WHERE {column} IS NOT NULL "
            f"AND TRY_CAST({column} AS {wanted}) IS NULL ORDER BY 1 LIMIT 1"
        ).fetchone()


def _read_json(batch: Batch, columns: dict[str, str]) -> str:
    """read_json of a batch file, these keys read as these types (the others ignored)."""
    spec = ", ".join(f"{literal(name)}: {literal(kind)}" for name, kind in columns.items())
    size = max(16 << 20, batch.longest + 1)  # DuckDB's default limit, or the longest record
    return (f"read_json({literal(str(batch.path))}, format='newline_delimited', "
            f"columns={{{spec}}}, maximum_object_size={size})")  # fmt: skip
