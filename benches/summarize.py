#!/usr/bin/env python3
"""Reads the raw outputs of one benches/run.sh run and writes OUT/summary.json.

Standard library only. Every figure comes from a file of the run: the JSON summaries of
`prorata bench` (bench/*.json), h2load's report and per-request log (h2load/*), pgbench's
report (pgbench/*), criterion's medians (criterion/medians.txt), the server's RSS
(rss/*), and the stage times (stages.tsv).

Usage: python3 benches/summarize.py OUT
"""

import glob
import json
import os
import re
import sys


def bench_runs(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "bench", "*.json"))):
        name = os.path.basename(path)[:-5]
        with open(path) as f:
            j = json.load(f)
        scenario = j["options"]["scenario"]
        kind = {"list-splits": "list-splits"}.get(scenario, scenario)
        lat = j["latency_us"].get(kind) or j["latency_us"]["all"]
        runs[name] = {
            "scenario": scenario,
            "throughput_ok_per_s": round(j["throughput_ok_per_s"], 1),
            "ok": j["ok"],
            "failed": j["failed"],
            "errors": {k: v["count"] for k, v in j["errors"].items()},
            "p50_us": lat["p50"],
            "p90_us": lat["p90"],
            "p99_us": lat["p99"],
            "p99_9_us": lat["p99_9"],
            "max_us": lat["max"],
            "concurrency": j["options"]["concurrency"],
            "connections": j["options"]["connections"],
            "duration_s": j["options"]["duration_s"],
            "setup_s": j.get("setup_s") or {},
            "probe": j.get("probe"),
            "options": j["options"],
        }
    return runs


