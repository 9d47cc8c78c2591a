"""README.md is the one table of JITRACE_* settings: every variable the code reads is in it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from jitrace.instrumentation._settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_settings_field_is_documented():
    for field in dataclasses.fields(Settings):
        assert f"`JITRACE_{field.name.upper()}`" in README, field.name


def test_every_jitrace_variable_read_by_the_code_is_documented():
    read = set()
    for folder in ("instrumentation", "collect", "analyzer", "lab"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"[\"'](JITRACE_[A-Z_]+)[\"']", path.read_text()))
    read.discard("JITRACE_")  # the prefix itself, used to build names from Settings fields
    table = set(re.findall(r"`(JITRACE_[A-Z_]+)`", README))
    assert read <= table, sorted(read - table)
