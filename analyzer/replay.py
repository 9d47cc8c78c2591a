"""``jitrace replay INPUT... --casbin MODEL POLICY``: the recorded policy decisions evaluated again under a candidate
policy, and the calls whose outcome it changes (flips: allow to deny, deny to allow).

Every decision on a span (``jit.policy.decision``) that records its request (``jit.policy.request``) is evaluated by
the candidate with that request and the roles the subject held then (``jit.policy.granted``). Each distinct (request,
roles) pair is evaluated once, however many calls made it: the decisions stay in DuckDB, only the distinct requests
reach Python. A decision that cannot be replayed is counted under its reason and named (engine, policy, method, an
example trace), never guessed: REASONS.

Python: ``replay(spans, evaluate)`` takes any callable ``evaluate(request, granted) -> bool | (bool, rule)``, so OPA,
Cerbos or any other engine plugs in the same way; ``CasbinCandidate(model, policy)`` is pycasbin's.

Exit codes (analyzer/errors.py): 0 done; 3 (FAIL_ON) a flip of the kind ``--fail-on-flip`` names; 4 (BAD_RECORDS)
records that could not be read or decisions the candidate could not evaluate (counted and named, outputs written);
2 bad arguments, an unreadable candidate, or nothing to replay.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from jitrace.analyzer import errors, outputs
from jitrace.analyzer.load import load_into
from jitrace.analyzer.outputs import report
from jitrace.analyzer.redact import REDACTED
from jitrace.analyzer.steps import session
from jitrace.analyzer.steps.spans_view import sql_string

if TYPE_CHECKING:
    import pandas as pd

# evaluate(request, granted): the candidate's decision (True = allow), alone or with the rule that decided it.
Evaluate = Callable[[tuple[str, ...], tuple[str, ...]], "bool | tuple[bool, str | None]"]

FLIPS = ("allow_to_deny", "deny_to_allow")
GATES = {"allow-to-deny": ("allow_to_deny",), "deny-to-allow": ("deny_to_allow",), "any": FLIPS}
# Why a decision was not replayed, in the order they are tried.
REASONS = {
    "unknown_decision": "the recorded decision is neither allow nor deny",
    "no_request": "recorded without jit.policy.request (or with a value of it missing)",
    "other_engine": "decided by another engine than the candidate's (--engine)",
    "other_policy": "of another policy than the candidate's (--policy-id)",
    "request_redacted": "a request value held a credential and was redacted",
    "evaluation_failed": "the candidate could not evaluate the request",
}
# The columns of flips.parquet / .csv (docs/contract.md, Outputs).
FLIP_COLUMNS = ("trace_id", "span_id", "time", "service", "method", "principal", "flip", "recorded_decision",
                "candidate_decision", "rule", "recorded_rule", "candidate_rule", "policy_engine", "policy_id",
                "policy_version", "request", "granted")
# The dimensions flips are counted by: name -> SQL over replay_flips.
DIMENSIONS = {
    "principal": "principal",
    "method": "method",
    "rule": "rule",
    "policy_version": "concat_ws(' ', policy_id, policy_version)",
}
EXAMPLES = 3  # example trace ids per row of a count
ORDER = "ORDER BY time, trace_id, span_id"  # the flips' order in every output
TOP = 20  # rows per dimension in replay.json, the report and (the first 5) the terminal


@dataclass
class Replay:
    """A replay's result: ``summary`` (replay.json's content) and the connection holding the table ``replay_flips``
    (FLIP_COLUMNS, one row per flipped call), the TEMP view ``replay_decisions`` (every decision) and the TEMP tables
    ``replay_answers`` (each distinct request and the candidate's answer) and ``replay_notable`` (the decisions that
    flipped or were not replayed)."""

    con: duckdb.DuckDBPyConnection
    summary: dict[str, Any]

    def flips(self) -> pd.DataFrame:
        return self.con.execute(f"SELECT {', '.join(FLIP_COLUMNS)} FROM replay_flips {ORDER}").df()

    def gate(self, kind: str | None) -> bool:
        """Whether a flip of the kind ``--fail-on-flip`` names (GATES) was found."""
        return kind is not None and any(self.summary["flips"][k] for k in GATES[kind])


def _decisions_view(con: duckdb.DuckDBPyConnection, engine: str | None, policy_id: str | None) -> None:
    """``replay_decisions``: every span's decision, its request and roles, and why it is not replayed (or
    ``candidate``). A view: the decisions are read where they are (the checks per request are made once per distinct
    request, in ``_pairs``)."""
    engine_text, policy_text = sql_string(engine or ""), sql_string(policy_id or "")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW replay_decisions AS
        SELECT *,
            CASE WHEN recorded_decision IS NULL THEN 'unknown_decision'
                 WHEN request IS NULL OR len(request) = 0 THEN 'no_request'
                 WHEN {engine_text} <> '' AND policy_engine IS DISTINCT FROM {engine_text} THEN 'other_engine'
                 WHEN {policy_text} <> '' AND policy_id IS DISTINCT FROM {policy_text} THEN 'other_policy'
                 ELSE 'candidate' END AS status
        FROM (
            SELECT trace_id, span_id, start_ns, service,
                coalesce(rpc_service || '/' || rpc_method, name) AS method,
                coalesce(jit_token_sub, jit_policy_request[1]) AS principal,
                jit_policy_engine AS policy_engine, jit_policy_id AS policy_id, jit_policy_version AS policy_version,
                CASE lower(jit_policy_decision) WHEN 'allow' THEN 'allow' WHEN 'deny' THEN 'deny' END
                    AS recorded_decision,
                jit_policy_decision AS recorded_text, jit_policy_rule AS recorded_rule, jit_policy_request AS request,
                coalesce(jit_policy_granted, []::VARCHAR[]) AS granted
            FROM spans
            WHERE jit_policy_decision IS NOT NULL
        )""")


