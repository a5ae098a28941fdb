#!/usr/bin/env bash
# `make fleet`: start the coordinator and $AGENTS agents on this host (reusing
# any already running), submit the default run and watch it to the end.
# By default (TARGET=docker) the agents work on Docker targets of the image
# `make target-image` builds, with OpenSCAP, and the `openai` brain when
# FLEET_LLM_URL is set, else the `ssg` brain; the run is the Debian 11
# standard profile, minus what the coordinator's baseline scan finds passing.
# TARGET=vm: the same on qemu VMs of `make vm-image` (one per agent), where
# the kernel (sysctl_*) and service (service_*) rules a container cannot
# hold are evaluated and fixed too.
# TARGET=sim: the simulation (no Docker), with the sim-demo pack.
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
target="${TARGET:-docker}"
image="${FLEET_TARGET_IMAGE:-fleet-target:bullseye}"
case "$target" in
  sim) agent_args=(--sim-work-ms "${SIM_WORK_MS:-200}"); scan=() ;;
  # The LLM brain when an endpoint is configured (FLEET_LLM_URL, and
  # FLEET_LLM_MODEL / FLEET_LLM_API_KEY from the environment), else the
  # SCAP content's own fixes.
  docker) brain=ssg; [[ -z ${FLEET_LLM_URL:-} ]] || brain=openai
          agent_args=(--target docker --brain "$brain" --target-image "$image")
          scan=(FLEET_SCAN_IMAGE="$image") ;;
  # No baseline scan: the coordinator scans a container, not the VM.
  vm) brain=ssg; [[ -z ${FLEET_LLM_URL:-} ]] || brain=openai
      agent_args=(--target qemu --brain "$brain" --vm-image-dir "$state/vm-image")
      scan=() ;;
  *) echo "fleet: TARGET must be sim, docker or vm, got '$target'" >&2; exit 2 ;;
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
  # Its own least-privilege Postgres role (make deps), and no enrollment
  # token: each agent registers with a token of its own (below).
  env "${scan[@]}" FLEET_LISTEN="$listen" FLEET_SKILL_PACKS="$root/skill-packs" \
    FLEET_DATABASE_URL="${FLEET_COORDINATOR_DATABASE_URL:-$FLEET_DATABASE_URL}" FLEET_AGENT_TOKEN= \
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

agents="${AGENTS:-2}"
metrics_port() { echo $((9310 + $1)); }
for i in $(seq 1 "$agents"); do
  name="agent-$i"
  if alive "$name"; then continue; fi
  echo "fleet: starting $name"
  # Its own token (printed once by the coordinator, kept only in the
  # agent's environment); `fleet-coordinator agents revoke` cuts it off.
  agent_token=$("$bin/fleet-coordinator" agents issue "$name" --by make-fleet 2>/dev/null) ||
    { echo "fleet: could not issue a token for $name; see $state/logs/coordinator.log" >&2; exit 1; }
  FLEET_AGENT_TOKEN="$agent_token" \
  FLEET_COORDINATOR_URL="$api" FLEET_AGENT_ID="$name" FLEET_WORK_DIR="$state/agents/$name" \
    FLEET_METRICS_LISTEN="127.0.0.1:$(metrics_port "$i")" \
    nohup "$bin/fleet-agent" "${agent_args[@]}" >> "$state/logs/$name.log" 2>&1 &
  echo $! > "$state/pids/$name.pid"
done

# Prometheus (Debian package, `make deps`) with the shipped config and
# alert rules, scraping the coordinator and every agent started above.
prom="$state/prometheus"
prom_listen="${FLEET_PROMETHEUS_LISTEN:-127.0.0.1:9090}"
mkdir -p "$prom/targets"
cp "$root"/deploy/prometheus/alerts.yml "$prom/"
sed "s/127.0.0.1:8080/$listen/" "$root/deploy/prometheus/prometheus.yml" > "$prom/prometheus.yml"
{
  echo "["
  for i in $(seq 1 "$agents"); do
    sep=","; [[ $i == "$agents" ]] && sep=""
    echo "  {\"targets\": [\"127.0.0.1:$(metrics_port "$i")\"], \"labels\": {\"agent\": \"agent-$i\"}}$sep"
  done
  echo "]"
} > "$prom/targets/agents.json"
if alive prometheus; then
  kill -HUP "$(cat "$state/pids/prometheus.pid")"   # re-read config and rules
