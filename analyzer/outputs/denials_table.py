"""report.html's table of denials: every denial (up to MAX_ROWS, by time), sortable, filterable by cause, service,
method and principal, each trace id a link when a ``--trace-url`` template is given (analyzer/outputs/trace_links.py).

The rows travel as one JSON document in a ``<script type="application/json">`` element, column by column, the text
columns as indexes into sorted lists of their distinct values (a service named once, not once per denial), built by
DuckDB in one statement. The page's script filters on those indexes and draws one page of rows at a time with DOM
text nodes (nothing from the data is parsed as HTML), so a report of 100k denials opens and filters without freezing.
The page stays one file: no script or style is fetched.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import duckdb

from jitrace.analyzer.outputs import trace_links

MAX_ROWS = 500_000  # past this, the first MAX_ROWS by time; attributions.csv has every one
# Text columns sent as indexes into their sorted distinct values.
DICTIONARY_COLUMNS = ("service", "method", "principal", "cause", "rule", "fix")
# The evidence numbers shown: (key in attributions.evidence, the page data's column, heading, what it is).
EVIDENCE_NUMBERS = (
    ("ttl_at_send_true_s", "ttl_send", "ttl send", "the token's time left when the client sent the call"),
    ("ttl_at_check_true_s", "ttl_check", "ttl check", "the token's time left when the server checked it"),
    ("wait_s", "wait", "wait", "from the call's arrival to the access check (jit.auth.wait_s)"),
    ("server_offset_s", "server_offset", "offset srv", "the server host's clock minus the reference clock"),
    ("client_offset_s", "client_offset", "offset cli", "the client host's clock minus the reference clock"),
)
FILTERS = ("cause", "service", "method", "principal")


def _script_text(text: str) -> str:
    """JSON text made safe inside a ``<script>`` element: no ``<`` (so no ``</script>`` or ``<!--``), ``>`` or ``&``."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _list(expr: str) -> str:
    """The aggregate of ``expr`` over the rows in time order: a JSON array, empty (not null) when there is no row."""
    return f"coalesce(list({expr} ORDER BY n), [])"


def _finite(expr: str) -> str:
    """``expr`` rounded to the microsecond, NULL unless finite: DuckDB writes NaN and Infinity into JSON as such,
    and JSON.parse refuses them (a span may carry a NaN ttl: protobuf doubles can)."""
    return f"CASE WHEN isfinite({expr}) THEN round({expr}, 6) END"


def data_sql(max_rows: int, with_span_id: bool) -> str:
    """One row, one column: the page's data as JSON text (``data_json``'s shape).

    Each text column's index is its value's place among the column's distinct values in the whole table (``dicts``
    lists them all, also past ``max_rows``), found by a join with that short list (a hash join: ranking every row
    in a window would sort the table once per column)."""
    paths = "[" + ", ".join(f"'$.{key}'" for key, *_ in EVIDENCE_NUMBERS) + "]"
    values = ", ".join(f"{c}_v AS (SELECT v, (row_number() OVER (ORDER BY v) - 1)::INTEGER AS i FROM "
                       f"(SELECT DISTINCT coalesce({c}, '') AS v FROM attributions))" for c in DICTIONARY_COLUMNS)
    joins = " ".join(f"JOIN {c}_v ON {c}_v.v = coalesce(a.{c}, '')" for c in DICTIONARY_COLUMNS)
    indexes = ", ".join(f"{c}_v.i AS {c}_i" for c in DICTIONARY_COLUMNS)
    index_names = ", ".join(f"{c}_i" for c in DICTIONARY_COLUMNS)
    dicts = ", ".join(f"'{c}': (SELECT coalesce(list(v ORDER BY i), []) FROM {c}_v)" for c in DICTIONARY_COLUMNS)
    numbers = ", ".join(f"'{name}': {_list(_finite(f'ev[{i}]'))}"
                        for i, (_, name, *_) in enumerate(EVIDENCE_NUMBERS, start=1))
    columns = ", ".join(f"'{c}': {_list(f'{c}_i')}" for c in DICTIONARY_COLUMNS)
    span = f"'span_id': {_list('span_id')}, " if with_span_id else ""
    return f"""
        WITH {values},
        picked AS (  -- the evidence's numbers taken first: the window then sorts them, not the evidence text
            SELECT row_number() OVER (ORDER BY time NULLS LAST, trace_id, span_id) AS n,
                   us, trace_id, span_id, confidence, {index_names}, ev
            FROM (SELECT a.time, epoch_us(a.time) AS us, a.trace_id, a.span_id, a.confidence, {indexes},
                         TRY_CAST(json_extract(a.evidence, {paths}) AS DOUBLE[]) AS ev
                  FROM attributions AS a {joins}) AS a
            QUALIFY n <= {int(max_rows)}
        )
        SELECT to_json({{
            'total': (SELECT count(*) FROM attributions),
            't0_us': min(us),
            'dicts': {{{dicts}}},
            'cols': {{
                'time': {_list('us')},
                'trace_id': {_list('trace_id')}, {span}
                {columns},
                'confidence': {_list(_finite('confidence'))},
                {numbers}
            }}
        }})
        FROM picked"""


