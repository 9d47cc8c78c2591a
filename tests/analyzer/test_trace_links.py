"""``--trace-url`` / ``JITRACE_TRACE_URL``: a template is checked before any work (one line naming the option or the
variable, exit 2); ids from the wire are percent-encoded the same way in Python, in DuckDB's SQL and in the report;
attributions.csv gains a ``trace_url`` column (the Parquet file keeps its columns) and the terminal table an example
trace per cause, with its link. docs/contract.md's examples for Jaeger, Tempo/Grafana, Zipkin and HyperDX are valid."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import ATTRIBUTION_COLUMNS, CSV_COLUMNS, analyze
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.outputs import trace_links

CONTRACT = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
JAEGER = "http://jaeger.example:16686/trace/{trace_id}?uiFind={span_id}"
UNRESERVED = re.compile(r"[A-Za-z0-9._~%-]*")


def _documented_examples() -> dict[str, str]:
    """viewer -> template, from the table in docs/contract.md's trace-link section."""
    section = CONTRACT.split("### Links to the trace viewer", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S[^|]*?) \| `(https?://[^`]+)` \|", section, re.M)}


def test_the_documented_templates_for_four_viewers_are_accepted():
    examples = _documented_examples()
    assert {"Jaeger", "Tempo (Grafana Explore)", "Zipkin", "HyperDX"} <= set(examples), examples
    for viewer, template in examples.items():
        url = trace_links.parse(template).fill("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        assert "4bf92f3577b34da6a3ce929d0e0e4736" in url and "{" + "trace_id}" not in url, viewer
        assert urllib.parse.urlsplit(url).scheme in ("http", "https")


@pytest.mark.parametrize(("template", "why"), [
    ("", "empty"),
    ("http://jaeger:16686/trace/", "no {trace_id}"),
    ("http://jaeger:16686/trace/{traceid}", "unknown placeholder {traceid}"),
    ("http://jaeger/{trace_id}/{service}", "unknown placeholder {service}"),
    ("javascript:alert(1)//{trace_id}", "http:// or https://"),
    ("file:///etc/{trace_id}", "http:// or https://"),
    ("ftp://jaeger/{trace_id}", "http:// or https://"),
    ("jaeger:16686/trace/{trace_id}", "http:// or https://"),
    ("http:///trace/{trace_id}", "host name"),
    ("http://{trace_id}.example/", "host name"),
    ("http://jaeger/trace/{trace_id} x", "space or a control character"),
    ("http://jaeger/trace/{trace_id}\x1b[31m", "space or a control character"),
    ("http://jaeger/trace/\u202e{trace_id}", "space or a control character"),
    ("https://user:secret@grafana/trace/{trace_id}", "credentials"),
    ("http://jaeger:port/trace/{trace_id}", "port"),
    ("http://jaeger/" + "x" * 5000 + "{trace_id}", "longer than"),
])
def test_a_bad_template_is_one_line_naming_its_source(template, why):
    for source in (trace_links.OPTION, trace_links.ENV):
        with pytest.raises(UserError) as err:
            trace_links.parse(template, source)
        message = str(err.value)
        assert message.startswith(f"{source} ") and why in message and "\n" not in message
        assert "secret" not in message  # a password in the template is not repeated


def test_the_option_wins_over_the_variable_and_an_empty_variable_is_no_links():
    env = {trace_links.ENV: "http://tempo/{trace_id}"}
    assert trace_links.from_settings(None, {}) is None
    assert trace_links.from_settings(None, {trace_links.ENV: "  "}) is None
    assert trace_links.from_settings(None, env).template == "http://tempo/{trace_id}"
    assert trace_links.from_settings(JAEGER, env).template == JAEGER
    with pytest.raises(UserError, match="^JITRACE_TRACE_URL 'tempo/{trace_id}'"):
        trace_links.from_settings(None, {trace_links.ENV: "tempo/{trace_id}"})


def test_braces_that_are_not_a_placeholder_stay_text():
    """A Grafana Explore URL may carry its JSON unencoded: only {name} is a placeholder."""
    template = 'https://grafana/explore?left={"queries":[{"query":"{trace_id}"}]}'
    assert trace_links.parse(template).fill("ab") == 'https://grafana/explore?left={"queries":[{"query":"ab"}]}'


ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(trace_id=ids, span_id=st.none() | ids)
@example(trace_id="{span_id}", span_id="{trace_id}")
@example(trace_id='"><script>alert(1)</script>', span_id="=HYPERLINK(\"x\")")
@example(trace_id="a/b?c#d&e=f%20 é\u202e", span_id="")
def test_ids_are_percent_encoded_alike_in_python_and_sql(trace_id, span_id):
    """Whatever an id holds (quotes, <, a brace, a placeholder's name, non-ASCII), it reaches the URL as %XX
    escapes, decodes back to itself, and DuckDB's expression (the CSV) gives the same URL as Python's (the
    terminal)."""
    url = trace_links.parse(JAEGER)
    filled = url.fill(trace_id, span_id)
    prefix, rest = filled.split("/trace/", 1)
    encoded_trace, encoded_span = rest.split("?uiFind=", 1)
    assert UNRESERVED.fullmatch(encoded_trace) and UNRESERVED.fullmatch(encoded_span)
    assert urllib.parse.unquote(encoded_trace) == trace_id
    assert urllib.parse.unquote(encoded_span) == (span_id or "")
    with duckdb.connect() as con:
        (sql,) = con.execute(f"SELECT {url.sql()} FROM (SELECT ? AS trace_id, ? AS span_id)",
                             [trace_id, span_id]).fetchone()
    assert sql == filled


# what a URL's path and query may hold as written (printable ASCII but the space and braces)
URL_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="{}"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(path=URL_TEXT, query=URL_TEXT, scheme=st.sampled_from(["http", "https", "HTTPS"]),
       span=st.booleans())
def test_a_template_fills_to_an_http_link_never_a_formula(path, query, scheme, span):
    """Any http(s) template with the placeholder in its path or query is accepted and fills to an http(s) URL:
    no other scheme, and never a cell a spreadsheet would run (attributions.csv does not quote this column)."""
    template = f"{scheme}://viewer.example/{path}{{trace_id}}{query}{'{span_id}' if span else ''}"
    filled = trace_links.parse(template).fill("=1+1", "@SUM(1)")
    assert filled.lower().startswith(("http://", "https://"))
    assert "=1+1" not in filled and "@SUM" not in filled and "%3D1%2B1" in filled


def _spans(folder: Path) -> Path:
    world = World()
    token = Token(iat=T0, exp=T0 + 3600, sub="alice")
    world.issue(token, T0)
    world.call(T0 + 5, None)  # token_missing
    world.call(T0 + 6, token, method="Write", required="orders.write")  # policy_mismatch
    world.call(T0 + 7, Token(iat=T0 - 600, exp=T0 - 1, sub="bob"))  # token_expired
    folder.mkdir(parents=True, exist_ok=True)
    return world.write_parquet(folder / "spans.parquet")


def _jitrace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != trace_links.ENV}
    return subprocess.run([sys.executable, "-m", "jitrace.analyzer.cli", *args], capture_output=True, text=True,
                          timeout=180, env={**clean, **(env or {})})


def test_the_csv_gains_trace_url_and_the_terminal_an_example_link(tmp_path):
    spans = _spans(tmp_path / "in")
    out = tmp_path / "out"
    run = _jitrace("analyze", str(spans), "--out", str(out), "--trace-url", JAEGER)
    assert run.returncode == 0, run.stderr
    with open(out / "attributions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS) == [*ATTRIBUTION_COLUMNS, "trace_url"]
    assert len(rows) == 3
    url = trace_links.parse(JAEGER)
    for row in rows:
        assert row["trace_url"] == url.fill(row["trace_id"], row["span_id"])
    assert list(pd.read_parquet(out / "attributions.parquet").columns) == list(ATTRIBUTION_COLUMNS)
    # the terminal: each cause's first denial, its trace id and its link
    for row in rows:
        example = f"example:    trace {row['trace_id']}  {row['trace_url']}"
        assert re.search(rf"^{re.escape(row['cause'])}\s.*?\n(?:\s+\S.*\n)*?\s+{re.escape(example)}$", run.stdout,
                         re.M), (row["cause"], run.stdout)
    html = (out / "report.html").read_text()
    assert '"template": "http://jaeger.example:16686/trace/{trace_id}?uiFind={span_id}"' in html


def test_the_variable_gives_the_links_and_without_a_template_the_column_is_empty(tmp_path):
    spans = _spans(tmp_path / "in")
    run = _jitrace("analyze", str(spans), "--out", str(tmp_path / "env"), "--quiet",
                   env={trace_links.ENV: "https://zipkin.example/zipkin/traces/{trace_id}"})
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(tmp_path / "env" / "attributions.csv", dtype=str)
    assert list(frame["trace_url"]) == [f"https://zipkin.example/zipkin/traces/{t}" for t in frame["trace_id"]]
    run = _jitrace("analyze", str(spans), "--out", str(tmp_path / "none"))
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(tmp_path / "none" / "attributions.csv", dtype=str)
    assert list(frame.columns) == list(CSV_COLUMNS) and frame["trace_url"].isna().all()
    assert re.search(r"example:    trace [0-9a-f]{32}$", run.stdout, re.M) and "http" not in run.stdout


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--trace-url", "jaeger/{trace_id}"], {}, "--trace-url"),
    (["--trace-url", "http://jaeger/{id}"], {trace_links.ENV: JAEGER}, "--trace-url"),
    ([], {trace_links.ENV: "javascript:{trace_id}"}, "JITRACE_TRACE_URL"),
])
def test_a_bad_template_stops_the_run_before_it_reads_anything(tmp_path, args, env, named):
    out = tmp_path / "out"
    run = _jitrace("analyze", str(tmp_path / "no-such-input"), "--out", str(out), *args, env=env)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith(f"jitrace analyze: error: {named} ")
    assert not out.exists()


def test_the_api_checks_a_template_given_as_text(tmp_path):
    with pytest.raises(UserError, match="^trace_url 'http://x/'"):
        analyze([str(_spans(tmp_path / "in"))], tmp_path / "out", quiet=True, trace_url="http://x/")
    assert not (tmp_path / "out").exists()


def test_the_report_log_lines_link_their_trace_escaped():
    """Under each cause, the log lines' trace id is a link: the template filled, then HTML-escaped as an attribute."""
    from jitrace.analyzer.outputs import report
    from jitrace.analyzer.steps import session

    con = session.connect()
    session.run_queries(con)
    trace_id = '7"><b>x</b>&'
    con.execute("INSERT INTO attributions (time, trace_id, span_id, cause, rule, evidence) VALUES "
                "(TIMESTAMP '2026-01-02 03:04:05', ?, 's1', 'token_expired', 'expired', ?)",
                [trace_id, '{"logs": ["token expired"]}'])
    con.execute("INSERT INTO denial_logs (denial_trace_id, denial_span_id) VALUES (?, 's1')", [trace_id])
    url = trace_links.parse(JAEGER)
    html = report.logs_by_cause(con, trace_url=url)
    assert f'<a href="{url.fill(trace_id, "s1")}" target="_blank" rel="noopener noreferrer">' in html
    assert url.fill(trace_id, "s1") == "http://jaeger.example:16686/trace/7%22%3E%3Cb%3Ex%3C%2Fb%3E%26?uiFind=s1"
    assert "7&quot;&gt;&lt;b&gt;x&lt;/b&gt;&amp;</a>" in html and "<b>" not in html
    assert "trace 7&quot;&gt;" in report.logs_by_cause(con) and "<a " not in report.logs_by_cause(con)
    con.close()


def test_the_terminal_example_of_a_hostile_trace_id_is_escaped_and_encoded():
    """An id from the wire drives no terminal: shown escaped (report.printable), and encoded in its link."""
    from jitrace.analyzer.outputs import report
    from jitrace.analyzer.steps import session

    con = session.connect()
    session.run_queries(con)
    trace_id = "\x1b]0;pwned\x07\u202e7f"
    con.execute("INSERT INTO attributions (time, trace_id, span_id, cause) VALUES "
                "(TIMESTAMP '2026-01-02 03:04:05', ?, 's1', 'token_missing')", [trace_id])
    con.execute("INSERT INTO cause_summary (cause, denials, share, mean_confidence, fix) VALUES "
                "('token_missing', 1, 1.0, 0.95, 'attach credentials')")
    text = report.terminal(con, {"spans": 2, "logs": 0, "denials": 1, "bad_records": 0},
                           trace_links.parse(JAEGER))
    con.close()
    line = next(x for x in text.splitlines() if "example:" in x)
    assert line.endswith("example:    trace \\x1b]0;pwned\\x07\\u202e7f  "
                         "http://jaeger.example:16686/trace/%1B%5D0%3Bpwned%07%E2%80%AE7f?uiFind=s1")
    assert not [c for c in text if ord(c) < 0x20 and c != "\n" or c == "\u202e"]
