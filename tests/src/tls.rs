//! TLS for the end-to-end tests: a certificate authority made by the test,
//! certificates it signs for loopback, a PostgreSQL server of the test's
//! own with TLS on (or off), so that nothing of the machine's own cluster
//! is reconfigured, and a TLS terminator (stunnel) to put in front of a
//! broker, whose test broker (tansu) speaks plain TCP only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::{TempDir, free_port};

/// A certificate authority of the test's own, its certificate in
/// [`Ca::cert_file`]; its directory, with the certificates it issued, is
/// removed when it is dropped.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: TempDir,
    /// Its certificate, PEM: what a client is told to trust.
    pub cert_file: PathBuf,
}

/// A certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

impl Ca {
    /// A new authority named `name`, its files in a new temporary
    /// directory.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let dir = TempDir::new(&format!("ca-{name}"));
        let cert_file = dir.path().join("ca.pem");
        std::fs::write(&cert_file, cert.pem()).expect("writing the CA certificate");
        Ca {
            cert,
            key,
            dir,
            cert_file,
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`, signed by this
    /// authority, as `<name>.pem` and `<name>-key.pem` beside its own.
    pub fn issue(&self, name: &str) -> Issued {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(names).expect("certificate names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a signed certificate");
        let issued = Issued {
            cert_file: self.dir.path().join(format!("{name}.pem")),
            key_file: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("writing a key");
        issued
    }
}

/// Whether this process runs as root (CI does): PostgreSQL's server then
/// runs as the `postgres` user, since it refuses to run as root.
fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// The directory of the newest installed PostgreSQL server's programs
/// (`/usr/lib/postgresql/<major>/bin` on Debian).
fn postgres_bin() -> PathBuf {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max();
    installed
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server programs (initdb) are missing: scripts/test installs them")
}

/// `program` of the server's, run as the user the server runs as.
fn server_command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        // setpriv execs the program: the child is the server itself, so
        // killing the child stops it.
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

/// A PostgreSQL server of the test's own on a free loopback port, its data
/// in a new temporary directory (removed when it stops), trusting every
/// local connection as `postgres`. Stopped when dropped.
pub struct Postgres {
    child: Child,
    dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// A new server, with TLS on and `tls`'s certificate when given, off
    /// otherwise. Takes a second or two (`initdb`).
    pub fn start(tls: Option<&Issued>) -> Postgres {
        let bin = postgres_bin();
        let as_postgres = is_root();
        let dir = TempDir::new("postgres");
        let data = dir.path().join("data");
        if as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                owned.success(),
                "cannot give {} to postgres",
                dir.path().display()
            );
        }
        let initdb = server_command(&bin, "initdb", as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C.UTF-8"])
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", dir.path().display()),
            "fsync=off".to_owned(),
        ];
        match tls {
            Some(issued) => {
                // The server wants its key readable by itself only.
                for (from, to) in [
                    (&issued.cert_file, "server.crt"),
                    (&issued.key_file, "server.key"),
                ] {
                    let path = data.join(to);
                    std::fs::copy(from, &path).expect("copying the server's certificate");
                    set_private(&path, as_postgres);
                }
                settings.extend([
                    "ssl=on".to_owned(),
                    "ssl_cert_file=server.crt".to_owned(),
                    "ssl_key_file=server.key".to_owned(),
                ]);
            }
            None => settings.push("ssl=off".to_owned()),
        }
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("a log file");
        let mut command = server_command(&bin, "postgres", as_postgres);
        command.arg("-D").arg(&data).args(["-p", &port.to_string()]);
        for setting in &settings {
            command.args(["-c", setting]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let mut server = Postgres { child, dir, port };
        server.wait_ready(&bin);
        server
    }

    /// Waits until it accepts connections, or panics with its log.
    fn wait_ready(&mut self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .expect("pg_isready runs");
            if ready.success() {
                return;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log"));
                panic!("the test's PostgreSQL did not start: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of its `postgres` database, with `query` (such as
    /// `sslmode=verify-full&sslrootcert=/ca.pem`) when not empty.
    pub fn url(&self, query: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }
}

/// Makes `path` readable by its owner only, that owner being the server's
/// user.
fn set_private(path: &Path, as_postgres: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("setting a key's mode");
    if as_postgres {
        let owned = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(
            owned.success(),
            "cannot give {} to postgres",
            path.display()
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the server ends its sessions and exits.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS terminator (Debian's stunnel4) on `port` of 127.0.0.1 in front of
/// `target` (`host:port`), presenting `issued`. Killed when dropped.
///
/// In front of a Kafka broker, the broker must advertise `port` (see
/// [`start_tansu`](crate::start_tansu)): clients connect again to the
/// address the metadata names.
pub struct Stunnel {
    child: Child,
    dir: TempDir,
}

impl Stunnel {
    /// Starts it and waits until it listens.
    pub fn start(port: u16, target: &str, issued: &Issued) -> Stunnel {
        let dir = TempDir::new("stunnel");
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\noutput = {log}\n\n[tls]\naccept = 127.0.0.1:{port}\n\
                 connect = {target}\ncert = {cert}\nkey = {key}\n",
                log = dir.path().join("stunnel.log").display(),
                cert = issued.cert_file.display(),
                key = issued.key_file.display(),
            ),
        )
        .expect("writing stunnel's configuration");
        let child = Command::new("stunnel4")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 starts (scripts/test installs it)");
        let mut stunnel = Stunnel { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = matches!(stunnel.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(stunnel.dir.path().join("stunnel.log"));
                panic!("stunnel did not listen on 127.0.0.1:{port}: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stunnel
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SCRAM users a [`SecureBroker`] can be made with: mechanism, user,
/// password.
pub const SCRAM_USERS: [(&str, &str, &str); 2] = [
    ("SCRAM-SHA-256", "wallet-256", "secret-256"),
    ("SCRAM-SHA-512", "wallet-512", "secret-512"),
];

/// A tansu broker that requires SASL authentication, behind a TLS
/// terminator: clients reach it at [`SecureBroker::bootstrap`] with
/// `security.protocol=SASL_SSL`. Its SCRAM users are made before it
/// requires authentication (tansu's own client does not authenticate).
/// tansu 0.6.0 checks SCRAM passwords, and has no PLAIN.
pub struct SecureBroker {
    _stunnel: Stunnel,
    broker: crate::Broker,
    /// The TLS address, `127.0.0.1:port`: what the broker advertises.
    pub bootstrap: String,
}

impl SecureBroker {
    /// Starts it with `users` ([`SCRAM_USERS`] or some of them), `issued`
    /// as the terminator's certificate.
    pub fn start(issued: &Issued, users: &[(&str, &str, &str)]) -> SecureBroker {
        let (port, tls_port) = (free_port(), free_port());
        let dir = std::sync::Arc::new(TempDir::new("secure-broker"));
        let mut setup = crate::start_tansu(port, port, dir.clone(), &[]);
        for (mechanism, user, password) in users {
            let mechanism = match *mechanism {
                "SCRAM-SHA-256" => "scram256",
                "SCRAM-SHA-512" => "scram512",
                other => panic!("tansu stores no {other} users"),
            };
            let created = Command::new(crate::tansu_bin())
                .args([
                    "user",
                    "create",
                    "--broker",
                    &format!("tcp://127.0.0.1:{port}"),
                ])
                .args([user, password, "--mechanism", mechanism])
                .output()
                .expect("tansu user create runs");
            assert!(
                created.status.success(),
                "tansu user create {user}: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        setup.process.kill();
        let broker = crate::start_tansu(port, tls_port, dir, &["--authentication"]);
        let stunnel = Stunnel::start(tls_port, &format!("127.0.0.1:{port}"), issued);
        SecureBroker {
            _stunnel: stunnel,
            broker,
            bootstrap: format!("127.0.0.1:{tls_port}"),
        }
    }

    /// tansu's own plain-text address, behind the terminator.
    pub fn plain(&self) -> String {
        format!("127.0.0.1:{}", self.broker.port)
    }
}

/// The librdkafka properties of SASL `mechanism` as `user` over TLS,
/// trusting the authority in `ca_file`.
pub fn sasl_ssl(
    ca_file: &Path,
    mechanism: &str,
    user: &str,
    password: &str,
) -> Vec<(String, String)> {
    [
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", &ca_file.display().to_string()),
        ("sasl.mechanism", mechanism),
        ("sasl.username", user),
        ("sasl.password", password),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}
