"""The committed gRPC stubs are what jitlab.proto generates."""

from __future__ import annotations

from jitrace.lab import gen_stubs


def test_committed_stubs_match_the_proto(tmp_path):
    for path in gen_stubs.generate(tmp_path):
        assert path.read_bytes() == (gen_stubs.HERE / path.name).read_bytes(), f"regenerate {path.name}"
