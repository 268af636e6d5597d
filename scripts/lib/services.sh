# Sourced by scripts/test and scripts/run: makes sure PostgreSQL, Redis and RabbitMQ answer at
# DATABASE_URL, REDIS_URL and AMQP_URL, starting or installing them when they do not (see
# `ensure_services`). The sourcing script sets SCRIPT (its name, for messages) and ROOT.
#
# shellcheck shell=bash
# Server tools live in sbin; cargo may be installed by rustup without being on PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]]; then
    PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi
export PATH

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-60}"

section() { printf '\n==> %s\n' "$*"; }
log() { printf '    %s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$SCRIPT" "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
# URLs

urldecode() {
    local s="${1//+/ }"
    printf '%b' "${s//%/\\x}"
}

# parse_url URL DEFAULT_PORT: sets URL_HOST URL_PORT URL_USER URL_PASS URL_PATH
parse_url() {
    local rest="${1#*://}" authority userinfo=""
    authority="${rest%%[/?#]*}"
    rest="${rest:${#authority}}"
    URL_PATH="${rest%%[?#]*}"
    URL_PATH="${URL_PATH#/}"
    if [[ "$authority" == *@* ]]; then
        userinfo="${authority%@*}"
        authority="${authority##*@}"
    fi
    URL_USER="$(urldecode "${userinfo%%:*}")"
    URL_PASS=""
    if [[ "$userinfo" == *:* ]]; then URL_PASS="$(urldecode "${userinfo#*:}")"; fi
    if [[ "$authority" == \[* ]]; then # [v6]:port
        URL_HOST="${authority%%]*}"
        URL_HOST="${URL_HOST#[}"
        URL_PORT="${authority#*]}"
        URL_PORT="${URL_PORT#:}"
    else
        URL_HOST="${authority%%:*}"
        URL_PORT=""
        if [[ "$authority" == *:* ]]; then URL_PORT="${authority##*:}"; fi
    fi
    [[ -n "$URL_HOST" ]] || URL_HOST=localhost
    [[ -n "$URL_PORT" ]] || URL_PORT="$2"
}

parse_url "$DATABASE_URL" 5432
PG_HOST="$URL_HOST" PG_PORT="$URL_PORT" PG_USER="${URL_USER:-postgres}" PG_PASS="$URL_PASS" PG_DB="${URL_PATH:-postgres}"
parse_url "$REDIS_URL" 6379
REDIS_HOST="$URL_HOST" REDIS_PORT="$URL_PORT"
parse_url "$AMQP_URL" 5672
AMQP_HOST="$URL_HOST" AMQP_PORT="$URL_PORT"

service_host() {
    case "$1" in
        postgres) echo "$PG_HOST:$PG_PORT" ;;
        redis) echo "$REDIS_HOST:$REDIS_PORT" ;;
        rabbitmq) echo "$AMQP_HOST:$AMQP_PORT" ;;
    esac
}

is_local() {
    case "$1" in
        localhost | 127.* | ::1 | 0.0.0.0 | "$(hostname 2>/dev/null || echo localhost)") return 0 ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------------------
# Readiness checks: each one speaks the service's protocol, not just TCP.

# Sends $3 (printf format) to $1:$2 and prints the first $4 bytes of the answer as hex.
probe() {
    # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "$3" >&3 && head -c "$4" <&3' \
        _ "$1" "$2" "$3" "$4" 2>/dev/null | od -An -tx1 | tr -d ' \n'
}

postgres_ready() {
    if have pg_isready; then
        pg_isready -q -d "$DATABASE_URL" -t 2 >/dev/null 2>&1
    else
        # SSLRequest: a live postmaster answers 'S' (0x53) or 'N' (0x4e).
        local answer
        answer="$(probe "$PG_HOST" "$PG_PORT" '\x00\x00\x00\x08\x04\xd2\x16\x2f' 1)"
        [[ "$answer" == 53 || "$answer" == 4e ]]
    fi
}

redis_ready() {
    local out
    if have redis-cli; then
        out="$(timeout 3 redis-cli -u "$REDIS_URL" ping 2>/dev/null)" || return 1
        [[ "$out" == PONG || "$out" == NOAUTH* ]]
    else
        # "+PONG" (or "-NOAUTH" when a password is needed: the server is up all the same)
        out="$(probe "$REDIS_HOST" "$REDIS_PORT" 'PING\r\n' 5)"
        [[ "$out" == 2b504f4e47 || "$out" == 2d4e4f4155 ]]
    fi
}

