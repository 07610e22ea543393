# PostgreSQL for the tests: sourced by scripts (not run), it defines
#
#   wallet_pg_url       the server URL the tests use
#   wallet_pg_answers   true when a server answers at that URL
#   wallet_pg_ensure    makes one answer: starts the local cluster, installing
#                       PostgreSQL first where it is missing; exports
#                       WALLET_TEST_DATABASE_URL
#   wallet_pg_drop_test_databases
#                       drops every database the tests made (wcpg_test_*),
#                       and their roles
#
# The URL is $WALLET_TEST_DATABASE_URL, by default
# postgres://postgres@127.0.0.1:5432/postgres (the local cluster, trust
# authentication for local TCP connections as Debian sets it up). A server
# elsewhere is only checked, never started.

WALLET_PG_DEFAULT_URL="postgres://postgres@127.0.0.1:5432/postgres"

wallet_pg_url() {
    printf '%s\n' "${WALLET_TEST_DATABASE_URL:-$WALLET_PG_DEFAULT_URL}"
}

wallet_pg_answers() {
    local url
    url=$(wallet_pg_url)
    if command -v psql >/dev/null 2>&1; then
        psql "$url" -XAtqc 'SELECT 1' >/dev/null 2>&1
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -d "$url" -q
    else
        return 1
    fi
}

# The newest installed major version with a "main" cluster, e.g. 15.
wallet_pg_cluster_version() {
    local version
    for version in $(ls /etc/postgresql 2>/dev/null | sort -rn); do
        if [ -d "/etc/postgresql/$version/main" ]; then
            printf '%s\n' "$version"
            return 0
        fi
    done
    return 1
}

wallet_pg_install() {
    echo "PostgreSQL is not installed: installing it with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql
}

wallet_pg_ensure() {
    local url version tries
    url=$(wallet_pg_url)
    export WALLET_TEST_DATABASE_URL="$url"
    if wallet_pg_answers; then
        return 0
    fi
    case "$url" in
        *@127.0.0.1:5432/* | *@localhost:5432/* | *@127.0.0.1/* | *@localhost/*) ;;
        *)
            echo "no PostgreSQL answers at $url, and it is not the local cluster: start it" >&2
            return 1
            ;;
    esac
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! wallet_pg_cluster_version >/dev/null; then
        wallet_pg_install
    fi
    version=$(wallet_pg_cluster_version) || {
        echo "PostgreSQL is installed but has no main cluster" >&2
        return 1
    }
    echo "starting the local PostgreSQL $version cluster" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for tries in $(seq 1 30); do
        if wallet_pg_answers; then
            return 0
        fi
        sleep 1
    done
    echo "PostgreSQL $version did not answer at $url after 30 s" >&2
    return 1
}

wallet_pg_drop_test_databases() {
    local url name
    url=$(wallet_pg_url)
    for name in $(psql "$url" -XAtqc "SELECT datname FROM pg_database WHERE datname LIKE 'wcpg\_test\_%'"); do
        psql "$url" -XAtqc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
    done
    # Their roles (<name>_owner, <name>_app) belong to the server.
    for name in $(psql "$url" -XAtqc "SELECT rolname FROM pg_roles WHERE rolname LIKE 'wcpg\_test\_%'"); do
        psql "$url" -XAtqc "DROP ROLE IF EXISTS \"$name\"" >/dev/null
    done
}
