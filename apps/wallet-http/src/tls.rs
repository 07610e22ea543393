//! Serving over TLS: a server identity read from PEM files
//! ([`ServerTls`]), and a listener that hands the server only connections
//! whose handshake completed ([`TlsListener`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections past their handshake, waiting for the server, at most.
const READY: usize = 64;

/// Why a server identity could not be made; each names its file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate file cannot be read, or holds no PEM certificate.
    #[error("the TLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read, or holds no PEM private key.
    #[error("the TLS private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The two do not make an identity (the key is not the certificate's).
    #[error("the TLS certificate {cert} and key {key} do not go together: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        reason: String,
    },
}

/// A server's TLS identity: its certificate chain and private key, with
/// rustls's safe defaults (TLS 1.2 and 1.3, ring), HTTP/1.1, and no client
/// certificates.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The identity in `cert` (PEM: the server's certificate first, then
    /// any intermediates) and `key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsSetupError> {
        let cert_error = |reason: String| TlsSetupError::Certificate {
            path: cert.display().to_string(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| cert_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_error("holds no PEM certificate".to_owned()));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
        let mismatch = |e: rustls::Error| TlsSetupError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            reason: e.to_string(),
        };
        // ring, as reqwest and sqlx use here: aws-lc-rs, which rustls now
        // prefers for its post-quantum key exchange, needs cmake and nasm
        // to build. TLS 1.3's classical key exchanges remain.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(mismatch)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(mismatch)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// A listener for [`axum::serve()`] that serves TLS only: connections are
/// accepted and their handshakes run in tasks of their own (a slow or
/// silent client holds up no other), and the server gets each one once
/// its handshake completed. A failed handshake (a client that speaks plain
/// HTTP, or does not trust the certificate) is logged at warn with the
/// client's address and dropped; one not done within 10 s is dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// TLS with `tls` on `listener`.
    pub fn new(listener: TcpListener, tls: ServerTls) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(READY);
        let accepting = tokio::spawn(accept_loop(listener, tls.acceptor, send));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Closes the socket: the server no longer takes connections.
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // An error means the server stopped: drop the connection.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::warn!(
                    %peer, %error,
                    "TLS handshake failed: the client speaks plain text or does not trust this certificate"
                ),
                Err(_) => tracing::warn!(%peer, "TLS handshake not done within 10 s; dropped"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it never does on its own): take
            // nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
