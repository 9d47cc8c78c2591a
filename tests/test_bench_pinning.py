"""The instrumentation bench's worker processes, pinned: every thread of a worker on the CPU it was given, those it
starts after the pinning (gRPC's server threads, made on the first call) too."""

from __future__ import annotations

import os

import pytest

from bench import bench_instrumentation as bench

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")


def _threads_cpus(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(task)) for task in os.listdir(f"/proc/{pid}/task")]


def test_a_pinned_worker_runs_every_thread_on_its_cpu() -> None:
    cpu = max(os.sched_getaffinity(0))
    proc = bench._start("plain", {cpu})
    try:
        latencies, cpu_ns = bench._round(proc, 5, 0)  # the first calls start the server's pool threads
        assert len(latencies) == 5 and cpu_ns > 0
        threads = _threads_cpus(proc.pid)
        assert len(threads) > 1 and all(cpus == {cpu} for cpus in threads)
    finally:
        proc.stdin.write("0 0\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_an_unpinned_worker_keeps_every_cpu() -> None:
    proc = bench._start("plain")
    try:
        bench._round(proc, 2, 0)
        assert all(cpus == os.sched_getaffinity(0) for cpus in _threads_cpus(proc.pid))
    finally:
        proc.stdin.write("0 0\n")
        proc.stdin.flush()
        proc.wait(timeout=30)


def test_every_worker_process_meets_every_order_of_variants_alike() -> None:
    rounds, processes = bench.ROUNDS, bench.PROCESSES
    plan = bench.schedule(rounds, processes)
    assert len(plan) == rounds and all(sorted(order) == sorted(bench.VARIANTS) for _, order in plan)
    for p in range(processes):
        firsts = [order[0] for q, order in plan if q == p]
        counts = [firsts.count(v) for v in bench.VARIANTS]
        assert max(counts) - min(counts) <= 1, (p, counts)  # each variant opens this process's rounds as often
        # and otel+jitrace sits at every place of a round in every process
        places = {order.index("otel+jitrace") for q, order in plan if q == p}
        assert places == set(range(len(bench.VARIANTS))), (p, places)
