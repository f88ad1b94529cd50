#!/usr/bin/env bash
# Ingest at line rate (issue 14): the release gateway against a bare axum "parse JSON and discard"
# ceiling, on this machine, in one run. Not a timed test; see docs/scaling.md for a run's table.
#
#   scripts/bench.sh                 ingest table, then the outbox's (scripts/bench-outbox.sh)
#   scripts/bench.sh --outbox-only   the outbox's drain and sustained rates only
#   scripts/bench.sh --ingest-only   the ingest table only
#
# Builds the release binaries, then starts on 127.0.0.1 only: the fake providers, the ceiling
# (tests/bench/ceiling.rs), the durable floor (tests/bench/durable.rs: the ceiling storing each
# event in one SQLite table with group commit and an fsync before answering), the gateway on SQLite and — when BENCH_PG=1, by default when
# PostgreSQL answers on 127.0.0.1:5432 — a second gateway on a fresh PostgreSQL database. Each
# gateway has a published consent config, two active provider configs (Plausible and Umami on the
# fakes), 100 visitors of whom half accepted and half rejected, and delivery workers OFF (ingest is
# measured alone: what a site waits for). The load (tests/bench/load.rs): BENCH_CONNS keep-alive
# connections (64) for BENCH_SECS seconds (10), ~450-byte page views with a secret key, each with
# its own idempotency key; BENCH_ROUNDS rounds (2), each round going through every target in turn.
# Prints one table: events/s, p50, p99, errors, peak RSS (the process's high-water mark so far),
# the server process's CPU time per event answered (user + system; not the load generator's, nor
# PostgreSQL's: steadier than events/s on a shared machine)
# and the ratio to the ceiling of the same round; after each gateway round, the writer's batches
# (events per commit, time per commit) and for SQLite the WAL file's largest size.
#
# Environment: CARGO_TARGET_DIR (default target), BENCH_PG (0/1), BENCH_PG_URL (a server URL
# whose user may create databases; default postgres://postgres@127.0.0.1:5432/postgres),
# BENCH_PG_INSTANCES (1; with N > 1 a further target runs N instances of the gateway on the same
# PostgreSQL database, the connections spread over them: one row, their sum; its RSS is the first
# instance's), BENCH_LOG (the gateways' log filter, e.g. warn,consentgate::ingest=debug for each commit's
# timings), BENCH_KEEP=1 (keep the logs), BENCH_BASELINE (the path of another build's consentgate
# binary, e.g. a copy of main's: a third gateway on SQLite — and with BENCH_PG=1 one more on a
# PostgreSQL database of its own, row postgres-baseline —, measured in each round beside this
# build's, the two swapping places in even rounds: the only fair comparison of two builds on a
# machine this noisy; use an even BENCH_ROUNDS), BENCH_PROFILE (default release; `BENCH_PROFILE=dev BENCH_SECS=2 BENCH_ROUNDS=1` checks the
# script itself in seconds — its figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  --outbox-only) exec scripts/bench-outbox.sh ;;
  --ingest-only | "") ;;
  *) echo "usage: scripts/bench.sh [--outbox-only | --ingest-only]" >&2; exit 2 ;;
esac

CONNS=${BENCH_CONNS:-64}
SECS=${BENCH_SECS:-10}
ROUNDS=${BENCH_ROUNDS:-2}
PG_SERVER=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ -z "${BENCH_PG:-}" ]; then
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then BENCH_PG=1; else BENCH_PG=0; fi
fi
for tool in curl jq python3; do
  command -v $tool >/dev/null || { echo "bench.sh needs $tool" >&2; exit 2; }
done

TARGET=${CARGO_TARGET_DIR:-target}
PROFILE=${BENCH_PROFILE:-release}
echo "building the $PROFILE binaries (release, cold: 10+ minutes on 2 cores)…" >&2
cargo build --profile "$PROFILE" --quiet --bin consentgate --bin fake-providers --example bench_ceiling --example bench_durable --example bench_load
BIN=$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

. scripts/bench-common.sh
bench_start

"$BIN/fake-providers" >"$work/fakes.out" &
pids+=($!)
fake="http://127.0.0.1:$(first_line "$work/fakes.out" | jq -r .port)"

BENCH_PORT=$(free_port) "$BIN/examples/bench_ceiling" >"$work/ceiling.out" &
pids+=($!)
ceiling_pid=$!
ceiling="http://127.0.0.1:$(first_line "$work/ceiling.out" | jq -r .port)"

