#!/usr/bin/env bash
# The outbox keeps up (issue 14): how fast the delivery workers drain waiting deliveries per
# provider, against the fake providers answering at once and after 50 ms, and whether the outbox
# depth stays flat while ingest runs. Not a timed test; see docs/scaling.md for a run's table.
#
#   scripts/bench-outbox.sh          (scripts/bench.sh runs it after the ingest table;
#                                     `scripts/bench.sh --outbox-only` runs only this)
#
# For each backend (SQLite; PostgreSQL as in bench.sh when BENCH_PG=1) and each fake latency
# (BENCH_OUTBOX_LATENCIES, "0 50" ms), on 127.0.0.1 only:
# 1. fill: the gateway with delivery workers OFF, two active provider configs (Plausible — no
#    batch endpoint, one event per request — and Umami through /api/batch, BENCH_UMAMI_ENDPOINT),
#    BENCH_OUTBOX_FILL_SECS (5) of the ingest load (tests/bench/load.rs, 16 connections): N
#    deliveries wait per config;
# 2. drain: the gateway restarted with its workers ON; /metrics' outbox depth per config read every
#    0.2 s until it is 0 (at most BENCH_OUTBOX_DRAIN_SECS, 120): deliveries/s per provider =
#    N ÷ time to empty (or what left ÷ the time, marked "not drained");
# 3. sustain: BENCH_OUTBOX_SECS (10) of the same load with the workers ON: events/s ingested, and
#    per provider deliveries created/s, delivered/s and the depth's change/s. A depth that stays
#    flat (change ≈ 0) keeps up with that ingest rate; one that grows shows the rate the outbox
#    sustains: its delivered/s.
#
# Environment: as bench.sh (CARGO_TARGET_DIR, BENCH_PROFILE, BENCH_PG, BENCH_PG_URL), plus the
# BENCH_OUTBOX_* above, BENCH_OUTBOX_LOG (the gateway's log filter, e.g.
# warn,consentgate::outbox=debug for claim and preparation timings), BENCH_KEEP=1 (keep the logs)
# and BENCH_SKIP_BUILD=1 (bench.sh built the binaries already).
# `BENCH_PROFILE=dev BENCH_OUTBOX_FILL_SECS=1 BENCH_OUTBOX_SECS=2` checks the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."

LATENCIES=${BENCH_OUTBOX_LATENCIES:-"0 50"}
FILL_SECS=${BENCH_OUTBOX_FILL_SECS:-5}
DRAIN_SECS=${BENCH_OUTBOX_DRAIN_SECS:-120}
SUSTAIN_SECS=${BENCH_OUTBOX_SECS:-10}
CONNS=${BENCH_OUTBOX_CONNS:-16}
# Umami's endpoint: `batch` (/api/batch, up to 20 events a request; Umami v3.0.2 or later) or
# `send` (/api/send, one event a request, as older Umami needs).
UMAMI_ENDPOINT=${BENCH_UMAMI_ENDPOINT:-batch}
PG_SERVER=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ -z "${BENCH_PG:-}" ]; then
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then BENCH_PG=1; else BENCH_PG=0; fi
fi
for tool in curl jq python3; do
  command -v $tool >/dev/null || { echo "bench-outbox.sh needs $tool" >&2; exit 2; }
done

TARGET=${CARGO_TARGET_DIR:-target}
PROFILE=${BENCH_PROFILE:-release}
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "building the $PROFILE binaries…" >&2
  cargo build --profile "$PROFILE" --quiet --bin consentgate --bin fake-providers --example bench_load
fi
BIN=$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

