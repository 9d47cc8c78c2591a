"""report.html's denials table in headless Chromium (driven over its DevTools protocol: headless_chromium.py):
filtered by cause and by service (chosen and typed as a user would), sorted, paged and restored from the address's
#fragment, it shows exactly the denials attributions.parquet holds for that filter, and each trace link is the
--trace-url template filled with that denial's ids. Hostile names render as text. A screenshot of the table is kept
(docs/report-denials.png) when JITRACE_SCREENSHOT_DIR names a folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from headless_chromium import Chromium, find
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from spanfactory import T0, Token, World

from jitrace.analyzer.analyze import analyze
from jitrace.analyzer.outputs import denials_table, report, trace_links
from jitrace.analyzer.steps import session
from jitrace.instrumentation import contract

TEMPLATE = "https://viewer.example/trace/{trace_id}?span={span_id}&x=1"
SERVICES = ("shop.Orders", "shop.Billing", "shop.Inventory")
PRINCIPALS = ("alice", "bob", "carol", "dave")
READY = "document.body.dataset.denialsReadyMs"
ROWS = """[...document.querySelectorAll("#denials-table tbody tr")].map(tr => {
  const keys = [...document.querySelectorAll("#denials-table thead th")].map(th => th.dataset.key);
  const row = Object.fromEntries([...tr.cells].map((td, i) => [keys[i], td.textContent]));
  const a = tr.querySelector("a");
  row.href = a ? a.getAttribute("href") : null;
  return row;
})"""


@pytest.fixture(scope="module")
def chromium():
    binary = find()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed: apt-get install -y chromium")
    with Chromium(binary, width=1500, height=1100) as browser:
        yield browser


def _call(world: World, at: float, token: Token | None, service: str, **kw) -> None:
    """A call of ``service`` (rpc.service on both spans)."""
    call = world.call(at, token, **kw)
    for side in ("client", "server"):
        attrs = json.loads(call[side]["attributes"])
        attrs[contract.RPC_SERVICE] = service
        call[side]["attributes"] = json.dumps(attrs)


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """230 denials of three causes over three services and four principals, and 10 clock_drift denials of
    shop.Payments (a host 90 s ahead), analyzed with a trace-url template."""
    world = World(offsets={"drift-host": 90.0})
    tokens = {p: Token(iat=T0, exp=T0 + 7200, sub=p) for p in PRINCIPALS}
    for token in tokens.values():
        world.issue(token, T0)
    for i in range(230):
        service, principal = SERVICES[i % 3], PRINCIPALS[i % 4]
        at = T0 + 10 + i * 7
        match i % 5:
            case 0 | 1:
                _call(world, at, None, service)  # token_missing
            case 2 | 3:
                _call(world, at, tokens[principal], service, method="Write", required="orders.write")
            case _:
                _call(world, at, Token(iat=T0 - 900, exp=at - 30 - i % 50, sub=principal), service)  # token_expired
    for k in range(10):  # valid in true time, expired by the server's clock
        at = T0 + 13 + k * 161
        _call(world, at, Token(iat=T0, exp=at + 30, sub="erin"), "shop.Payments", server="drift-host")
    folder = tmp_path_factory.mktemp("denials")
    world.write_parquet(folder / "spans.parquet")
    out = folder / "out"
    summary = analyze([str(folder / "spans.parquet")], out, quiet=True, trace_url=TEMPLATE)
    assert summary["denials"] == 240 and summary["causes"]["clock_drift"] == 10
    return out


@pytest.fixture(scope="module")
def truth(output) -> pd.DataFrame:
    return pd.read_parquet(output / "attributions.parquet")


def _open(browser: Chromium, output: Path, fragment: str = "") -> None:
    browser.open((output / "report.html").as_uri() + fragment, READY)


def _select_cause(browser: Chromium, cause: str) -> None:
    browser.js(f"""(() => {{ const s = document.getElementById("f-cause"); s.value = {json.dumps(cause)};
                  s.dispatchEvent(new Event("change")); }})()""")


def _all_rows(browser: Chromium) -> list[dict]:
    """Every row the filters keep, page after page (pressing 'next' as a user would)."""
    rows = browser.js(ROWS)
    while not browser.js('document.getElementById("p-next").disabled'):
        browser.js('document.getElementById("p-next").click()')
        rows += browser.js(ROWS)
    return rows


def _filtered(browser: Chromium, key: str, value: str) -> None:
    """Wait until the typed filter is applied (the page writes it to the #fragment once drawn)."""
    browser.wait_for(f"new URLSearchParams(location.hash.slice(1)).get({json.dumps(key)}) === {json.dumps(value)}")


def test_filter_by_cause_shows_exactly_that_causes_denials_with_their_links(chromium, output, truth):
    _open(chromium, output)
    assert int(chromium.js("document.body.dataset.denialsMatched")) == 240
    assert int(chromium.js("document.body.dataset.denialsShown")) == 100  # one page of 100
    _select_cause(chromium, "policy_mismatch")
    rows = _all_rows(chromium)
    expected = truth[truth["cause"] == "policy_mismatch"]
    assert len(expected) == 92 and len(rows) == len(expected)
    assert [r["trace_id"] for r in rows] == list(expected["trace_id"])  # in time order, as the file
    assert {r["cause"] for r in rows} == {"policy_mismatch"}
    url = trace_links.TraceUrl(TEMPLATE)
    for row, (_, want) in zip(rows, expected.iterrows(), strict=True):
        assert row["href"] == url.fill(want["trace_id"], want["span_id"])
        assert row["href"] == f"https://viewer.example/trace/{want['trace_id']}?span={want['span_id']}&x=1"
        assert (row["service"], row["principal"], row["method"]) == (want["service"], want["principal"], "Write")
        assert row["time"] == want["time"].strftime("%Y-%m-%d %H:%M:%S.%f")
        assert float(row["confidence"]) == pytest.approx(want["confidence"])


def test_filter_by_typed_service_then_cause_and_clear(chromium, output, truth):
    _open(chromium, output)
    chromium.type_into("#f-service", "shop.Billing")
    _filtered(chromium, "service", "shop.Billing")
    rows = _all_rows(chromium)
    billing = truth[truth["service"] == "shop.Billing"]
    assert len(rows) == len(billing) == 77 and {r["service"] for r in rows} == {"shop.Billing"}
    assert sorted(r["trace_id"] for r in rows) == sorted(billing["trace_id"])
    _select_cause(chromium, "token_expired")
    rows = _all_rows(chromium)
    both = billing[billing["cause"] == "token_expired"]
    assert len(both) > 0 and [r["trace_id"] for r in rows] == list(both["trace_id"])
    assert chromium.js("location.hash") == "#cause=token_expired&service=shop.Billing"
    chromium.js('document.getElementById("f-clear").click()')
    assert int(chromium.js("document.body.dataset.denialsMatched")) == 240


def test_text_that_is_no_value_keeps_every_value_containing_it(chromium, output, truth):
    _open(chromium, output, "#service=INVENT")  # any case, part of a name
    assert int(chromium.js("document.body.dataset.denialsMatched")) == (truth["service"] == "shop.Inventory").sum()
    _open(chromium, output, "#principal=nobody")
    assert int(chromium.js("document.body.dataset.denialsMatched")) == 0
    assert chromium.js(ROWS) == []


def test_a_fragment_restores_filters_sort_and_page(chromium, output, truth):
    _open(chromium, output, "#cause=token_expired&principal=bob&sort=-ttl_check&page=1")
    expected = truth[(truth["cause"] == "token_expired") & (truth["principal"] == "bob")]
    rows = chromium.js(ROWS)
    assert chromium.js('document.getElementById("f-cause").value') == "token_expired"
    assert chromium.js('document.getElementById("f-principal").value') == "bob"
    assert len(rows) == len(expected) > 0 and sorted(r["trace_id"] for r in rows) == sorted(expected["trace_id"])
    ttl = [float(r["ttl_check"]) for r in rows]
    assert ttl == sorted(ttl, reverse=True) and len(set(ttl)) > 1
    assert chromium.js('document.querySelector("th[data-key=ttl_check]").getAttribute("aria-sort")') == "descending"


def test_a_click_on_a_heading_sorts_and_on_a_cell_filters(chromium, output, truth):
    _open(chromium, output)
    chromium.js('document.querySelector("th[data-key=principal]").click()')
    shown = [r["principal"] for r in _all_rows(chromium)]
    assert shown == sorted(truth["principal"].fillna(""))
    chromium.js('document.querySelector("th[data-key=principal]").click()')  # again: descending
    assert chromium.js('document.querySelector("th[data-key=principal]").getAttribute("aria-sort")') == "descending"
    first = chromium.js(ROWS)[0]
    assert first["principal"] == max(truth["principal"].fillna(""))
    chromium.js('document.querySelector("#denials-table tbody td.pick:nth-child(2)").click()')  # its service
    assert chromium.js('document.getElementById("f-service").value') == first["service"]
    assert int(chromium.js("document.body.dataset.denialsMatched")) == (truth["service"] == first["service"]).sum()
    # from the keyboard: Enter on a focused heading, over every denial
    chromium.js('document.getElementById("f-clear").click()')
    chromium.js('document.querySelector("th[data-key=confidence]").dispatchEvent('
                'new KeyboardEvent("keydown", {key: "Enter", bubbles: true}))')
    assert chromium.js('document.querySelector("th[data-key=confidence]").getAttribute("aria-sort")') == "ascending"
    confidences = [float(r["confidence"]) for r in _all_rows(chromium)]
    assert confidences == sorted(confidences) and len(set(confidences)) > 1


def test_clock_drift_rows_show_the_offset_that_decided(chromium, output, truth):
    _open(chromium, output, "#cause=clock_drift")
    rows = chromium.js(ROWS)
    assert len(rows) == 10 and {r["service"] for r in rows} == {"shop.Payments"}
    for row in rows:
        assert float(row["server_offset"]) == pytest.approx(90, abs=0.01)
        assert float(row["ttl_check"]) == pytest.approx(30, abs=0.1)  # corrected to true time: still valid
        assert "drift-host" in row["fix"]


def test_screenshot_of_the_denials_table(chromium, output, tmp_path):
    _open(chromium, output)
    chromium.js('document.getElementById("p-size").value = "25"; '
                'document.getElementById("p-size").dispatchEvent(new Event("change"))')
    assert int(chromium.js("document.body.dataset.denialsShown")) == 25
    shot = tmp_path / "report-denials.png"
    chromium.screenshot(shot, "#denials")
    import matplotlib.image  # only here, to read the PNG: the report itself does not use matplotlib

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 800 and pixels.std() > 0.05  # a table, not a blank box
    keep = os.environ.get("JITRACE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report-denials.png")


# --- hostile strings --------------------------------------------------------------------------------------------

HOSTILE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)


