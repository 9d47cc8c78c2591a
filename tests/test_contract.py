"""The span contract module holds every name of docs/contract.md once, and needs nothing beyond the standard library."""

from __future__ import annotations

import subprocess
import sys

from jitrace.instrumentation import contract


def test_every_attribute_is_unique_and_namespaced():
    names = contract.all_attributes()
    assert len(names) == len(set(names))
    assert all(n.startswith("jit.") for n in names)
    assert contract.TOKEN_TTL_S in names and contract.CLOCK_OFFSET_S in names
    assert contract.ISSUE_SPAN_NAME not in names


def test_contract_imports_without_grpc_or_the_sdk():
    code = (
        "import sys; import jitrace.instrumentation.contract; "
        "bad = [m for m in ('grpc', 'opentelemetry.sdk', 'jwt') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
