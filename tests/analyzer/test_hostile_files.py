"""Hostile files and strings (issue 21's findings on the analyzer's side): nothing jitrace did not write is deleted or
hidden, paths are read exactly, credentials in span data never reach an output, outputs cannot carry injections,
inputs cannot take unbounded memory or a traceback, and notebooks open foreign databases safely. Each test failed on
the code before its fix."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import jwt
import pytest
from spanfactory import T0, Token, World

from jitrace.analyzer import outputs
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.load import load_into
from jitrace.analyzer.steps import spans_view
from jitrace.collect import compact

PER_FILE = 5  # an issuer call (client, server), its jit.issue span, and the call (client, server)


_IDS = itertools.count(1, 1000)  # each file's spans get ids of their own: the same span twice is one span


def _world_file(path: Path) -> Path:
    world = World(_ids=itertools.count(next(_IDS)))
    token = Token(iat=T0, exp=T0 + 3600)
    world.issue(token, T0)
    world.call(T0 + 1, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    return world.write_parquet(path)


def _compacted_claiming(folder: Path, names: list) -> Path:
    """A compacted file (facts and all) whose metadata claims to replace ``names``."""
    small = _world_file(folder / "0123456789abcdef0123456789abcdef.parquet")
    con = duckdb.connect()
    compact.compact_folder(con, folder, "spans")
    assert not small.exists()
    (compacted,) = folder.glob(f"{compact.PREFIX}*.parquet")
    claim = spans_view.sql_string(json.dumps(names))
    tmp = folder / "rewritten.tmp"
    con.execute(f"COPY (FROM read_parquet({spans_view.sql_string(str(compacted))})) TO "
                f"{spans_view.sql_string(str(tmp))} (FORMAT parquet, KV_METADATA {{'jitrace.replaces': {claim}}})")
    tmp.replace(compacted)
    return compacted


def test_a_compacted_files_metadata_deletes_and_hides_nothing_but_the_receivers_own_small_files(tmp_path):
    """Finding 1: ``jitrace.replaces`` naming ``../../x``, an absolute path or a user's file made collect delete it
    at start and analyze skip it even when named on the command line."""
    out = tmp_path / "spans-out"
    folder = out / "spans" / "hour=2025-10-09T08"
    outside = tmp_path / "victim.txt"
    outside.write_text("precious")
    leftover = folder / "fedcba9876543210fedcba9876543210.parquet"  # a small file it did replace
    _compacted_claiming(folder, ["../../../victim.txt", str(outside), "users-own.parquet",
                                 leftover.name, 42, {"x": 1}])
    users = _world_file(folder / "users-own.parquet")
    _world_file(leftover)
    assert compact.finish(out) == 1  # the small file, and nothing else
    assert outside.read_text() == "precious" and users.exists() and not leftover.exists()

    con = duckdb.connect()
    report = load_into(con, [str(folder)])
    assert report.spans == 2 * PER_FILE  # the compacted file and the user's file: that one is not hidden
    con = duckdb.connect()
    leftover = _world_file(leftover)
    report = load_into(con, [str(folder / compact.PREFIX) + "*", str(leftover)])
    assert report.spans == 2 * PER_FILE  # named on the command line: read, whatever the metadata claims


def test_compaction_merges_and_removes_only_the_receivers_own_files(tmp_path):
    """A user's Parquet file in an hour folder was merged into the compacted file and deleted."""
    folder = tmp_path / "spans" / "hour=2025-10-09T08"
    users = _world_file(folder / "users-own.parquet")
    _world_file(folder / "0123456789abcdef0123456789abcdef.parquet")
    assert compact.compact_folder(duckdb.connect(), folder, "spans") == (1, PER_FILE)
    assert users.exists()


def test_parquet_names_with_glob_characters_are_read_exactly(tmp_path):
    """Finding 5: a file named ``a*.parquet`` was expanded as a glob (its spans counted with every other file's)."""
    starred = _world_file(tmp_path / "a*.parquet")
    _world_file(tmp_path / "ab.parquet")
    _world_file(tmp_path / "a[1].parquet")
    for name in (starred, tmp_path / "a[1].parquet"):
        con = duckdb.connect()
        assert load_into(con, [str(name)]).spans == PER_FILE
        assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == PER_FILE


