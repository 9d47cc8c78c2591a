"""`jitrace score`: precision, recall, support per cause, accuracy and the confusion matrix, from any table format."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitrace.analyzer import cli
from jitrace.analyzer.score import NOT_REPORTED, read_table, score
from jitrace.instrumentation import contract

PRED = pd.DataFrame({"trace_id": ["a", "b", "c", "d"], "cause": ["clock_drift", "clock_drift", "token_expired",
                                                                  "policy_mismatch"]})
TRUTH = pd.DataFrame({"trace_id": ["a", "b", "c", "e"], "cause": ["clock_drift", "token_expired", "token_expired",
                                                                   "token_missing"]})


def test_scores_by_hand():
    r = score(PRED, TRUTH)
    assert r["causes"]["clock_drift"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert r["causes"]["token_expired"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert r["causes"]["token_missing"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert r["causes"]["policy_mismatch"]["support"] == 0  # reported, but not a labelled denial
    assert r["accuracy"] == pytest.approx(2 / 5)
    assert r["confusion"]["token_expired"] == {"clock_drift": 1, "token_expired": 1}
    assert r["confusion"]["token_missing"] == {NOT_REPORTED: 1}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(contract.CAUSES), min_size=1, max_size=30))
def test_perfect_attributions_score_one(causes):
    df = pd.DataFrame({"trace_id": [f"t{i}" for i in range(len(causes))], "cause": causes})
    r = score(df, df)
    assert r["accuracy"] == 1.0
    assert all(s["precision"] == 1.0 and s["recall"] == 1.0 for s in r["causes"].values())
    assert sum(s["support"] for s in r["causes"].values()) == len(causes)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_cli_json_from_each_format(tmp_path, capsys, fmt):
    pred, truth = tmp_path / f"pred.{fmt}", tmp_path / f"labels.{fmt}"
    for df, path in ((PRED, pred), (TRUTH.assign(scenario="mixed"), truth)):
        if fmt == "parquet":
            df.to_parquet(path)
        elif fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_json(path, orient="records", lines=True)
    assert cli.main(["score", str(pred), str(truth), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "causes"} and out["accuracy"] == pytest.approx(0.4)
    assert out["causes"]["token_expired"] == {"precision": 1.0, "recall": 0.5, "support": 2}


def test_text_output_has_the_confusion_matrix(tmp_path, capsys):
    PRED.to_csv(tmp_path / "p.csv", index=False)
    TRUTH.to_csv(tmp_path / "l.csv", index=False)
    assert cli.main(["score", str(tmp_path / "p.csv"), str(tmp_path / "l.csv")]) == 0
    text = capsys.readouterr().out
    assert "accuracy 0.400 over 5 calls" in text and "token_expired" in text and "confusion" in text


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("trace,verdict\n1,2\n")
    assert cli.main(["score", str(tmp_path / "x.csv"), str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no column 'trace_id'" in err and "x.csv" in err
    assert cli.main(["score", str(tmp_path / "nope.parquet"), str(tmp_path / "x.csv")]) == 2
    assert "nope.parquet: no such file" in capsys.readouterr().err


def test_trace_ids_match_whatever_their_case(tmp_path):
    a = tmp_path / "a.csv"
    pd.DataFrame({"trace_id": ["ABC"], "cause": ["clock_drift"]}).to_csv(a, index=False)
    assert read_table(a, "LABELS")["trace_id"].tolist() == ["abc"]
