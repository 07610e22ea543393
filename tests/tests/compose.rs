//! `docker-compose.yml` and the `Dockerfile` against the system as
//! `scripts/stack` runs it and as the services read their settings,
//! without Docker: the same services, on the same ports, databases and
//! runtime roles; every variable a service is given is one it reads, and
//! every one `scripts/stack` gives it is given here too; every service is
//! built from the one Dockerfile with a binary that exists, is healthy by
//! its `/readyz`, and starts after what it needs is healthy (or, for the
//! migrations, done).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

/// A file of the repository, as text.
fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The compose file as YAML, with its merge keys (`<<: *anchor`) applied.
fn compose(text: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(text).expect("docker-compose.yml is YAML");
    merged(docs.into_iter().next().expect("one document"))
}

/// `node` with every mapping's `<<` entries merged into it (its own keys
/// win), as Compose reads them.
fn merged(node: Yaml) -> Yaml {
    match node {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let merge_key = Yaml::String("<<".into());
            if let Some(base) = hash.get(&merge_key) {
                let bases = match base {
                    Yaml::Array(list) => list.clone(),
                    one => vec![one.clone()],
                };
                for base in bases {
                    if let Yaml::Hash(base) = merged(base) {
                        out.extend(base);
                    }
                }
            }
            for (key, value) in hash {
                if key != merge_key {
                    out.insert(key, merged(value));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.into_iter().map(merged).collect()),
        other => other,
    }
}

/// The keys of a mapping, as text.
fn keys(node: &Yaml) -> BTreeSet<String> {
    node.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A mapping's string (or number) values by key, as text.
fn strings(node: &Yaml) -> BTreeMap<String, String> {
    let text = |v: &Yaml| match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    node.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), text(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The services `scripts/stack` runs, by their short name (`wallet`), in
/// its start order.
fn stack_services(stack: &str) -> Vec<String> {
    let line = stack
        .lines()
        .find_map(|l| l.trim().strip_prefix("services=("))
        .expect("scripts/stack lists its services");
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A service's default port in `scripts/stack` (`port_of`'s case).
fn stack_port(stack: &str, service: &str) -> u16 {
    let arm = format!(" {service}) base=");
    stack
        .lines()
        .find_map(|l| l.split_once(&arm).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("scripts/stack has no port for {service}"))
        .parse()
        .expect("a port")
}

/// The variables `scripts/stack`'s `start_service` exports to a service:
/// those of every service, and those of its branch (`wallet`, or the
/// others).
fn stack_env(stack: &str, service: &str) -> BTreeSet<String> {
    let body: Vec<&str> = stack
        .lines()
        .skip_while(|l| !l.starts_with("start_service()"))
        .take_while(|l| *l != "}")
        .collect();
    assert!(!body.is_empty(), "scripts/stack has no start_service");
    // None: every service; Some(true): the wallet's branch; Some(false):
    // the others'.
    let mut branch: Option<bool> = None;
    let mut names = BTreeSet::new();
    for line in body.iter().map(|l| l.trim()) {
        if line.starts_with("if [[ $service == wallet ]]") {
            branch = Some(true);
        } else if line == "else" {
            branch = Some(false);
        } else if line == "fi" {
            branch = None;
        } else if let Some(rest) = line.strip_prefix("export ") {
            let name = rest.split('=').next().unwrap().trim().to_owned();
            if branch.is_none_or(|wallet| wallet == (service == "wallet")) {
                names.insert(name);
            }
        }
    }
    names
}

/// The environment variables each settings group of
/// `apps/wallet-server/src/settings.rs` reads, by the group's type name.
fn settings_groups(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in source.lines() {
        if let Some(name) = line.strip_prefix("pub struct ") {
            current = Some(name.trim_end_matches(" {").trim().to_owned());
        } else if line.starts_with('}') {
            current = None;
        } else if let (Some(group), Some(at)) = (&current, line.find("env = \"")) {
            let rest = &line[at + 7..];
            let name = &rest[..rest.find('"').expect("a closing quote")];
            groups
                .entry(group.clone())
                .or_default()
                .insert(name.to_owned());
        }
    }
    groups
}

/// The variables a service binary reads: those of the settings groups its
/// `Args` flattens (`common: Common`, ...).
fn service_reads(binary: &str, groups: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let source = read(&format!("apps/wallet-server/src/bin/{binary}.rs"));
    let args: String = source
        .split("struct Args {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("{binary} has no Args"))
        .to_owned();
    let mut reads = BTreeSet::new();
    for line in args.lines() {
        if let Some((_, ty)) = line.trim().trim_end_matches(',').split_once(": ") {
            let group = groups
                .get(ty.trim())
                .unwrap_or_else(|| panic!("{binary}: no settings group {ty}"));
            reads.extend(group.iter().cloned());
        }
    }
    assert!(reads.contains("DATABASE_URL"), "{binary} reads {reads:?}");
    reads
}

/// The workspace's binaries: each program of `apps/*` (`src/main.rs`,
/// named after its package) and each of `src/bin/`.
fn binaries() -> BTreeSet<String> {
    let apps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../apps");
    let mut names = BTreeSet::new();
    for app in std::fs::read_dir(&apps).expect("apps/") {
        let dir = app.expect("an entry").path();
        if dir.join("src/main.rs").exists() {
            names.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        if let Ok(bins) = std::fs::read_dir(dir.join("src/bin")) {
            for bin in bins {
                let path = bin.expect("an entry").path();
                names.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    names
}

/// The port of an address such as `0.0.0.0:8082` or `http://host:9082`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

/// What a compose file disagrees with: one line per finding.
fn findings(compose_text: &str) -> Vec<String> {
    let stack = read("scripts/stack");
    let dockerfile = read("Dockerfile");
    let groups = settings_groups(&read("apps/wallet-server/src/settings.rs"));
    let binaries = binaries();
    let file = compose(compose_text);
    let services = &file["services"];
    let mut found = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            found.push(what);
        }
    };

    // The same services as scripts/stack, and the infrastructure they need.
    let expected: BTreeSet<String> = stack_services(&stack)
        .iter()
        .map(|s| format!("{s}-service"))
        .chain(["postgres", "kafka", "migrate", "gateway"].map(String::from))
        .collect();
    check(
        keys(services) == expected,
        format!("services {:?}, expected {expected:?}", keys(services)),
    );

    // Every image of the system's own is built from the one Dockerfile,
    // with a binary that exists.
    for (name, service) in services.as_hash().into_iter().flatten() {
        let name = name.as_str().unwrap_or("?");
        let build = &service["build"];
        if build.is_badvalue() {
            continue;
        }
        let build_strings = strings(build);
        check(
            build_strings.get("dockerfile").map(String::as_str) == Some("Dockerfile")
                && build_strings.get("context").map(String::as_str) == Some("."),
            format!("{name} is not built from ./Dockerfile: {build_strings:?}"),
        );
        let bin = build["args"]["BIN"].as_str().unwrap_or("");
        check(
            binaries.contains(bin),
            format!("{name} builds BIN={bin:?}, not one of {binaries:?}"),
        );
    }
    check(
        strings(&services["migrate"]["build"]["args"]).get("BIN") == Some(&"walletctl".into()),
        "migrate does not run walletctl".into(),
    );
    let command: Vec<&str> = services["migrate"]["command"]
        .as_vec()
        .map(|c| c.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default();
    check(
        command.first() == Some(&"migrate"),
        format!("migrate runs {command:?}"),
    );

    // PostgreSQL and the broker report their own health.
    for infra in ["postgres", "kafka"] {
        check(
            !services[infra]["healthcheck"]["test"].is_badvalue(),
            format!("{infra} has no healthcheck"),
        );
    }

    for short in stack_services(&stack) {
        let name = format!("{short}-service");
        let service = &services[name.as_str()];
        check(
            service["build"]["args"]["BIN"].as_str() == Some(name.as_str()),
            format!("{name} does not build its own binary"),
        );
        let env = strings(&service["environment"]);
        let given: BTreeSet<String> = env.keys().cloned().collect();

        // Each variable given is one the binary reads.
        let reads = service_reads(&name, &groups);
        for var in given.difference(&reads) {
            check(
                false,
                format!("{name} is given {var}, which it does not read"),
            );
        }
        // Each one scripts/stack gives it is given here too, but for its
        // logging and pool size, which are the machine's to choose.
        for var in stack_env(&stack, &short) {
            if var == "RUST_LOG" || var == "DB_MAX_CONNECTIONS" {
                continue;
            }
            check(
                given.contains(&var),
                format!("{name}: scripts/stack gives {var}, the compose file does not"),
            );
        }

        // Its port, database and runtime role, as scripts/stack's.
        let port = stack_port(&stack, &short);
        let listen = env.get("LISTEN").cloned().unwrap_or_default();
        check(
            port_of(&listen) == port,
            format!("{name} listens on {listen}, scripts/stack on {port}"),
        );
        let url = env.get("DATABASE_URL").cloned().unwrap_or_default();
        check(
            url.starts_with(&format!("postgres://wallet_{short}_app:"))
                && url.ends_with(&format!("@postgres:5432/wallet_{short}")),
            format!("{name} connects as {url}, not as wallet_{short}_app to wallet_{short}"),
        );
        let flag =
            format!("--{short}-db=postgres://postgres:postgres@postgres:5432/wallet_{short}");
        check(
            command.contains(&flag.as_str()),
            format!("migrate does not prepare wallet_{short}: {command:?}"),
        );
        if short == "wallet" {
            let internal = env.get("INTERNAL_LISTEN").cloned().unwrap_or_default();
            check(
                port_of(&internal) == port + 1000,
                format!(
                    "{name}'s internal routes on {internal}, scripts/stack's on {}",
                    port + 1000
                ),
            );
        } else {
            let wallet = env.get("WALLET_SERVICE_URL").cloned().unwrap_or_default();
            check(
                wallet
                    == format!(
                        "http://wallet-service:{}",
                        stack_port(&stack, "wallet") + 1000
                    ),
                format!("{name} calls the wallet service at {wallet}"),
            );
        }

        // Healthy by its /readyz, on its own port.
        let test: Vec<&str> = service["healthcheck"]["test"]
            .as_vec()
            .map(|t| t.iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        let readyz = format!("http://127.0.0.1:{port}/readyz");
        check(
            test.contains(&readyz.as_str()),
            format!("{name}'s healthcheck {test:?} does not ask {readyz}"),
        );

        // Started once what it needs is healthy, and the migrations done.
        let depends = &service["depends_on"];
        for (needed, condition) in [
            ("postgres", "service_healthy"),
            ("kafka", "service_healthy"),
            ("migrate", "service_completed_successfully"),
        ] {
            check(
                depends[needed]["condition"].as_str() == Some(condition),
                format!("{name} does not wait for {needed} to be {condition}"),
            );
        }
        for (needed, on) in depends.as_hash().into_iter().flatten() {
            let needed = needed.as_str().unwrap_or("?");
            let condition = on["condition"].as_str().unwrap_or("none");
            let expected = if needed == "migrate" {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            check(
                condition == expected,
                format!("{name} waits for {needed} to be {condition}, not {expected}"),
            );
        }
        check(
            services["gateway"]["depends_on"][name.as_str()]["condition"].as_str()
                == Some("service_healthy"),
            format!("the gateway does not wait for {name} to be healthy"),
        );
    }
    check(
        services["migrate"]["depends_on"]["postgres"]["condition"].as_str()
            == Some("service_healthy"),
        "migrate does not wait for postgres to be healthy".into(),
    );

    // The Dockerfile's dependency layer copies every member's manifest.
    let members = read("Cargo.toml");
    let members = members
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("the workspace's members");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if member.is_empty() {
            continue;
        }
        check(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/\n")),
            format!("the Dockerfile does not copy {member}/Cargo.toml before the sources"),
        );
    }
    found
}

#[test]
fn the_compose_file_runs_the_stack_as_scripts_stack_does() {
    let found = findings(&read("docker-compose.yml"));
    assert!(
        found.is_empty(),
        "docker-compose.yml:\n{}",
        found.join("\n")
    );
}

#[test]
fn one_dockerfile_builds_every_binary() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut others = Vec::new();
    let mut dirs = vec![
        deploy,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../apps"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains("Dockerfile") {
                others.push(path);
            }
        }
    }
    assert!(
        others.is_empty(),
        "Dockerfiles besides ./Dockerfile: {others:?}"
    );
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("ARG BIN="),
        "the binary is a build argument"
    );
    assert!(
        dockerfile.contains("USER wallet"),
        "the image runs as a user of its own"
    );
    let ignored = read(".dockerignore");
    for path in ["target/", ".git", ".stack/"] {
        assert!(
            ignored.lines().any(|l| l == path),
            ".dockerignore lacks {path}"
        );
    }
}

/// The Dockerfile's dependency layer, without Docker: the files its
/// `COPY` lines before the sources bring (the lock file and the
/// manifests), the empty sources `deploy/docker/stub-sources.sh create`
/// makes, and cargo loads the workspace from them as the lock file has it
/// (`cargo fetch --locked --offline`: a member or a test target the layer
/// misses fails it); `remove` leaves only what was copied.
#[test]
fn the_dependency_layer_loads_the_workspace_from_the_manifests_alone() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = wallet_e2e::TempDir::new("docker-deps");
    let dockerfile = read("Dockerfile");
    let mut copied = BTreeSet::new();
    for line in dockerfile.lines().take_while(|l| !l.starts_with("RUN ")) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let mut args: Vec<&str> = args.split_whitespace().collect();
        let to = args.pop().expect("a destination");
        for from in args {
            let name = PathBuf::from(from);
            let target = dir.path().join(to).join(name.file_name().expect("a file"));
            std::fs::create_dir_all(target.parent().unwrap()).expect("a directory");
            std::fs::copy(root.join(from), &target).unwrap_or_else(|e| panic!("{from}: {e}"));
            copied.insert(target);
        }
    }
    assert!(copied.len() > 3, "the Dockerfile copies {copied:?}");
    let script = "deploy/docker/stub-sources.sh";
    let run = |program: &str, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run("sh", &[script, "create"]);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // `fetch` reads every member's targets as a build does (`metadata`
    // does not), and needs nothing but the crates a build fetched.
    run(&cargo, &["fetch", "--offline", "--locked"]);
    run("sh", &[script, "remove"]);
    let mut left = BTreeSet::new();
    let mut dirs = vec![dir.path().to_owned()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).expect("a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                left.insert(path);
            }
        }
    }
    assert_eq!(left, copied, "what stub-sources.sh remove left");
}