# minted when the tests run: a signed token of no service's, the kind a span may quote
JWT = jwt.encode({"sub": "bob", "exp": 1_760_000_017}, "a-test-secret-that-is-long-enough-for-hs256", algorithm="HS256")
BASIC = "Basic dXNlcjpzZWNyZXQtcGFzc3dvcmQ="
OPAQUE = "Bearer 8f14e45fceea167a5a36dedd4bea2543"


def _zipkin_with_credentials() -> list[dict]:
    """A Zipkin gRPC pair (Brave's tags) denied, with credentials in tags and an annotation."""
    base = {"traceId": "5af7183fb1d4cf5f", "timestamp": 1_760_000_000_000_000, "duration": 2000,
            "localEndpoint": {"serviceName": "frontend"}}
    client = {**base, "id": "6b221d5bc9e6496c", "kind": "CLIENT", "name": "orders/read",
              "tags": {"rpc.grpc.status_code": "7", "http.request.header.authorization": f"Bearer {JWT}",
                       "grpc.metadata": OPAQUE},
              "annotations": [{"timestamp": 1_760_000_000_000_500, "value": f"sent token {JWT}"}]}
    return [client]


def test_credentials_in_span_data_never_reach_a_stored_output(tmp_path):
    """Finding 3: a JWT (or Bearer/Basic credential) in an attribute, gRPC metadata, a status message, an exception
    event, the denial reason, Zipkin tags or annotations reached jitrace.duckdb, attributions.csv and report.html."""
    from jitrace.analyzer.analyze import analyze

    world = World()
    token = Token(iat=T0, exp=T0 + 10)
    world.issue(token, T0)
    call = world.call(T0 + 20, token)  # denied: expired before it was sent
    for row in (call["client"], call["server"]):
        attrs = json.loads(row["attributes"])
        attrs.update({"http.request.header.authorization": f"Bearer {JWT}", "rpc.grpc.request.metadata": [BASIC],
                      "jit.denial.reason": f"TOKEN_EXPIRED {JWT}"})
        row["attributes"] = json.dumps(attrs)
        row["status_message"] = f"rejected {OPAQUE}"
        row["events"] = json.dumps([{"name": "exception", "time_ns": row["start_ns"],
                                     "attributes": {"exception.message": f"bad token {JWT}"}}])
    (tmp_path / "in").mkdir()
    world.write_parquet(tmp_path / "in" / "spans.parquet")
    (tmp_path / "in" / "zipkin.json").write_text(json.dumps(_zipkin_with_credentials()))
    summary = analyze([str(tmp_path / "in")], tmp_path / "out", quiet=True)
    assert summary["denials"] >= 1

    secrets = (JWT, "dXNlcjpzZWNyZXQtcGFzc3dvcmQ", "8f14e45fceea167a5a36dedd4bea2543")
    for name in ("attributions.csv", "report.html", "summary.json"):
        text = (tmp_path / "out" / name).read_text()
        assert not [s for s in secrets if s in text], name
    con = duckdb.connect(str(tmp_path / "out" / "jitrace.duckdb"), read_only=True)
    for table, columns in (("spans", ("name", "status_message", "resource", "attributes", "events", "links")),
                           ("attributions", ("evidence",))):
        for column in columns:
            leaked = con.execute(f"SELECT count(*) FROM {table} WHERE " + " OR ".join(
                f"contains({column}, ?)" for _ in secrets), list(secrets)).fetchone()[0]
            assert leaked == 0, (table, column)
    # what was redacted says so, and the words around it stay
    text = con.execute("SELECT string_agg(attributes || status_message, ' ') FROM spans "
                       "WHERE status_message IS NOT NULL").fetchone()[0]
    assert "Bearer [REDACTED]" in text and "Basic [REDACTED]" in text and "rejected Bearer [REDACTED]" in text