RABBIT_STARTED_HERE=0
rabbitmq_ready() {
    # AMQP 0-9-1 handshake: the broker must answer the protocol header with a
    # Connection.Start method frame (type 1, channel 0, class 10, method 10). Its
    # listener only opens once the broker has booted, unlike a bare TCP check of a
    # port that a proxy (docker) may already accept.
    [[ "$(probe "$AMQP_HOST" "$AMQP_PORT" 'AMQP\x00\x00\x09\x01' 11)" == 010000????????000a000a ]] || return 1
    if [[ "$RABBIT_STARTED_HERE" == 1 ]] && have rabbitmq-diagnostics; then
        timeout 15 rabbitmq-diagnostics -q check_running >/dev/null 2>&1
    fi
}

ready() { "${1}_ready"; }

# wait_for SERVICE: polls every 0.5 s until it answers or SERVICES_TIMEOUT passes.
wait_for() {
    local svc="$1" start=$SECONDS
    local deadline=$((SECONDS + SERVICES_TIMEOUT))
    log "waiting for $svc at $(service_host "$svc") (up to ${SERVICES_TIMEOUT} s)"
    until ready "$svc"; do
        if ((SECONDS >= deadline)); then
            printf '%s: error: %s did not come up at %s within %s s\n' "$SCRIPT" \
                "$svc" "$(service_host "$svc")" "$SERVICES_TIMEOUT" >&2
            case "$svc" in
                postgres) echo "    see /var/log/postgresql/ (or 'docker compose logs postgres')" >&2 ;;
                redis) echo "    try running redis-server in the foreground to see why (or 'docker compose logs redis')" >&2 ;;
                rabbitmq) echo "    see /var/log/rabbitmq/ (or 'docker compose logs rabbitmq')" >&2 ;;
            esac
            exit 1
        fi
        sleep 0.5
    done
    log "$svc is up (after $((SECONDS - start)) s)"
}

# ---------------------------------------------------------------------------
# Ways to start a service

COMPOSE=()
docker_usable() {
    have docker && timeout 20 docker info >/dev/null 2>&1 || return 1
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif have docker-compose; then
        COMPOSE=(docker-compose)
    else
        return 1
    fi
}

server_installed() {
    case "$1" in
        postgres) have pg_ctlcluster && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null ;;
        redis) have redis-server ;;
        rabbitmq) have rabbitmq-server ;;
    esac
}

package_of() {
    case "$1" in
        postgres) echo postgresql ;;
        redis) echo redis-server ;;
        rabbitmq) echo rabbitmq-server ;;
    esac
}

start_postgres() {
    local versions=() d version
    for d in /etc/postgresql/*/main; do
        [[ -d "$d" ]] && versions+=("$(basename "$(dirname "$d")")")
    done
    if ((${#versions[@]} == 0)); then
        # Installed without a cluster: create the default one.
        for d in /usr/lib/postgresql/*/bin/postgres; do
            versions+=("$(basename "$(dirname "$(dirname "$d")")")")
        done
        version="$(printf '%s\n' "${versions[@]}" | sort -V | tail -n 1)"
        log "creating PostgreSQL $version cluster 'main'"
        pg_createcluster "$version" main || true
    else
        version="$(printf '%s\n' "${versions[@]}" | sort -V | tail -n 1)"
    fi
    log "starting PostgreSQL $version: pg_ctlcluster --skip-systemctl-redirect $version main start"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        log "pg_ctlcluster failed (see above); waiting anyway in case it is starting"
}

start_redis() {
    log "starting redis-server on port $REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no ||
        log "redis-server failed (see above); waiting anyway"
}

start_rabbitmq() {
    log "starting rabbitmq-server -detached"
    RABBIT_STARTED_HERE=1
    rabbitmq-server -detached || log "rabbitmq-server failed (see above); waiting anyway"
}

