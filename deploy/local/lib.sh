# shellcheck shell=bash
# Shared helpers for deploy/local/*.sh. Source it, do not execute it:
#
#   # shellcheck source=deploy/local/lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   AGENTLOG_SERVICE=kafka        # used as the prefix of info/warn/die
#
# Layout (all under AGENTLOG_HOME, default <repo>/.agentlog, git-ignored):
#   cache/              downloaded artifacts (maven jars, ...)
#   data/<service>/     service data
#   logs/<service>.log  service log
#   run/<service>.pid   pid of a process *we* started (absent for reused services)

if [[ -n "${_AGENTLOG_LIB_LOADED:-}" ]]; then
    return 0
fi
_AGENTLOG_LIB_LOADED=1

# --- locations ---------------------------------------------------------------
AGENTLOG_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# deploy/local/ is always two levels below the repo root.
AGENTLOG_REPO_ROOT="$(cd "$AGENTLOG_LOCAL_DIR/../.." && pwd)"
AGENTLOG_HOME="${AGENTLOG_HOME:-$AGENTLOG_REPO_ROOT/.agentlog}"
AGENTLOG_CACHE="$AGENTLOG_HOME/cache"
AGENTLOG_DATA="$AGENTLOG_HOME/data"
AGENTLOG_LOGS="$AGENTLOG_HOME/logs"
AGENTLOG_RUN="$AGENTLOG_HOME/run"
export AGENTLOG_HOME AGENTLOG_REPO_ROOT
AGENTLOG_SERVICE="${AGENTLOG_SERVICE:-agentlog}"

ensure_dirs() {
    mkdir -p "$AGENTLOG_CACHE" "$AGENTLOG_DATA" "$AGENTLOG_LOGS" "$AGENTLOG_RUN"
}
ensure_dirs

data_dir() { printf '%s/%s\n' "$AGENTLOG_DATA" "$1"; }
log_file() { printf '%s/%s.log\n' "$AGENTLOG_LOGS" "$1"; }
pid_file() { printf '%s/%s.pid\n' "$AGENTLOG_RUN" "$1"; }

# --- logging -----------------------------------------------------------------
info() { printf '[%s] %s\n' "$AGENTLOG_SERVICE" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$AGENTLOG_SERVICE" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$AGENTLOG_SERVICE" "$*" >&2
    exit 1
}

# tail_log NAME [LINES]: print the last lines of logs/NAME.log to stderr.
tail_log() {
    local name="$1" lines="${2:-40}" f
    f="$(log_file "$name")"
    if [[ -s "$f" ]]; then
        # the first errors are often far above the tail (shutdown noise)
        if grep -qE '(ERROR|FATAL|PANIC)' "$f"; then
            printf -- '----- first error lines of %s -----\n' "$f" >&2
            grep -m 5 -E '(ERROR|FATAL|PANIC)' "$f" | cut -c1-400 >&2
        fi
        printf -- '----- last %s lines of %s -----\n' "$lines" "$f" >&2
        tail -n "$lines" "$f" >&2
        printf -- '----- end of %s -----\n' "$f" >&2
    else
        printf '(no log at %s)\n' "$f" >&2
    fi
}

# status_line NAME HOST PORT STATE  ->  "NAME  listening on HOST:PORT  (STATE)"
status_line() {
    printf '%-13s  listening on %s:%s  (%s)\n' "$1" "$2" "$3" "$4"
}

# --- network -----------------------------------------------------------------
# port_open HOST PORT: true iff a TCP connect succeeds within 2 s.
port_open() {
    local host="$1" port="$2"
    # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# wait_for NAME TIMEOUT_SECONDS CHECK_COMMAND...
# Polls CHECK_COMMAND (every second) until it succeeds. Fails early if we
# started NAME (run/NAME.pid exists) and that process has died. On failure
# prints "NAME failed to become healthy" plus the tail of logs/NAME.log.
wait_for() {
    local name="$1" timeout_s="$2"
    shift 2
    local deadline=$((SECONDS + timeout_s))
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [[ -f "$(pid_file "$name")" ]] && ! is_running "$name"; then
            printf '%s failed to become healthy (process exited)\n' "$name" >&2
            tail_log "$name" 40
            return 1
        fi
        if ((SECONDS >= deadline)); then
            printf '%s failed to become healthy (timeout %ss)\n' "$name" "$timeout_s" >&2
            tail_log "$name" 40
            return 1
        fi
        sleep 1
    done
}

# --- processes ---------------------------------------------------------------
# read_pid NAME: print the pid recorded in run/NAME.pid (nothing if none).
read_pid() {
    local f
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    local pid
    pid="$(head -n1 "$f" 2>/dev/null | tr -dc '0-9')"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

# is_running NAME: true iff run/NAME.pid names a live (non-zombie) process.
is_running() {
    local pid state
    pid="$(read_pid "$1")" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]]
}

