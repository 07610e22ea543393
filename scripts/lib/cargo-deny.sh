# shellcheck shell=bash
# cargo-deny, which checks the dependency tree's licences, bans and
# sources against deny.toml. Source this file, then:
#
#   ensure_cargo_deny   # installs it into cargo's bin directory once
#   cargo deny check licenses bans sources
#
# Those three checks read only Cargo.lock and the crates' manifests: no
# network once the crates are fetched (the advisories check, not run,
# would fetch its database).

CARGO_DENY_VERSION=0.20.2

# cargo-deny $CARGO_DENY_VERSION, installed into cargo's bin directory when
# that version is not there (a few minutes on two idle cores; 25 on a busy
# pair).
ensure_cargo_deny() {
    if [[ $(cargo deny --version 2>/dev/null) == "cargo-deny $CARGO_DENY_VERSION" ]]; then
        return
    fi
    echo "installing cargo-deny $CARGO_DENY_VERSION (once)" >&2
    # Built in a directory of its own, not the workspace's target.
    env -u CARGO_TARGET_DIR cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
}