# Each decision finds its distinct (request, roles) by their hash: joining a million decisions by a number is several
# times faster than by two lists. Exact all the same: the distinct pairs are grouped by the lists themselves, and
# where two of them share a hash the decisions are joined by the lists too.
PAIR_HASH = "hash({t}request, {t}granted)"  # {t}: the table's alias


def _pairs(con: duckdb.DuckDBPyConnection) -> bool:
    """``replay_requests``: each distinct (request, granted) of the candidate decisions, its hash, how many decisions
    made it, and why it cannot be evaluated (NULL: it can). The order keeps one subject's requests together (an
    evaluator that binds a subject to its roles changes them least often). Returns whether the hashes are unique."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE replay_requests AS
        SELECT (row_number() OVER (ORDER BY request[1], granted, request) - 1)::BIGINT AS key,
               {PAIR_HASH.format(t='')} AS h, request, granted, decisions,
               CASE WHEN list_count(request) < len(request) THEN 'no_request'  -- a value missing: not the request
                    WHEN len(list_filter(list_concat(request, granted),
                                         lambda v: contains(v, {sql_string(REDACTED)}))) > 0 THEN 'request_redacted'
                    END AS status
        FROM (SELECT request, granted, count(*) AS decisions FROM replay_decisions WHERE status = 'candidate'
              GROUP BY request, granted)""")
    return con.execute("SELECT count(*) = count(DISTINCT h) FROM replay_requests").fetchone()[0]


def _outcome(result: object) -> tuple[str, str | None]:
    """An evaluator's answer as (decision, rule); anything but a bool or (bool, rule) is a TypeError."""
    rule: object = None
    if isinstance(result, tuple | list) and len(result) == 2:
        result, rule = result
    if result is not True and result is not False:
        raise TypeError(f"the evaluator returned {type(result).__name__}, expected a bool or (bool, rule)")
    return ("allow" if result else "deny"), (None if rule is None else str(rule))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return report.printable(f"{type(exc).__name__}: {text[0] if text else ''}"[:200])


Pair = tuple[tuple[str, ...], tuple[str, ...]]
Answer = tuple[str | None, str | None, str | None]  # candidate decision, candidate rule, error