# start_daemon NAME LOGFILE CMD...: run CMD detached (own session, immune to
# SIGHUP, stdin from /dev/null, stdout+stderr appended to LOGFILE) and record
# its pid in run/NAME.pid.
start_daemon() {
    local name="$1" logfile="$2"
    shift 2
    mkdir -p "$(dirname "$logfile")"
    # In a non-interactive shell a background job is not a process-group
    # leader, so setsid (and nohup) exec in place: $! is the daemon's pid.
    setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$(pid_file "$name")"
}

# stop_daemon NAME [TIMEOUT_SECONDS=30]: TERM, then KILL after the timeout.
stop_daemon() {
    local name="$1" timeout_s="${2:-30}" pid
    if ! pid="$(read_pid "$name")"; then
        return 0
    fi
    if is_running "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + timeout_s))
        while is_running "$name" && ((SECONDS < deadline)); do
            sleep 0.5
        done
        if is_running "$name"; then
            warn "$name (pid $pid) did not stop within ${timeout_s}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
        fi
    fi
    rm -f "$(pid_file "$name")"
}

# --- packages ----------------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PKG...: install missing Debian packages; `apt-get update` runs at
# most once per run (the flag is exported, so child scripts share it).
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "${AGENTLOG_APT_UPDATED:-}" ]]; then
        info "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        export AGENTLOG_APT_UPDATED=1
    fi
    info "apt-get install ${missing[*]}"
    # We start services ourselves: stop maintainer scripts from starting the
    # system's postgres/redis (policy-rc.d exit 101 = "action forbidden").
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, deploy/local/lib.sh apt_install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [[ -n "$own_policy" ]] && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# --- java / maven ------------------------------------------------------------
# find_java MIN_MAJOR: print a java binary of at least that major version
# (JAVA_HOME, then PATH, then /usr/lib/jvm/*).
find_java() {
    local min="$1" cand v
    local cands=()
    [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME/bin/java")
    cand="$(command -v java 2>/dev/null || true)"
    [[ -n "$cand" ]] && cands+=("$cand")
    for cand in /usr/lib/jvm/*/bin/java; do
        [[ -x "$cand" ]] && cands+=("$cand")
    done
    for cand in "${cands[@]}"; do
        [[ -x "$cand" ]] || continue
        v="$("$cand" -XshowSettings:properties -version 2>&1 |
            awk -F'= ' '/java.specification.version/ {print $2; exit}')"
        v="${v#1.}"
        if [[ "$v" =~ ^[0-9]+$ ]] && ((v >= min)); then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

# mvn_copy_deps POM_DIR OUTPUT_DIR [MVN_ARG...]: resolve the runtime
# dependencies declared in POM_DIR/pom.xml into OUTPUT_DIR (atomically: a
# half-done copy is never left at OUTPUT_DIR). Extra args go to mvn (-Dx=y).
mvn_copy_deps() {
    local pom_dir="$1" out="$2" tmp
    shift 2
    command -v mvn >/dev/null 2>&1 || apt_install maven
    tmp="$out.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$out")"
    info "resolving ${out#"$AGENTLOG_HOME"/} from Maven Central"
    if ! mvn -B -q -f "$pom_dir/pom.xml" "$@" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$tmp.log" | tail -n 40 >&2
        rm -rf "$tmp" "$tmp.log"
        die "mvn dependency:copy-dependencies failed for $pom_dir/pom.xml"
    fi
    rm -f "$tmp.log"
    rm -rf "$out"
    mv "$tmp" "$out"
}
