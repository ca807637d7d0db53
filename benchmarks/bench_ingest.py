"""Ingest: peak memory and throughput of `arcpoint ingest` as the file grows.

Writes CSV files of N rows (4 backends, 10 s apart, a few bad rows), runs `arcpoint ingest` on
each in a fresh process and reads its peak RSS from the kernel. The baseline is the same command
on a file ten times smaller in the same run: memory that does not grow with the file shows as a
ratio near 1. A second pass re-ingests the largest file (every row a duplicate) and counts the
rejection rows stored.

    python benchmarks/bench_ingest.py [--rows 3000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: int) -> None:
    t0 = 1_704_067_200
    with path.open("w") as f:
        f.write("timestamp,backend,rps,p50_ms,p95_ms,error_rate\n")
        for i in range(rows):
            tick, b = divmod(i, 4)
            if i % 100_000 == 99_999:
                f.write(f"{t0 + 10 * tick},b{b},oops,1,2,0\n")  # a bad row now and then
                continue
            f.write(f"{t0 + 10 * tick},b{b},{40 + i % 13},{80 + i % 7},{150 + i % 29},0.001\n")


def run_ingest(path: Path, db: Path) -> dict[str, float]:
    """Run the command in a child; its peak RSS comes from wait4's rusage."""
    cmd = [sys.executable, "-m", "arcpoint", "ingest", "--db", str(db), "--json", str(path)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed: {status}")
    report = json.loads(out)
    return {
        "rows": report["accepted"] + report["rejected"],
        "accepted": report["accepted"],
        "rejected": report["rejected"],
        "rejection_rows_stored": report["stored"]["rejections"],
        "seconds": round(seconds, 1),
        "rows_per_s": round((report["accepted"] + report["rejected"]) / seconds),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.csv", Path(tmp) / "big.csv"
        write_csv(small, args.rows // 10)
        write_csv(big, args.rows)
        results["baseline_tenth"] = run_ingest(small, Path(tmp) / "small.db")
        results["full"] = run_ingest(big, Path(tmp) / "big.db")
        results["rerun_full"] = run_ingest(big, Path(tmp) / "big.db")
        conn = sqlite3.connect(Path(tmp) / "big.db")
        (stored,) = conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()
        conn.close()
    ratio = results["full"]["peak_rss_mb"] / results["baseline_tenth"]["peak_rss_mb"]
    for name, r in results.items():
        print(
            f"{name:<15} {r['rows']:>10,} rows  {r['seconds']:>7.1f} s"
            f"  {r['rows_per_s']:>9,} rows/s"
            f"  peak RSS {r['peak_rss_mb']:>7.1f} MB  rejection rows stored "
            f"{r['rejection_rows_stored']:,} of {r['rejected']:,}"
        )
    print(f"peak RSS, full file vs a tenth of it: {ratio:.2f}x; telemetry rows stored {stored:,}")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "rss_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