def _evaluate(con: duckdb.DuckDBPyConnection, evaluate: Evaluate, say: Callable[[str], None]) -> int:
    """Each distinct (request, roles) evaluated once (roles in any order, or listed twice, are the same roles); the
    answers land in ``replay_answers`` beside ``replay_requests``' columns. Returns how many were evaluated."""
    answers: dict[Pair, Answer] = {}
    keys = con.execute("SELECT key, request, granted FROM replay_requests WHERE status IS NULL ORDER BY key").fetchall()
    say(f"evaluating {len(keys):,} distinct requests under the candidate")
    columns: tuple[list[int], list[str | None], list[str | None], list[str | None]] = ([], [], [], [])
    said = started = time.monotonic()
    for key, request, granted in keys:
        pair = (tuple(request), tuple(sorted({g for g in granted if g is not None})))
        answer = answers.get(pair)
        if answer is None:
            try:
                answer = (*_outcome(evaluate(*pair)), None)
            except Exception as exc:  # noqa: BLE001 - the candidate's failure on one request: counted and named
                answer = (None, None, _one_line(exc))
            answers[pair] = answer
            if time.monotonic() - said >= 2.0:
                said = time.monotonic()
                say(f"evaluated {len(answers):,} requests ({len(answers) / (said - started):,.0f}/s)")
        for column, value in zip(columns, (key, *answer), strict=True):
            column.append(value)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE replay_answers AS
        SELECT r.* REPLACE (coalesce(r.status, CASE WHEN o.error IS NOT NULL THEN 'evaluation_failed' END) AS status),
               o.candidate_decision, o.candidate_rule, o.error
        FROM replay_requests AS r
        LEFT JOIN (SELECT unnest(?::BIGINT[]) AS key, unnest(?::VARCHAR[]) AS candidate_decision,
                          unnest(?::VARCHAR[]) AS candidate_rule, unnest(?::VARCHAR[]) AS error) AS o USING (key)""",
                list(columns))
    return len(answers)


def _flips(con: duckdb.DuckDBPyConnection, by_hash: bool) -> None:
    """One pass over the decisions: ``replay_notable`` holds those that flip or are not replayed (every other one was
    replayed with the same outcome); ``replay_flips`` the flips."""
    on = f"a.h = {PAIR_HASH.format(t='d.')}" if by_hash else \
        "a.request IS NOT DISTINCT FROM d.request AND a.granted IS NOT DISTINCT FROM d.granted"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE replay_notable AS
        SELECT d.* REPLACE (CASE WHEN d.status = 'candidate' THEN coalesce(a.status, 'replayed') ELSE d.status END
                            AS status),
               d.status = 'candidate' AS candidate, a.candidate_decision, a.candidate_rule, a.error
        FROM replay_decisions AS d
        LEFT JOIN replay_answers AS a ON d.status = 'candidate' AND {on}
        WHERE d.status <> 'candidate' OR a.status IS NOT NULL OR a.candidate_decision <> d.recorded_decision""")
    columns = ", ".join(FLIP_COLUMNS)
    con.execute(f"""
        CREATE OR REPLACE TABLE replay_flips AS
        SELECT {columns} FROM (
            SELECT * REPLACE (to_json(request)::VARCHAR AS request, to_json(granted)::VARCHAR AS granted),
                make_timestamp(start_ns // 1000) AS time, recorded_decision || '_to_' || candidate_decision AS flip,
                -- the rule that made the difference: the one that allows now, or the one that allowed before
                CASE WHEN candidate_decision = 'allow' THEN candidate_rule ELSE recorded_rule END AS rule
            FROM replay_notable
            WHERE status = 'replayed'
        )
        {ORDER}""")


