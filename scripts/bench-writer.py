#!/usr/bin/env python3
"""Sums SQLite's ingest writer per event from gateway logs kept by scripts/bench.sh
(BENCH_LOG=warn,consentgate::ingest=debug BENCH_KEEP=1): each commit's phases (µs per event,
wall time on the writer's thread) and the checkpoints' frames and time.

    scripts/bench-writer.py /tmp/tmp.XXXX/sqlite.log [/tmp/tmp.XXXX/baseline.log …]
"""
import re
import sys

PHASES = ("begin_us", "records_us", "decide_us", "store_us", "commit_us")

for path in sys.argv[1:]:
    events = commits = frames = checkpoint_us = 0
    total = dict.fromkeys(PHASES, 0)
    with open(path, encoding="utf-8") as log:
        for line in log:
            if "batch committed" in line:
                fields = dict(re.findall(r"(\w+)=(\d+)", line))
                commits += 1
                events += int(fields["events"])
                for phase in PHASES:
                    total[phase] += int(fields[phase])
            elif m := re.search(r"WAL checkpointed frames=\d+ copied=(\d+) us=(\d+)", line):
                frames += int(m.group(1))
                checkpoint_us += int(m.group(2))
    if not events:
        print(f"{path}: no commits logged (BENCH_LOG=warn,consentgate::ingest=debug?)")
        continue
    phases = ", ".join(f"{p.removesuffix('_us')} {total[p] / events:.1f}" for p in PHASES)
    print(
        f"{path}: {events} events in {commits} commits ({events / commits:.1f} per commit); "
        f"µs per event: {phases}, total {sum(total.values()) / events:.1f}; "
        f"checkpoints {checkpoint_us / events:.1f} µs and {frames / events:.1f} WAL frames per event"
    )
