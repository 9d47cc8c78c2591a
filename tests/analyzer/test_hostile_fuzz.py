"""Hypothesis over the parsers issue 21 and issue 18 added or changed: any damage to a real file of every format
(bytes cut, flipped, inserted, nested) loads what it can and reports the rest (bad records, or one UserError naming
the file), never another exception; and no credential a generator can shape survives redaction."""

from __future__ import annotations

import gzip
import re

import duckdb
import jwt
from conftest import REAL_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitrace.analyzer import redact
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import load_into

TOKEN = jwt.encode({"sub": "x"}, "a-test-secret-that-is-long-enough-for-hs256", algorithm="HS256").encode()
REAL = sorted(p for p in REAL_DATA.glob("*.json*")) if REAL_DATA.is_dir() else []


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """A real file, damaged: cut short, some bytes replaced or inserted, deep nesting spliced in, maybe gzipped."""
    path = draw(st.sampled_from(REAL))
    data = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "insert", "nest", "cut"]))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"{", b"]", b'"', b"\\", b"\x00", b"\xff\xfe", b"null", b"1e999",
                                                 b'"' + TOKEN + b'"']))
        elif kind == "nest":
            depth = draw(st.sampled_from([10, 2000]))
            data[at:at] = b"[" * depth + b"]" * depth
        else:
            del data[at:]
    raw = bytes(data)
    if draw(st.booleans()):
        raw = gzip.compress(raw)
    return path.name, raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged())
def test_damaged_real_files_load_what_they_can_and_never_crash(tmp_path_factory, real_data, case):
    # real_data: skipped where the public files are absent, a failure where CI requires them (tests/conftest.py)
    name, raw = case
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(raw)
    try:
        report = load_into(duckdb.connect(), [str(path)])
    except UserError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
    else:
        assert report.spans >= 0 and report.bad_records >= 0
        assert all(p.startswith(str(path)) for p in report.problems if not p.startswith("..."))


def test_the_real_files_are_here_for_the_fuzz_test(real_data):
    """The fuzz test above draws from every real file: CI must have them (JITRACE_REQUIRE_REAL_DATA)."""
    assert len(REAL) >= 12


_B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=4,
                  max_size=40)
_WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(before=_WORDS, after=_WORDS, header=_B64URL, claims=_B64URL, signature=_B64URL,
       scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "basic"]), secret=st.text(
           alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=._-", min_size=16, max_size=64))
def test_no_generated_credential_survives_redaction_in_python_or_sql(before, after, header, claims, signature,
                                                                      scheme, secret):
    jwt_text = f"eyJ{header}.{claims}.{signature}"
    text = f"{before} {jwt_text} {after} {scheme} {secret} {after}"
    con = duckdb.connect()
    (in_sql,) = con.execute("SELECT regexp_replace(?, ?, ?, 'g')", [text, redact.PATTERN, redact.REPLACEMENT]
                            ).fetchone()
    # as the loaders store rows: the pattern only where the hint says a credential may be (redact.sql_redacted)
    (as_loaded,) = con.execute(f"SELECT {redact.sql_redacted('t')} FROM (SELECT ?::VARCHAR AS t)", [text]).fetchone()
    for out in (redact.redact(text), in_sql, as_loaded):
        assert jwt_text not in out and f"{scheme} {secret}" not in out
        assert re.search(rf"{scheme}\s+\[REDACTED\]", out)
    assert redact.redact(text) == in_sql == as_loaded  # one pattern, the same result in both engines
