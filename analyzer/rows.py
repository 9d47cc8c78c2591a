"""Row building shared by every loader: ids, attribute JSON, times, and the batch that goes to DuckDB.

A span row is a tuple in ``schema.SPANS`` column order, a log row one in ``schema.LOGS`` order: tuples are the
cheapest thing to build per record in Python, and ``Rows.table`` turns a batch of them into Arrow columns at once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from jitrace.analyzer import schema
from jitrace.instrumentation import contract

if TYPE_CHECKING:
    import pyarrow as pa

_HEX = frozenset("0123456789abcdefABCDEF")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

def _no_default(o: Any) -> Any:
    if isinstance(o, Decimal):  # a streamed reader's (ijson's) non-integer number
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON")


# One encoder, compact, keeps non-ASCII text as is; NaN/Infinity are not JSON, so they are caught and made strings.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_no_default).encode
try:  # the C encoder built once (JSONEncoder.encode builds a new one per call: a third of the cost of small maps)
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is None:
        raise ImportError
    _c_encoder = c_make_encoder(None, _no_default, encode_basestring, None, ":", ",", False, False, False)

    def _encode_fast(value: Any) -> str:
        if type(value) is dict or type(value) is list:
            return "".join(_c_encoder(value, 0))
        return _encode(value)
except ImportError:  # a Python without the C accelerator
    _encode_fast = _encode


class BadRecord(ValueError):
    """A record that cannot be read. ``str()`` names the field and the problem (the caller adds file and position)."""


def to_json(value: Any) -> str:
    """Compact JSON text; ints stay integers, floats keep a fraction (``1.0``), non-finite floats become strings."""
    try:
        return _encode_fast(value)
    except ValueError:  # NaN or Infinity somewhere inside
        return _encode(_finite(value))


# The contract's string-array attributes. Zipkin and Jaeger tags are strings: an exporter writes such an attribute
# there as its JSON text (["viewer","editor"]), which ``string_arrays`` turns back into the array OTLP carries.
STRING_ARRAYS = (contract.POLICY_GRANTED, contract.POLICY_REQUEST)


def string_arrays(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with each string-array attribute given as the JSON text of an array of strings made that array (in
    place; anything else is left as it came)."""
    for name in STRING_ARRAYS:
        value = attrs.get(name)
        if isinstance(value, str) and value.startswith("["):
            try:
                decoded = json.loads(value)
            except ValueError:
                continue
            if isinstance(decoded, list) and all(isinstance(v, str) for v in decoded):
                attrs[name] = decoded
    return attrs


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def hex_id(value: Any, size: int, field: str, *, required: bool = True) -> str | None:
    """An id as ``size`` bytes of lower-case hex, from hex (any case, short ones left-padded) or base64.

    All-zero and empty ids mean "none": an error for a required id, NULL otherwise.
    """
    if value is None or value == "":
        if required:
            raise BadRecord(f"{field}: missing")
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{field}: expected a string, got {type(value).__name__}")
    width = 2 * size
    if len(value) <= width and _HEX.issuperset(value):
        out = value.lower().rjust(width, "0")  # Jaeger and Zipkin drop leading zeros and use 64-bit trace ids
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRecord(f"{field}: {value[:40]!r} is neither hex nor base64") from None
        if len(raw) != size:
            raise BadRecord(f"{field}: {len(raw)} bytes, expected {size}")
        out = raw.hex()
    if out == (_ZERO_TRACE if size == 16 else _ZERO_SPAN)[:width]:
        if required:
            raise BadRecord(f"{field}: all zeros")
        return None
    return out


def bytes_id(raw: bytes, size: int, field: str, *, required: bool = True) -> str | None:
    """An id from protobuf bytes (empty = none)."""
    if not raw:
        if required:
            raise BadRecord(f"{field}: missing")
        return None
    if len(raw) != size:
        raise BadRecord(f"{field}: {len(raw)} bytes, expected {size}")
    out = raw.hex()
    if out.count("0") == len(out):
        if required:
            raise BadRecord(f"{field}: all zeros")
        return None
    return out


