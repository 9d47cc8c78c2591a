"""``jitrace collect --watch``: each denial attributed as its spans are acknowledged, by the batch pipeline itself.

The receivers' writers announce every file once it is durable (``_writer.OnCommit``), one line each on the pipe of
the watch process, which ``jitrace collect --watch`` starts (``start_process``; ``serve`` is its main): the watch's
DuckDB work and Python never hold up a receiver (no shared GIL; a lower CPU priority, ``NICE``). The process loads
the announced files into a rolling in-memory DuckDB state the way ``jitrace analyze`` loads them (the span facts of
``queries/span_facts.sql``; one row per span: a later copy of a span already held is dropped) and runs the same
steps (``queries/steps.toml``) over it: re-running the batch pipeline instead of re-implementing its rules in Python
is what makes the live answer the batch answer. ``Watcher`` is the state and its threads; ``jitrace demo --watch``
uses one in its own process.

Three threads: one loads the announced files; the clock model's steps run over the whole state on a connection of
their own (schema ``clock``), again after spans arrived but at most a tenth of the time; a tick runs the denials'
steps over the focus (``_focus``: every span those steps read) with the latest clock model, and prints a line for
each denial whose answer is new and a correction line for one whose answer changed (its client span came after its
server's, the clock model moved). A tick attributes anew only the denied traces whose answer may have changed since
the last (``_mark_spans``: a span of theirs, an issuance span of their token, an allowed decision of their principal;
log records), and every denied trace after a new clock model: its cost follows what arrived, not the state's size.
Once nothing has arrived since the clock model's last run and a tick followed it, the watch's ``attributions`` are
what ``jitrace analyze`` gives on the same spans, as long as the state holds all of them; ``stop`` runs both once
more over everything.

The state is bounded: spans and logs that arrived more than ``window_s`` ago, and the oldest arrivals past
``max_spans`` spans, are dropped (``evicted_spans`` counts them; past the first drop, the clock model and the
pairing see only what is left, and equality with the batch run is no longer promised). Only the columns the steps
read are kept (attributes, resource and events are dropped once their facts are computed).
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from jitrace.analyzer import rule_options, schema
from jitrace.analyzer.errors import UserError
from jitrace.analyzer.steps import offsets, session, spans_view
from jitrace.collect._announce import NICE, parse_announcement
from jitrace.collect._writer import OnCommit  # what the writer calls for each durable file; re-exported
from jitrace.collect.metrics import Metrics

__all__ = ["DEFAULT_INTERVAL_S", "DEFAULT_MAX_SPANS", "DEFAULT_WINDOW_S", "Line", "OnCommit", "Watcher",
           "format_line"]


DEFAULT_WINDOW_S = 900.0  # seconds of arrivals kept (the clock model's --window is 300 s)
DEFAULT_MAX_SPANS = 1_000_000
DEFAULT_INTERVAL_S = 0.25
HARD_BOUND = 2  # past this many times max_spans, spans no tick has seen yet are dropped too
CLOCK_INTERVAL_S = 2.0  # seconds, at least, between two runs of the clock model
TICK_SHARE = 1.5  # after a tick, a wait of at least this many times its duration: ticks 40% of the time at most
CLOCK_SHARE = 9  # after a clock model's run, a wait of at least this many times its duration: a tenth at most
FULL_INTERVAL_S = 5.0  # seconds, at least, between two ticks over every denial for a new clock model
# what the watch prints of a denial: a change to one of these is a correction line
ANSWER = ("service", "method", "principal", "cause", "rule", "confidence", "fix")
_COLUMNS = ("trace_id", "span_id", "server_span_id", "client_span_id", "time", *ANSWER)
# the span columns no step reads once the facts are computed (rpc_spans drops them): not kept in the state
_DROPPED = ("status_message", "resource", "attributes", "events", "links", "scope")
FOCUS = "watch_focus"  # the spans the denials' steps read (Watcher._focus)
DENIED_TRACES = "watch_denied_traces"  # every trace of the state that holds a denied span
TICK_TRACES = "watch_tick_traces"  # the traces a tick attributes anew (Watcher._take_traces)
LIVE = "watch_attributions"  # every denial's attribution as the ticks left it
# the pipeline's steps (queries/steps.toml) as the watch runs them: the clock model's over the whole state, the
# denials' over the focus (the summaries, cause_summary and top_offenders, are not the watch's)
CLOCK_STEPS = ("rpc_spans", "pairs_matched", "pairs", "clock_samples", "clock_edges", "clock_offsets")
DENIAL_STEPS = ("rpc_spans", "pairs_matched", "pairs", "denied_calls", "denials", "denial_logs", "attributions")
_KEY = "hash(f.trace_id, f.span_id, f.kind)"  # a span's identity in one number, to find copies cheaply
_BARE = re.compile(r"[A-Za-z0-9._:/@+-]+")


@dataclass
class Line:
    """A denial as the watch last printed it."""
    trace_id: str
    span_id: str
    time: object
    answer: tuple
    printed_at: float

    def field(self, name: str) -> object:
        return self.answer[ANSWER.index(name)]


# what json.dumps leaves as it is but must not reach a terminal (DEL, C1 controls, bidirectional overrides): written
# as JSON escapes, so that the value still parses back to what the wire said
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
                                             *range(0x2066, 0x206A))}


def _value(value: object) -> str:
    text = "" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False).translate(_JSON_UNSAFE)


def format_line(kind: str, line: Line, was: Line | None = None) -> str:
    """One printed line: ``denial`` or ``correction``, then the time (UTC, the reference clock), the trace id and the
    answer as ``key=value`` (a value with a space, quote or control character is a JSON string, escaped)."""
    stamp = line.time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if hasattr(line.time, "strftime") else "-"
    fields = [f"{name}={_value(line.field(name))}" for name in ("service", "method", "principal", "cause",
                                                               "confidence")]
    if was is not None and was.field("cause") != line.field("cause"):
        fields.append(f"was={_value(was.field('cause'))}")
    fields.append(f"fix={_value(line.field('fix'))}")
    return f"{stamp} {kind:<10} trace={_value(line.trace_id)} " + " ".join(fields)


class Watcher:
    """The rolling state and its threads (loading, ticks, the clock model): ``announce`` files (thread-safe),
    ``start``, ``stop`` (a last clock model and tick)."""

    def __init__(self, *, settings: dict[str, float] | None = None, window_s: float = DEFAULT_WINDOW_S,
                 max_spans: int = DEFAULT_MAX_SPANS, interval_s: float = DEFAULT_INTERVAL_S,
                 full_interval_s: float = FULL_INTERVAL_S, out: TextIO | None = None, metrics: Metrics | None = None,
                 log_patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.settings, self.window_s, self.max_spans, self.interval_s = settings or {}, window_s, max_spans, interval_s
        self.full_interval_s = full_interval_s
        self.out = out if out is not None else sys.stdout
        self.metrics = metrics or Metrics()
        self.con = session.connect(":memory:", define_view=False)
        # one DuckDB thread: the watch's queries are many and small, and a second thread costs more CPU than it
        # saves time on them, CPU the receivers need
        self.con.execute("SET threads = 1")
        session.prepare(self.con, settings=self.settings, log_patterns=log_patterns)  # once: the ticks are many
        columns = ", ".join([*schema.SPANS.names, *spans_view.fact_columns(self.con)])
        # the focus: what the denials' steps read (see _focus); the clock model's steps read the whole state
        self.con.execute(f"CREATE TABLE {FOCUS} AS SELECT {columns} FROM {spans_view.FACTS_TABLE} LIMIT 0")
        self.con.execute(f"CREATE VIEW spans AS SELECT {columns} FROM {FOCUS}")
        self.con.execute(f"ALTER TABLE {spans_view.FACTS_TABLE} ADD COLUMN watch_key UBIGINT")  # _KEY: Watcher.load
        self.con.execute(f"ALTER TABLE {spans_view.FACTS_TABLE} ADD COLUMN watch_load UBIGINT")  # the load's number
        self._loads = 0
        self.con.execute(f"CREATE TABLE {DENIED_TRACES} (trace_id VARCHAR)")
        offsets.store(self.con, [])  # no clock model yet: every offset unknown
        self._loader = self.con.cursor()  # the loading thread's connection
        self._clock = self.con.cursor()  # the clock model's connection: its steps' objects in schema `clock`
        self._clock.execute("CREATE SCHEMA clock")
        self._clock.execute("SET search_path = 'clock,main'")
        session.prepare(self._clock, settings=self.settings, log_patterns=None)
        self._clock.execute(f"CREATE VIEW clock.spans AS SELECT {columns} FROM main.{spans_view.FACTS_TABLE}")
        self._clock_lock = threading.Lock()  # held while clock.clock_offsets is written or copied
        self._clock_due = threading.Event()  # new spans since the clock model's last run
        self._clock_ready = False  # a run finished that the denials have not used yet
        self._tick_due = threading.Event()  # spans or logs a tick may change an answer with, or a new clock model
        self._clock_runs = 0
        self._queue: queue.SimpleQueue[tuple[str, str, int, float]] = queue.SimpleQueue()
        # (acked, path, kind, rows, order loaded, the load of a file of spans), oldest first
        self._arrivals: deque[tuple[float, str, str, int, int, int | None]] = deque()
        self._load_files: dict[int, int] = {}  # a load -> its files of spans not yet dropped
        self._loaded = 0  # files loaded so far
        self._ticked = 0  # files loaded before the last finished tick began: a tick has seen them
        self._acked: dict[str, float] = {}  # path -> when its batches were acknowledged
        self._held = 0  # spans in the state
        self.lines: dict[tuple[str, str], Line] = {}  # call (trace id, first span id seen) -> its last line
        self._trace_calls: dict[str, set[tuple[str, str]]] = {}  # trace id -> its calls in self.lines
        # what the next tick attributes anew: the denied traces whose answer may have changed since the last (a
        # span of theirs, an issuance span of their token, an allowed decision of their principal, a log record
        # arrived or left), or every denied trace (a new clock model, a log record without a trace id)
        self._changes = threading.Lock()
        self._dirty: set[str] = set()
        self._all_due = True
        self._stale = False  # a clock model not yet applied to every denial
        self._logless = False  # the denial_logs table is there and empty: with no log record held, no need to run it
        self._last_full = float("-inf")  # when a tick last attributed every denial (monotonic)
        self._partial_seconds = 0.0  # how long the last tick of the changed traces alone took
        self._calls: dict[tuple[str, str], tuple[str, str]] = {}  # (trace id, span id) -> call
        self.lags: deque[float] = deque(maxlen=1_000_000)
        self.ticks = self.denials = self.corrections = self.evicted_spans = self.spans = self.missed_files = 0
        self.unseen_spans = 0  # dropped past the hard bound before a tick saw them
        self.tick_seconds: deque[float] = deque(maxlen=10_000)
        self.clock_seconds: deque[float] = deque(maxlen=10_000)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    # -- input -------------------------------------------------------------------------------------------------

    def announce(self, kind: str, path: Path | str, rows: int, acked: float) -> None:
        """A durable file of ``kind`` (spans or logs) holding ``rows`` records, acknowledged at ``acked`` (Unix s)."""
        if kind in ("spans", "logs"):
            self._queue.put((kind, str(path), rows, acked))

    # -- the threads -------------------------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._run_loader, "jitrace-watch-load"), (self._run, "jitrace-watch"),
                             (self._run_clock, "jitrace-watch-clock")):
            thread = threading.Thread(target=self._guarded(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # raised by stop(); the receiver goes on acknowledging meanwhile
                print(f"jitrace collect --watch: the watch stopped: {type(exc).__name__}: {exc}", file=sys.stderr,
                      flush=True)
                self._errors.append(exc)
                self._stop.set()
                self._clock_due.set()
                self._tick_due.set()
        return run

    def stop(self) -> None:
        """Load what was announced, run the clock model and the denials' steps once more over everything, and end
        the threads (an error of theirs is raised here)."""
        self._stop.set()
        self._clock_due.set()
        self._tick_due.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._errors:
            raise self._errors[0]
        self._take(timeout=0)
        self.clock_model()
        self.tick(everything=True)

    def _run_loader(self) -> None:
        """Load what is announced as it comes, beside the ticks (a tick then waits for no load), at most once every
        ``interval_s``: a load's fixed cost (planning its queries) is then paid once for all that came meanwhile."""
        while not self._stop.is_set():
            began = time.monotonic()
            if self._take(timeout=self.interval_s):
                self._tick_due.set()
            self._stop.wait(max(0.0, began + self.interval_s - time.monotonic()))

    def _run(self) -> None:
        """A tick whenever one is due (or a tick over every denial once ``full_interval_s`` allows it), at most
        every ``interval_s`` and at most 40% of the time (TICK_SHARE): a tick's fixed cost (DuckDB planning
        the denials' steps) is then paid once for all that came meanwhile."""
        last = 0.0
        while True:
            self._tick_due.wait(self._full_wait())
            took = self._partial_seconds  # a tick over every denial (at most every full_interval_s) does not count
            self._stop.wait(max(0.0, last + max(self.interval_s, TICK_SHARE * took) - time.monotonic()))
            self._tick_due.clear()
            if self._stop.is_set():  # after the clear: stop() sets _stop before _tick_due, so none is lost
                return
            self.tick()
            last = time.monotonic()

    def _full_wait(self) -> float | None:
        """Seconds until a clock model the denials have not all used may be applied to every denial (None: none)."""
        with self._changes:
            if not self._stale:
                return None
            return max(0.0, self._last_full + self.full_interval_s - time.monotonic())

    def _run_clock(self) -> None:
        """The clock model over the whole state, again whenever spans arrived since its last run (it takes longer
        than a tick: the denials meanwhile use the last model, and a change it brings is a correction)."""
        while True:
            self._clock_due.wait()
            self._clock_due.clear()
            if self._stop.is_set():  # after the clear, as in _run
                return
            began = time.monotonic()
            self.clock_model()
            # at most a tenth of a core, and not more often than CLOCK_INTERVAL_S: the receivers and the denials come
            # first (a denial is attributed with the last model; a model that changes its answer is a correction)
            self._stop.wait(max(CLOCK_INTERVAL_S, CLOCK_SHARE * (time.monotonic() - began)))

    def _take(self, timeout: float) -> bool:
        """Load every announced file (waiting up to ``timeout`` for the first); whether a tick is due (``load``)."""
        items = []
        try:
            items.append(self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait())
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        if not items:
            return False
        return self.load(items)

    def load(self, items: list[tuple[str, str, int, float]]) -> bool:
        """Add announced files to the state (a file compaction already removed is skipped), then drop what the
        bounds leave out; returns whether a tick could change an answer (spans of a denied call's trace, issuance
        spans, allowed decisions under a policy version, log records): healthy traffic costs no tick, only the
        clock model's runs."""
        relevant = False
        gone = {p for _, p, _, _ in items if not Path(p).exists()}  # compacted before the watch came to them
        self.missed_files += len(gone)
        for kind in ("spans", "logs"):
            paths = [p for k, p, _, _ in items if k == kind and p not in gone]
            if not paths:
                continue
            files = spans_view.sql_list(spans_view.exact_list(paths))
            if kind == "spans":
                base = schema.columns_with_source(schema.SPANS, False)
                # the rpc_spans step keeps CLIENT and SERVER spans and the issuance spans: the rest is not held
                fresh = (f"(SELECT {base} FROM read_parquet({files}, filename = true) "
                         "WHERE kind IN ('CLIENT', 'SERVER') OR name = 'jit.issue')")
                self._held += self._add_spans(fresh)
                relevant |= self._mark_spans()
            else:
                columns = schema.columns_with_source(schema.LOGS, False)
                self._loader.execute(f"CREATE OR REPLACE TEMP TABLE watch_log_batch AS SELECT {columns} "
                                     f"FROM read_parquet({files}, filename = true)")
                self._loader.execute("INSERT INTO logs BY NAME FROM watch_log_batch")
                relevant |= self._mark_logs("watch_log_batch")
        for kind, path, rows, acked in items:
            self._acked[path] = acked
            self._loaded += 1
            load = self._loads if kind == "spans" else None
            if load is not None:
                self._load_files[load] = self._load_files.get(load, 0) + 1
            self._arrivals.append((acked, path, kind, rows, self._loaded, load))
            if kind == "spans":
                self.spans += rows
                self.metrics.spans(rows)
        self._evict()
        self._clock_due.set()
        return relevant

    def _add_spans(self, fresh: str) -> int:
        """Add a load's spans (the query ``fresh``) to the state, one row per span; how many it added. One
        transaction: the ticks and the clock model (other connections) never see a copy."""
        facts = spans_view.FACTS_TABLE
        dropped = ", ".join(f"NULL::VARCHAR AS {n}" for n in _DROPPED)
        self._loads += 1
        self._loader.execute("BEGIN")
        try:
            # straight into the state, each load's rows marked with its number (`watch_batch` views them); the
            # state's rows are in load order, so a scan of one load skips the others' row groups
            added = self._loader.execute(
                f"INSERT INTO {facts} BY NAME SELECT f.* REPLACE ({dropped}), {_KEY} AS watch_key, "
                f"{self._loads} AS watch_load FROM ({spans_view.facts_sql(fresh)}) AS f").fetchone()[0]
            self._loader.execute(f"CREATE OR REPLACE TEMP VIEW watch_batch AS "
                                 f"FROM {facts} WHERE watch_load = {self._loads}")
            # a span twice in the batch: its first file's copy kept. Distinct keys mean distinct spans, so the
            # sort by ids runs only when two keys are equal (a span seen twice, or a hash collision)
            if self._loader.execute("SELECT count(*) > count(DISTINCT watch_key) FROM watch_batch").fetchone()[0]:
                added -= self._loader.execute(
                    f"DELETE FROM {facts} WHERE rowid IN (SELECT d.rowid FROM {facts} AS d "
                    f"WHERE d.watch_load = {self._loads} QUALIFY row_number() "
                    "OVER (PARTITION BY trace_id, span_id, kind ORDER BY source) > 1)").fetchone()[0]
            # a span held already is dropped: the earlier loads' spans whose key is one of the batch's (a hash of
            # the batch, probed by the state's keys), compared by their ids. Copies are rare: found first
            held = (f"SELECT h.trace_id, h.span_id, h.kind FROM {facts} AS h SEMI JOIN watch_batch AS b "
                    f"USING (watch_key) WHERE h.watch_load < {self._loads}")
            if self._loader.execute(f"SELECT EXISTS ({held})").fetchone()[0]:
                added -= self._loader.execute(f"DELETE FROM {facts} WHERE watch_load = {self._loads} "
                                              f"AND (trace_id, span_id, kind) IN ({held})").fetchone()[0]
            self._loader.execute("COMMIT")
        except BaseException:
            self._loader.execute("ROLLBACK")
            raise
        return added

    def _mark(self, traces: list[str], everything: bool = False) -> bool:
        """Note what the next tick attributes anew; whether there is anything."""
        with self._changes:
            self._dirty.update(traces)
            self._all_due |= everything
        return bool(traces) or everything

    def _mark_spans(self) -> bool:
        """After a batch of spans (``watch_batch``): the denied traces whose answer it may change. A denial's answer
        reads its own trace's spans, the issuance spans of its token and the allowed decisions of its principal under
        a policy version (denials.sql); a tick attributes those traces anew, no others."""
        facts = spans_view.FACTS_TABLE
        self._loader.execute(f"INSERT INTO {DENIED_TRACES} SELECT DISTINCT trace_id FROM watch_batch "
                             f"WHERE denied AND trace_id NOT IN (SELECT trace_id FROM {DENIED_TRACES})")
        traces = [t for (t,) in self._loader.execute(
            f"SELECT DISTINCT trace_id FROM watch_batch SEMI JOIN {DENIED_TRACES} USING (trace_id)").fetchall()]
        tokens, principals = self._loader.execute(
            "SELECT list(DISTINCT jit_token_id) FILTER (name = 'jit.issue' AND jit_token_id IS NOT NULL), "
            "list(DISTINCT jit_token_sub) FILTER (kind = 'SERVER' AND jit_policy_decision = 'allow' "
            "AND jit_policy_version IS NOT NULL AND jit_token_sub IS NOT NULL) FROM watch_batch").fetchone()
        if tokens or principals:
            traces += [t for (t,) in self._loader.execute(
                f"SELECT DISTINCT f.trace_id FROM {facts} AS f SEMI JOIN {DENIED_TRACES} USING (trace_id) "
                "WHERE list_contains($tokens, f.jit_token_id) OR list_contains($principals, f.jit_token_sub) "
                f"OR f.jit_token_id IN (SELECT jit_token_id FROM {facts} "
                "WHERE name = 'jit.issue' AND list_contains($principals, jit_token_sub))",
                {"tokens": tokens or [], "principals": principals or []}).fetchall()]
        return self._mark(traces)

    def _mark_logs(self, relation: str) -> bool:
        """Log records arrived or left (``relation``): the denied traces they name; one without a trace id is matched
        by service and time (denial_logs.sql), so every denied trace."""
        traces, untraced = self._loader.execute(
            f"SELECT list(DISTINCT l.trace_id) FILTER (d.trace_id IS NOT NULL), bool_or(l.trace_id IS NULL) "
            f"FROM {relation} AS l LEFT JOIN {DENIED_TRACES} AS d USING (trace_id)").fetchone()
        return self._mark(traces or [], bool(untraced))

    def _evict(self) -> None:
        """Drop the oldest arrivals past the window or the span bound, once a tick has seen them (a denial is
        printed before its spans can go); past HARD_BOUND times the bound, unseen ones too (counted)."""
        cutoff = time.time() - self.window_s
        gone: list[str] = []
        # files go in arrival order, so loads go in order: every load up to `whole` goes whole, and only the last
        # load touched may go in part
        whole = last = 0
        spans_left = self._held
        while self._arrivals and (self._arrivals[0][0] < cutoff or spans_left > self.max_spans):
            _, path, kind, rows, order, load = self._arrivals[0]
            if order > self._ticked and spans_left <= HARD_BOUND * self.max_spans:
                break
            self._arrivals.popleft()
            if order > self._ticked and kind == "spans":
                self.unseen_spans += rows
            gone.append(path)
            if load is not None:
                spans_left -= rows
                self._load_files[load] -= 1
                last = load
                if not self._load_files[load]:
                    del self._load_files[load]
                    whole = load
        if not gone:
            return
        facts = spans_view.FACTS_TABLE
        partial = [last] if last > whole else []
        # the loads' numbers find their rows (the state is in load order): a file's name only in a load in part
        dropped = f"(watch_load <= {whole} OR (list_contains(?, watch_load) AND list_contains(?, source)))"
        # the denied traces that lose spans or log records change answers (or lose their denials)
        self._mark([t for (t,) in self._loader.execute(
            f"SELECT DISTINCT trace_id FROM {facts} SEMI JOIN {DENIED_TRACES} USING (trace_id) WHERE {dropped}",
            [partial, gone]).fetchall()])
        self._loader.execute("CREATE OR REPLACE TEMP TABLE watch_log_batch AS "
                             "FROM logs WHERE list_contains(?, source)", [gone])
        self._mark_logs("watch_log_batch")
        deleted = self._loader.execute(f"DELETE FROM {facts} WHERE {dropped}", [partial, gone]).fetchone()[0]
        self._loader.execute("DELETE FROM logs WHERE list_contains(?, source)", [gone])
        self._loader.execute(f"DELETE FROM {DENIED_TRACES} "
                             f"WHERE trace_id NOT IN (SELECT trace_id FROM {facts} WHERE denied)")
        self._held -= deleted
        self.evicted_spans += deleted
        for path in gone:
            self._acked.pop(path, None)

    # -- the clock model and a tick ----------------------------------------------------------------------------

    def clock_model(self) -> None:
        """The pipeline's clock steps over the whole state, on the clock connection (schema ``clock``)."""
        started = time.perf_counter()
        session.run_queries(self._clock, only=CLOCK_STEPS[:-1], ready=True)
        with self._clock_lock:
            session.run_queries(self._clock, only=CLOCK_STEPS[-1:], ready=True)
            self._clock_ready = True
        self._tick_due.set()
        self._clock_runs += 1
        self.clock_seconds.append(time.perf_counter() - started)

    def _take_traces(self) -> tuple[bool, set[str]]:
        """Fill TICK_TRACES with the traces this tick attributes anew (and take the latest clock model when a run
        finished since the last tick: then every denied trace); whether that is every denied trace, and the traces
        marked since the last tick."""
        with self._clock_lock:
            new_clock, self._clock_ready = self._clock_ready, False
            if new_clock:
                self.con.execute("CREATE OR REPLACE TABLE main.clock_offsets AS FROM clock.clock_offsets")
        with self._changes:
            # a new clock model: every denial attributed anew, at most every full_interval_s (meanwhile the traces
            # that changed use it)
            self._stale |= new_clock
            due = self._stale and time.monotonic() >= self._last_full + self.full_interval_s
            everything, dirty = self._all_due or due, self._dirty
            self._all_due, self._dirty = False, set()
            if everything:
                self._stale, self._last_full = False, time.monotonic()
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {TICK_TRACES} AS SELECT DISTINCT unnest(?::VARCHAR[]) "
                         f"AS trace_id{f' UNION SELECT trace_id FROM {DENIED_TRACES}' if everything else ''}",
                         [list(dirty)])
        return everything, dirty

    def _focus(self) -> None:
        """What the denials' steps read for the traces of TICK_TRACES, from the state: every span of those traces
        (both ends of a denied call are in its trace), the issuance spans of their tokens, and the allowed decisions
        under a policy version of their principals (policy_version_skew). The clock model's offsets are the last
        run's."""
        facts = spans_view.FACTS_TABLE
        self.con.execute(f"""CREATE OR REPLACE TABLE {FOCUS} AS
            WITH traces AS (FROM {TICK_TRACES}),
            -- by rowid: a semi join on the traces would read every column of every span, this reads their ids
            denied AS (
                SELECT * FROM {facts} WHERE rowid IN (SELECT rowid FROM {facts} WHERE trace_id IN (FROM traces))
            ),
            issues AS (
                SELECT * FROM {facts}
                WHERE name = 'jit.issue' AND jit_token_id IN (SELECT jit_token_id FROM denied)
                  AND trace_id NOT IN (FROM traces)
            ),
            principals AS (SELECT jit_token_sub FROM denied UNION SELECT jit_token_sub FROM issues)
            FROM denied
            UNION ALL FROM issues
            UNION ALL
            FROM {facts}
            WHERE kind = 'SERVER' AND jit_policy_decision = 'allow' AND jit_policy_version IS NOT NULL
              AND jit_token_sub IN (FROM principals) AND trace_id NOT IN (FROM traces)""")

    def tick(self, everything: bool = False) -> None:
        """Run the denials' steps for the traces whose answer may have changed (``everything``: every denied
        trace); print each new or changed denial; update the metrics."""
        started = time.perf_counter()
        loaded_before = self._loaded
        with self._changes:
            self._all_due |= everything
        everything, dirty = self._take_traces()
        self._focus()
        steps = DENIAL_STEPS
        if self._logless and not self.con.execute("SELECT EXISTS (FROM logs)").fetchone()[0]:
            steps = tuple(s for s in DENIAL_STEPS if s != "denial_logs")  # no log record: its table stays empty
        session.run_queries(self.con, only=steps, ready=True)
        if "denial_logs" in steps:
            self._logless = not self.con.execute("SELECT EXISTS (FROM denial_logs)").fetchone()[0]
        mine = f"trace_id IN (FROM {TICK_TRACES})"  # a span of another trace may enter the focus (_focus)
        if everything:
            self.con.execute(f"CREATE OR REPLACE TABLE {LIVE} AS FROM attributions WHERE {mine}")
        else:
            self.con.execute(f"DELETE FROM {LIVE} WHERE {mine}")
            self.con.execute(f"INSERT INTO {LIVE} BY NAME FROM attributions WHERE {mine}")
        rows = self.con.execute(
            f"SELECT {', '.join('a.' + c for c in _COLUMNS)}, coalesce(s.source, c.source), c.source "
            f"FROM attributions AS a "
            f"LEFT JOIN {FOCUS} AS s ON s.trace_id = a.trace_id AND s.span_id = a.server_span_id AND s.kind = 'SERVER' "
            f"LEFT JOIN {FOCUS} AS c ON c.trace_id = a.trace_id AND c.span_id = a.client_span_id AND c.kind = 'CLIENT' "
            f"WHERE a.{mine} ORDER BY a.time, a.trace_id, a.span_id").fetchall()
        now = time.time()
        printed = []
        seen = set()
        for trace_id, span_id, server_id, client_id, when, *rest in rows:
            answer, sources = tuple(rest[:len(ANSWER)]), rest[len(ANSWER):]
            ids = [(trace_id, i) for i in (server_id, client_id) if i is not None]
            call = next((self._calls[k] for k in ids if k in self._calls), (trace_id, span_id))
            for k in ids:
                self._calls[k] = call
            seen.add(call)
            line = Line(trace_id, span_id, when, answer, now)
            before = self.lines.get(call)
            if before is None:
                acked = max((self._acked.get(s, now) for s in sources if s is not None), default=now)
                self.lags.append(now - acked)
                self.metrics.lag(now - acked)
                self.metrics.denial(_key(line))
                self.denials += 1
                printed.append(format_line("denial", line))
            elif before.answer != answer:
                self.corrections += 1
                self.metrics.denial(_key(line), _key(before))
                printed.append(format_line("correction", line, before))
            else:
                line.printed_at = before.printed_at
            self.lines[call] = line
            self._trace_calls.setdefault(trace_id, set()).add(call)
        # the calls of these traces no tick row holds any more: evicted with their spans
        for trace_id in list(self._trace_calls) if everything else dirty:
            calls = self._trace_calls.get(trace_id, set())
            for call in [c for c in calls if c not in seen]:
                calls.discard(call)
                del self.lines[call]
            if not calls:
                self._trace_calls.pop(trace_id, None)
        if len(self._calls) > 2 * len(self.lines) + 1024:
            self._calls = {k: c for k, c in self._calls.items() if c in self.lines}
        self.metrics.set_offsets(self.con.execute(
            "SELECT domain, arg_max(offset_s, window_end), arg_max(lower_s, window_end), "
            "arg_max(upper_s, window_end) FROM clock_offsets GROUP BY domain").fetchall())
        if printed:
            self.out.write("\n".join(printed) + "\n")
            self.out.flush()
        self.ticks += 1
        self._ticked = loaded_before
        self.tick_seconds.append(time.perf_counter() - started)
        if not everything:
            self._partial_seconds = self.tick_seconds[-1]

    def attributions(self, columns: str = "*"):
        """The state's attributions as the last tick left them (rows of ``columns``)."""
        if not self.con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{LIVE}'").fetchone()[0]:
            return []  # no tick yet
        return self.con.execute(f"SELECT {columns} FROM {LIVE}").fetchall()

    def summary(self) -> str:
        """The stop line: what was watched, and whether the state held every span."""
        held = (f"; {self.evicted_spans} spans dropped from the state (--watch-window, --watch-max-spans): "
                "the live answers covered the recent spans only" if self.evicted_spans else "")
        if self.unseen_spans:
            held += (f"; {self.unseen_spans} of them before a tick saw them (the watch was behind by more than "
                     f"{HARD_BOUND}x --watch-max-spans): their denials may not have been printed")
        if self.missed_files:
            held += (f"; {self.missed_files} files were compacted before the watch read them (--compact-after): "
                     "their spans are not in the live answers")
        def median(values: deque[float]) -> str:
            return f"{sorted(values)[len(values) // 2]:.2f} s" if values else "-"
        return (f"jitrace collect --watch: {self.denials} denials attributed, {self.corrections} corrections, "
                f"{self.ticks} ticks (median {median(self.tick_seconds)}) and {self._clock_runs} clock model runs "
                f"(median {median(self.clock_seconds)}) over {self.spans} spans{held}")

    def close(self) -> None:
        self._loader.close()
        self._clock.close()
        self.con.close()