# Makes the credentials in DATABASE_URL work on a freshly installed PostgreSQL.
set_postgres_password() {
    local user_ident="\"${PG_USER//\"/\"\"}\"" pass_lit="'${PG_PASS//\'/\'\'}'"
    local db_lit="'${PG_DB//\'/\'\'}'"
    log "setting the password of PostgreSQL role $PG_USER from DATABASE_URL"
    su postgres -s /bin/sh -c 'psql -X -q -v ON_ERROR_STOP=1' <<SQL || log "could not set it (see above)"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${PG_USER//\'/\'\'}') THEN
    CREATE ROLE $user_ident LOGIN SUPERUSER;
  END IF;
END \$\$;
ALTER ROLE $user_ident WITH PASSWORD $pass_lit;
SELECT format('CREATE DATABASE %I OWNER %I', $db_lit, '${PG_USER//\'/\'\'}')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = $db_lit) \gexec
SQL
}

how_to_provide() {
    local svc="$1" url
    case "$svc" in
        postgres) url="DATABASE_URL" ;;
        redis) url="REDIS_URL" ;;
        rabbitmq) url="AMQP_URL" ;;
    esac
    printf '  - %s: nothing answers at %s (%s).\n' "$svc" "$(service_host "$svc")" "$url" >&2
    printf "      provide it by one of: starting a Docker engine (then 'docker compose up -d %s'),\n" "$svc" >&2
    printf "      'sudo apt-get install %s' (then rerun this script),\n" "$(package_of "$svc")" >&2
    printf '      or pointing %s at a running server.\n' "$url" >&2
}

# How each service came to answer: running (found so), compose or package.
# suite restarts each the same way.
declare -A PROVIDED_BY=()