def data_json(con: duckdb.DuckDBPyConnection, trace_url: trace_links.TraceUrl | None,
              max_rows: int = MAX_ROWS) -> str:
    """The page's data, script-safe JSON: ``{"template", "total", "t0_us", "dicts": {column: [values]},
    "cols": {column: [per row]}}``; times are microseconds since the epoch (UTC, the reference clock; ``t0_us`` is
    the first), text columns indexes into ``dicts``, numbers seconds."""
    body = con.execute(data_sql(max_rows, trace_url is not None and trace_url.uses_span_id)).fetchone()[0]
    head = json.dumps({"template": None if trace_url is None else trace_url.template})
    return _script_text(head[:-1] + ", " + body[1:])


# (data column, heading, what it is: the heading's tooltip)
HEADINGS = (
    ("time", "time (UTC)", "when the call was made, in the reference clock (the issuer's, else the consensus)"),
    ("service", "service", "the gRPC service (rpc.service)"), ("method", "method", "the gRPC method (rpc.method)"),
    ("principal", "principal", "the token's subject"), ("cause", "cause", "the root cause; its rule on hover"),
    ("confidence", "conf.", "the attribution's confidence, 0 to 1"),
    *((name, heading, f"{what}, seconds (true clock)") for _, name, heading, what in EVIDENCE_NUMBERS),
    ("fix", "fix", "the suggested fix"), ("trace_id", "trace", "the trace id; a link with --trace-url"),
)

STYLE = """
#denials-controls { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; font-size: 13px;
  margin: 6px 0; }
#denials-controls input { width: 12em; }
#denials-scroll { overflow-x: auto; max-width: 100%; }
#denials-table th { cursor: pointer; user-select: none; white-space: nowrap; background: #f3f3f3; }
#denials-table th[aria-sort="ascending"]::after { content: " \\25B2"; }
#denials-table th[aria-sort="descending"]::after { content: " \\25BC"; }
#denials-table td { overflow-wrap: normal; white-space: nowrap; }
#denials-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
#denials-table td.fix { white-space: normal; min-width: 16em; max-width: 36em; }
#denials-table td.time, #denials-table td.trace { font-family: ui-monospace, monospace; }
#denials-table td.pick { cursor: pointer; }
#denials-table td.pick:hover { text-decoration: underline dotted; }
"""

