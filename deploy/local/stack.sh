#!/usr/bin/env bash
# The local agentlog service stack: Kafka, Elasticsearch, PostgreSQL, Redis.
#
#   deploy/local/stack.sh up|down|status [SERVICE...]
#
# up:     install + start each service (slow JVMs first), wait until all answer
#         their health check (in parallel), print where each listens.
# down:   stop what we started (reused servers are left alone).
# status: one line per service.
#
# Each service is deploy/local/<service>.sh install|start|stop|status|health.
# Env: AGENTLOG_WAIT_TIMEOUT overrides every per-service health timeout (s).
set -euo pipefail
AGENTLOG_SERVICE=stack # prefix of info/warn/die messages
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_SERVICES=(kafka elasticsearch postgres redis) # start order: slow JVMs first

service_script() { printf '%s/%s.sh\n' "$AGENTLOG_LOCAL_DIR" "$1"; }

# default seconds to wait for each service's health check
service_timeout() {
    if [[ -n "${AGENTLOG_WAIT_TIMEOUT:-}" ]]; then
        printf '%s\n' "$AGENTLOG_WAIT_TIMEOUT"
        return
    fi
    case "$1" in
    kafka) echo 120 ;;
    elasticsearch) echo 240 ;;
    postgres) echo 60 ;;
    *) echo 30 ;;
    esac
}

# available SERVICE: true if its script exists; elasticsearch may be missing
# (another helper writes it), any other missing script is an error.
available() {
    local s="$1"
    [[ -f "$(service_script "$s")" ]] && return 0
    if [[ "$s" == elasticsearch ]]; then
        info "elasticsearch: SKIPPED ($(service_script "$s") does not exist yet)"
        return 1
    fi
    die "$s: no script $(service_script "$s")"
}

run_svc() {
    local s="$1"
    shift
    # 9>&-: daemons must not inherit the stack lock
    bash "$(service_script "$s")" "$@" 9>&-
}

select_services() {
    local s known
    if (($# == 0)); then
        SERVICES=("${ALL_SERVICES[@]}")
        return
    fi
    SERVICES=()
    # keep the canonical order whatever order the user gave
    for known in "${ALL_SERVICES[@]}"; do
        for s in "$@"; do
            if [[ "$s" == "$known" ]]; then
                SERVICES+=("$s")
                break
            fi
        done
    done
    for s in "$@"; do
        [[ " ${ALL_SERVICES[*]} " == *" $s "* ]] ||
            die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
    done
}

# tail_fresh_log NAME SINCE_EPOCH: show the log's tail only if this attempt
# wrote to it (a stale log from an earlier run would mislead).
tail_fresh_log() {
    local f
    f="$(log_file "$1")"
    if [[ -f "$f" ]] && (($(stat -c %Y "$f") >= $2)); then
        tail_log "$1" 40
    else
        echo "($1 wrote nothing to $f in this attempt; see the messages above)" >&2
    fi
}

cmd_up() {
    local s since failed=() started=()
    # Not a service, but the platform needs it: the python tool's sandbox runs in bubblewrap
    # (processors/tools/python_sandbox.py), which fails closed without it.
    command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap
    # Nor this: the console's end-to-end tests (tests/e2e) drive Debian's chromium headless, never
    # a browser Playwright would download.
    command -v chromium >/dev/null 2>&1 || apt_install chromium
    for s in "${SERVICES[@]}"; do
        available "$s" || continue
        since="$(date +%s)"
        if ! run_svc "$s" install; then
            echo "$s: install failed" >&2
            tail_fresh_log "$s" "$since"
            failed+=("$s")
            continue
        fi
        since="$(date +%s)"
        if ! run_svc "$s" start; then
            echo "$s: start failed" >&2
            tail_fresh_log "$s" "$since"
            failed+=("$s")
            continue
        fi
        started+=("$s")
    done

    # wait for all of them at once
    local -A waiters=()
    for s in "${started[@]}"; do
        wait_for "$s" "$(service_timeout "$s")" run_svc "$s" health &
        waiters[$s]=$!
    done
    for s in "${started[@]}"; do
        wait "${waiters[$s]}" || failed+=("$s")
    done

    echo
    for s in "${SERVICES[@]}"; do
        if [[ -f "$(service_script "$s")" ]]; then
            run_svc "$s" status
        fi
    done
    if ((${#failed[@]})); then
        echo >&2
        echo "stack up FAILED: ${failed[*]} (logs in $AGENTLOG_LOGS)" >&2
        return 1
    fi
    print_env
}

print_env() {
    echo
    echo "# connection settings (AGENTLOG_HOME=$AGENTLOG_HOME)"
    for s in "${SERVICES[@]}"; do
        case "$s" in
        kafka) echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${AGENTLOG_KAFKA_PORT:-9092}" ;;
        elasticsearch)
            if [[ -f "$(service_script "$s")" ]]; then
                echo "ELASTICSEARCH_URL=http://127.0.0.1:${AGENTLOG_ES_PORT:-9200}"
            fi
            ;;
        postgres) echo "DATABASE_URL=postgresql://agentlog:agentlog@127.0.0.1:${AGENTLOG_PG_PORT:-5432}/agentlog" ;;
        redis) echo "REDIS_URL=redis://127.0.0.1:${AGENTLOG_REDIS_PORT:-6379}/0" ;;
        esac
    done
}

cmd_down() {
    local i s rc=0
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        s="${SERVICES[i]}"
        if [[ ! -f "$(service_script "$s")" ]]; then
            if [[ "$s" == elasticsearch ]]; then
                continue
            fi
            die "$s: no script $(service_script "$s")"
        fi
        run_svc "$s" stop || {
            echo "$s: stop failed" >&2
            rc=1
        }
    done
    return "$rc"
}

cmd_status() {
    local s
    for s in "${SERVICES[@]}"; do
        if [[ -f "$(service_script "$s")" ]]; then
            run_svc "$s" status
        else
            printf '%-13s  (no script: %s)\n' "$s" "$(service_script "$s")"
        fi
    done
}

action="${1:-}"
shift || true
SERVICES=()
select_services "$@"
# one up/down at a time (a second `up` run concurrently waits, then finds
# everything running)
lock_stack() {
    exec 9>"$AGENTLOG_RUN/stack.lock"
    if ! flock -n 9; then
        info "another stack.sh up/down is running; waiting for it"
        flock 9
    fi
}

case "$action" in
up) lock_stack && cmd_up ;;
down) lock_stack && cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status [${ALL_SERVICES[*]}]" >&2
    exit 2
    ;;
esac