# The durable floor: the ceiling that also stores each event (one table, its idempotency key
# unique) with group commit and an fsync before answering — what durability alone costs here.
BENCH_PORT=$(free_port) "$BIN/examples/bench_durable" "$work/durable.db" >"$work/durable.out" &
pids+=($!)
durable_pid=$!
durable="http://127.0.0.1:$(first_line "$work/durable.out" | jq -r .port)"

declare -A url pid key
url[ceiling]="$ceiling/v1/tenants/bench/events"
pid[ceiling]=$ceiling_pid
key[ceiling]="sk_ceiling"
url[durable]="$durable/v1/tenants/bench/events"
pid[durable]=$durable_pid
key[durable]="sk_durable"

start_gateway() { # NAME DATABASE_URL [BINARY]
  local name=$1 db=$2 bin=${3:-$BIN/consentgate} port
  port=$(free_port)
  export CONSENTGATE__DATABASE__URL=$db CONSENTGATE__SERVER__BIND=127.0.0.1:$port \
    CONSENTGATE__DELIVERY__ENABLED=false CONSENTGATE__DELIVERY__ALLOW_PRIVATE_DESTINATIONS=true \
    CONSENTGATE__CONSENT__WRITES_PER_MINUTE_PER_IP=0 CONSENTGATE__LOG__LEVEL=${BENCH_LOG:-warn}
  local admin
  admin=$("$bin" tenant create bench --name Bench 2>>"$work/$name.log" | jq -r .admin_token)
  "$bin" serve 2>>"$work/$name.log" &
  pids+=($!)
  pid[$name]=$!
  local base="http://127.0.0.1:$port"
  wait_http "$base/readyz"
  local t="$base/v1/tenants/bench"
  bench_tenant "$t" "$admin" "$fake" batch
  key[$name]=$BENCH_KEY
  url[$name]="$t/events"
  # One event of each consent path, to show what the load's events are decided as.
  for v in 0 1; do
    curl -sf "$t/events" -H "authorization: Bearer ${key[$name]}" -H 'content-type: application/json' \
      -d "{\"event_name\": \"pageview\", \"page_url\": \"https://shop.example.com/\", \"visitor_id\": \"visitor-$v\", \"user_agent\": \"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36\", \"ip\": \"203.0.113.9\"}" |
      jq -r --arg n "$name" --arg v "visitor-$v" '"\($n), \($v): " + ([.decisions[] | "\(.provider) \(.decision) (\(.reason))"] | join(", "))' >&2
  done
  unset CONSENTGATE__DATABASE__URL CONSENTGATE__SERVER__BIND
}

targets=(ceiling durable sqlite)
start_gateway sqlite "sqlite://$work/bench.db?mode=rwc"
if [ -n "${BENCH_BASELINE:-}" ]; then # another build's binary, on SQLite too: A/B within each round
  start_gateway baseline "sqlite://$work/baseline.db?mode=rwc" "$BENCH_BASELINE"
  targets+=(baseline)
fi
if [ "$BENCH_PG" = 1 ]; then
  pg_db="cgbench_$$"
  pg_dbs+=("$pg_db")
  psql -q "$PG_SERVER" -c "CREATE DATABASE $pg_db" >/dev/null
  start_gateway postgres "${PG_SERVER%/*}/$pg_db"
  targets+=(postgres)
  if [ -n "${BENCH_BASELINE:-}" ]; then
    psql -q "$PG_SERVER" -c "CREATE DATABASE ${pg_db}_baseline" >/dev/null
    pg_dbs+=("${pg_db}_baseline")
    start_gateway postgres-baseline "${PG_SERVER%/*}/${pg_db}_baseline" "$BENCH_BASELINE"
    targets+=(postgres-baseline)
  fi
  instances=${BENCH_PG_INSTANCES:-1}
  if [ "$instances" -gt 1 ]; then # more instances of the gateway on the same database, loaded together
    name="postgres-x$instances"
    url[$name]=${url[postgres]}
    for i in $(seq 2 "$instances"); do
      port=$(free_port)
      CONSENTGATE__DATABASE__URL="${PG_SERVER%/*}/$pg_db" CONSENTGATE__SERVER__BIND=127.0.0.1:$port \
        CONSENTGATE__DELIVERY__ENABLED=false CONSENTGATE__CONSENT__WRITES_PER_MINUTE_PER_IP=0 \
        CONSENTGATE__LOG__LEVEL=${BENCH_LOG:-warn} "$BIN/consentgate" serve 2>>"$work/$name.log" &
      pids+=($!)
      wait_http "http://127.0.0.1:$port/readyz"
      url[$name]+=",http://127.0.0.1:$port/v1/tenants/bench/events"
    done
    pid[$name]=${pid[postgres]}
    key[$name]=${key[postgres]}
    targets+=("$name")
  fi
