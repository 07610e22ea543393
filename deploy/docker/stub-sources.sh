#!/bin/sh
# The Dockerfile's dependency layer: empty sources for every workspace
# member found under the current directory (a library, a program, and
# each test its manifest names), so that cargo builds the dependencies
# from the manifests and the lock file alone; then removed again before
# the real sources are copied. tests/tests/compose.rs runs it on a copy of
# the manifests and checks that cargo loads the workspace from them.
#
#   sh deploy/docker/stub-sources.sh create | remove
set -eu
members=$(find . -name Cargo.toml -not -path ./Cargo.toml -exec dirname {} \;)
case ${1:-} in
    create)
        for member in $members; do
            mkdir -p "$member/src"
            : >"$member/src/lib.rs"
            echo 'fn main() {}' >"$member/src/main.rs"
            for test in $(sed -n '/^\[\[test\]\]/,/^$/s/^name = "\(.*\)"/\1/p' "$member/Cargo.toml"); do
                mkdir -p "$member/tests"
                : >"$member/tests/$test.rs"
            done
        done
        ;;
    remove)
        for member in $members; do
            rm -rf "$member/src" "$member/tests"
        done
        ;;
    *)
        echo "usage: stub-sources.sh create | remove" >&2
        exit 2
        ;;
esac
