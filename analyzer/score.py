"""``jitrace score ATTRIBUTIONS LABELS [--json]``: how well the attributions match ground truth.

Both files may be Parquet, CSV or JSON lines (ATTRIBUTIONS may also be an analyze output folder); each needs
``trace_id`` and ``cause``. Calls are matched by trace_id. A labelled call the analyzer did not report counts as
predicted ``(not reported)``; a reported call without a label counts as actual ``(no label)``: both lower the scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from jitrace.analyzer import errors

NOT_REPORTED = "(not reported)"
NO_LABEL = "(no label)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("attributions", help="attributions.parquet/.csv/.jsonl, or an analyze output folder")
    parser.add_argument("labels", help="ground truth: Parquet, CSV or JSON lines with trace_id and cause")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A table with trace_id and cause, from Parquet, CSV or JSON lines; a one-line UserError otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / "attributions.parquet"
    if not p.is_file():
        raise errors.UserError(f"{what} {path}: no such file")
    try:
        head = p.open("rb").read(4)
        if head == b"PAR1":
            df = pd.read_parquet(p)
        elif p.suffix in (".jsonl", ".json", ".ndjson") or head[:1] in (b"{", b"["):
            df = pd.read_json(p, lines=head[:1] != b"[", dtype={"trace_id": str})
        else:
            df = pd.read_csv(p, dtype={"trace_id": str, "cause": str})
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        reason = type(exc).__name__
        raise errors.UserError(f"{what} {path}: cannot read as Parquet, CSV or JSON lines ({reason})") from None
    missing = [c for c in ("trace_id", "cause") if c not in df.columns]
    if missing:
        raise errors.UserError(f"{what} {path}: no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    df = df[["trace_id", "cause"]].dropna(subset=["trace_id"]).astype(str)
    df["trace_id"] = df["trace_id"].str.lower()
    return df.drop_duplicates("trace_id")


def score(attributions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Precision, recall and support per cause, accuracy, and the confusion matrix (actual -> predicted -> n)."""
    both = labels.rename(columns={"cause": "actual"}).merge(
        attributions.rename(columns={"cause": "predicted"}), on="trace_id", how="outer"
    )
    both["actual"] = both["actual"].fillna(NO_LABEL)
    both["predicted"] = both["predicted"].fillna(NOT_REPORTED)
    causes = sorted((set(both["actual"]) | set(both["predicted"])) - {NO_LABEL, NOT_REPORTED})
    out: dict = {"accuracy": float((both["actual"] == both["predicted"]).mean()) if len(both) else 1.0, "causes": {}}
    for cause in causes:
        tp = int(((both["actual"] == cause) & (both["predicted"] == cause)).sum())
        predicted = int((both["predicted"] == cause).sum())
        support = int((both["actual"] == cause).sum())
        out["causes"][cause] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": support,
        }
    matrix = both.groupby(["actual", "predicted"]).size()
    out["confusion"] = {a: {p: int(n) for (a2, p), n in matrix.items() if a2 == a} for a in matrix.index.levels[0]}
    out["calls"] = len(both)
    return out


def format_text(result: dict) -> str:
    lines = [f"{'cause':<26} {'precision':>9} {'recall':>7} {'support':>8}"]
    for cause, s in result["causes"].items():
        lines.append(f"{cause:<26} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['support']:>8}")
    lines.append(f"accuracy {result['accuracy']:.3f} over {result['calls']} calls")
    lines.append("confusion (actual -> predicted: n):")
    for actual, row in result["confusion"].items():
        lines.append(f"  {actual:<24} " + ", ".join(f"{p}: {n}" for p, n in sorted(row.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = score(read_table(args.attributions, "ATTRIBUTIONS"), read_table(args.labels, "LABELS"))
    if args.json:
        print(json.dumps({"accuracy": result["accuracy"], "causes": result["causes"]}))
    else:
        print(format_text(result))
    return errors.OK