def _key(line: Line) -> tuple[str, str, str]:
    return (str(line.field("cause")), str(line.field("service")), str(line.field("method")))


def serve(args) -> int:
    """The watch process (``jitrace collect --watch-process FD``, started by ``start_process``): announcements on
    stdin until it closes, the lines on stdout, the stop line on stderr."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the parent closes the pipe
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        os.nice(NICE)  # the receivers come first: under saturation the lag grows, not the exporters' wait
    ready = os.fdopen(args.watch_process, "w")
    metrics = Metrics(args.metrics, args.metrics_otlp, interval_s=args.metrics_interval)
    try:
        port = metrics.start()
    except UserError as exc:
        ready.write(f"error {exc}\n")
        ready.close()
        return 2
    try:
        watcher = Watcher(window_s=args.watch_window, max_spans=args.watch_max_spans, metrics=metrics,
                          settings=rule_options.settings(args), log_patterns=args.log_patterns)
    except UserError as exc:  # a --log-patterns file it cannot use
        ready.write(f"error {exc}\n")
        ready.close()
        metrics.shutdown()
        return 2
    try:
        watcher.start()
        ready.write(f"ready {port or 0}\n")
        ready.close()
        for line in sys.stdin.buffer:
            parsed = parse_announcement(line)
            if parsed is not None:
                watcher.announce(*parsed)
        watcher.stop()
        print(watcher.summary(), file=sys.stderr, flush=True)
    finally:
        watcher.close()
        metrics.shutdown()
    return 0