def _summarize(con: duckdb.DuckDBPyConnection, loaded: dict[str, Any], evaluated: int,
               candidate: dict[str, Any]) -> dict[str, Any]:
    # a decision is judged alone (its recorded decision, request, engine, policy) or with its distinct request
    status: Counter[str] = Counter(dict(con.execute(
        "SELECT status, count(*) FROM replay_notable WHERE NOT candidate GROUP BY ALL").fetchall()))
    status.update(dict(con.execute("SELECT coalesce(status, 'replayed'), sum(decisions)::BIGINT FROM replay_answers "
                                   "GROUP BY ALL").fetchall()))
    flips = dict(con.execute("SELECT flip, count(*) FROM replay_flips GROUP BY flip").fetchall())
    by = {}
    for name, expr in DIMENSIONS.items():
        rows = con.execute(f"""
            SELECT coalesce({expr}, '') AS value, count(*) FILTER (flip = 'allow_to_deny') AS allow_to_deny,
                   count(*) FILTER (flip = 'deny_to_allow') AS deny_to_allow,
                   min_by(trace_id, (time, trace_id), {EXAMPLES}) AS examples
            FROM replay_flips GROUP BY ALL ORDER BY allow_to_deny + deny_to_allow DESC, value LIMIT {TOP}""").fetchall()
        by[name] = [{"value": v, "allow_to_deny": a, "deny_to_allow": d, "examples": ex} for v, a, d, ex in rows]
    unreplayed = con.execute(f"""
        SELECT reason, policy_engine, policy_id, method, count(*) AS decisions,
               min_by(trace_id, (start_ns, trace_id)) AS example, any_value(detail) AS detail
        FROM (SELECT *, status AS reason,
                        CASE WHEN status = 'unknown_decision' THEN 'decision ' || recorded_text ELSE error END AS detail
              FROM replay_notable WHERE status <> 'replayed')
        GROUP BY ALL ORDER BY decisions DESC, reason, policy_engine, policy_id, method LIMIT {TOP}""").fetchall()
    return {
        "spans": loaded["spans"],
        "bad_records": loaded["bad_records"],
        "problems": loaded["problems"][:50],
        "decisions": sum(status.values()),
        "replayed": status.get("replayed", 0),
        "distinct_requests": evaluated,
        "flips": {kind: flips.get(kind, 0) for kind in FLIPS},
        "not_replayed": {reason: status.get(reason, 0) for reason in REASONS},
        "not_replayed_by": [{"reason": r, "engine": e, "policy_id": p, "method": m, "decisions": n, "example": ex,
                             "detail": detail} for r, e, p, m, n, ex, detail in unreplayed],
        "by": by,
        "candidate": candidate,
    }


def replay(spans: duckdb.DuckDBPyConnection | Sequence[str | Path], evaluate: Evaluate, *,
           engine: str | None = None, policy_id: str | None = None, strict: bool = False,
           follow_symlinks: bool = False, progress: Callable[[str], None] | None = None,
           candidate: dict[str, Any] | None = None) -> Replay:
    """Replay every recorded decision of ``spans`` (a connection holding the ``spans`` view, as ``load_into`` or
    ``jitrace.duckdb`` has it, or input paths of any format) under ``evaluate(request, granted)``.

    ``engine`` / ``policy_id``: only decisions of that engine / policy are replayed (the others are counted as
    ``other_engine`` / ``other_policy``). ``candidate`` describes the candidate in the summary."""
    say = progress or (lambda _: None)
    if isinstance(spans, duckdb.DuckDBPyConnection):
        con = spans
        total = con.execute("SELECT count(*) FROM spans").fetchone()[0]
        loaded: dict[str, Any] = {"spans": total, "bad_records": 0, "problems": []}
    else:
        inputs = [str(p) for p in spans]
        con = session.connect()
        say(f"loading {len(inputs)} input(s)")
        rep = load_into(con, inputs, strict=strict, progress=say, follow_symlinks=follow_symlinks)
        if not rep.spans:
            named = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
            raise errors.UserError(f"no spans in {named} ({rep.files} file(s) read)")
        loaded = {"spans": rep.spans, "bad_records": rep.bad_records, "problems": list(rep.problems)}
    _decisions_view(con, engine, policy_id)
    with session.reading_inputs("replay"):
        unique = _pairs(con)
    evaluated = _evaluate(con, evaluate, say)
    with session.reading_inputs("replay"):
        _flips(con, by_hash=unique)
    summary = _summarize(con, loaded, evaluated, candidate or {"engine": engine, "policy_id": policy_id})
    say(f"{summary['replayed']:,} of {summary['decisions']:,} decisions replayed; "
        f"{sum(summary['flips'].values()):,} flips")
    return Replay(con, summary)