fi

rss_mb() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# The CPU time (user + system, in clock ticks) the process has used so far: its difference over a
# load, per event answered, is the server's own cost of an event — far steadier than events/s on
# a machine shared with other work (a busy neighbour slows the events/s of a round, not the CPU
# an event takes). Only the process's own: not the load generator's, nor PostgreSQL's.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

echo "load: $CONNS connections, $SECS s per target, $ROUNDS rounds; $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results="$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  # With a baseline, each build and its baseline swap places in even rounds: an A/A run (the same
  # binary as both) measured whichever ran first after the ceiling 9-14 % slower in every round.
  round_targets=("${targets[@]}")
  if [ -n "${BENCH_BASELINE:-}" ] && [ $((round % 2)) = 0 ]; then
    for i in "${!round_targets[@]}"; do
      case ${round_targets[$i]} in
        sqlite) round_targets[i]=baseline ;;
        baseline) round_targets[i]=sqlite ;;
        postgres) round_targets[i]=postgres-baseline ;;
        postgres-baseline) round_targets[i]=postgres ;;
      esac
    done
  fi
  for t in "${round_targets[@]}"; do
    echo "round $round: $t…" >&2
    before=$(cpu_ticks "${pid[$t]}")
    out=$("$BIN/examples/bench_load" "${url[$t]}" "${key[$t]}" "$CONNS" "$SECS" "r$round-$$")
    cpu=$(( $(cpu_ticks "${pid[$t]}") - before ))
    # Several instances (postgres-xN): the first one's CPU is not theirs all, so none is shown.
    [[ ${url[$t]} == *,* ]] && cpu=-
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$(rss_mb "${pid[$t]}")" "$cpu" "$out" >>"$results"
    if [ "$t" != ceiling ] && [ "$t" != durable ]; then # the writer's batches so far: how many events a commit carried, how long it took
      first=${url[$t]%%,*}
      curl -sf "${first%/v1/*}/metrics" | awk -v t="$t" -v r="$round" '
        /^consentgate_ingest_batch_events_(sum|count)/ { b[$1 ~ /sum/ ? "s" : "c"] = $2 }
        /^consentgate_ingest_commit_seconds_(sum|count)/ { c[$1 ~ /sum/ ? "s" : "c"] = $2 }
        END { if (b["c"] > 0) printf "round %s, %s: %d commits, %.1f events per commit, %.2f ms per commit (means so far)\n", r, t, b["c"], b["s"] / b["c"], 1000 * c["s"] / c["c"] }' >&2 || true
    fi
    wal="$work/$([ "$t" = baseline ] && echo baseline || echo bench).db-wal"
    if { [ "$t" = sqlite ] || [ "$t" = baseline ]; } && [ -f "$wal" ]; then # it never shrinks while open: its size is its peak
      echo "round $round, $t: WAL file $(( $(stat -c %s "$wal") / 1048576 )) MB at its largest so far" >&2
    fi
  done
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every row; compare within a round)"
echo "| round | target | events/s | p50 ms | p99 ms | errors | peak RSS MB | CPU µs/event | vs ceiling |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
while IFS=$'\t' read -r round t rss cpu json; do
  rate=$(jq -r .events_per_sec <<<"$json")
  [ "$t" = ceiling ] && ceiling_rate=$rate
  ratio=$(python3 -c "print(f'{$rate / $ceiling_rate:.3f}')")
  per_event=$(jq -r --arg cpu "$cpu" --argjson tck "$CLK_TCK" \
    'if $cpu == "-" or .ok == 0 then "-" else ($cpu | tonumber) / $tck * 1e6 / .ok | floor end' <<<"$json")
  jq -r --arg r "$round" --arg t "$t" --arg rss "$rss" --arg ratio "$ratio" --arg cpu "$per_event" \
    '"| \($r) | \($t) | \(.events_per_sec | floor) | \(.p50_ms) | \(.p99_ms) | \(.errors) | \($rss) | \($cpu) | \($ratio) |"' <<<"$json"
done <"$results"
for t in "${targets[@]}"; do
  case $t in ceiling | durable) continue ;; esac
  if grep -qiE "error|panic" "$work/$t.log"; then
    echo; echo "$t logged errors (first lines):"; grep -iE "error|panic" "$work/$t.log" | head -n 5
  fi
done

# The outbox's drain and sustained rates (issue 14), with the ingest gateways above stopped.
if [ "${1:-}" != --ingest-only ]; then
  cleanup
  pids=()
  pg_dbs=()
  echo
  BENCH_SKIP_BUILD=1 BENCH_PG=$BENCH_PG scripts/bench-outbox.sh
fi