def cpu(out):
    r = {}
    for path in sorted(glob.glob(os.path.join(out, "cpu", "*.json"))):
        with open(path) as f:
            try:
                r[os.path.basename(path)[:-5]] = json.load(f)
            except ValueError:
                pass
    return r


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def h2load_runs(out, warmup_s):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "h2load", "*.txt"))):
        name = os.path.basename(path)[:-4]
        with open(path) as f:
            text = f.read()
        r = {}
        m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
        if m:
            r["finished_s"] = float(m.group(1))
            r["req_per_s"] = float(m.group(2))
        m = re.search(
            r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
            r"(\d+) errored, (\d+) timeout",
            text,
        )
        if m:
            keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
            r.update({k: int(v) for k, v in zip(keys, m.groups())})
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if m:
            r["status"] = dict(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m.groups())))
        # Percentiles from the per-request log (start µs, status, µs to the end of the
        # response). h2load logs only the measured requests (not the warm-up), so
        # warmup_s is 0 here; it stays a parameter in case that changes.
        log = os.path.join(out, "h2load", name + ".log")
        if os.path.exists(log):
            rows = []
            with open(log) as f:
                for line in f:
                    p = line.split("\t")
                    if len(p) >= 3:
                        rows.append((int(p[0]), int(p[1]), int(p[2])))
            if rows:
                first = min(s for s, _, _ in rows)
                measured = [d for s, st, d in rows if st == 200 and s >= first + warmup_s * 1e6]
                measured.sort()
                r["log_rows"] = len(rows)
                r["log_rows_after_warmup_ok"] = len(measured)
                for q, k in [(0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us"), (0.999, "p99_9_us")]:
                    r[k] = percentile(measured, q)
                r["max_us"] = measured[-1] if measured else None
        runs[name] = r
    return runs


def pgbench_runs(out):
    runs = {}
    batch = 1
    bpath = os.path.join(out, "pgbench", "batches.txt")
    if os.path.exists(bpath):
        with open(bpath) as f:
            p = f.read().split()
        if len(p) == 3:
            batch = max(1, int(float(p[2])))
    paths = glob.glob(os.path.join(out, "pgbench", "c*.txt"))
    paths += glob.glob(os.path.join(out, "pgbench", "batch-*.txt"))
    for path in sorted(paths):
        name = os.path.basename(path)[:-4]
        with open(path) as f:
            text = f.read()
        r = {}
        for key, pat, cast in [
            ("clients", r"number of clients: (\d+)", int),
            ("transactions", r"number of transactions actually processed: (\d+)", int),
            ("failed", r"number of failed transactions: (\d+)", int),
            ("latency_avg_ms", r"latency average = ([\d.]+) ms", float),
            ("tps", r"tps = ([\d.]+) \(without initial connection time\)", float),
        ]:
            m = re.search(pat, text)
            if m:
                r[key] = cast(m.group(1))
        r["aborted"] = "aborted" in text or "ERROR" in text
        # Orders per transaction: a batch run stores `batch` orders in each.
        r["orders_per_tx"] = batch if name.startswith("batch-") else 1
        if "tps" in r:
            r["orders_per_s"] = round(r["tps"] * r["orders_per_tx"], 1)
        runs[name] = r
    return runs


def rss(out):
    r = {}
    for path in sorted(glob.glob(os.path.join(out, "rss", "*.txt"))):
        name = os.path.basename(path)[:-4]
        vals = {}
        with open(path) as f:
            for line in f:
                m = re.match(r"(Vm\w+):\s+(\d+) kB", line)
                if m:
                    vals[m.group(1) + "_kb"] = int(m.group(2))
        r[name] = vals
    samples = os.path.join(out, "rss", "d-samples.tsv")
    if os.path.exists(samples):
        kb = []
        with open(samples) as f:
            for line in f:
                p = line.split()
                if len(p) == 2:
                    kb.append(int(p[1]))
        if kb:
            r["d-samples"] = {"count": len(kb), "max_VmRSS_kb": max(kb), "last_VmRSS_kb": kb[-1]}
    return r


def growth(runs):
    series = {}
    for name, r in runs.items():
        m = re.match(r"growth-(\w+)-(\d+)$", name)
        if m:
            series.setdefault(m.group(1), []).append(
                {
                    "x": int(m.group(2)),
                    "throughput_ok_per_s": r["throughput_ok_per_s"],
                    "p50_us": r["p50_us"],
                    "p99_us": r["p99_us"],
                    "failed": r["failed"],
                    "setup_s": r["setup_s"],
                }
            )
    for s in series.values():
        s.sort(key=lambda p: p["x"])
    return series


def ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def targets(runs, h2, pgb, cpu_cores):
    """The rows of the issue's target table, with the ceiling measured in the same run."""
    def run(name):
        return runs.get(name, {})

    rows = []

    def row(measure, target, name, ceiling_name=None, ceiling=None, note=None):
        r = run(name)
        c = ceiling if ceiling is not None else run(ceiling_name).get("throughput_ok_per_s")
        rows.append(
            {
                "measure": measure,
                "target": target,
                "run": name,
                "throughput_ok_per_s": r.get("throughput_ok_per_s"),
                "p99_us": r.get("p99_us"),
                "failed": r.get("failed"),
                "ceiling": c,
                "ratio_to_ceiling": ratio(r.get("throughput_ok_per_s"), c),
                "cpu_cores": cpu_cores.get(name),
                "note": note,
            }
        )

    h2c = h2.get("a-empty-c64", {}).get("req_per_s")
    row("gRPC ceiling, prorata bench (Health/Check)", "-", "a-empty-c64", ceiling=h2c,
        note="ceiling = h2load on the same server and RPC")
    row("replay of a stored order (SQLite)", ">= 0.6 x ceiling", "a-replay-c64", "a-empty-c64")
    h2r = h2.get("a-replay-c64", {})
    rows.append({
        "measure": "replay of a stored order (SQLite), h2load", "target": ">= 0.6 x ceiling",
        "run": "h2load a-replay-c64", "throughput_ok_per_s": h2r.get("req_per_s"),
        "p99_us": h2r.get("p99_us"), "failed": h2r.get("failed"), "ceiling": h2c,
        "ratio_to_ceiling": ratio(h2r.get("req_per_s"), h2c), "cpu_cores": cpu_cores.get("h2load-a-replay-c64"),
        "note": "ceiling = h2load of the empty RPC on the same server; one stored order replayed"})
    row("replay of a stored order (PostgreSQL)", ">= 0.6 x ceiling", "b-replay-c64", "b-empty-c64")
    row("durable Compute, unique 2-line orders, SQLite", ">= 3,000/s, p99 <= 20 ms",
        "a-compute-c64", "a-empty-c64")
    row("durable Compute, unique 2-line orders, SQLite, 32 in flight", ">= 3,000/s, p99 <= 20 ms",
        "a-compute-c32", "a-empty-c64")
    row("durable Compute, unique 2-line orders, SQLite, 24 in flight", ">= 3,000/s, p99 <= 20 ms",
        "a-compute-c24", "a-empty-c64")
    row("durable Compute, SQLite, orders paid at random in the month (backfill)",
        ">= 3,000/s, p99 <= 20 ms", "a-compute-month-c64", "a-empty-c64")

    def best(month):
        v = [p.get("orders_per_s") or 0 for n, p in pgb.items() if ("month" in n) == month]
        return max(v) if v else None
    row("durable Compute, unique 2-line orders, PostgreSQL",
        ">= 5,000/s, p99 <= 20 ms, >= 1.0 x pgbench", "b-compute-c64", ceiling=best(False),
        note="ceiling = pgbench of the same statements, orders paid about in sequence, in orders/s (best of the batched runs at -c 2 (the server's 2 batch transactions) and -c 4 and the one-order runs at -c 64 and -c 16)")
    row("durable Compute, unique 2-line orders, PostgreSQL, 56 in flight",
        ">= 5,000/s, p99 <= 20 ms, >= 1.0 x pgbench", "b-compute-c56", ceiling=best(False),
        note="ceiling as for b-compute-c64: pgbench at the 64-in-flight run's mean batch")
    row("durable Compute, PostgreSQL, orders paid at random in the month (backfill)",
        ">= 5,000/s, p99 <= 20 ms, >= 1.0 x pgbench", "b-compute-month-c64", ceiling=best(True),
        note="ceiling = pgbench of the same statements with the same paid_at model (batched, -c 2 and -c 4)")
    row("GetUpline, depth 10, largest network, 1 in flight", "p99 <= 1 ms", "c-upline-c1", "c-empty-c1")
    row("GetUpline, depth 10, largest network, 64 in flight", "p99 <= 1 ms", "c-upline-c64", "c-empty-c64")
    for b, label in [("a", "SQLite"), ("b", "PostgreSQL")]:
        row(f"ListSplits first page, account with many shares, {label}, 1 in flight",
            "p99 <= 10 ms", f"{b}-list-c1", f"{b}-empty-c1")
        row(f"ListSplits first page, account with many shares, {label}, 64 in flight",
            "p99 <= 10 ms", f"{b}-list-c64", f"{b}-empty-c64")
    row("5,000 calls in flight, prorata bench (replay)", "0 errors, memory bounded",
        "d-replay-5000", "d-replay-c64", note="ceiling = the same replay at 64 in flight")
    return rows


def main():
    out = sys.argv[1]
    settings = {}
    path = os.path.join(out, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            settings = json.load(f)
    runs = bench_runs(out)
    h2 = h2load_runs(out, 0)
    pgb = pgbench_runs(out)
    stages = {}
    with open(os.path.join(out, "stages.tsv")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            if v:
                stages[k] = int(v)
    medians = {}
    mpath = os.path.join(out, "criterion", "medians.txt")
    if os.path.exists(mpath):
        with open(mpath) as f:
            for line in f:
                k, _, v = line.strip().rpartition(" ")
                if k:
                    medians[k] = round(float(v), 1)
    stored = None
    spath = os.path.join(out, "pgbench", "stored-results.txt")
    if os.path.exists(spath):
        with open(spath) as f:
            p = f.read().split()
        if len(p) == 3:
            stored = {"count": int(p[0]), "avg_json_chars": int(p[1]), "avg_stored_bytes": int(p[2])}
    with open(os.path.join(out, "machine.txt")) as f:
        machine = f.read()
    summary = {
        "out": out,
        "settings": settings,
        "machine": machine,
        "stages_s": stages,
        "total_s": stages.get("total"),
        "criterion_median_ns": medians,
        "targets": targets(runs, h2, pgb, cpu(out)),
        "growth": growth(runs),
        "h2load": h2,
        "pgbench": pgb,
        "stored_results_pg": stored,
        "rss": rss(out),
        "cpu_cores": cpu(out),
        "runs": runs,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    for t in summary["targets"]:
        print(
            f"{t['measure']}: {t['throughput_ok_per_s']}/s p99 {t['p99_us']} µs, "
            f"failed {t['failed']}; ceiling {t['ceiling']} (ratio {t['ratio_to_ceiling']})"
        )
    print(f"summary: {os.path.join(out, 'summary.json')}")


if __name__ == "__main__":
    main()
