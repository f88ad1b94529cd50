# Sourced by scripts/bench.sh and scripts/bench-outbox.sh: their working directory and clean-up,
# waiting for what they start, and the tenant every benchmarked gateway gets.

# bench_start: a working directory in `work`; the processes a benchmark starts go on `pids` and
# the PostgreSQL databases it creates (on PG_SERVER) on `pg_dbs`, all ended and dropped on exit
# (`cleanup`), the directory removed unless BENCH_KEEP=1.
bench_start() {
  work=$(mktemp -d)
  pids=()
  pg_dbs=()
  trap cleanup EXIT
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${pg_dbs[@]}"; do psql -q "$PG_SERVER" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "the gateways' logs are kept in $work" >&2; else rm -rf "$work"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # URL: until it answers (30 s at most)
  for _ in $(seq 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}
first_line() { # FILE: its first line, once written (10 s at most)
  for _ in $(seq 100); do [ -s "$1" ] && { head -n1 "$1"; return 0; }; sleep 0.1; done
  echo "nothing printed to $1" >&2; exit 1
}

# bench_tenant T ADMIN FAKE UMAMI_ENDPOINT: sets up the tenant at T (…/v1/tenants/bench) with its
# admin token — a published consent config (banner/sample-config.json); two active provider
# configs on the fakes at FAKE, Plausible (no batch endpoint) and Umami (`analytics` required,
# posting to UMAMI_ENDPOINT: batch or send), the fakes told the site and website they serve; 100
# visitors of whom half accepted and half rejected — and leaves a secret ingest key in BENCH_KEY.
bench_tenant() {
  local t=$1 admin=$2 fake=$3 umami_endpoint=$4 cc v action
  api() { curl -sf -X "$1" "$t$2" -H "authorization: Bearer $admin" -H 'content-type: application/json' ${3:+-d "$3"}; }
  cc=$(api POST /analytics/cookie-consent/configs "$(cat banner/sample-config.json)" | jq -r .id)
  api POST "/analytics/cookie-consent/configs/$cc/publish" '{"requires_reconsent": false}' >/dev/null
  api POST /analytics/plausible/configs "{\"display_name\": \"Plausible\", \"site_id\": \"shop.example.com\", \"instance_url\": \"$fake/plausible\", \"status\": \"active\"}" >/dev/null
  api POST /analytics/umami/configs "{\"display_name\": \"Umami\", \"website_id\": \"5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11\", \"instance_url\": \"$fake/umami\", \"status\": \"active\", \"required_category\": \"analytics\", \"endpoint\": \"$umami_endpoint\"}" >/dev/null
  curl -sf "$fake/_fake/behaviour" -H 'content-type: application/json' \
    -d '{"plausible": {"domains": ["shop.example.com"]}, "umami": {"websites": ["5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11"]}}' >/dev/null
  for v in $(seq 0 99); do
    action=accept_all
    [ $((v % 2)) = 1 ] && action=reject_all
    curl -sf "$t/consent" -H 'content-type: application/json' \
      -d "{\"visitor_id\": \"visitor-$v\", \"action\": \"$action\", \"revision\": 1}" >/dev/null
  done
  BENCH_KEY=$(api POST /ingest-keys '{"kind": "secret", "name": "bench"}' | jq -r .key)
  [ -n "$BENCH_KEY" ] && [ "$BENCH_KEY" != null ] || { echo "no ingest key from $t" >&2; exit 1; }
}