# --- pycasbin ---------------------------------------------------------------------------------------------------------
class CasbinCandidate:
    """pycasbin's enforcer on a candidate MODEL and POLICY, as an ``evaluate``.

    Where the model's role definition takes two values (``g = _, _``), the request's subject (its first value) is
    bound to the recorded roles (``g, subject, role``) while its requests are evaluated, besides the roles the policy
    itself gives. The recorded roles are the subject's implicit ones (through inheritance): a candidate that changes
    the inheritance between roles is judged with the roles the subject held then. With any other role definition
    only the policy's own roles count (``binds_roles`` is False). The policy file is never written.
    """

    def __init__(self, model: str | Path, policy: str | Path) -> None:
        import casbin

        self.model_path, self.policy_path = str(model), str(policy)
        for label, path in (("MODEL", self.model_path), ("POLICY", self.policy_path)):
            if not Path(path).is_file():
                raise errors.UserError(f"--casbin {label} {path}: no such file")
        try:
            model_obj = casbin.Enforcer.new_model(path=self.model_path)
        except Exception as exc:  # noqa: BLE001 - pycasbin's parse errors have no common class
            raise errors.UserError(f"{self.model_path}: not a casbin model ({_one_line(exc)})") from None
        sections = {"r": "request_definition", "p": "policy_definition", "e": "policy_effect", "m": "matchers"}
        missing = [name for key, name in sections.items() if key not in model_obj.model]
        if missing:
            raise errors.UserError(f"{self.model_path}: not a casbin model (no [{missing[0]}] section)")
        _check_policy(self.policy_path, model_obj)
        try:
            self.enforcer = casbin.Enforcer(model_obj, casbin.FileAdapter(self.policy_path))
        except Exception as exc:  # noqa: BLE001
            raise errors.UserError(f"{self.policy_path}: not a casbin policy ({_one_line(exc)})") from None
        self.enforcer.enable_auto_save(False)
        g = model_obj.model.get("g", {}).get("g")
        self.binds_roles = g is not None and len(g.tokens) == 2
        self._bound: tuple[str, tuple[str, ...]] | None = None
        self._added: list[str] = []

    def __call__(self, request: tuple[str, ...], granted: tuple[str, ...]) -> tuple[bool, str | None]:
        if self.binds_roles and request:
            self._bind(request[0], granted)
        allowed, explain = self.enforcer.enforce_ex(*request)
        return bool(allowed), ("p, " + ", ".join(str(v) for v in explain) if explain else None)

    def _bind(self, subject: str, granted: tuple[str, ...]) -> None:
        if self._bound == (subject, granted):
            return
        if self._bound is not None:
            for role in self._added:
                self.enforcer.delete_role_for_user(self._bound[0], role)
        self._added = [r for r in granted if not self.enforcer.has_role_for_user(subject, r)]
        for role in self._added:
            self.enforcer.add_role_for_user(subject, role)
        self._bound = (subject, granted)


def _check_policy(path: str, model: Any) -> None:
    """Every rule of the policy file is of a type the model defines, with as many values: else one line naming the
    file and line (pycasbin would load it and fail every evaluation after)."""
    try:
        from casbin.persist.adapter import _extract_tokens  # pycasbin's own reading of a line
    except ImportError:  # another pycasbin: its loader alone judges the file
        return
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.UserError(f"{path}: cannot read the policy ({_one_line(exc)})") from None
    known = {ptype: len(a.tokens) for sec in ("p", "g") for ptype, a in model.model.get(sec, {}).items()}
    for number, line in enumerate(lines, 1):
        try:
            tokens = _extract_tokens(line.strip())
        except IndexError:
            raise errors.UserError(f"{path}:{number}: unbalanced brackets") from None
        if not tokens:
            continue
        ptype = tokens[0]
        if ptype not in known:
            raise errors.UserError(f"{path}:{number}: {report.printable(ptype[:40])!r} is not a policy type of the "
                                   f"model ({', '.join(sorted(known))})")
        if len(tokens) - 1 != known[ptype]:
            raise errors.UserError(f"{path}:{number}: a {ptype} rule of {len(tokens) - 1} values; the model's {ptype} "
                                   f"takes {known[ptype]}")


