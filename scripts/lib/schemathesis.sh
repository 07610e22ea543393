# shellcheck shell=bash
# Schemathesis, the API fuzzer of tests/tests/api_fuzz.rs, pinned, in a
# virtual environment of its own under the user's cache directory (made
# once, reused by every later run). Source this file, then:
#
#   ensure_schemathesis   # exports WALLET_SCHEMATHESIS, the path of its `st`
#
# Needs python3 (3.9 or later) with its venv module, and PyPI.

SCHEMATHESIS_VERSION=4.32.5

ensure_schemathesis() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/wallet-core/schemathesis-$SCHEMATHESIS_VERSION"
    local st=$venv/bin/st
    if ! [[ -x $st ]] || ! "$st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
        echo "installing Schemathesis $SCHEMATHESIS_VERSION into $venv (once)" >&2
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            local sudo=()
            [[ $(id -u) -eq 0 ]] || sudo=(sudo)
            "${sudo[@]}" apt-get update
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y python3-venv
        fi
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    WALLET_SCHEMATHESIS=$st
    export WALLET_SCHEMATHESIS
}
