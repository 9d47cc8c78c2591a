"""``jitrace collect`` as a real process: SIGKILL mid-stream loses no acknowledged batch, a restart reads past partial
files, SIGTERM stops it cleanly with everything written."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import threading
from pathlib import Path

import duckdb
import grpc
import otlp_requests
from processes import JITRACE, processes_mentioning, start_collect

from jitrace.analyzer.load import load_into

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _start(out: Path, *options: str) -> tuple[subprocess.Popen, int]:
    proc, grpc_port, _, _ = start_collect(out, "--http", "off", *options)
    return proc, grpc_port


class Sender(threading.Thread):
    """Exports batches until told to stop or the receiver goes away; remembers the span ids acknowledged."""

    def __init__(self, port: int, batches: int | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.batches = port, batches
        self.acked: set[str] = set()
        self.sent_batches = 0
        self.enough = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            export = channel.unary_unary(EXPORT)
            while not self.stop.is_set() and (self.batches is None or self.sent_batches < self.batches):
                req, ids = otlp_requests.traces(200, first=self.sent_batches * 200)
                try:
                    export(req.SerializeToString(), timeout=10)
                except grpc.RpcError:
                    break  # killed: this batch was not acknowledged
                self.acked.update(ids)
                self.sent_batches += 1
                if self.sent_batches >= 15:
                    self.enough.set()
        self.enough.set()


def _stop(sender: Sender, proc: subprocess.Popen) -> None:
    """After a kill (or a failure): the sender stops, and no receiver is left running."""
    sender.stop.set()
    sender.join(30)
    if proc.poll() is None:
        proc.kill()


def _loaded(out: Path) -> tuple[set[str], int]:
    con = duckdb.connect()
    rep = load_into(con, [str(out)])
    return {r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()}, rep.bad_records


def test_sigkill_mid_stream_loses_no_acknowledged_batch_and_restart_reads_past_partial_files(tmp_path):
    out = tmp_path / "out"
    proc, port = _start(out)
    sender = Sender(port)
    try:
        sender.start()
        assert sender.enough.wait(60)
        proc.send_signal(signal.SIGKILL)  # while the sender is still exporting
        proc.wait(30)
    finally:
        _stop(sender, proc)
    assert sender.sent_batches >= 15
    # a write the kill interrupted looks like this: half a Parquet file under its temporary name
    hour = next((out / "spans").iterdir())
    good = next(hour.glob("*.parquet"))
    (hour / "interrupted.parquet.tmp").write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    stored, bad = _loaded(out)
    assert sender.acked <= stored and bad == 0  # every acknowledged span is there; the partial file is skipped

    proc, port = _start(out)  # a restart on the same folder
    try:
        more = Sender(port, batches=5)
        more.start()
        more.join(60)
        assert more.sent_batches == 5
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped; 1000 spans" in err
    assert not list(out.rglob("*.tmp"))  # unacknowledged leftovers removed on start
    # the clean stop compacted every hour: one file each, holding the span facts
    assert "compacted" in err
    for hour in (out / "spans").iterdir():
        files = list(hour.glob("*.parquet"))
        assert len(files) == 1 and files[0].name.startswith("compacted-"), files
    stored, bad = _loaded(out)
    assert sender.acked | more.acked <= stored and bad == 0


def _wait_gone(text: str, seconds: float = 20) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes_mentioning(text):
            return True
        select.select([], [], [], 0.1)
    return False


def test_workers_share_the_port_and_stop_with_their_parent(tmp_path):
    out = tmp_path / "out"
    proc, port, _, line = start_collect(out, "--http", "off", "--workers", "2")
    try:
        assert "(2 processes)" in line, line
        assert len(processes_mentioning(str(out))) == 2
        acked: set[str] = set()
        # separate connections, as separate exporters have, opened as soon as the port is announced: the kernel
        # spreads them over the processes listening by then, so the worker must be listening already (were it not,
        # all 16 would reach the parent; with both listening, that happens once in 2**16 runs)
        for i in range(16):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                req, ids = otlp_requests.traces(100, first=i * 100)
                ch.unary_unary(EXPORT)(req.SerializeToString(), timeout=10)
                acked.update(ids)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        by_parent = re.search(r"stopped; (\d+) spans, .* by this process", err)
        assert proc.returncode == 0 and by_parent is not None, err
        assert int(by_parent.group(1)) < len(acked), "the worker received no connection"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(str(out))
    stored, bad = _loaded(out)
    assert acked <= stored and bad == 0

    # the parent killed outright: its worker notices and stops too
    proc, _ = _start_workers(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert _wait_gone(str(out))


def _start_workers(out: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(JITRACE), "collect", "--out", str(out), "--grpc", "127.0.0.1:0", "--http", "off",
                             "--workers", "2"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stderr], [], [], 60)
    return proc, proc.stderr.readline() if ready else ""


def test_sigkill_at_random_points_over_several_rounds_loses_nothing_and_duplicates_nothing(tmp_path):
    """Seeded rounds: kill after a random number of acknowledged batches plus a random delay (often mid-write)."""
    import random
    import time

    rng = random.Random(7)
    out = tmp_path / "out"
    acked: set[str] = set()
    for round_ in range(3):
        proc, port = _start(out)
        sender = Sender(port)
        sender.batches = None
        try:
            sender.start()
            target = rng.randint(1, 6)
            deadline = time.monotonic() + 60
            while sender.sent_batches < target and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            _stop(sender, proc)
        assert not (sender.acked & acked), "span ids are fresh per round"
        acked |= sender.acked
        con = duckdb.connect()
        report = load_into(con, [str(out)])
        ids = [r[0] for r in con.execute("SELECT span_id FROM spans").fetchall()]
        assert acked <= set(ids), f"round {round_}: an acknowledged span is missing"
        assert len(ids) == len(set(ids)) and report.bad_records == 0, f"round {round_}: duplicate or damaged"


def test_an_hour_idle_for_compact_after_is_compacted_while_the_receiver_runs(tmp_path):
    import time

    out = tmp_path / "out"
    proc, port = _start(out, "--compact-after", "1")
    try:
        sender = Sender(port, batches=4)
        sender.start()
        sender.join(60)
        (hour,) = list((out / "spans").iterdir())
        deadline = time.monotonic() + 8  # idle 1 s, looked for every second: well within
        while any(not p.name.startswith("compacted-") for p in hour.glob("*.parquet")) and time.monotonic() < deadline:
            select.select([], [], [], 0.2)
        files = list(hour.glob("*.parquet"))
        assert len(files) == 1 and files[0].name.startswith("compacted-"), files  # while it still runs
        assert proc.poll() is None
        stored, bad = _loaded(out)
        assert stored == sender.acked and bad == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
