#!/usr/bin/env bash
# `make fleet`: start the coordinator and $AGENTS agents on this host (reusing
# any already running), submit the demo run and watch it to the end.
# TARGET=docker: agents on Docker targets of the image `make target-image`
# builds, with the ssg brain and OpenSCAP; the run is the Debian 11
# standard profile, minus what the coordinator's baseline scan finds passing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${FLEET_STATE_DIR:-$root/.fleet}"
# shellcheck disable=SC1091
source "$state/env"
mkdir -p "$state/logs" "$state/pids"

# Tokens are made once and kept out of logs and of the repository.
tokens="$state/tokens.env"
if [[ ! -f "$tokens" ]]; then
  umask 077
  {
    echo "export FLEET_API_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "export FLEET_AGENT_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  } > "$tokens"
fi
# Older token files predate the knowledge repo's git secret.
if ! grep -q FLEET_GIT_SECRET "$tokens"; then
  (umask 077; echo "export FLEET_GIT_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >> "$tokens")
fi
# shellcheck disable=SC1090
source "$tokens"

listen="${FLEET_LISTEN:-127.0.0.1:8080}"
api="http://$listen"
export FLEET_API_URL="$api"
bin="$root/target/debug"
target="${TARGET:-sim}"
image="${FLEET_TARGET_IMAGE:-fleet-target:bullseye}"
case "$target" in
  sim) agent_args=(--sim-work-ms "${SIM_WORK_MS:-200}"); scan=() ;;
  # The LLM brain when an endpoint is configured (FLEET_LLM_URL, and
  # FLEET_LLM_MODEL / FLEET_LLM_API_KEY from the environment), else the
  # SCAP content's own fixes.
  docker) brain=ssg; [[ -z ${FLEET_LLM_URL:-} ]] || brain=openai
          agent_args=(--target docker --brain "$brain" --target-image "$image")
          scan=(FLEET_SCAN_IMAGE="$image") ;;
  *) echo "fleet: TARGET must be sim or docker, got '$target'" >&2; exit 2 ;;
esac

# GET /healthz with bash alone (no curl on a bare machine).
healthy() {
  local host="${listen%:*}" port="${listen##*:}"
  (
    exec 3<>"/dev/tcp/$host/$port" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    read -r -t 2 _ status _ <&3 && [[ "$status" == 200 ]]
  ) 2>/dev/null
}

alive() { [[ -f "$state/pids/$1.pid" ]] && kill -0 "$(cat "$state/pids/$1.pid")" 2>/dev/null; }

if alive coordinator; then
  echo "fleet: coordinator already running (pid $(cat "$state/pids/coordinator.pid"))"
else
  echo "fleet: starting coordinator on $api"
  env "${scan[@]}" FLEET_LISTEN="$listen" FLEET_SKILL_PACKS="$root/skill-packs" \
    FLEET_KNOWLEDGE_DIR="${FLEET_KNOWLEDGE_DIR:-$state/knowledge.git}" \
    nohup "$bin/fleet-coordinator" serve >> "$state/logs/coordinator.log" 2>&1 &
  echo $! > "$state/pids/coordinator.pid"
fi
for _ in $(seq 1 100); do
  healthy && break
  alive coordinator || { echo "fleet: coordinator exited; see $state/logs/coordinator.log" >&2; tail -20 "$state/logs/coordinator.log" >&2; exit 1; }
  sleep 0.2
done
healthy || { echo "fleet: coordinator not healthy after 20 s; see $state/logs/coordinator.log" >&2; exit 1; }

for i in $(seq 1 "${AGENTS:-2}"); do
  name="agent-$i"
  if alive "$name"; then continue; fi
  echo "fleet: starting $name"
  FLEET_COORDINATOR_URL="$api" FLEET_AGENT_ID="$name" FLEET_WORK_DIR="$state/agents/$name" \
    nohup "$bin/fleet-agent" "${agent_args[@]}" >> "$state/logs/$name.log" 2>&1 &
  echo $! > "$state/pids/$name.pid"
done

if [[ $target == docker ]]; then
  # No rules: the coordinator takes the pack profile's rules from its catalog.
  run=$("$bin/fleet-coordinator" submit --skill-pack "${SKILL_PACK:-ssg-debian11-standard}" --quiet)
  echo "fleet: submitted run $run (the profile's rules) to ${AGENTS:-2} agents on Docker targets"
else
  rules="${RULES:-$root/skill-packs/sim-demo/rules.txt}"
  run=$("$bin/fleet-coordinator" submit --skill-pack "${SKILL_PACK:-sim-demo}" --rules-file "$rules" --quiet)
  echo "fleet: submitted run $run ($(grep -cv '^\s*\(#\|$\)' "$rules") rules) to ${AGENTS:-2} agents"
fi
"$bin/fleet-coordinator" watch "$run"
"$bin/fleet-coordinator" status "$run" --summary-line
echo "fleet: logs in $state/logs, metrics at $api/metrics; stop everything with \`make fleet-down\`"
