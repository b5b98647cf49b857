#!/usr/bin/env python3
"""Draws the growth curves of one benches/run.sh run: throughput and p99 latency of
Preview as one dimension grows, the others held at the base point.

Usage: python plot.py OUT/summary.json CHART_DIR
Writes CHART_DIR/{levels,lines,network,rules}.png. Needs matplotlib (run.sh installs it
into a venv).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SERIES = {
    "levels": ("levels paid per order", False, "levels per order grow"),
    "lines": ("lines per order", True, "lines per order grow"),
    "network": ("promoters in the network (chains of 10)", True, "the network grows"),
    "rules": ("rules in the rule set (all scanned per line)", True, "the rule set grows"),
}


def human(x, _pos=None):
    if x >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if x >= 1_000:
        return f"{x / 1_000:g}k"
    return f"{x:g}"


def main():
    summary_path, chart_dir = sys.argv[1], sys.argv[2]
    with open(summary_path) as f:
        s = json.load(f)
    base = s["settings"].get("base", {})
    conc = s["settings"].get("concurrency", "?")
    dur = s["settings"].get("duration_s", "?")
    os.makedirs(chart_dir, exist_ok=True)
    for dim, (label, logx, what) in SERIES.items():
        points = s["growth"].get(dim)
        if not points:
            print(f"no {dim} series; skipped")
            continue
        held = ", ".join(
            f"{k} {human(v)}" for k, v in base.items() if k in ("levels", "lines", "network", "rules") and k != dim
        )
        xs = [p["x"] for p in points]
        tput = [p["throughput_ok_per_s"] for p in points]
        p99 = [p["p99_us"] / 1000 for p in points]
        p50 = [p["p50_us"] / 1000 for p in points]
        fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(7.5, 6.5))
        ax1.plot(xs, tput, "o-", color="tab:blue")
        for x, y in zip(xs, tput):
            ax1.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6),
                         ha="center", fontsize=8)
        ax1.set_ylabel("Preview calls/s (ok)")
        ax1.set_ylim(bottom=0, top=max(tput) * 1.18)
        ax1.grid(True, alpha=0.3)
        ax2.plot(xs, p99, "o-", color="tab:red", label="p99")
        ax2.plot(xs, p50, "s--", color="tab:gray", label="p50", markersize=4)
        for x, y in zip(xs, p99):
            ax2.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6),
                         ha="center", fontsize=8)
        ax2.set_ylabel("latency (ms)")
        ax2.set_ylim(bottom=0, top=max(p99) * 1.2)
        ax2.set_xlabel(label)
        ax2.legend(loc="lower right", fontsize=8)
        ax2.grid(True, alpha=0.3)
        if logx:
            ax2.set_xscale("log")
        ax2.set_xticks(xs)
        ax2.xaxis.set_major_formatter(FuncFormatter(human))
        ax2.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        fig.suptitle(
            f"Cost of Preview as {what} ({held})\n"
            f"SQLite server, closed loop, {conc} in flight, {dur} s per point; "
            "client on the same 2 vCPUs",
            fontsize=10,
        )
        fig.tight_layout()
        path = os.path.join(chart_dir, f"{dim}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
