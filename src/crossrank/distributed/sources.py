"""Reading pairs into Ray Data (JSON lines, ``.gz`` too, and Parquet, one read task per file)
and writing JSON lines.

Each file is checked as it is read: the first bad row of a file (invalid JSON, a missing or
non-string query or passage) is passed on with its message in a hidden column
(:data:`~crossrank.distributed.ray_data.ERROR_COLUMN`), and the reranking UDF ends the job
with an :class:`~crossrank.errors.InputError` naming the file and the row (the line for JSON
lines, the 1-based row for Parquet), as the in-process ``crossrank score`` does; Ray then
reports it as an error in user code, not in Ray. Every other field is kept as it is.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from crossrank.distributed.ray_data import ERROR_COLUMN, import_ray
from crossrank.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

#: JSON lines are turned into Arrow tables of at most this many rows
ROWS_PER_BLOCK = 8192

FORMATS = ("jsonl", "parquet")


def detect_format(path: str) -> str:
    """``jsonl`` or ``parquet`` from a file name (``.gz`` is JSON lines compressed)."""
    name = path.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".gz")):
        return "jsonl"
    raise InputError(
        f"{path}: cannot tell JSON lines from Parquet by its name; give --input-format"
    )


def expand_inputs(pattern: str) -> list[str]:
    """Local files named by a path, a directory (its files, sorted) or a glob; a URI with a
    scheme (``s3://``, ``gs://``...) is passed to Ray as it is."""
    if "://" in pattern:
        return [pattern]
    if os.path.isdir(pattern):
        paths = sorted(
            os.path.join(pattern, n)
            for n in os.listdir(pattern)
            if not n.startswith((".", "_")) and os.path.isfile(os.path.join(pattern, n))
        )
    elif glob.has_magic(pattern):
        paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    else:
        paths = [pattern] if os.path.isfile(pattern) else []
    if not paths:
        raise InputError(f"{pattern}: no input file")
    return [os.path.abspath(p) for p in paths]


def _column_error(path: str, table: pa.Table, name: str, first_row: int) -> tuple[str, int] | None:
    """The first problem of column ``name`` of a Parquet batch: (message, row index in the
    batch, -1 when the whole column is wrong), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if name not in table.column_names:
        return f"{path}: no {name!r} column (a missing string field in every row)", -1
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return f"{path}: column {name!r} holds {column.type}, not strings", -1
    if column.null_count:
        index = pc.index(pc.is_null(column), True).as_py()
        return f"{path}: row {first_row + index}: missing string field {name!r}", index
    return None


def _error_table(message: str) -> pa.Table:
    import pyarrow as pa

    return pa.table({ERROR_COLUMN: pa.array([message], type=pa.string())})


def _json_block(path: str, rows: list[dict[str, Any]], first: int, last: int) -> pa.Table:
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        return _error_table(f"{path}: lines {first}-{last}: fields of mixed types ({exc})")


def _json_row(line: str, where: str, columns: Sequence[str]) -> tuple[dict[str, Any], str]:
    """One row of a JSON-lines file, with its error (\"\" when fine) in ``ERROR_COLUMN``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        error = f"{where}: invalid JSON ({exc.msg})"
        return {ERROR_COLUMN: error}, error
    if not isinstance(obj, dict):
        error = f"{where}: expected a JSON object"
        return {ERROR_COLUMN: error}, error
    for name in columns:
        if not isinstance(obj.get(name), str):
            error = f"{where}: missing string field {name!r}"
            return {
                **{k: v for k, v in obj.items() if k not in columns},
                ERROR_COLUMN: error,
            }, error
    return {**obj, ERROR_COLUMN: None}, ""


def _datasources() -> tuple[type, type]:
    """The datasource classes (defined on first use: their base class comes from Ray)."""
    global _JSONL, _PARQUET
    if _JSONL is not None:
        return _JSONL, _PARQUET
    import_ray()
    from ray.data.datasource import FileBasedDatasource

    class JsonLinesPairs(FileBasedDatasource):
        """JSON lines whose query and passage fields must be strings."""

        def __init__(self, paths: Sequence[str], *, columns: Sequence[str], **kw: Any) -> None:
            super().__init__(list(paths), **kw)
            self.columns = tuple(columns)

        def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
            text = f.readall().decode("utf-8")
            rows: list[dict[str, Any]] = []
            first = lineno = 1
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                if not rows:
                    first = lineno
                obj, error = _json_row(line, f"{path}:{lineno}", self.columns)
                rows.append(obj)
                if error:  # the row carries its error to the UDF, which ends the job
                    break
                if len(rows) == ROWS_PER_BLOCK:
                    yield _json_block(path, rows, first, lineno)
                    rows = []
            if rows:
                yield _json_block(path, rows, first, lineno)

    class ParquetPairs(FileBasedDatasource):
        """Parquet files whose query and passage columns must be non-null strings."""

        def __init__(self, paths: Sequence[str], *, columns: Sequence[str], **kw: Any) -> None:
            super().__init__(list(paths), **kw)
            self.columns = tuple(columns)

        def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(pa.BufferReader(f.readall()))
            except pa.ArrowInvalid as exc:
                yield _error_table(f"{path}: not a Parquet file ({exc})")
                return
            offset = 1
            for batch in pf.iter_batches(batch_size=ROWS_PER_BLOCK):
                table = pa.Table.from_batches([batch])
                problems = [_column_error(path, table, n, offset) for n in self.columns]
                found = [p for p in problems if p is not None]
                if found:  # the first bad row carries its error to the UDF
                    message, index = min(found, key=lambda p: p[1])
                    if index < 0:
                        yield _error_table(message)
                    else:
                        errors = pa.array([None] * index + [message], type=pa.string())
                        yield table.slice(0, index + 1).append_column(ERROR_COLUMN, errors)
                    return
                yield table.append_column(ERROR_COLUMN, pa.nulls(table.num_rows, pa.string()))
                offset += table.num_rows

    _JSONL, _PARQUET = JsonLinesPairs, ParquetPairs
    return _JSONL, _PARQUET


def json_lines_sink(path: str) -> Any:
    """A Ray datasink writing JSON lines as the in-process ``crossrank score`` does
    (``json.dumps`` of each row, non-ASCII kept, every float exact), one file per block."""
    import_ray()
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonLinesSink(BlockBasedFileDatasink):
        def write_block_to_file(self, block: Any, file: Any) -> None:
            for row in block.to_arrow().to_pylist():
                file.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode())

    return JsonLinesSink(path, file_format="jsonl")


_JSONL: type | None = None
_PARQUET: type | None = None


def read_pairs(
    paths: Sequence[str],
    *,
    fmt: str,
    query_column: str = "query",
    passage_column: str = "passage",
) -> ray.data.Dataset:
    """A dataset of the rows of ``paths`` (all ``fmt``: ``jsonl`` or ``parquet``), checked.

    ``.gz`` files are decompressed (Ray infers the compression from the name).
    """
    ray = import_ray()
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    jsonl, parquet = _datasources()
    cls = jsonl if fmt == "jsonl" else parquet
    source = cls(paths, columns=(query_column, passage_column))
    return ray.data.read_datasource(source)
