#!/usr/bin/env bash
# Redis for agentlog: reuse one already answering PING on the port, else run
# our own redis-server (Debian package) with data under $AGENTLOG_HOME/data/redis.
#
#   deploy/local/redis.sh install|start|stop|status|health
#
# Env: AGENTLOG_REDIS_PORT (6379), AGENTLOG_HOME (<repo>/.agentlog).
set -euo pipefail
AGENTLOG_SERVICE=redis # prefix of info/warn/die messages
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_HOST=127.0.0.1
REDIS_PORT="${AGENTLOG_REDIS_PORT:-6379}"
REDIS_DATA="$(data_dir redis)"
REDIS_LOG="$(log_file redis)"

cmd_install() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server redis-tools
    fi
}

redis_answers() {
    local reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply="$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" || return 1
    else
        # RESP inline command over /dev/tcp, for machines without redis-cli
        # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
        reply="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
            printf "PING\r\n" >&3; head -c 7 <&3' "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null)" || return 1
        reply="${reply#+}"
    fi
    [[ "${reply%$'\r'}" == "PONG" ]]
}

# port of the redis we started (recorded at start; else from its process title,
# which redis sets to "redis-server HOST:PORT")
running_port() {
    if [[ -s "$AGENTLOG_RUN/redis.port" ]]; then
        cat "$AGENTLOG_RUN/redis.port"
    else
        tr '\0' ' ' <"/proc/$(read_pid redis)/cmdline" 2>/dev/null |
            sed -n 's/^[^ ]* [^ ]*:\([0-9][0-9]*\).*/\1/p'
    fi
}

cmd_start() {
    if is_running redis; then
        local p
        p="$(running_port)"
        [[ "$p" == "$REDIS_PORT" ]] ||
            die "the redis we started runs on port $p, not $REDIS_PORT; run '$0 stop' first"
        info "already running (pid $(read_pid redis))"
        return 0
    fi
    rm -f "$(pid_file redis)"
    if redis_answers; then
        info "a Redis already answers on $REDIS_HOST:$REDIS_PORT; reusing it"
        return 0
    fi
    if port_open "$REDIS_HOST" "$REDIS_PORT"; then
        die "$REDIS_HOST:$REDIS_PORT is taken by something that does not answer PING"
    fi
    command -v redis-server >/dev/null 2>&1 || cmd_install
    mkdir -p "$REDIS_DATA"
    printf '%s\n' "$REDIS_PORT" >"$AGENTLOG_RUN/redis.port"
    info "starting $(redis-server --version | awk '{print $1, $2, $3}') on $REDIS_HOST:$REDIS_PORT"
    # --daemonize yes: redis forks, detaches and writes the pid file itself.
    if ! redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" \
        --dir "$REDIS_DATA" --logfile "$REDIS_LOG" \
        --daemonize yes --pidfile "$(pid_file redis)" \
        --save "3600 1 300 100 60 10000" --appendonly no \
        --protected-mode yes; then
        die "redis-server failed to start (see $REDIS_LOG)"
    fi
    # the pid file appears once the daemon is up
    local _
    for _ in $(seq 1 50); do
        if [[ -s "$(pid_file redis)" ]]; then
            break
        fi
        sleep 0.1
    done
    # redis writes its pid file only after it has bound the port
    [[ -s "$(pid_file redis)" ]] || die "redis-server did not come up (see $REDIS_LOG)"
}

cmd_stop() {
    if is_running redis; then
        info "stopping (pid $(read_pid redis))"
        stop_daemon redis 30
    elif port_open "$REDIS_HOST" "$REDIS_PORT"; then
        info "$REDIS_HOST:$REDIS_PORT is served by a Redis we did not start; leaving it"
    fi
    rm -f "$(pid_file redis)"
}

cmd_health() { redis_answers; }

cmd_status() {
    local state=stopped port="$REDIS_PORT"
    if is_running redis; then
        state=running
        port="$(running_port)"
    elif port_open "$REDIS_HOST" "$REDIS_PORT"; then
        state=reused
    fi
    status_line redis "$REDIS_HOST" "$port" "$state"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
health) cmd_health ;;
*)
    echo "usage: $0 install|start|stop|status|health" >&2
    exit 2
    ;;
esac
