"""Trace write throughput, and the latency a trace adds to an escalation.

    python benchmarks/bench_traces.py [--traces 3000] [--repeats 3] [--json PATH]

Every trace is a representative escalation trace: 1 graph node, 2 tool calls with small JSON
arguments and results, and 1 LLM turn (about 2 KB of canonical JSON). Files use the Store's
production settings (WAL, synchronous=NORMAL), fresh per repeat; the best of the repeats is kept
(the machine is shared), and CPU-time rates are printed beside wall-clock ones.

Throughput (traces/s and steps/s):
- `append`: `TraceStore.append`, one trace per transaction (redact, canonical JSON, sha256 chain,
  trace row, step rows, full-text row): what a synchronous caller pays.
- `append_many64`: batches of 64 in one transaction, as the `TraceWriter` thread drains its queue.
- `writer`: `TraceWriter.submit` of every trace, then `flush`: end to end through the thread.
- `baseline_plain_insert`: the same trace as JSON (`json.dumps`) in a plain
  `INSERT INTO t (id, json)`, one per transaction, same file settings. `append_vs_baseline` is the
  ratio of the two rates: what redaction, hashing, step rows and FTS cost on top of a bare write.

Added latency per escalation (microseconds, median and p99 over `--latency-samples`):
- `build`: building the record with `TraceBuilder` (1 node, 2 tools, 1 LLM turn).
- `submit`: `TraceWriter.submit`, the only trace work on the escalation's own thread when the
  writer is used (the write happens on the writer thread).
- `sync_append`: `TraceStore.append` on the caller's thread (a writer-less caller, or a full queue).
- `added_async_share_of_deadline_pct`: build + submit against the 1.5 s escalation deadline.

The escalation itself (`escalation_*`): the agents' `Escalator` with the offline reasoner, without a
trace sink, with a `TraceWriter` and with a synchronous `TraceStore`, interleaved; the ratios
`escalation_{writer,sync}_vs_none_{wall_p50,caller_cpu_p50,process_cpu}` are the added latency and
cost as factors (see `bench_escalation` for what each measures).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from context_api.store import Store
from context_api.trace_builder import TraceBuilder
from context_api.trace_records import TraceRecord, canonical_json
from context_api.traces import TraceStore, TraceWriter

ESCALATION_DEADLINE_S = 1.5


def make_trace(i: int) -> TraceRecord:
    """A representative escalation trace: 1 node + 2 tool calls + 1 LLM turn."""
    tb = TraceBuilder(
        "escalation",
        parent_id=f"decision-{i}",
        inputs={
            "request": {"request_id": f"req-{i}", "tier": "gold", "sla_ms": 300.0},
            "ambiguous_reason": "interval_straddles_sla",
            "candidates": [
                {"backend": b, "forecast_ms": 240.0 + 7 * k, "lo_ms": 180.0, "hi_ms": 330.0}
                for k, b in enumerate(("gpu-a", "gpu-b", "gpu-c"))
            ],
        },
        llm="offline",
        model="offline-reasoner",
        prompt_hash="5f" * 32,
        model_versions={"forecaster": "rf-20250101-abc", "policy": "predictive-v2"},
    )
    with tb.node("router_agent"):
        tb.tool_call(
            "get_backend_forecasts",
            {"backends": ["gpu-a", "gpu-b", "gpu-c"]},
            {
                "forecasts": [
                    {"backend": b, "p95_ms": 250.0 + k, "breach_p": 0.3 + 0.1 * k}
                    for k, b in enumerate(("gpu-a", "gpu-b", "gpu-c"))
                ]
            },
            duration_s=0.0012,
        )
        tb.llm_turn(
            model="offline-reasoner",
            input="system + 2 messages (3 tools)",
            output=[
                {"type": "text", "text": "gpu-b has the lowest breach probability and headroom."},
                {"type": "tool_use", "name": "submit_decision", "input": {"backend": "gpu-b"}},
            ],
            input_tokens=1450,
            output_tokens=96,
            cache_read_tokens=1200,
            cache_write_tokens=0,
            latency_s=0.004,
            stop_reason="tool_use",
        )
        tb.tool_call(
            "submit_decision",
            {"backend": "gpu-b", "reason": "lowest breach probability"},
            {"accepted": True},
            duration_s=0.0001,
        )
    return tb.finish(final={"backend": "gpu-b", "source": "agent"}, backend="gpu-b")


class _Timer:
    def __enter__(self) -> _Timer:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _keep_best(results: dict[str, float], key: str, n: int, t: _Timer, steps: int) -> None:
    rate = n / t.wall if t.wall > 0 else float("inf")
    cpu = n / t.cpu if t.cpu > 0 else float("inf")
    if rate > results.get(f"{key}_traces_per_s", 0.0):
        results[f"{key}_traces_per_s"] = rate
        results[f"{key}_steps_per_s"] = rate * steps
    results[f"{key}_cpu_traces_per_s"] = max(results.get(f"{key}_cpu_traces_per_s", 0.0), cpu)


def _quantiles_us(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


def bench_throughput(n: int, repeats: int, workdir: Path, results: dict[str, float]) -> None:
    records = [make_trace(i) for i in range(n)]
    steps = len(records[0].steps)
    results["steps_per_trace"] = steps
    results["trace_json_bytes"] = len(canonical_json(records[0].content()).encode())
    for rep in range(repeats):
        _progress(f"throughput repeat {rep + 1}/{repeats}")
        with TraceStore(workdir / f"append{rep}.db") as traces, _Timer() as t:
            for r in records:
                traces.append(r)
        _keep_best(results, "append", n, t, steps)

        with TraceStore(workdir / f"many{rep}.db") as traces, _Timer() as t:
            for k in range(0, n, 64):
                traces.append_many(records[k : k + 64])
        _keep_best(results, "append_many64", n, t, steps)

        with TraceStore(workdir / f"writer{rep}.db") as traces:
            writer = TraceWriter(traces, max_queue=max(1000, n))
            with _Timer() as t:
                for r in records:
                    writer.submit(r)
                writer.flush()
            writer.close()
            assert writer.stats.written == n and writer.stats.failed == 0
            assert traces.verify().ok
        _keep_best(results, "writer", n, t, steps)

        # Baseline: the same JSON in a plain table, one row per transaction, same settings.
        with Store(workdir / f"plain{rep}.db") as store:
            conn: sqlite3.Connection = store.conn
            conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, json TEXT NOT NULL)")
            with _Timer() as t:
                for r in records:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO t (id, json) VALUES (?, ?)",
                        (r.trace_id, json.dumps(r.model_dump(mode="json"))),
                    )
                    conn.execute("COMMIT")
        _keep_best(results, "baseline_plain_insert", n, t, steps)
    base = results["baseline_plain_insert_traces_per_s"]
    results["append_vs_baseline"] = results["append_traces_per_s"] / base
    results["append_many64_vs_baseline"] = results["append_many64_traces_per_s"] / base


def bench_added_latency(n: int, workdir: Path, results: dict[str, float]) -> None:
    _progress("added latency per escalation")
    build: list[float] = []
    submit: list[float] = []
    sync: list[float] = []
    plain: list[float] = []
    with TraceStore(workdir / "latency-writer.db") as traces:
        writer = TraceWriter(traces, max_queue=max(1000, n))
        for i in range(n):
            t0 = time.perf_counter()
            record = make_trace(i)
            t1 = time.perf_counter()
            writer.submit(record)
            t2 = time.perf_counter()
            build.append(t1 - t0)
            submit.append(t2 - t1)
            if i % 50 == 49:
                writer.flush()  # keep the queue short, as real escalations are sparse
        writer.close()
    with TraceStore(workdir / "latency-sync.db") as traces:
        for i in range(n):
            record = make_trace(i)
            t0 = time.perf_counter()
            traces.append(record)
            sync.append(time.perf_counter() - t0)
    with Store(workdir / "latency-plain.db") as store:
        conn = store.conn
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, json TEXT NOT NULL)")
        for i in range(n):
            record = make_trace(i)
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO t (id, json) VALUES (?, ?)",
                (record.trace_id, json.dumps(record.model_dump(mode="json"))),
            )
            conn.execute("COMMIT")
            plain.append(time.perf_counter() - t0)
    for name, samples in (
        ("build", build),
        ("submit", submit),
        ("sync_append", sync),
        ("baseline_plain_insert", plain),
    ):
        p50, p99 = _quantiles_us(samples)
        results[f"latency_{name}_p50_us"] = p50
        results[f"latency_{name}_p99_us"] = p99
    added_async = results["latency_build_p50_us"] + results["latency_submit_p50_us"]
    added_sync = results["latency_build_p50_us"] + results["latency_sync_append_p50_us"]
    results["added_per_escalation_async_p50_us"] = added_async
    results["added_per_escalation_sync_p50_us"] = added_sync
    results["sync_append_vs_plain_insert_p50"] = (
        results["latency_sync_append_p50_us"] / results["latency_baseline_plain_insert_p50_us"]
    )
    results["added_async_share_of_deadline_pct"] = added_async / (ESCALATION_DEADLINE_S * 1e6) * 100


def _ambiguous_case(i: int) -> tuple[Any, Any]:
    """An ambiguous request and the policy's decision: two candidates straddling the SLA."""
    from tools.routing import Candidate, Decision, RouteRequest

    request = RouteRequest(f"req-{i}", tier="standard", metadata={"team": "search"})
    candidates = (
        Candidate("gpu-a", 280.0, 220.0, 340.0, 1.0, 0.5, False),
        Candidate("gpu-b", 290.0, 230.0, 350.0, 0.8, 0.5, False),
        Candidate("gpu-c", 900.0, 800.0, 1000.0, 0.5, 0.0, True),
    )
    decision = Decision(
        f"decision-{i}",
        request.request_id,
        1_700_000_000.0 + i,  # a new tick each time: no shared answers
        "gpu-a",
        "predictive",
        "cheapest_within_sla",
        300.0,
        "standard",
        True,
        "interval_straddles_sla",
        candidates,
        "rf-bench",
    )
    return request, decision