. scripts/bench-common.sh
bench_start
stop() { # PID: ends it and waits
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# The outbox per provider from /metrics: `provider depth delivered` lines (delivered: this
# process's consentgate_deliveries_total with outcome delivered).
outbox() { # BASE
  curl -sf "$1/metrics" | python3 -c '
import re, sys
depth, done = {}, {}
for line in sys.stdin:
    m = re.match(r"consentgate_outbox_depth\{provider=\"(\w+)\",config=\"[^\"]*\"\} (\S+)", line)
    if m: depth[m[1]] = depth.get(m[1], 0) + float(m[2])
    m = re.match(r"consentgate_deliveries_total\{(.*)\} (\S+)", line)
    if m and "outcome=\"delivered\"" in m[1]:
        p = re.search(r"provider=\"(\w+)\"", m[1])[1]
        done[p] = done.get(p, 0) + float(m[2])
for p in sorted(depth): print(p, int(depth[p]), int(done.get(p, 0)))
'
}

# Polls /metrics every 0.2 s until every provider's outbox depth is 0 or DRAIN_SECS pass; prints
# per provider: its drain rate (deliveries/s), what waited at the first reading, the seconds
# until its depth first read 0 (or, not drained, the seconds polled) and a note.
drain_poll() { # BASE
  python3 - "$1" "$DRAIN_SECS" <<'PY'
import re, sys, time, urllib.request
base, limit = sys.argv[1], float(sys.argv[2])
def depths():
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(r'^consentgate_outbox_depth\{provider="(\w+)",config="[^"]*"\} (\S+)$', text, re.M):
        out[m[1]] = out.get(m[1], 0) + int(float(m[2]))
    return out
started = time.monotonic()
waiting = depths()
drained, left = {}, dict(waiting)
while True:
    elapsed = time.monotonic() - started
    left = depths()
    for p, d in left.items():
        if d == 0 and p not in drained:
            drained[p] = elapsed
    if all(d == 0 for d in left.values()) or elapsed >= limit:
        break
    time.sleep(0.2)
for p in sorted(waiting):
    n = waiting[p]
    if p in drained:
        secs, done, note = drained[p], n, ""
    else:
        secs, done, note = elapsed, n - left.get(p, 0), " (not drained: %d left)" % left.get(p, 0)
    print(p, int(done / max(secs, 0.001)), n, "%.3f" % secs, note)
PY
}

gw=""
serve() { # NAME DATABASE_URL PORT WORKERS(true/false): starts the gateway; its pid in $gw
  CONSENTGATE__DATABASE__URL=$2 CONSENTGATE__SERVER__BIND=127.0.0.1:$3 \
    CONSENTGATE__DELIVERY__ENABLED=$4 CONSENTGATE__DELIVERY__ALLOW_PRIVATE_DESTINATIONS=true \
    CONSENTGATE__CONSENT__WRITES_PER_MINUTE_PER_IP=0 CONSENTGATE__LOG__LEVEL=${BENCH_OUTBOX_LOG:-warn} \
    "$BIN/consentgate" serve >>"$work/$1.log" 2>&1 &
  gw=$!
  pids+=("$gw")
}

results="$work/results.tsv"
run() { # BACKEND DATABASE_URL LATENCY_MS
  local backend=$1 db=$2 latency=$3 name="$1-$3ms" port base admin key t
  "$BIN/fake-providers" --latency-ms "$latency" >"$work/fakes-$name.out" &
  local fake_pid=$!
  pids+=("$fake_pid")
  local fake
  fake="http://127.0.0.1:$(first_line "$work/fakes-$name.out" | jq -r .port)"
  port=$(free_port)
  base="http://127.0.0.1:$port"
  admin=$(CONSENTGATE__DATABASE__URL=$db "$BIN/consentgate" tenant create bench --name Bench 2>>"$work/$name.log" | jq -r .admin_token)
  serve "$name" "$db" "$port" false
  wait_http "$base/readyz"
  t="$base/v1/tenants/bench"
  bench_tenant "$t" "$admin" "$fake" "$UMAMI_ENDPOINT"
  key=$BENCH_KEY

  echo "$name: fill ($FILL_SECS s of ingest, workers off)…" >&2
  "$BIN/examples/bench_load" "$t/events" "$key" "$CONNS" "$FILL_SECS" "fill-$name-$$" >/dev/null
  stop "$gw"

  echo "$name: drain (workers on)…" >&2
  serve "$name" "$db" "$port" true
  wait_http "$base/readyz"
  # One poller for the whole drain (a process per reading, through pyenv's shims, took a
  # quarter of these 2 cores from the gateway it measured), timed from the first reading.
  local p rate n secs note
  while read -r p rate n secs note; do
    printf 'drain\t%s\t%s\t%s\t%s\t%s deliveries in %.1f s%s\n' "$backend" "$latency" "$p" "$rate" "$n" "$secs" "${note:+ $note}" >>"$results"
  done < <(drain_poll "$base")

  echo "$name: sustain ($SUSTAIN_SECS s of ingest, workers on)…" >&2
  declare -A d0 s0
  while read -r p depth sent; do d0[$p]=$depth; s0[$p]=$sent; done < <(outbox "$base")
  local load t0 t1 secs
  t0=$(date +%s.%N)
  load=$("$BIN/examples/bench_load" "$t/events" "$key" "$CONNS" "$SUSTAIN_SECS" "sustain-$name-$$")
  t1=$(date +%s.%N)
  # Every rate over the same wall time: the load's own may end later than its SECS.
  secs=$(python3 -c "print($t1 - $t0)")
  while read -r p depth sent; do
    local created delivered slope
    delivered=$(python3 -c "print(round(($sent - ${s0[$p]}) / $secs))")
    slope=$(python3 -c "print(round(($depth - ${d0[$p]}) / $secs))")
    created=$(python3 -c "print(round(($depth - ${d0[$p]} + $sent - ${s0[$p]}) / $secs))")
    printf 'sustain\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$latency" "$p" \
      "$(python3 -c "print(round($(jq -r .ok <<<"$load") / $secs))")" "$created" "$delivered" "$slope" >>"$results"
  done < <(outbox "$base")
  stop "$gw"
  stop "$fake_pid"
  if grep -qiE "panic" "$work/$name.log"; then
    echo "$name logged a panic (first lines):" >&2; grep -iE "panic" "$work/$name.log" | head -n 5 >&2
  fi
}

backends=(sqlite)
[ "$BENCH_PG" = 1 ] && backends+=(postgres)
echo "outbox: fill $FILL_SECS s, sustain $SUSTAIN_SECS s, $CONNS connections; $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
for backend in "${backends[@]}"; do
  for latency in $LATENCIES; do
    if [ "$backend" = sqlite ]; then
      db="sqlite://$work/outbox-$latency.db?mode=rwc"
    else
      db_name="cgoutbox_$$_$latency"
      psql -q "$PG_SERVER" -c "CREATE DATABASE $db_name" >/dev/null
      pg_dbs+=("$db_name")
      db="${PG_SERVER%/*}/$db_name"
    fi
    run "$backend" "$db" "$latency"
  done
done

echo
echo "Outbox drain (workers on, nothing else running):"
echo "| backend | fake latency ms | provider | deliveries/s | waiting → empty |"
echo "|---|---:|---|---:|---|"
awk -F'\t' '$1 == "drain" {printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6}' "$results"
echo
echo "Outbox under ingest ($SUSTAIN_SECS s, $CONNS connections; depth change ≈ 0: keeps up; > 0: sustains its delivered/s):"
echo "| backend | fake latency ms | provider | ingest events/s | deliveries created/s | delivered/s | depth change/s |"
echo "|---|---:|---|---:|---:|---:|---:|"
awk -F'\t' '$1 == "sustain" {printf "| %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, $8}' "$results"
