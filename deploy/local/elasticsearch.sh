#!/usr/bin/env bash
# Single-node Elasticsearch (the genuine server, not OpenSearch) from Maven Central.
#
#   deploy/local/elasticsearch.sh install|start|stop|status|health
#
# Env: AGENTLOG_ES_PORT (9200), AGENTLOG_ES_TRANSPORT_PORT (9300),
#      AGENTLOG_ES_HEAP (512m), AGENTLOG_HOME (<repo>/.agentlog).
#
# How it works (details in deploy/local/elasticsearch/):
#   install  mvn resolves org.elasticsearch:elasticsearch (+deps) into <home>/lib, the
#            transport-netty4 module into <home>/modules/transport-netty4 and the
#            entitlement bridge into <home>/lib/entitlement-bridge; javac builds
#            elasticsearch/src/: the Launcher (stands in for the unpublished server-cli),
#            the entitlement agent jar, a tiny GET / plugin (stands in for the
#            unpublished rest-root module) and a null ANSI-console loader; links Debian's
#            libzstd. <home> = $AGENTLOG_HOME/cache/elasticsearch-<version>.
#   start    runs ONE JVM as the unprivileged user agentlog-es (ES refuses root):
#            Launcher builds ServerArgs from config/elasticsearch.yml with ES's own classes,
#            feeds them to the real org.elasticsearch.bootstrap.Elasticsearch.main via
#            System.in, and the node runs with its stock 9.x entitlements.
#   Data and node logs: $AGENTLOG_HOME/data/elasticsearch/{data,logs,tmp};
#   console log: $AGENTLOG_HOME/logs/elasticsearch.log.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034 # read by lib.sh's info/warn/die
AGENTLOG_SERVICE=elasticsearch

# The one pin. The Python client must have the same major (elasticsearch==9.*).
ES_VERSION=9.5.3
ES_MIN_JAVA=21 # 9.x needs 21+; 8.x would need 17+

ES_HOST=127.0.0.1
ES_PORT="${AGENTLOG_ES_PORT:-9200}"
ES_TRANSPORT_PORT="${AGENTLOG_ES_TRANSPORT_PORT:-9300}"
ES_HEAP="${AGENTLOG_ES_HEAP:-512m}"
ES_USER=agentlog-es
ES_SRC="$AGENTLOG_LOCAL_DIR/elasticsearch"
ES_HOME="$AGENTLOG_CACHE/elasticsearch-$ES_VERSION"
ES_STATE="$(data_dir elasticsearch)"
ES_LOG="$(log_file elasticsearch)"

# --- java ------------------------------------------------------------------------
# java_major JAVA: print the feature version of a java binary (17, 21, 25, ...).
java_major() {
    local v
    v="$("$1" -XshowSettings:properties -version 2>&1 |
        awk -F'= ' '/java.specification.version/ {print $2; exit}')"
    printf '%s\n' "${v#1.}"
}