SCRIPT = r"""
(() => {
  "use strict";
  const started = performance.now();
  const data = JSON.parse(document.getElementById("denials-json").textContent);
  const fill = __FILL__;
  const {dicts, cols} = data;
  const n = cols.trace_id.length;
  const FILTERS = ["cause", "service", "method", "principal"];
  const $ = id => document.getElementById(id);
  const table = $("denials-table"), body = table.tBodies[0], state = {sort: "time", desc: false, page: 0};
  const pad = (x, w) => String(x).padStart(w, "0");
  const timeText = i => {
    const d = cols.time[i];
    if (d === null) return "";
    const us = d, ms = Math.floor(us / 1000);
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + "." + pad(ms % 1000, 3) + pad(us % 1000, 3);
  };
  const numText = v => v === null ? "" : String(Number(v.toPrecision(4)));
  // per filter: how many denials each distinct value has, for the choices offered
  const counts = {};
  for (const f of FILTERS) {
    const c = new Uint32Array(dicts[f].length), col = cols[f];
    for (let i = 0; i < n; i++) c[col[i]]++;
    counts[f] = c;
  }
  const byCount = f => [...dicts[f].keys()].filter(k => counts[f][k] > 0)
    .sort((a, b) => counts[f][b] - counts[f][a] || a - b);
  for (const k of byCount("cause")) {
    const o = document.createElement("option");
    o.value = dicts.cause[k];
    o.textContent = `${dicts.cause[k]} (${counts.cause[k]})`;
    $("f-cause").append(o);
  }
  for (const f of FILTERS.slice(1)) {  // the most frequent values as suggestions; any text filters
    const list = $("l-" + f);
    for (const k of byCount(f).slice(0, 1000)) {
      const o = document.createElement("option");
      o.value = dicts[f][k];
      list.append(o);
    }
  }
  // which values of a column a filter keeps: all (null); the one equal to the text; else those containing it
  const keep = f => {
    const text = $("f-" + f).value;
    if (text === "") return null;
    const values = dicts[f], mask = new Uint8Array(values.length), exact = values.indexOf(text);
    if (exact >= 0 || f === "cause") {
      if (exact >= 0) mask[exact] = 1;
      return mask;
    }
    const needle = text.toLowerCase();
    values.forEach((v, k) => { if (v.toLowerCase().includes(needle)) mask[k] = 1; });
    return mask;
  };
  const sortKey = key => {
    if (key === "trace_id") return null;
    const col = cols[key], out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = col[i] === null ? NaN : col[i];
    return out;
  };
  // a text column sorts by its index into its sorted distinct values: a counting sort, stable, in two passes
  const countingSort = (rows, col, size, desc) => {
    const key = desc ? i => size - 1 - col[i] : i => col[i];
    const start = new Uint32Array(size + 1);
    for (const i of rows) start[key(i) + 1]++;
    for (let k = 1; k <= size; k++) start[k] += start[k - 1];
    const out = new Uint32Array(rows.length);
    for (const i of rows) out[start[key(i)]++] = i;
    return out;
  };
  let shown = new Uint32Array(0);
  const apply = () => {
    const t = performance.now();
    const masks = FILTERS.map(f => [cols[f], keep(f)]).filter(([, m]) => m !== null);
    const rows = [];
    for (let i = 0; i < n; i++) {
      let ok = true;
      for (const [col, m] of masks) if (!m[col[i]]) { ok = false; break; }
      if (ok) rows.push(i);
    }
    const sign = state.desc ? -1 : 1;
    if (dicts[state.sort]) {
      shown = countingSort(rows, cols[state.sort], dicts[state.sort].length, state.desc);
    } else if (state.sort !== "time" || state.desc) {
      const k = sortKey(state.sort);
      const ids = cols.trace_id;
      rows.sort(k === null
        ? (a, b) => sign * (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : 0) || a - b
        : (a, b) => {  // empty values last either way
          const x = k[a], y = k[b];
          if (x !== x || y !== y) return (x !== x) - (y !== y) || a - b;
          return sign * (x - y) || a - b;
        });
      shown = Uint32Array.from(rows);
    } else {
      shown = Uint32Array.from(rows);  // already in time order
    }
    state.page = Math.min(state.page, Math.max(0, Math.ceil(shown.length / pageSize()) - 1));
    draw();
    document.body.dataset.denialsFilterMs = (performance.now() - t).toFixed(1);
  };
  const pageSize = () => Number($("p-size").value);
  const cell = (tr, text, cls) => {
    const td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  };
  const draw = () => {
    const size = pageSize(), from = state.page * size, to = Math.min(shown.length, from + size);
    const out = document.createDocumentFragment();
    for (let r = from; r < to; r++) {
      const i = shown[r], tr = document.createElement("tr");
      cell(tr, timeText(i), "time");
      for (const f of ["service", "method", "principal"]) cell(tr, dicts[f][cols[f][i]], "pick").dataset.filter = f;
      const c = cell(tr, dicts.cause[cols.cause[i]], "pick");
      c.dataset.filter = "cause";
      c.title = "rule " + dicts.rule[cols.rule[i]];
      cell(tr, numText(cols.confidence[i]), "num");
      for (const k of ["ttl_send", "ttl_check", "wait", "server_offset", "client_offset"]) {
        cell(tr, numText(cols[k][i]), "num");
      }
      cell(tr, dicts.fix[cols.fix[i]], "fix");
      const id = cols.trace_id[i], td = cell(tr, data.template === null ? id : "", "trace");
      if (data.template !== null) {
        const a = document.createElement("a");
        a.href = fill(data.template, id, cols.span_id ? cols.span_id[i] : null);
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.textContent = id;
        td.append(a);
      }
      out.append(tr);
    }
    body.replaceChildren(out);
    const pages = Math.max(1, Math.ceil(shown.length / size));
    $("p-at").textContent = state.page + 1;
    $("p-of").textContent = pages;
    $("p-prev").disabled = state.page === 0;
    $("p-next").disabled = state.page >= pages - 1;
    $("denials-count").textContent = `${shown.length.toLocaleString("en")} of ${data.total.toLocaleString("en")}` +
      " denials" + (n < data.total ? ` (the first ${n.toLocaleString("en")} by time are in this page)` : "");
    for (const th of table.tHead.rows[0].cells) {
      th.setAttribute("aria-sort", th.dataset.key === state.sort ? (state.desc ? "descending" : "ascending") : "none");
    }
    document.body.dataset.denialsShown = to - from;
    document.body.dataset.denialsMatched = shown.length;
    save();
  };
  // the filters, the sort and the page live in the address's #fragment: a filtered view can be bookmarked or sent
  const save = () => {
    const q = new URLSearchParams();
    for (const f of FILTERS) if ($("f-" + f).value) q.set(f, $("f-" + f).value);
    if (state.sort !== "time" || state.desc) q.set("sort", (state.desc ? "-" : "") + state.sort);
    if (state.page) q.set("page", state.page + 1);
    const hash = q.toString() ? "#" + q.toString() : "";
    if (hash !== location.hash) {
      try { history.replaceState(null, "", hash || location.pathname + location.search); } catch (e) { /* file: */ }
    }
  };
  const load = () => {
    const q = new URLSearchParams(location.hash.slice(1));
    for (const f of FILTERS) $("f-" + f).value = q.get(f) || "";
    const sort = q.get("sort") || "time", key = sort.replace(/^-/, "");
    if (HEADS.has(key)) { state.sort = key; state.desc = sort.startsWith("-"); }
    state.page = Math.max(0, (parseInt(q.get("page"), 10) || 1) - 1);
  };
  const HEADS = new Set([...table.tHead.rows[0].cells].map(th => th.dataset.key));
  let timer = 0;
  const soon = () => { clearTimeout(timer); timer = setTimeout(() => { state.page = 0; apply(); }, 120); };
  for (const f of FILTERS.slice(1)) $("f-" + f).addEventListener("input", soon);
  $("f-cause").addEventListener("change", () => { state.page = 0; apply(); });
  $("f-clear").addEventListener("click", () => {
    for (const f of FILTERS) $("f-" + f).value = "";
    state.page = 0;
    apply();
  });
  $("p-prev").addEventListener("click", () => { state.page--; draw(); });
  $("p-next").addEventListener("click", () => { state.page++; draw(); });
  $("p-size").addEventListener("change", () => { state.page = 0; draw(); });
  const sortBy = e => {
    const key = e.target.closest("th")?.dataset.key;
    if (!key) return;
    state.desc = state.sort === key && !state.desc;
    state.sort = key;
    state.page = 0;
    apply();
  };
  table.tHead.addEventListener("click", sortBy);
  table.tHead.addEventListener("keydown", e => {
    if (e.key !== "Enter" && e.key !== " ") return;
    e.preventDefault();
    sortBy(e);
  });
  body.addEventListener("click", e => {  // a click on a cause, service, method or principal filters by it
    const td = e.target.closest("td.pick");
    if (!td) return;
    $("f-" + td.dataset.filter).value = td.textContent;
    state.page = 0;
    apply();
  });
  window.addEventListener("hashchange", () => { load(); apply(); });
  load();
  apply();
  document.body.dataset.denialsReadyMs = (performance.now() - started).toFixed(1);
})();
"""