# --- outputs ----------------------------------------------------------------------------------------------------------
def _candidate(summary: dict[str, Any]) -> str:
    cand = summary["candidate"]
    return " ".join(str(cand[k]) for k in ("engine", "model", "policy") if cand.get(k)) or "the candidate"


def terminal(result: Replay) -> str:
    """The replay as plain text: counts, flips by principal, method, rule and policy version with example traces,
    and what was not replayed (escaped: strings from the wire cannot drive the terminal)."""
    s = result.summary
    lines = [f"{s['decisions']:,} policy decisions on {s['spans']:,} spans; {s['replayed']:,} replayed "
             f"({s['distinct_requests']:,} distinct requests evaluated) under {_candidate(s)}",
             f"flips: {s['flips']['allow_to_deny']:,} allow -> deny, {s['flips']['deny_to_allow']:,} deny -> allow"]
    if any(s["flips"].values()):
        head = f"{'by':<15} {'value':<40} {'allow->deny':>12} {'deny->allow':>12}  example traces"
        lines += [head, "-" * len(head)]
        for dimension, rows in s["by"].items():
            for row in rows[:5]:
                value = row["value"] if len(row["value"]) <= 40 else row["value"][:37] + "..."
                lines.append(f"{dimension:<15} {value:<40} {row['allow_to_deny']:>12,} {row['deny_to_allow']:>12,}  "
                             f"{', '.join(row['examples'][:2])}")
    not_replayed = sum(s["not_replayed"].values())
    if not_replayed:
        lines.append(f"not replayed: {not_replayed:,} decisions")
        for row in s["not_replayed_by"][:8]:
            where = ", ".join(f"{k} {row[k]}" for k in ("engine", "policy_id", "method") if row[k])
            detail = f": {row['detail']}" if row["detail"] else ""
            lines.append(f"  {row['reason']:<18} {row['decisions']:>8,}  {where} (e.g. trace {row['example']}){detail}")
    return report.printable("\n".join(lines))


def html_section(result: Replay, max_rows: int = 500) -> str:
    """report.html's replay section: the counts, flips by each dimension, what was not replayed, the first flips."""
    s = result.summary
    parts = [f'<section id="replay"><h1>Policy replay</h1><p id="replay-summary">{s["decisions"]:,} policy decisions'
             f' on {s["spans"]:,} spans; <strong>{s["replayed"]:,} replayed</strong> ({s["distinct_requests"]:,} '
             f'distinct requests) under {html.escape(_candidate(s))}: '
             f'<strong>{s["flips"]["allow_to_deny"]:,} allow → deny, {s["flips"]["deny_to_allow"]:,} deny → '
             f'allow</strong>.</p>']
    for dimension, rows in s["by"].items():
        parts.append(f"<h2>Flips by {html.escape(dimension.replace('_', ' '))}</h2>")
        parts.append(report.html_table(("value", "allow → deny", "deny → allow", "example traces"),
                                       [(r["value"], r["allow_to_deny"], r["deny_to_allow"], ", ".join(r["examples"]))
                                        for r in rows]))
    parts.append("<h2>Not replayed</h2>")
    parts.append(report.html_table(("reason", "engine", "policy", "method", "decisions", "example trace", "detail"),
                                   [(r["reason"], r["engine"], r["policy_id"], r["method"], r["decisions"],
                                     r["example"], r["detail"]) for r in s["not_replayed_by"]]))
    cursor = result.con.execute(f"SELECT {', '.join(FLIP_COLUMNS)} FROM replay_flips {ORDER} LIMIT {int(max_rows)}")
    parts.append(f"<h2>Flips (first {int(max_rows)})</h2>")
    parts.append(report.html_table([d[0] for d in cursor.description], cursor.fetchall()))
    return "".join(parts) + "</section>"