/// Drift is caught: each change below, made to the real compose file,
/// is reported.
#[test]
fn a_compose_file_that_drifts_is_caught() {
    let real = read("docker-compose.yml");
    for (from, to, reported) in [
        (
            "LISTEN: 0.0.0.0:8083",
            "LISTEN: 0.0.0.0:8093",
            "ledger-service listens on",
        ),
        (
            "INTERNAL_TOKEN_FILE:",
            "INTERNAL_TOKENS_FILE:",
            "which it does not read",
        ),
        (
            "      WALLET_SERVICE_TOKEN_FILE: /run/secrets/internal_token\n    healthcheck",
            "    healthcheck",
            "scripts/stack gives WALLET_SERVICE_TOKEN_FILE",
        ),
        (
            "args: { BIN: ledger-service }",
            "args: { BIN: ledger }",
            "not one of",
        ),
        (
            "condition: service_completed_successfully",
            "condition: service_started",
            "migrate",
        ),
        ("8082/readyz", "8082/healthz", "does not ask"),
        (
            "wallet_app:${WALLET_DB_APP_PASSWORD}@postgres:5432/wallet_wallet\n",
            "wallet_app:${WALLET_DB_APP_PASSWORD}@postgres:5432/wallet\n",
            "not as wallet_wallet_app",
        ),
        (
            "--ledger-db=",
            "--ledger-database=",
            "migrate does not prepare wallet_ledger",
        ),
        (
            "      ledger-service: { condition: service_healthy }\n    ports",
            "    ports",
            "the gateway does not wait for ledger-service",
        ),
    ] {
        assert!(real.contains(from), "the compose file has no {from:?}");
        let broken = real.replacen(from, to, 1);
        let found = findings(&broken);
        assert!(
            found.iter().any(|f| f.contains(reported)),
            "changing {from:?} to {to:?} was not reported as {reported:?}: {found:?}"
        );
    }
}