@pytest.fixture(scope="module")
def con():
    con = session.connect()
    session.run_queries(con)
    yield con
    con.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(service=HOSTILE, principal=HOSTILE, trace_id=HOSTILE)
@example(service="</script><script>document.body.dataset.pwned=1</script>",
         principal='<img src=x onerror="document.body.dataset.pwned=1">', trace_id='"><b>x</b>')
@example(service="<!--<script>", principal="\u202eevil\u202c & &amp;", trace_id="{span_id}/../?#")
@example(service=" ", principal="\x00\r\n\t\x1b[31m", trace_id="it's (a) *test*! ~é")
def test_hostile_names_and_ids_render_as_text(chromium, con, tmp_path_factory, service, principal, trace_id):
    """Names and ids from the wire are shown as themselves, start no element or script, and a trace id reaches
    its link percent-encoded, the same as the CSV's and the terminal's (trace_links.TraceUrl.fill)."""
    con.execute("DELETE FROM attributions")
    con.execute("INSERT INTO attributions (time, trace_id, span_id, service, method, principal, cause, rule, "
                "confidence, evidence, fix) VALUES (TIMESTAMP '2026-01-02 03:04:05.123456', ?, ?, ?, ?, ?, "
                "'token_missing', 'missing', 0.5, '{\"wait_s\": 0.25}', ?)",
                [trace_id, "<span>", service, principal, principal, service])
    page = tmp_path_factory.mktemp("hostile") / "report.html"
    url = trace_links.parse(TEMPLATE)
    report.write_html(con, page, {"spans": 1, "logs": 0, "denials": 1, "bad_records": 0}, trace_url=url)
    text = page.read_text()
    embedded = text.split('<script type="application/json" id="denials-json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded
    chromium.open(page.as_uri(), READY)
    (row,) = chromium.js(ROWS)
    assert (row["service"], row["method"], row["principal"], row["fix"]) == (service, principal, principal, service)
    assert row["trace_id"] == trace_id and row["href"] == url.fill(trace_id, "<span>")
    assert row["wait"] == "0.25" and row["time"] == "2026-01-02 03:04:05.123456"
    assert chromium.js('document.querySelectorAll("#denials-table tbody *:not(tr):not(td):not(a)").length') == 0
    assert chromium.js("document.body.dataset.pwned") is None
    assert chromium.js("document.scripts.length") == 4  # the page's own: none added


def test_the_page_data_is_cut_to_max_rows_and_says_so(con, tmp_path, chromium):
    con.execute("DELETE FROM attributions")
    con.execute("INSERT INTO attributions (time, trace_id, span_id, cause, service) SELECT "
                "TIMESTAMP '2026-01-01' + to_seconds(i), format('{:032x}', i), 's', "
                "CASE WHEN i % 2 = 0 THEN 'token_missing' ELSE 'unexplained' END, 'svc' || (i % 3) "
                "FROM range(300) AS r(i)")
    data = json.loads(denials_table.data_json(con, None, max_rows=120))
    assert data["total"] == 300 and len(data["cols"]["trace_id"]) == 120
    assert data["cols"]["trace_id"][:2] == [format(0, "032x"), format(1, "032x")]  # the first by time
    page = tmp_path / "report.html"
    report.write_html(con, page, {"spans": 1, "logs": 0, "denials": 300, "bad_records": 0}, max_rows=120)
    chromium.open(page.as_uri(), READY)
    assert chromium.js('document.getElementById("denials-count").textContent') == (
        "120 of 300 denials (the first 120 by time are in this page)")
    assert chromium.js(ROWS)[0]["trace_id"] == format(0, "032x")  # no template: the id as text, no link
    assert chromium.js(ROWS)[0]["href"] is None


def test_numbers_that_are_not_finite_show_empty_and_break_nothing(con, tmp_path, chromium):
    """DuckDB writes NaN and Infinity into JSON as such; JSON.parse refuses them."""
    con.execute("DELETE FROM attributions")
    con.execute("INSERT INTO attributions (time, trace_id, span_id, cause, confidence, evidence) VALUES "
                "(TIMESTAMP '2026-01-01', 't', 's', 'unexplained', 'nan'::DOUBLE, "
                "'{\"ttl_at_send_true_s\": NaN, \"ttl_at_check_true_s\": -Infinity, \"wait_s\": \"x\", "
                "\"server_offset_s\": 1.5}')")
    page = tmp_path / "report.html"
    report.write_html(con, page, {"spans": 1, "logs": 0, "denials": 1, "bad_records": 0})
    chromium.open(page.as_uri(), READY)
    (row,) = chromium.js(ROWS)
    assert [row[k] for k in ("confidence", "ttl_send", "ttl_check", "wait", "server_offset")] == ["", "", "", "", "1.5"]


def test_no_denials_is_an_empty_table(con, tmp_path, chromium):
    con.execute("DELETE FROM attributions")
    page = tmp_path / "report.html"
    report.write_html(con, page, {"spans": 1, "logs": 0, "denials": 0, "bad_records": 0})
    chromium.open(page.as_uri(), READY)
    assert chromium.js(ROWS) == [] and chromium.js('document.getElementById("denials-count").textContent') == (
        "0 of 0 denials")
