"""atheris fuzz targets (coverage-guided) for the parsers that read the wire: run by test_fuzz.py in a subprocess.

``python fuzz_targets.py token|clock|stamp [libFuzzer flags, e.g. -runs=5000]``. A target fails (non-zero exit, the
input saved by libFuzzer) if the parser raises or returns something outside its contract.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["jitrace.instrumentation._token", "jitrace.instrumentation._clock",
                                         "jitrace.instrumentation._server_call"]):  # only the parsers: fast start
    from jitrace.instrumentation import _clock, _server_call, _token
    from jitrace.instrumentation import contract as c

_INT64 = 2**63 - 1


def token(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    for candidate in (text, "e30." + text + ".sig", text.replace("!", ".")):
        attrs = _token.token_attributes(candidate, 1_700_000_000.0)
        if candidate:
            assert attrs[c.TOKEN_PRESENT] is True
            for value in attrs.values():  # never the token, never more than the cap
                assert not (isinstance(value, str) and len(candidate) >= 8 and candidate in value)
                assert not isinstance(value, str) or len(value) <= 256


def clock(data: bytes) -> None:
    for value in (data, data.decode("latin-1")):
        parsed = _clock.parse_clock(value)
        assert parsed is None or 0 < parsed[0] <= parsed[1] <= _INT64


def stamp(data: bytes) -> None:
    for value in (data, data.decode("latin-1")):
        parsed = _server_call._stamp(value)
        assert parsed is None or 0 <= parsed <= _INT64


if __name__ == "__main__":
    target = {"token": token, "clock": clock, "stamp": stamp}[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
