#!/usr/bin/env bash
# Runs the generic server scenarios of the official MCP conformance suite (0.1.16) against
# `fraudgate serve --http --sandbox`, one scenario per run, through a test proxy that injects the
# sandbox dev token (the server has no unauthenticated mode). Fails on any failed check.
# Tool/resource/prompt fixture scenarios call fixture names (test_*) this server does not have, so
# they are not run for a pass. Two of them (tools-call-simple-text, tools-call-error) used to pass
# anyway while an unknown tool came back as an isError result; they are run as a guard and must
# FAIL (unknown tool → JSON-RPC -32602): one that passes is reported as a false pass.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE=${NODE:-node_modules/node/bin/node}
[ -x "$NODE" ] || NODE=node
SUITE=node_modules/@modelcontextprotocol/conformance/dist/index.js
SCENARIOS=(server-initialize ping logging-set-level tools-list resources-list prompts-list server-sse-multiple-streams dns-rebinding-protection)
MUST_NOT_PASS=(tools-call-simple-text tools-call-error)
WORK=$(mktemp -d)
TOKEN="conformance-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

FRAUDGATE_DEV_TOKEN="$TOKEN" FRAUDGATE_LOG_LEVEL=warn "$NODE" src/cli.ts serve --http --sandbox --port 0 \
  --data-dir "$WORK/data" 2>"$WORK/server.log" &
pids+=($!)
for _ in $(seq 1 100); do
  SERVER=$(grep -o 'http://[^ ]*/mcp' "$WORK/server.log" | head -1 || true)
  [ -n "$SERVER" ] && break
  sleep 0.1
done
[ -n "$SERVER" ] || { echo "server did not start:"; cat "$WORK/server.log"; exit 1; }
BASE=${SERVER%/mcp}
BASE=${BASE/127.0.0.1/localhost}

"$NODE" scripts/conformance-proxy.ts "$BASE" "$TOKEN" >"$WORK/proxy.url" &
pids+=($!)
for _ in $(seq 1 100); do
  PROXY=$(cat "$WORK/proxy.url")
  [ -n "$PROXY" ] && break
  sleep 0.1
done

failed=0
for scenario in "${SCENARIOS[@]}"; do
  if "$NODE" "$SUITE" server --url "$PROXY/mcp" --scenario "$scenario" >"$WORK/$scenario.log" 2>&1; then
    # A scenario whose checks did not run (e.g. 0/0 without sessions) must not count as a pass.
    summary=$(grep -E '^Passed: ' "$WORK/$scenario.log" | tail -1 || true)
    if [ -z "$summary" ] || grep -qE '^Passed: 0\/' <<<"$summary"; then
      echo "FAIL $scenario (no checks ran: ${summary:-no summary})"
      cat "$WORK/$scenario.log"
      failed=1
    else
      echo "ok   $scenario  $summary"
    fi
  else
    echo "FAIL $scenario"
    cat "$WORK/$scenario.log"
    failed=1
  fi
done
# The guard: a server without the fixture tools must not pass the scenarios that call them.
for scenario in "${MUST_NOT_PASS[@]}"; do
  if "$NODE" "$SUITE" server --url "$PROXY/mcp" --scenario "$scenario" >"$WORK/$scenario.log" 2>&1; then
    echo "FAIL $scenario (passed without its fixture tool: a false pass)"
    cat "$WORK/$scenario.log"
    failed=1
  else
    echo "ok   $scenario  refused as it should be (no fixture tool here)"
  fi
done
exit $failed