def as_int(value: Any, field: str, default: int | None = 0) -> int | None:
    """An OTLP 64-bit integer: a JSON number or (the spec's JSON mapping) a decimal string."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise BadRecord(f"{field}: expected an integer, got a boolean")
    if isinstance(value, int):
        out = value
    elif isinstance(value, str):
        try:
            out = int(value)
        except ValueError:
            raise BadRecord(f"{field}: {value[:40]!r} is not an integer") from None
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        out = int(value)  # a streamed reader's number written with a fraction or an exponent
    else:
        raise BadRecord(f"{field}: expected an integer, got {type(value).__name__}")
    if not -(2**63) <= out < 2**64:
        raise BadRecord(f"{field}: {out} does not fit 64 bits")
    return out if out < 2**63 else out - 2**64  # fixed64 read as signed, as the Parquet column is


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?\d*\s*(Z|z|[+-]\d\d:?\d\d)?$"
)


def ns_in_range(ns: int, field: str) -> int:
    """``ns`` if it fits the BIGINT time columns; else a bad record (not an overflow that fails the whole load)."""
    if not -(2**63) <= ns < 2**63:
        raise BadRecord(f"{field}: {ns} ns is out of range")
    return ns


def parse_time_ns(value: Any, field: str) -> int:
    """A time as Unix ns: RFC 3339 text (to the ns; no zone = UTC) or a number of s, ms, us or ns (by magnitude)."""
    ns = _time_ns(value, field)
    if not -(2**63) <= ns < 2**63:  # the BIGINT column: a wild value is a bad record, not a crash at insert time
        raise BadRecord(f"{field}: {str(value)[:40]!r} is out of range")
    return ns


def _time_ns(value: Any, field: str) -> int:
    if isinstance(value, str):
        m = _RFC3339.match(value.strip())
        if m is None:
            try:
                return _time_ns(float(value), field)
            except ValueError:
                raise BadRecord(f"{field}: {value[:40]!r} is not a time") from None
        y, mo, d, h, mi, s, frac, zone = m.groups()
        tz = dt.UTC
        if zone and zone not in ("Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        try:
            base = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
        except ValueError as exc:
            raise BadRecord(f"{field}: {value[:40]!r}: {exc}") from None
        return int(base.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"{field}: expected a time, got {type(value).__name__}")
    magnitude = abs(value)
    if magnitude < 1e11:
        return int(value * 1e9)
    if magnitude < 1e14:
        return int(value * 1e6)
    if magnitude < 1e17:
        return int(value * 1e3)
    return int(value)


class Rows:
    """Span and log rows of one batch, and where bad records were found."""

    def __init__(self) -> None:
        self.spans: list[tuple] = []
        self.span_tables: list[pa.Table] = []  # spans a C reader gave as tables of schema.SPANS
        self.logs: list[tuple] = []
        self.problems: list[str] = []  # one line each: "file:position: field: what"
        self.bad = 0
        self.skipped = 0  # OTLP export requests of signals jitrace does not read (_formats.OTHER_SIGNALS)

    def bad_record(self, where: str, why: object) -> None:
        self.bad += 1
        self.problems.append(f"{where}: {why}")

    def extend(self, other: Rows) -> None:
        self.spans += other.spans
        self.span_tables += other.span_tables
        self.logs += other.logs
        self.problems += other.problems
        self.bad += other.bad
        self.skipped += other.skipped


def spans_table(rows: Rows) -> pa.Table:
    """Every span of ``rows`` as one table of schema.SPANS: its row tuples and the tables a C reader gave."""
    import pyarrow as pa

    tables = [table(rows.spans, schema.SPANS), *rows.span_tables] if rows.spans or not rows.span_tables \
        else rows.span_tables
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def table(rows: list[tuple], columns: schema.Columns) -> pa.Table:
    """Arrow columns from row tuples in the order of ``columns`` (schema.SPANS or schema.LOGS)."""
    import pyarrow as pa  # here: reading Parquet alone never builds Arrow tables (analyzer/schema.py)

    arrow_schema = schema.arrow(columns)
    if not rows:
        return pa.Table.from_batches([], schema=arrow_schema)  # Schema.empty_table() imports pandas
    columns = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [_array(col, f.type) for col, f in zip(columns, arrow_schema, strict=True)], schema=arrow_schema
    )


def _array(values: tuple, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """``pa.array(values, type=kind)`` for a column of str or int (None for null), without importing pandas:
    pa.array imports it to ask whether ``values`` is a pandas object, a fixed cost of every run that reads a format
    in Python. A column the quick way does not take as pa.array would (a value of another type, past 2 GB) goes to
    pa.array, which converts it or raises as before."""
    import numpy as np
    import pyarrow as pa

    types = set(map(type, values))  # the builder takes bytes as they are and NaN as a null, numpy 1.5 and True
    try:
        if pa.types.is_string(kind) and types <= _STR_OR_NONE:
            builder = pa.lib.StringBuilder()
            builder.append_values(values)
            return builder.finish()
        if str(kind) in _INTS and types <= _INT_OR_NONE:
            numbers = np.fromiter((0 if v is None else v for v in values), dtype=str(kind), count=len(values))
            nulls = values.count(None)
            valid = None
            if nulls:
                valid = pa.py_buffer(np.packbits([v is not None for v in values], bitorder="little"))
            return pa.Array.from_buffers(kind, len(values), [valid, pa.py_buffer(numbers)], null_count=nulls)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    return pa.array(values, type=kind)


_INTS = frozenset({"int64", "int32"})
_INT_OR_NONE = frozenset({int, type(None)})
_STR_OR_NONE = frozenset({str, type(None)})


def buffers_table(rows: int, columns: list[tuple]) -> pa.Table:
    """A table of schema.SPANS from the C readers' Arrow buffers (no copy): per column (validity or None, null count,
    offsets or None, values)."""
    import pyarrow as pa

    arrow_schema = schema.arrow(schema.SPANS)
    arrays = []
    for field, (validity, nulls, offsets, values) in zip(arrow_schema, columns, strict=True):
        buffers = [None if validity is None else pa.py_buffer(validity)]
        buffers += [pa.py_buffer(values)] if offsets is None else [pa.py_buffer(offsets), pa.py_buffer(values)]
        arrays.append(pa.Array.from_buffers(field.type, rows, buffers, null_count=nulls))
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


SPAN_COLUMNS = tuple(schema.SPANS.names)
LOG_COLUMNS = tuple(schema.LOGS.names)