ensure_services() {
    section "checking services"
    local svc missing=()
    for svc in postgres redis rabbitmq; do
        if ready "$svc"; then
            PROVIDED_BY[$svc]=running
            log "$svc: already answering at $(service_host "$svc")"
        else
            log "$svc: not answering at $(service_host "$svc")"
            missing+=("$svc")
        fi
    done
    ((${#missing[@]} > 0)) || return 0

    # A server on another host cannot be started from here.
    local remote=()
    for svc in "${missing[@]}"; do
        is_local "$(service_host "$svc" | sed 's/:[0-9]*$//')" || remote+=("$svc")
    done
    if ((${#remote[@]} > 0)); then
        echo "$SCRIPT: error: these services are not on this machine and do not answer:" >&2
        for svc in "${remote[@]}"; do how_to_provide "$svc"; done
        exit 1
    fi

    if docker_usable; then
        section "starting ${missing[*]} with ${COMPOSE[*]}"
        "${COMPOSE[@]}" up -d "${missing[@]}"
        for svc in "${missing[@]}"; do PROVIDED_BY[$svc]=compose; done
        for svc in "${missing[@]}"; do wait_for "$svc"; done
        return 0
    fi

    local to_start=() to_install=() unavailable=()
    for svc in "${missing[@]}"; do
        if server_installed "$svc"; then
            to_start+=("$svc")
        elif [[ "$(id -u)" == 0 ]] && have apt-get; then
            to_install+=("$svc")
        else
            unavailable+=("$svc")
        fi
    done
    if ((${#unavailable[@]} > 0)); then
        echo "$SCRIPT: error: cannot provide these services (no Docker engine, no installed server, not root with apt-get):" >&2
        for svc in "${unavailable[@]}"; do how_to_provide "$svc"; done
        exit 1
    fi

    if ((${#to_install[@]} > 0)); then
        local packages=()
        for svc in "${to_install[@]}"; do packages+=("$(package_of "$svc")"); done
        section "installing ${packages[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${packages[@]}"
    fi

    section "starting ${missing[*]}"
    for svc in "${missing[@]}"; do
        PROVIDED_BY[$svc]=package
        # A package's install scripts may have started it already.
        if ready "$svc"; then
            log "$svc: answering now"
            continue
        fi
        "start_$svc"
    done
    for svc in "${missing[@]}"; do wait_for "$svc"; done

    for svc in "${to_install[@]}"; do
        if [[ "$svc" == postgres ]]; then set_postgres_password; fi
    done
}

check_postgres_login() {
    have psql || return 0
    local err
    if ! err="$(PGCONNECT_TIMEOUT=5 psql "$DATABASE_URL" -X -Atq -c 'SELECT 1' 2>&1 >/dev/null)"; then
        die "PostgreSQL answers at $PG_HOST:$PG_PORT but DATABASE_URL does not log in: $err"
    fi
}

# database_url NAME: DATABASE_URL with its database replaced by NAME (its query string kept).
database_url() {
    local base="${2:-$DATABASE_URL}" url
    url="${base%%\?*}"
    url="${url%/*}/$1"
    [[ "$base" == *\?* ]] && url="$url?${base#*\?}"
    printf '%s\n' "$url"
}

# http_ok URL: the URL answers 2xx within 2 s.
http_ok() {
    if have curl; then
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
    fi
}

# wait_ready URL PID SECONDS: polls URL every 0.5 s until it answers (0), the process PID ends
# (1), or SECONDS pass (2, after sending the process Ctrl-C).
wait_ready() {
    local deadline=$((SECONDS + $3))
    # The process first: another one answering at URL must not pass for it.
    until kill -0 "$2" 2>/dev/null && http_ok "$1"; do
        kill -0 "$2" 2>/dev/null || return 1
        if ((SECONDS >= deadline)); then
            kill -INT "$2" 2>/dev/null || true
            return 2
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# The read replica: a streaming copy of the primary at DATABASE_URL (pg_basebackup -R into its
# own data directory, on its own port, run with the same server binaries), at
# DATABASE_REPLICA_URL. Reads that may lag go to it (docs/operations.md: Read replica).

REPLICA_PORT="${REPLICA_PORT:-5433}"
# The primary's URL on the replica's port, unless given.
replica_url_default() {
    local url="$DATABASE_URL"
    printf '%s\n' "${url/@$PG_HOST:$PG_PORT/@$PG_HOST:$REPLICA_PORT}"
}
export DATABASE_REPLICA_URL="${DATABASE_REPLICA_URL:-$(replica_url_default)}"

replica_ready() {
    have pg_isready && pg_isready -q -d "$DATABASE_REPLICA_URL" -t 2 >/dev/null 2>&1
}

# The replica's data directory: the Postgres user's when running as root (the server refuses to
# run as root), the user's own state directory otherwise.
replica_dir() {
    if [[ -n "${REPLICA_DIR:-}" ]]; then
        printf '%s\n' "$REPLICA_DIR"
    elif [[ "$(id -u)" == 0 ]]; then
        printf '%s\n' "$(getent passwd postgres | cut -d: -f6)/darkstores-replica"
    else
        printf '%s\n' "${XDG_STATE_HOME:-$HOME/.local/state}/darkstores/postgres-replica"
    fi
}

# as_postgres CMD...: runs CMD as the Postgres user when running as root.
as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Lets the local primary take replication connections from 127.0.0.1, as it takes the others
# from there, when its pg_hba.conf has no line for them; reloads it (no restart).
allow_replication() {
    local hba method
    hba="$(psql "$DATABASE_URL" -XAtc 'SHOW hba_file' 2>/dev/null)" || return 1
    [[ -w "$hba" ]] || return 1
    grep -Eq '^[[:space:]]*host[[:space:]]+replication[[:space:]]' "$hba" && return 0
    method="$(awk '$1 == "host" && $2 == "all" && $4 == "127.0.0.1/32" { print $5; exit }' "$hba")"
    [[ -n "$method" ]] || return 1
    log "letting the primary take replication connections from 127.0.0.1 ($method, as its other local"
    log "connections): a line added to $hba, and the configuration reloaded"
    printf '# Added by darkstores scripts: the read replica streams from here.\nhost replication all 127.0.0.1/32 %s\n' \
        "$method" >>"$hba"
    psql "$DATABASE_URL" -XAtqc 'SELECT pg_reload_conf()' >/dev/null
}

# replication_client CMD...: runs CMD, a client of the primary's replication protocol
# (pg_basebackup, pg_receivewal), as the Postgres user. When the primary refuses the replication
# connection, lets it take them (allow_replication) and runs CMD again.
replication_client() {
    local err
    err="$(mktemp)"
    if as_postgres "$@" 2>"$err"; then
        cat "$err" >&2
        rm -f "$err"
        return 0
    fi
    if grep -q 'replication connection' "$err" && allow_replication; then
        rm -f "$err"
        as_postgres "$@"
        return
    fi
    cat "$err" >&2
    rm -f "$err"
    log "the primary at $PG_HOST:$PG_PORT may refuse replication connections: let $PG_USER make them from"
    log "this host (pg_hba.conf: host replication all 127.0.0.1/32 <method>; the user needs REPLICATION)"
    return 1
}

# complete_config DIR: a copy of the primary (a replica, a restored backup) made by pg_basebackup
# holds no configuration when the primary keeps it elsewhere (Debian's, in /etc): the copy takes the
# primary's client authentication, and its own settings otherwise.
complete_config() {
    local dir="$1" file source
    for file in hba ident; do
        [[ -e "$dir/pg_$file.conf" ]] && continue
        source="$(psql "$DATABASE_URL" -XAtc "SHOW ${file}_file" 2>/dev/null)"
        if [[ -r "$source" ]]; then
            cp "$source" "$dir/pg_$file.conf"
        elif [[ "$file" == hba ]]; then
            printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$dir/pg_hba.conf"
        else
            : >"$dir/pg_ident.conf"
        fi
    done
    [[ -e "$dir/postgresql.conf" ]] || printf '# Settings in postgresql.auto.conf and on the command line.\n' >"$dir/postgresql.conf"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir"/*.conf
    return 0
}

# server_bin PROGRAM: the newest installed Postgres server's PROGRAM (pg_ctl, pg_basebackup, …).
server_bin() {
    local bin
    bin="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)"
    if [[ -n "$bin" && -x "$bin/$1" ]]; then
        printf '%s\n' "$bin/$1"
    elif have "$1"; then
        command -v "$1"
    else
        die "no $1: install Debian's postgresql (its server binaries)"
    fi
}

ensure_replica() {
    section "checking the read replica"
    local host port
    parse_url "$DATABASE_REPLICA_URL" "$REPLICA_PORT"
    host="$URL_HOST" port="$URL_PORT"
    if replica_ready; then
        [[ "$(psql "$DATABASE_REPLICA_URL" -XAtc 'SELECT pg_is_in_recovery()' 2>/dev/null)" == t ]] ||
            die "$host:$port answers but is not a replica (DATABASE_REPLICA_URL): point it at one, or free the port"
        log "replica: already answering at $host:$port"
        return 0
    fi
    is_local "$host" || die "the replica at $host:$port (DATABASE_REPLICA_URL) does not answer: start it"
    if [[ "${PROVIDED_BY[postgres]:-}" == compose ]]; then
        "${COMPOSE[@]}" up -d postgres-replica
    else
        local basebackup pg_ctl dir
        basebackup="$(server_bin pg_basebackup)"
        pg_ctl="$(server_bin pg_ctl)"
        dir="$(replica_dir)"
        if [[ ! -s "$dir/PG_VERSION" ]]; then
            log "copying the primary at $PG_HOST:$PG_PORT into $dir (pg_basebackup -R)"
            rm -rf "$dir"
            mkdir -p "$dir"
            [[ "$(id -u)" == 0 ]] && chown postgres: "$dir"
            chmod 700 "$dir"
            local copy=(env PGPASSWORD="$PG_PASS" "$basebackup" -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER"
                -D "$dir" -R -X stream -c fast)
            replication_client "${copy[@]}" ||
                die "pg_basebackup failed (above); or set DATABASE_REPLICA_URL to a replica"
            complete_config "$dir"
        fi
        log "starting the replica on port $port: $pg_ctl -D $dir start"
        as_postgres "$pg_ctl" -D "$dir" -l "$dir/replica.log" -w -t "$SERVICES_TIMEOUT" \
            -o "-p $port -c listen_addresses=$host -k $dir" start >/dev/null ||
            die "the replica did not start: see $dir/replica.log"
    fi
    local deadline=$((SECONDS + SERVICES_TIMEOUT))
    until replica_ready; do
        ((SECONDS < deadline)) || die "the replica did not answer at $host:$port within $SERVICES_TIMEOUT s"
        sleep 0.5
    done
    log "replica: up at $host:$port, streaming from $PG_HOST:$PG_PORT"
}