def bench_escalation(n: int, workdir: Path, results: dict[str, float]) -> None:
    """The agents' Escalator (offline reasoner, inline) without a trace sink, with a
    TraceWriter (`writer`: escalations back to back, so the writer thread is busy with the
    previous traces while the next escalation runs; `writer_idle`: each escalation starts with
    the writer idle, as when escalations are sparse), and with a synchronous TraceStore.

    The Escalator builds its trace in every case (the builder is part of the agent run); what
    differs is handing the finished record over, which is what tracing adds. Per mode: wall time
    per escalation (median), the calling thread's CPU time (median), and the whole process's CPU
    per escalation (writer thread included, measured over blocks that end with a flush). Wall
    time on a loaded shared machine also counts time spent waiting for a CPU after any system
    call (the SQLite write), so the CPU figures are the steadier measure of the cost.
    Modes are interleaved in blocks so machine load affects them alike.
    """
    try:
        from agents.escalation import Escalator
    except ImportError as exc:
        _progress(f"agents.escalation not importable ({exc}): skipping the escalation ratio")
        return
    _progress("escalations without / with traces")
    w_store = TraceStore(workdir / "escalation-writer.db")
    s_store = TraceStore(workdir / "escalation-sync.db")
    writer = TraceWriter(w_store, max_queue=max(1000, n))
    escalators = {
        "none": Escalator(traces=None, share_answers=False, keep_records=False),
        "writer": Escalator(traces=writer, share_answers=False, keep_records=False),
        "writer_idle": Escalator(traces=writer, share_answers=False, keep_records=False),
        "sync": Escalator(traces=s_store, share_answers=False, keep_records=False),
    }
    wall: dict[str, list[float]] = {k: [] for k in escalators}
    caller_cpu: dict[str, list[float]] = {k: [] for k in escalators}
    process_cpu: dict[str, float] = dict.fromkeys(escalators, 0.0)
    for esc in escalators.values():  # warm up
        for i in range(20):
            esc(*_ambiguous_case(-1 - i))
    writer.flush()
    block = 25
    order = list(escalators.items())
    for start in range(0, n, block):
        order = order[1:] + order[:1]  # rotate, so no mode always follows another
        for name, esc in order:
            cpu0 = time.process_time()
            for i in range(start, min(n, start + block)):
                request, decision = _ambiguous_case(i)
                t0, c0 = time.perf_counter(), time.thread_time()
                esc(request, decision)
                caller_cpu[name].append(time.thread_time() - c0)
                wall[name].append(time.perf_counter() - t0)
                if name == "writer_idle":
                    writer.flush()  # the next escalation finds the writer idle (sparse escalations)
            writer.flush()
            process_cpu[name] += time.process_time() - cpu0
    writer.close()
    for esc in escalators.values():
        esc.close()
    assert writer.stats.failed == 0
    assert w_store.verify().ok and s_store.verify().ok
    results["escalation_traces_written"] = w_store.count() + s_store.count()
    w_store.close()
    s_store.close()
    for name in escalators:
        results[f"escalation_{name}_wall_p50_us"] = statistics.median(wall[name]) * 1e6
        results[f"escalation_{name}_caller_cpu_p50_us"] = statistics.median(caller_cpu[name]) * 1e6
        results[f"escalation_{name}_process_cpu_us"] = process_cpu[name] / len(wall[name]) * 1e6
    for name in ("writer", "writer_idle", "sync"):
        for measure in ("wall_p50_us", "caller_cpu_p50_us", "process_cpu_us"):
            results[f"escalation_{name}_vs_none_{measure.removesuffix('_us')}"] = (
                results[f"escalation_{name}_{measure}"] / results[f"escalation_none_{measure}"]
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=3000, help="traces per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="fresh files per figure; best kept")
    parser.add_argument(
        "--latency-samples", type=int, default=2000, help="escalations timed for added latency"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.traces < 64 or args.repeats < 1 or args.latency_samples < 100:
        parser.error("--traces >= 64, --repeats >= 1 and --latency-samples >= 100")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arcpoint-bench-traces-") as tmp:
        workdir = Path(tmp)
        bench_throughput(args.traces, args.repeats, workdir, results)
        bench_added_latency(args.latency_samples, workdir, results)
        bench_escalation(min(args.latency_samples, 500), workdir, results)
    results["traces"] = args.traces
    results["repeats"] = args.repeats
    results["latency_samples"] = args.latency_samples
    width = max(map(len, results))
    for key, value in results.items():
        if isinstance(value, float):
            shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        else:
            shown = str(value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