elif command -v prometheus >/dev/null; then
  echo "fleet: starting prometheus on http://$prom_listen"
  nohup prometheus --config.file="$prom/prometheus.yml" --storage.tsdb.path="$prom/data" \
    --web.listen-address="$prom_listen" >> "$state/logs/prometheus.log" 2>&1 &
  echo $! > "$state/pids/prometheus.pid"
else
  echo "fleet: prometheus is not installed (make deps installs it); going on without metrics history" >&2
fi

if [[ $target != sim ]]; then
  # No rules: the coordinator takes the pack profile's rules from its catalog.
  run=$("$bin/fleet-coordinator" submit --skill-pack "${SKILL_PACK:-ssg-debian11-standard}" --quiet)
  kind="Docker targets"; [[ $target == vm ]] && kind="qemu VMs (booting takes ~20 s under TCG)"
  echo "fleet: submitted run $run (the profile's rules) to ${AGENTS:-2} agents on $kind"
else
  rules="${RULES:-$root/skill-packs/sim-demo/rules.txt}"
  run=$("$bin/fleet-coordinator" submit --skill-pack "${SKILL_PACK:-sim-demo}" --rules-file "$rules" --quiet)
  echo "fleet: submitted run $run ($(grep -cv '^\s*\(#\|$\)' "$rules") rules) to ${AGENTS:-2} agents"
fi
# Progress until the run completes; the dream stage runs right after and
# brings the comparison with the previous run; then the run report.
"$bin/fleet-coordinator" watch "$run" >/dev/null
for _ in $(seq 1 120); do
  "$bin/fleet-coordinator" status "$run" --json | grep -q '"dream": *"' && break
  sleep 0.5
done
"$bin/fleet-coordinator" report --run "$run" | tee "$state/logs/report-$run.txt"
if [[ $target == vm ]]; then
  # The rules the pack says need a VM ([[requires]]): on containers they
  # are `needs_target`; here they were really evaluated.
  awk '$1 ~ /^(sysctl|service)_/ { n++; c[$3]++ }
       END { printf "fleet: %d kernel and service rules a container cannot reach were evaluated on the VMs:", n
             for (k in c) printf " %s=%d", k, c[k]; print "" }' "$state/logs/report-$run.txt"
fi
if [[ $target == docker ]]; then
  # After the dream stage the coordinator checks main's bundle of verified
  # fixes as a whole on a fresh target (DESIGN H3): two full-profile scans
  # and every section; its figures follow the fleet: line.
  echo "fleet: checking the bundle of verified fixes on a fresh target (two full-profile scans)…"
  for _ in $(seq 1 1200); do
    "$bin/fleet-coordinator" status "$run" --json | grep -q '"bundle": *{' && break
    sleep 1
  done
fi
echo "fleet: logs in $state/logs; metrics at $api/metrics and agents' 127.0.0.1:$(metrics_port 1)…; Prometheus at http://$prom_listen (alerts: /alerts); Grafana dashboards in deploy/grafana (see README); stop everything with \`make fleet-down\`"
"$bin/fleet-coordinator" status "$run" --summary-line
if [[ $target == docker ]]; then
  pack="${SKILL_PACK:-ssg-debian11-standard}"
  echo "fleet: next, bring your machines into line with what the fleet verified:"
  echo "  $bin/fleet-coordinator harden --inventory deploy/inventory.example.toml --skill-pack $pack --check   # what would change"
  echo "  $bin/fleet-coordinator harden --inventory deploy/inventory.example.toml --skill-pack $pack           # roll it out"
  echo "  $bin/fleet-coordinator export --skill-pack $pack --format bash --out harden.sh                        # or --format ansible"
fi