def write(result: Replay, out_dir: str | Path) -> None:
    """flips.parquet, flips.csv, replay.json and report.html into ``out_dir``, published as analyze's outputs are
    (analyzer/outputs.py: nothing jitrace did not write is replaced)."""
    con = result.con
    with outputs.staged(out_dir, command="replay", known=outputs.REPLAY_OUTPUTS) as out:
        con.execute("SET preserve_insertion_order = true")
        columns = ", ".join(FLIP_COLUMNS)
        con.execute(f"COPY (SELECT {columns} FROM replay_flips {ORDER}) TO {sql_string(str(out / 'flips.parquet'))} "
                    f"({outputs.OUTPUT_PARQUET})")
        con.execute(f"COPY (SELECT {outputs.csv_cells(con, 'replay_flips', FLIP_COLUMNS)} FROM replay_flips "
                    f"{ORDER}) TO {sql_string(str(out / 'flips.csv'))} (FORMAT csv, HEADER)")
        (out / "replay.json").write_text(json.dumps(result.summary, indent=2, default=str) + "\n")
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>jitrace replay</title>'
                f"<style>{report.STYLE}</style></head><body>\n{html_section(result)}\n"
                f'<script type="application/json" id="summary-json">{report.script_json(result.summary)}</script>\n'
                "</body></html>\n")
        (out / "report.html").write_text(page)


# --- the command ------------------------------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="span files, folders or globs (any format)")
    parser.add_argument("--casbin", nargs=2, required=True, metavar=("MODEL", "POLICY"),
                        help="the candidate: a pycasbin model and policy file")
    parser.add_argument("--out", metavar="DIR", help="write flips.parquet, flips.csv, replay.json and report.html")
    parser.add_argument("--fail-on-flip", choices=tuple(GATES), metavar="KIND",
                        help=f"exit {errors.FAIL_ON} on a flip of this kind: {', '.join(GATES)}")
    parser.add_argument("--engine", default="casbin",
                        help="replay the decisions of this engine (jit.policy.engine; default casbin, 'any' for all)")
    parser.add_argument("--policy-id", metavar="ID", help="replay only the decisions of this policy (jit.policy.id)")
    parser.add_argument("--allow-empty", action="store_true",
                        help=f"inputs holding no decision to replay are not an error (exit {errors.USAGE} without it)")
    parser.add_argument("--strict", action="store_true", help="any unreadable record is an error")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="read files a symbolic link inside an input folder leads to (default: skipped)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no table")


def run(args: argparse.Namespace) -> int:
    model, policy = args.casbin
    candidate = CasbinCandidate(model, policy)
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"jitrace replay: [{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    engine = None if args.engine == "any" else args.engine
    result = replay(args.inputs, candidate, engine=engine, policy_id=args.policy_id, strict=args.strict,
                    follow_symlinks=args.follow_symlinks, progress=say,
                    candidate={"engine": "casbin", "model": model, "policy": policy, "binds_roles":
                               candidate.binds_roles, "replays_engine": engine, "policy_id": args.policy_id})
    s = result.summary
    if not s["replayed"] and not s["not_replayed"]["evaluation_failed"] and not args.allow_empty:
        reasons = ", ".join(f"{n:,} {r}" for r, n in s["not_replayed"].items() if n) or "none recorded"
        raise errors.UserError(f"no decision to replay in {', '.join(args.inputs[:3])}: {s['decisions']:,} policy "
                               f"decision(s) ({reasons}); --allow-empty accepts that")
    if result.gate(args.fail_on_flip):
        code = errors.FAIL_ON
    elif s["bad_records"] or s["not_replayed"]["evaluation_failed"]:
        code = errors.BAD_RECORDS
    else:
        code = errors.OK
    s["exit_code"] = code
    if args.out:
        say(f"writing {args.out}")
        write(result, args.out)
    if not args.quiet:
        print(terminal(result))
    if code == errors.FAIL_ON:
        say(f"--fail-on-flip {args.fail_on_flip}: " + ", ".join(f"{s['flips'][k]:,} {k}" for k in GATES[
            args.fail_on_flip]))
    elif code == errors.BAD_RECORDS:
        say(f"{s['bad_records']:,} record(s) could not be read, {s['not_replayed']['evaluation_failed']:,} "
            "decision(s) could not be evaluated; see replay.json")
    return code