def section(con: duckdb.DuckDBPyConnection, trace_url: trace_links.TraceUrl | None,
            max_rows: int = MAX_ROWS, data: Callable[[], str] | None = None) -> str:
    """The Denials section of report.html: its controls, the table the script fills, the data and the script.
    ``data``: gives ``data_json``'s text for these arguments when it is built elsewhere (analyze builds it on another
    thread)."""
    heads = "".join(f'<th data-key="{key}" title="{html.escape(what)}" tabindex="0">{html.escape(text)}</th>'
                    for key, text, what in HEADINGS)
    inputs = "".join(
        f'<label>{f} <input id="f-{f}" list="l-{f}" placeholder="any" autocomplete="off"></label>'
        f'<datalist id="l-{f}"></datalist>' for f in FILTERS[1:])
    rows = data_json(con, trace_url, max_rows) if data is None else data()
    link_note = ("each trace id opens the trace viewer (--trace-url)" if trace_url is not None else
                 "with --trace-url (or JITRACE_TRACE_URL) each trace id links to the trace viewer")
    return f"""<section id="denials"><h2>Denials</h2>
<p class="hint">Every denial by time in the reference clock; the evidence's numbers in seconds, corrected to true
time (a heading says what its column is). Click a heading to sort, a cause, service, method or principal to filter
by it. A filter's text keeps the value equal to it, else every value containing it (any case);
{html.escape(link_note)}.</p>
<div id="denials-controls">
<label>cause <select id="f-cause"><option value="">any</option></select></label>{inputs}
<button id="f-clear" type="button">clear</button>
<span id="denials-count"></span>
<span><button id="p-prev" type="button">&lsaquo;</button> page <span id="p-at">1</span> of <span id="p-of">1</span>
<button id="p-next" type="button">&rsaquo;</button>
<select id="p-size" aria-label="rows per page"><option>25</option><option>50</option><option selected>100</option>
<option>500</option>
</select> rows a page</span>
</div>
<div id="denials-scroll"><table id="denials-table"><thead><tr>{heads}</tr></thead><tbody></tbody></table></div>
<script type="application/json" id="denials-json">{rows}</script>
<script>{SCRIPT.replace("__FILL__", trace_links.JS_FILL)}</script></section>
"""