def _jitrace(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jitrace.analyzer.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def hostile_strings(tmp_path_factory) -> Path:
    """A denied call whose service, principal and reason carry a formula, terminal escapes and a script end tag."""
    world = World()
    token = Token(iat=T0, exp=T0 + 10, sub="@SUM(1+1)\x1b]0;pwned\x07\x1b[31m\u202e")
    world.issue(token, T0)
    call = world.call(T0 + 20, token)
    call["server"]["service"] = '=HYPERLINK("http://evil.example/","x")'
    attrs = json.loads(call["server"]["attributes"])
    attrs["jit.denial.reason"] = "</script><script>alert(1)</script>"
    call["server"]["attributes"] = json.dumps(attrs)
    folder = tmp_path_factory.mktemp("hostile")
    return world.write_parquet(folder / "spans.parquet")


def test_csv_cells_a_spreadsheet_would_run_are_quoted(hostile_strings, tmp_path):
    """Finding 4: cells starting with =, +, -, @ or a tab passed into attributions.csv as formulas."""
    result = _jitrace("analyze", str(hostile_strings), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "attributions.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["server_service"] == "'" + '=HYPERLINK("http://evil.example/","x")'
    assert row["principal"].startswith("'@SUM(1+1)")
    assert not [k for k, v in row.items() if v[:1] in outputs.FORMULA_STARTS]
    typed = tmp_path / "out" / "attributions.parquet"
    parquet = duckdb.connect().execute(f"SELECT server_service FROM '{typed}'").fetchone()
    assert parquet[0].startswith("=HYPERLINK")  # the typed file keeps the value as it came


def test_terminal_escapes_from_token_claims_are_shown_not_run(hostile_strings, tmp_path):
    """Finding 4: escape sequences (title, colour) and bidi overrides from unverified claims reached the terminal."""
    result = _jitrace("analyze", str(hostile_strings), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "@SUM(1+1)" in result.stdout
    assert not [c for c in result.stdout if ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e"]
    assert "\\x1b]0;pwned\\x07" in result.stdout


def test_the_reports_embedded_json_parses_and_ends_no_element(hostile_strings, tmp_path):
    """Finding 4: the summary embedded in report.html was HTML-escaped inside a script element: JSON.parse failed."""
    result = _jitrace("analyze", str(hostile_strings), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    embedded = page.split('<script type="application/json" id="summary-json">')[1].split("</script>")[0]
    assert json.loads(embedded) == json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "<script>alert(1)" not in page


def test_jitrace_memory_limit_is_a_size_never_sql(hostile_strings, tmp_path):
    """Finding 4: JITRACE_MEMORY_LIMIT was pasted into SQL (a COPY ... TO ran)."""
    target = tmp_path / "written.csv"
    injected = f"1GB'; COPY (SELECT 1) TO '{target}'; SET memory_limit = '1GB"
    result = _jitrace("analyze", str(hostile_strings), "--out", str(tmp_path / "out"),
                      env={"JITRACE_MEMORY_LIMIT": injected})
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "JITRACE_MEMORY_LIMIT" in result.stderr and "expected a size" in result.stderr
    assert not target.exists()
    ok = _jitrace("analyze", str(hostile_strings), "--out", str(tmp_path / "out"), env={"JITRACE_MEMORY_LIMIT": "2GiB"})
    assert ok.returncode == 0, ok.stderr


def test_a_compression_bomb_is_refused_in_one_line_without_taking_the_memory(tmp_path, monkeypatch):
    """Finding 6: a 10 MB gzip input expanded without limit (5 GB before failing)."""
    import gzip
    import resource

    from jitrace.analyzer.load import _files

    monkeypatch.setattr(_files, "INFLATE_FLOOR", 8 << 20)  # the bomb, kept small for the test: 64 MiB of zeros
    bomb = tmp_path / "spans.json.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(b"\0" * (1 << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError, match=r"spans\.json\.gz: decompresses to more than \d+ MiB .*compression bomb"):
        load_into(duckdb.connect(), [str(bomb)])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 40, grown_mib  # no more than the limit (here 8 MiB floor, 200x of 64 KB) was inflated


def _nested(depth: int) -> tuple[str, str]:
    """A plain OTLP request, and one whose span has an attribute ``depth`` arrays deep, as JSON text."""
    value = "{}"
    for _ in range(depth):
        value = '{"arrayValue": {"values": [' + value + "]}}"
    good = json.dumps(_otlp_request())
    deep = good.replace('"attributes": []', '"attributes": [{"key": "k", "value": ' + value + "}]", 1)
    return good, deep.replace("eee19b7ec3c1b174", "ddd19b7ec3c1b173")  # a span of its own


def test_json_nested_past_what_python_reads_is_a_bad_record_or_one_line(tmp_path):
    """Finding 6: deeply nested JSON was a RecursionError traceback. In JSON lines it is a bad record (the rest
    loads); a whole document is one line naming the file."""
    good, deep = _nested(5000)
    lines = tmp_path / "spans.jsonl"
    other = good.replace("eee19b7ec3c1b174", "fff19b7ec3c1b175")  # another span: the same one twice would be one
    lines.write_text(f"{good}\n{deep}\n{other}\n")
    report = load_into(duckdb.connect(), [str(lines)])
    assert report.spans == 2 and report.bad_records == 1
    assert report.problems == [f"{lines}:2: JSON nested too deeply to read (deeper than about 900 levels)"]
    doc = tmp_path / "doc.json"
    doc.write_text(deep)
    with pytest.raises(UserError, match=r"doc\.json: JSON nested too deeply to read"):
        load_into(duckdb.connect(), [str(doc)])


def test_json_nested_as_deep_as_python_reads_loads(tmp_path):
    """300 nested arrays (900 JSON levels) are within what Python parses: they load."""
    good, deep = _nested(300)
    lines = tmp_path / "spans.jsonl"
    lines.write_text(f"{good}\n{deep}\n")
    report = load_into(duckdb.connect(), [str(lines)])
    assert (report.spans, report.bad_records) == (2, 0)


def _otlp_request() -> dict:
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "a/b",
            "kind": 2, "startTimeUnixNano": "1760000000000000000", "endTimeUnixNano": "1760000000100000000"}
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}


def test_folder_walks_enter_no_symbolic_link_unless_asked(tmp_path):
    """Finding 5: symlinked files and folders inside an input folder were followed (a link may lead anywhere)."""
    far, farther = _world_file(tmp_path / "elsewhere" / "far.parquet"), _world_file(tmp_path / "more" / "b.parquet")
    folder = tmp_path / "in"
    _world_file(folder / "near.parquet")
    (folder / "linked.parquet").symlink_to(far)
    (folder / "linked-folder").symlink_to(farther.parent, target_is_directory=True)
    assert load_into(duckdb.connect(), [str(folder)]).spans == PER_FILE
    assert load_into(duckdb.connect(), [str(folder)], follow_symlinks=True).spans == 3 * PER_FILE
    assert load_into(duckdb.connect(), [str(folder / "linked.parquet")]).spans == PER_FILE  # named: asked for


def test_a_file_that_is_not_a_trace_is_named_but_its_content_is_not_quoted(tmp_path):
    """Finding 5: the error for a non-trace file quoted its first line (a key, a password file) on stderr."""
    secret = tmp_path / "notes.log"
    secret.write_text("root:$6$secret-hash-of-the-password:19000:0:99999:7:::\n")
    result = _jitrace("analyze", str(secret), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert str(secret) in result.stderr and "secret-hash" not in result.stderr


@pytest.mark.parametrize("option, value", [("--window", "nan"), ("--window", "0"), ("--window", "-5"),
                                           ("--leeway", "inf"), ("--leeway", "-1"), ("--log-window", "nan")])
def test_bad_numeric_options_are_one_line_errors(option, value, tmp_path):
    """Finding 6's options: nan, inf, negative or zero windows ran (and gave nonsense offsets)."""
    result = _jitrace("analyze", str(tmp_path), "--out", str(tmp_path / "out"), option, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {option}: '{value}'" in result.stderr.splitlines()[-1]


def test_a_foreign_database_opened_by_the_notebooks_api_reaches_nothing_outside_it(tmp_path):
    """Finding 7: open_output on a folder someone else wrote ran the views stored in its database with external
    access on (a view could read any file, a macro reach the network)."""
    from jitrace.analyzer.analyze import analyze
    from jitrace.analyzer.notebook import open_output

    _world_file(tmp_path / "in" / "spans.parquet")
    analyze([str(tmp_path / "in")], tmp_path / "out", quiet=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private file")
    with duckdb.connect(str(tmp_path / "out" / "jitrace.duckdb")) as con:  # the folder's author turns hostile
        con.execute(f"CREATE OR REPLACE VIEW spans AS SELECT content AS name FROM read_text('{secret}')")
        con.execute(f"CREATE VIEW stolen AS SELECT content FROM read_text('{secret}')")
    out = open_output(tmp_path / "out")
    assert len(out.spans) == PER_FILE and "private" not in " ".join(out.spans["name"])  # jitrace's own view
    with pytest.raises(duckdb.PermissionException):
        out.sql("SELECT * FROM stolen")
    with pytest.raises(duckdb.Error):
        out.sql(f"COPY (SELECT 1) TO '{tmp_path / 'written.csv'}'")
    with pytest.raises(duckdb.Error):
        out.sql("SET enable_external_access = true")
    assert not (tmp_path / "written.csv").exists()
    assert out.sql("SELECT count(*) AS n FROM span_fact_rows")["n"][0] == PER_FILE  # the tables still read


def test_the_receiver_stores_no_credential_it_receives(tmp_path):
    """Finding 3, the receiver's side: its files held every span attribute as sent, tokens included."""
    from jitrace.collect._writer import Writer

    world = World()
    token = Token(iat=T0, exp=T0 + 10)
    world.issue(token, T0)
    call = world.call(T0 + 20, token)
    attrs = json.loads(call["server"]["attributes"])
    attrs["http.request.header.authorization"] = f"Bearer {JWT}"
    call["server"]["attributes"] = json.dumps(attrs)
    call["client"]["status_message"] = f"denied {BASIC}"
    Writer(tmp_path).write("spans", world.tuples())
    (written,) = (tmp_path / "spans").rglob("*.parquet")
    text = " ".join(str(v) for row in duckdb.connect().execute(f"FROM '{written}'").fetchall() for v in row)
    assert JWT not in text and "dXNlcjpzZWNyZXQtcGFzc3dvcmQ" not in text
    assert "Bearer [REDACTED]" in text and "Basic [REDACTED]" in text


def test_a_users_own_output_named_file_in_out_is_refused_not_replaced(tmp_path):
    """Finding 2: a user's own report.html or summary.json in --out were replaced silently."""
    _world_file(tmp_path / "in" / "spans.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<p>my own report</p>")
    result = _jitrace("analyze", str(tmp_path / "in"), "--out", str(out), "--quiet")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "holds report.html, which jitrace did not write" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    assert (out / "report.html").read_text() == "<p>my own report</p>"


def test_a_manifest_in_an_input_folder_hides_only_output_files(tmp_path):
    """Finding 2: a .jitrace-manifest.json in an input folder could list input files and hide them."""
    folder = tmp_path / "in"
    _world_file(folder / "spans.parquet")
    (folder / outputs.MANIFEST).write_text(json.dumps({"files": ["spans.parquet", "report.html"]}))
    assert load_into(duckdb.connect(), [str(folder)]).spans == PER_FILE


MOUNT_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
out, inputs = Path(sys.argv[1]), sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(out)], check=True)         # --out is a mount point
(out / "mnt").mkdir()
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(out / "mnt")], check=True)  # and a filesystem inside it
(out / "mnt" / "data.bin").write_bytes(b"on another filesystem")
inode = (out / "mnt" / "data.bin").stat().st_ino
for _ in range(2):
    run = subprocess.run([sys.executable, "-m", "jitrace.analyzer.cli", "analyze", inputs, "--out", str(out),
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
assert os.path.ismount(out / "mnt") and (out / "mnt" / "data.bin").read_bytes() == b"on another filesystem"
assert (out / "mnt" / "data.bin").stat().st_ino == inode
assert (out / "summary.json").is_file()
print("OK")
"""


@pytest.mark.slow
def test_out_on_a_mount_point_with_a_filesystem_mounted_inside_is_left_alone(tmp_path):
    """Finding 2: a filesystem mounted inside --out had its files copied out and deleted; --out on a mount point was
    a traceback (EBUSY). Mounts need a mount namespace: root, as CI has."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: a mount namespace holds the mounts of this test")
        pytest.skip("mounting needs a mount namespace (root)")
    _world_file(tmp_path / "in" / "spans.parquet")
    (tmp_path / "out").mkdir()
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", MOUNT_SCRIPT,
                             str(tmp_path / "out"), str(tmp_path / "in")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-3000:]