# find_jdk MIN: like lib.sh's find_java, but the candidate must be a full JDK
# (javac and jar next to java: we compile the launcher; the jdk.attach module is
# needed for the entitlement agent). Prints the JDK's bin directory.
find_jdk() {
    local min="$1" cand v bin
    local cands=()
    [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME/bin/java")
    cand="$(command -v java 2>/dev/null || true)"
    [[ -n "$cand" ]] && cands+=("$(readlink -f "$cand")")
    for cand in /usr/lib/jvm/*/bin/java; do
        [[ -x "$cand" ]] && cands+=("$cand")
    done
    for cand in "${cands[@]}"; do
        [[ -x "$cand" ]] || continue
        bin="$(dirname "$cand")"
        [[ -x "$bin/javac" && -x "$bin/jar" ]] || continue
        v="$(java_major "$cand")"
        if [[ "$v" =~ ^[0-9]+$ ]] && ((v >= min)); then
            printf '%s\n' "$bin"
            return 0
        fi
    done
    return 1
}

jdk_bin() {
    find_jdk "$ES_MIN_JAVA" || die "Elasticsearch $ES_VERSION needs a JDK $ES_MIN_JAVA+ (java, javac, jar);" \
        "none found via JAVA_HOME, PATH or /usr/lib/jvm/*/bin (found: $(
            find /usr/lib/jvm -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null
        )). Install e.g. openjdk-21-jdk-headless or a Temurin 21+/25 JDK."
}

# --- install -----------------------------------------------------------------------
jars_stamp() { { echo "$ES_VERSION"; cat "$ES_SRC/pom.xml"; } | sha256sum | cut -d' ' -f1; }
build_stamp() {
    { echo "$ES_VERSION"; find "$ES_SRC/src" "$ES_SRC/config" "${BASH_SOURCE[0]}" -type f | sort | xargs cat; } |
        sha256sum | cut -d' ' -f1
}
jars_ready() { [[ "$(cat "$ES_HOME/.jars.sha256" 2>/dev/null)" == "$(jars_stamp)" ]]; }
build_ready() { [[ "$(cat "$ES_HOME/.build.sha256" 2>/dev/null)" == "$(build_stamp)" ]]; }
installed() { jars_ready && build_ready; }

install_jars() {
    local m2=(-Des.version="$ES_VERSION")
    local tmp="$ES_HOME/.staging"
    rm -rf "$tmp" "${ES_HOME:?}/lib" "$ES_HOME/modules/transport-netty4"
    mkdir -p "$tmp" "$ES_HOME/modules"
    # server + its runtime dependencies: the module path
    mvn_copy_deps "$ES_SRC" "$ES_HOME/lib" -Pserver "${m2[@]}"
    # entitlement bridge: patched into java.base (--patch-module), must NOT be on the module path
    mvn_copy_deps "$ES_SRC" "$ES_HOME/lib/entitlement-bridge" -Pbridge -DexcludeTransitive=true "${m2[@]}"
    # transport-netty4: its jars minus those already in lib/, plus the descriptor and
    # entitlement policy that the published jar carries under META-INF/es-plugins/
    mvn_copy_deps "$ES_SRC" "$tmp/netty" -Pnetty "${m2[@]}"
    local mod="$ES_HOME/modules/transport-netty4" j
    mkdir -p "$mod"
    for j in "$tmp/netty"/*.jar; do
        [[ -e "$ES_HOME/lib/$(basename "$j")" ]] || mv "$j" "$mod/"
    done
    (cd "$tmp" && "$JDK/jar" xf "$mod/transport-netty4-$ES_VERSION.jar" META-INF/es-plugins/transport-netty4)
    cp "$tmp/META-INF/es-plugins/transport-netty4/"* "$mod/"
    [[ -f "$mod/plugin-descriptor.properties" ]] ||
        die "transport-netty4-$ES_VERSION.jar has no META-INF/es-plugins/transport-netty4/plugin-descriptor.properties"
    rm -rf "$tmp"
    jars_stamp >"$ES_HOME/.jars.sha256"
}

install_build() {
    local src="$ES_SRC/src/agentlog/es" out="$ES_HOME/.build" jv=(--release "$ES_MIN_JAVA" -nowarn -Xlint:none)
    rm -rf "$out" "$ES_HOME/launcher" "$ES_HOME/lib/entitlement-agent" "$ES_HOME/lib/tools" "$ES_HOME/modules/agentlog-rest-root"
    mkdir -p "$out"/{launcher,agent,root} "$ES_HOME/lib/entitlement-agent" "$ES_HOME/modules/agentlog-rest-root"
    # the ES jars are modular; compiling against them on the class path is fine for
    # code that runs in the unnamed module (launcher, agent, classic plugin)
    "$JDK/javac" "${jv[@]}" -cp "$ES_HOME/lib/*" -d "$ES_HOME/launcher" "$src/Launcher.java"
    "$JDK/javac" "${jv[@]}" -d "$out/agent" "$src/EntitlementAgent.java"
    printf 'Agent-Class: agentlog.es.EntitlementAgent\nCan-Retransform-Classes: true\nCan-Redefine-Classes: true\n' \
        >"$out/agent.mf"
    "$JDK/jar" --create --file "$ES_HOME/lib/entitlement-agent/agentlog-entitlement-agent.jar" \
        --manifest "$out/agent.mf" -C "$out/agent" .
    "$JDK/javac" "${jv[@]}" -cp "$ES_HOME/lib/*" -d "$out/root" "$src/rootinfo/RootInfoPlugin.java"
    "$JDK/jar" --create --file "$ES_HOME/modules/agentlog-rest-root/agentlog-rest-root.jar" -C "$out/root" .
    cat >"$ES_HOME/modules/agentlog-rest-root/plugin-descriptor.properties" <<EOF
description=GET / info endpoint (stand-in for the rest-root module, which is not on Maven Central)
version=$ES_VERSION
name=agentlog-rest-root
classname=agentlog.es.rootinfo.RootInfoPlugin
java.version=$ES_MIN_JAVA
elasticsearch.version=$ES_VERSION
EOF
    # the node loads org.elasticsearch.io.ansi.AnsiConsoleLoader from lib/tools/ansi-console/
    mkdir -p "$out/ansi" "$ES_HOME/lib/tools/ansi-console"
    "$JDK/javac" "${jv[@]}" -d "$out/ansi" "$ES_SRC/src/org/elasticsearch/io/ansi/AnsiConsoleLoader.java"
    "$JDK/jar" --create --file "$ES_HOME/lib/tools/ansi-console/agentlog-ansi-console.jar" -C "$out/ansi" .
    rm -rf "$out"

    # config/ (elasticsearch.yml reads ${AGENTLOG_ES_*} from the environment)
    rm -rf "$ES_HOME/config"
    cp -r "$ES_SRC/config" "$ES_HOME/config"
    mkdir -p "$ES_HOME/plugins"

    # native zstd (ES compresses stored fields with it): the distribution ships
    # lib/platform/<os-arch>/libzstd.so; we point that at Debian's libzstd1.
    local plat zstd
    case "$(uname -m)" in
    x86_64) plat=linux-x64 ;;
    aarch64) plat=linux-aarch64 ;;
    *) plat="linux-$(uname -m)" ;;
    esac
    zstd="$(ldconfig -p 2>/dev/null | awk '/libzstd\.so\.1 / && /x86-64|AArch64/ {print $NF; exit}')"
    if [[ -z "$zstd" ]]; then
        apt_install libzstd1
        zstd="$(ldconfig -p | awk '/libzstd\.so\.1 / {print $NF; exit}')"
    fi
    [[ -n "$zstd" ]] || die "libzstd.so.1 not found (apt-get install libzstd1)"
    mkdir -p "$ES_HOME/lib/platform/$plat"
    ln -sfn "$zstd" "$ES_HOME/lib/platform/$plat/libzstd.so"

    build_stamp >"$ES_HOME/.build.sha256"
}

cmd_install() {
    JDK="$(jdk_bin)"
    if installed; then
        return 0
    fi
    mkdir -p "$ES_HOME"
    jars_ready || install_jars
    install_build
    info "Elasticsearch $ES_VERSION installed in $ES_HOME (JDK: $JDK)"
}

# --- start -------------------------------------------------------------------------
ensure_user() {
    id -u "$ES_USER" >/dev/null 2>&1 && return 0
    [[ $EUID -eq 0 ]] || die "need root to create the user $ES_USER"
    info "creating system user $ES_USER (Elasticsearch refuses to run as root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$ES_USER"
}

as_es_user() { setpriv --reuid="$ES_USER" --regid="$ES_USER" --init-groups -- "$@"; }

# The node runs as $ES_USER: it must reach the jars (read) and the state dir (write).
check_access() {
    local d="$ES_STATE"
    if ! as_es_user test -r "$ES_HOME/lib/elasticsearch-$ES_VERSION.jar" -a -w "$ES_STATE/data"; then
        while [[ "$d" != / ]]; do
            as_es_user test -x "$d" 2>/dev/null || break
            d="$(dirname "$d")"
        done
        die "user $ES_USER cannot use $AGENTLOG_HOME (no access to $d; mode $(stat -c %A "$d" 2>/dev/null))." \
            "Move the checkout / AGENTLOG_HOME somewhere world-traversable (e.g. /srv, /opt, /work), or chmod o+x that directory."
    fi
}

java_cmd() {
    local java="$JDK/java" feature
    feature="$(java_major "$java")"
    local opts=()
    mapfile -t opts < <(grep -Ev '^[[:space:]]*(#|$)' "$ES_HOME/config/jvm.options")
    # server-cli enables nativeaccess+lucene; 9.5 also loads libraries from the foreign* modules
    local modules=org.elasticsearch.nativeaccess,org.elasticsearch.foreign,org.elasticsearch.foreign.adapter
    modules+=,org.elasticsearch.simdvec,org.apache.lucene.core
    local native=("--enable-native-access=$modules" --enable-native-access=ALL-UNNAMED)
    ((feature >= 24)) && native+=(--illegal-native-access=deny)
    printf '%s\0' "$java" \
        "-Xms$ES_HEAP" "-Xmx$ES_HEAP" "${opts[@]}" \
        "-Djava.io.tmpdir=$ES_STATE/tmp" \
        "-XX:ErrorFile=$ES_STATE/logs/hs_err_pid%p.log" \
        "-XX:ReplayDataFile=$ES_STATE/logs/replay_pid%p.log" \
        "-Dorg.apache.lucene.vectorization.upperJavaFeatureVersion=$feature" \
        "-Des.path.home=$ES_HOME" "-Des.path.conf=$ES_HOME/config" \
        "${native[@]}" \
        -Des.entitlements.enabled=true -XX:+EnableDynamicAgentLoading -Djdk.attach.allowAttachSelf=true \
        "--patch-module=java.base=$(ls "$ES_HOME"/lib/entitlement-bridge/*.jar)" \
        --add-exports=java.base/org.elasticsearch.entitlement.bridge=org.elasticsearch.entitlement,java.logging,java.net.http,java.naming,jdk.net \
        --module-path "$ES_HOME/lib" --add-modules=jdk.net --add-modules=ALL-MODULE-PATH \
        --add-opens=org.elasticsearch.server/org.elasticsearch.bootstrap=ALL-UNNAMED \
        -cp "$ES_HOME/launcher" agentlog.es.Launcher
}

cmd_start() {
    if is_running elasticsearch; then
        info "already running (pid $(read_pid elasticsearch))"
        return 0
    fi
    rm -f "$(pid_file elasticsearch)"
    if port_open "$ES_HOST" "$ES_PORT"; then
        curl -fsSI -m 5 "http://$ES_HOST:$ES_PORT/" 2>/dev/null | grep -qi '^x-elastic-product: *Elasticsearch' ||
            die "$ES_HOST:$ES_PORT is taken by something that is not Elasticsearch (set AGENTLOG_ES_PORT)"
        info "Elasticsearch already answers on $ES_HOST:$ES_PORT; reusing it"
        return 0
    fi
    installed || cmd_install
    JDK="$(jdk_bin)"
    ensure_user
    mkdir -p "$ES_STATE"/{data,logs,tmp}
    find "$ES_STATE" \! -user "$ES_USER" -exec chown -h "$ES_USER:$ES_USER" {} +
    check_access
    # keep one previous log; a fresh log makes failures easy to read
    [[ -f "$ES_LOG" ]] && mv -f "$ES_LOG" "$ES_LOG.1"
    export AGENTLOG_ES_PORT="$ES_PORT" AGENTLOG_ES_TRANSPORT_PORT="$ES_TRANSPORT_PORT" \
        AGENTLOG_ES_STATE="$ES_STATE" LIBFFI_TMPDIR="$ES_STATE/tmp"
    local -a jcmd
    mapfile -d '' jcmd < <(java_cmd)
    info "starting Elasticsearch $ES_VERSION on $ES_HOST:$ES_PORT (transport :$ES_TRANSPORT_PORT, heap $ES_HEAP, $("${jcmd[0]}" -version 2>&1 | head -n1))"
    cd "$ES_HOME" # the distribution runs the node from its home
    ulimit -n 65535 2>/dev/null || true # bootstrap-check advice; a warning only on loopback
    start_daemon elasticsearch "$ES_LOG" setpriv --reuid="$ES_USER" --regid="$ES_USER" --init-groups -- "${jcmd[@]}"
}

cmd_stop() {
    if is_running elasticsearch; then
        info "stopping (pid $(read_pid elasticsearch))"
        stop_daemon elasticsearch 60
    elif port_open "$ES_HOST" "$ES_PORT"; then
        info "$ES_HOST:$ES_PORT is served by a process we did not start; leaving it"
    fi
    rm -f "$(pid_file elasticsearch)"
}

cmd_health() {
    curl -fsS -m 5 "http://$ES_HOST:$ES_PORT/_cluster/health" 2>/dev/null |
        grep -Eq '"status"[[:space:]]*:[[:space:]]*"(green|yellow)"'
}

cmd_status() {
    local state=stopped
    if is_running elasticsearch; then
        state=running
    elif port_open "$ES_HOST" "$ES_PORT"; then
        state=reused
    fi
    status_line elasticsearch "$ES_HOST" "$ES_PORT" "$state"
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
