"""docs/contract.md is the repository's statement of the contract: every name the code defines is on it, so a new
attribute, cause, output column or exit code cannot land without its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from jitrace.analyzer import errors, replay
from jitrace.analyzer.analyze import CSV_COLUMNS
from jitrace.instrumentation import contract

CONTRACT = (Path(__file__).resolve().parent.parent / "docs" / "contract.md").read_text()


@pytest.mark.parametrize("name", [*contract.all_attributes(), contract.ISSUE_SPAN_NAME, contract.TOKEN_CHECK_EVENT,
                                  contract.METADATA_SENT_NS, contract.METADATA_CLOCK, *contract.VERDICTS])
def test_every_span_name_is_in_the_contract(name: str) -> None:
    assert f"`{name}`" in CONTRACT


@pytest.mark.parametrize("name", [*contract.CAUSES, *CSV_COLUMNS])
def test_every_cause_and_attribution_column_is_in_the_contract(name: str) -> None:
    assert f"`{name}`" in CONTRACT


@pytest.mark.parametrize("name", [*replay.FLIP_COLUMNS, *replay.REASONS, *replay.FLIPS])
def test_every_replay_column_and_reason_is_in_the_contract(name: str) -> None:
    assert f"`{name}`" in CONTRACT


@pytest.mark.parametrize("code", sorted(errors.EXIT_CODES))
def test_every_exit_code_is_in_the_contract(code: int) -> None:
    assert f"| {code} |" in CONTRACT
