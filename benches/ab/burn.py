#!/usr/bin/env python3
"""benches/ab/burn.py SHARE SECONDS: takes SHARE cores (0 to 2) for SECONDS, in two processes
each busy SHARE/2 of the time in slices of a few ms, and prints the cores they used (CPU
seconds per second of wall time).

benches/ab/pg-durable.sh (SHARE=1) runs it beside pgbench with the share of the 2 cores the
server and its load generator used in the server's run: pgbench then has what PostgreSQL
had left in that run (RESULTS.md §31)."""
import os
import sys
import time

share, seconds = float(sys.argv[1]), float(sys.argv[2])
duty = min(max(share / 2, 0.0), 1.0)
PERIOD = 0.005
child = os.fork()
w0, c0 = time.monotonic(), time.process_time()
# Busy until this process's CPU time reaches its share of the time elapsed, then asleep
# for a period: the share holds whatever the sleeps overshoot.
while time.monotonic() - w0 < seconds:
    while time.process_time() - c0 < duty * (time.monotonic() - w0):
        pass
    if duty < 1:
        time.sleep(PERIOD * (1 - duty))
used = (time.process_time() - c0) / (time.monotonic() - w0)
if child == 0:
    # The child reports through its exit code (hundredths of a core), the parent prints.
    os._exit(min(int(round(used * 100)), 255))
_, status = os.waitpid(child, 0)
print("burner: %.2f cores" % (used + os.waitstatus_to_exitcode(status) / 100))
