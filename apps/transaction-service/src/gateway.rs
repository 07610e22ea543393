//! The transaction service's HTTP line to the wallet service's internal
//! routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::money::Currency;
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{GatewayError, WalletGateway};
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};
use wallet_http::ServiceToken;

/// How long one call to the wallet service may take, connection included:
/// 2 s. A reserve is one short database transaction; a call that takes
/// longer is treated as ambiguous and left to the retrier, so the API
/// answers in bounded time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of an unexpected answer's body quoted in an error.
const QUOTED_BODY: usize = 512;

/// Why a gateway could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewaySetupError {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid wallet service URL {0:?}: expected http://host:port")]
    InvalidUrl(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The certificate authorities' file cannot be read or holds none.
    #[error("the certificate authorities' file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Authorities were given for a URL that does not use TLS.
    #[error("certificate authorities are given but {0:?} is not an https:// URL")]
    NotHttps(String),
}

/// [`WalletGateway`] over HTTP, to the routes of
/// `wallet_service::internal`.
///
/// It never turns a doubtful answer into a definite one: a timeout is
/// [`GatewayError::Timeout`]; a connection error, a 5xx, an unexpected 4xx
/// or an unreadable body are [`GatewayError::Unavailable`]. Only a 200 with
/// one [`ReserveOutcome`] per request is a definite reserve answer, and only a 404 from
/// the wallet route means "no such wallet".
///
/// Given several instances of the wallet service, it spreads its calls
/// over them in turn, and sends a call to the next one when an instance
/// refuses the connection (the call then never reached it, so trying
/// elsewhere cannot do anything twice). Any other failure stays ambiguous:
/// the retrier asks again later, and the reserve is idempotent by transfer.
///
/// Given a token ([`HttpWalletGateway::with_token`]), every call carries
/// `Authorization: Bearer <token>`, which the wallet service's internal
/// routes require. A 401 stays ambiguous too (a credential being rotated
/// must not fail transfers), but is logged as an error: it means this
/// service's token is not the one the wallet service accepts.
#[derive(Debug, Clone)]
pub struct HttpWalletGateway {
    client: reqwest::Client,
    bases: Arc<[String]>,
    next: Arc<AtomicUsize>,
    token: Option<ServiceToken>,
}

/// The body of the wallet service's `POST /internal/v1/reserve-batch`.
#[derive(Serialize)]
struct BatchBody<'a> {
    requests: &'a [ReserveRequest],
}

/// The body of `POST /internal/v1/release-holds`.
#[derive(Serialize)]
struct ReleaseBody {
    requests: Vec<ReleaseItem>,
}

#[derive(Serialize)]
struct ReleaseItem {
    hold_id: TransferId,
    release: HoldRelease,
}

/// Its answer: one per request, in order.
#[derive(Deserialize)]
struct ReleaseAnswer {
    answers: Vec<Option<HoldState>>,
}

/// Its answer: one outcome per request, in order.
#[derive(Deserialize)]
struct BatchAnswer {
    outcomes: Vec<ReserveOutcome>,
}

#[derive(Deserialize)]
struct WalletCurrency {
    currency: Currency,
}

impl HttpWalletGateway {
    /// A gateway to the wallet service at `base_url` (`http://host:port`,
    /// optionally with a path prefix), with [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: &str) -> Result<Self, GatewaySetupError> {
        Self::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    /// A gateway whose calls each take at most `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self, GatewaySetupError> {
        Self::instances(&[base_url], timeout)
    }

    /// A gateway to several instances of the wallet service, each call
    /// taking at most `timeout` on one instance. An `https://` instance
    /// must present a certificate from one of the web's public authorities
    /// (built in).
    pub fn instances(base_urls: &[&str], timeout: Duration) -> Result<Self, GatewaySetupError> {
        Self::build(base_urls, timeout, None)
    }

    /// As [`HttpWalletGateway::instances`], every instance reached over
    /// `https://` and trusted only if its certificate comes from one of the
    /// authorities in `ca_file` (PEM).
    pub fn instances_trusting(
        base_urls: &[&str],
        timeout: Duration,
        ca_file: &std::path::Path,
    ) -> Result<Self, GatewaySetupError> {
        let ca_error = |reason: String| GatewaySetupError::CaFile {
            path: ca_file.display().to_string(),
            reason,
        };
        let pem = std::fs::read(ca_file).map_err(|e| ca_error(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        if roots.is_empty() {
            return Err(ca_error("holds no PEM certificate".to_owned()));
        }
        if let Some(plain) = base_urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(GatewaySetupError::NotHttps((*plain).to_owned()));
        }
        Self::build(base_urls, timeout, Some(roots))
    }

    fn build(
        base_urls: &[&str],
        timeout: Duration,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> Result<Self, GatewaySetupError> {
        if base_urls.is_empty() {
            return Err(GatewaySetupError::InvalidUrl(String::new()));
        }
        for base_url in base_urls {
            let url = reqwest::Url::parse(base_url)
                .map_err(|_| GatewaySetupError::InvalidUrl((*base_url).to_owned()))?;
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(GatewaySetupError::InvalidUrl((*base_url).to_owned()));
            }
        }
        // The wallet service is a peer inside the deployment: proxies from
        // the environment (HTTP_PROXY, ...) are not for it.
        let mut client = reqwest::Client::builder().timeout(timeout).no_proxy();
        if let Some(roots) = roots {
            client = client.tls_built_in_root_certs(false);
            for root in roots {
                client = client.add_root_certificate(root);
            }
        }
        let client = client.build()?;
        Ok(HttpWalletGateway {
            client,
            bases: base_urls
                .iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
            token: None,
        })
    }

    /// The same gateway, presenting `token` on every call.
    pub fn with_token(mut self, token: ServiceToken) -> Self {
        self.token = Some(token);
        self
    }

    /// The wallet service instances' base URLs, without a trailing slash.
    pub fn base_urls(&self) -> &[String] {
        &self.bases
    }

    /// Sends the request `build` makes for an instance's base URL to the
    /// next instance in turn; to the one after it when the connection is
    /// refused, until each was tried once.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Response, GatewayError> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let base = &self.bases[(first + tried) % self.bases.len()];
            tried += 1;
            let mut request = build(&self.client, base);
            // The wallet service continues the trace of the call's span.
            if let Some(trace) = wallet_http::trace::current() {
                request = request.header(wallet_http::trace::TRACEPARENT, trace.to_string());
            }
            if let Some(token) = &self.token {
                request = request.header(reqwest::header::AUTHORIZATION, token.header_value());
            }
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(error)
                    if error.is_connect() && !error.is_timeout() && tried < self.bases.len() =>
                {
                    tracing::warn!(%base, %error, "wallet service instance refused; trying the next");
                }
                Err(error) => return Err(transport(error)),
            }
        }
    }
}

#[async_trait]
impl WalletGateway for HttpWalletGateway {
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        let span = reserve_span(requests);
        self.reserve_call(requests).instrument(span).await
    }

    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        self.wallet_call(id).await
    }

    /// Reads the currency alone, so a wallet service that answers nothing
    /// else (a build before the snapshot) still serves transfers.
    async fn wallet_currency(&self, id: WalletId) -> Result<Option<Currency>, GatewayError> {
        let wallet: Option<WalletCurrency> = self.wallet_call(id).await?;
        Ok(wallet.map(|w| w.currency))
    }

    async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError> {
        let body = ReleaseBody {
            requests: requests
                .iter()
                .map(|&(hold_id, release)| ReleaseItem { hold_id, release })
                .collect(),
        };
        let response = self
            .send(|client, base| {
                client
                    .post(format!("{base}/internal/v1/release-holds"))
                    .json(&body)
            })
            .await?;
        match response.status() {
            StatusCode::OK => {
                let answer: ReleaseAnswer = read(response).await?;
                if answer.answers.len() != requests.len() {
                    return Err(GatewayError::Unavailable(format!(
                        "wallet service answered {} to {} hold releases",
                        answer.answers.len(),
                        requests.len()
                    )));
                }
                Ok(answer.answers)
            }
            _ => Err(unexpected(response).await.ambiguous()),
        }
    }
}

/// The span of one reserve call: `wallet.reserve`, naming the transfers of
/// its batch (comma-separated when there are several).
fn reserve_span(requests: &[ReserveRequest]) -> tracing::Span {
    let joined = |ids: Vec<String>| ids.join(",");
    tracing::info_span!(
        "wallet.reserve",
        otel.kind = "client",
        transfers = requests.len(),
        transfer_id = %joined(requests.iter().map(|r| r.transfer_id.to_string()).collect()),
        correlation_id = %joined(requests.iter().map(|r| r.correlation_id.to_string()).collect()),
    )
}

impl HttpWalletGateway {
    /// `GET /internal/v1/wallets/{id}`, its answer read as `T`; `None` for
    /// the wallet service's own 404 `wallet_not_found`.
    async fn wallet_call<T: DeserializeOwned>(
        &self,
        id: WalletId,
    ) -> Result<Option<T>, GatewayError> {
        let response = self
            .send(|client, base| client.get(format!("{base}/internal/v1/wallets/{id}")))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(read(response).await?)),
            _ => match unexpected(response).await {
                Unexpected::WalletNotFound => Ok(None),
                Unexpected::Other(error) => Err(error),
            },
        }
    }

    /// `POST /internal/v1/reserve-batch` with `requests`.
    async fn reserve_call(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        let body = BatchBody { requests };
        let response = self
            .send(|client, base| {
                client
                    .post(format!("{base}/internal/v1/reserve-batch"))
                    .json(&body)
            })
            .await?;
        match response.status() {
            StatusCode::OK => {
                let answer: BatchAnswer = read(response).await?;
                if answer.outcomes.len() != requests.len() {
                    return Err(GatewayError::Unavailable(format!(
                        "wallet service answered {} outcomes to {} reserves",
                        answer.outcomes.len(),
                        requests.len()
                    )));
                }
                Ok(answer.outcomes)
            }
            // No other answer of the reserve route is definite.
            _ => Err(unexpected(response).await.ambiguous()),
        }
    }
}

async fn read<T: DeserializeOwned>(response: Response) -> Result<T, GatewayError> {
    response.json().await.map_err(transport)
}

/// An answer other than 200.
enum Unexpected {
    /// The wallet service's own 404 `wallet_not_found`.
    WalletNotFound,
    /// Anything else, ambiguous.
    Other(GatewayError),
}

impl Unexpected {
    /// The answer as an ambiguous error, for routes where no other answer
    /// than 200 is definite.
    fn ambiguous(self) -> GatewayError {
        match self {
            Unexpected::WalletNotFound => {
                GatewayError::Unavailable("wallet service answered 404 wallet_not_found".into())
            }
            Unexpected::Other(error) => error,
        }
    }
}

/// Reads an answer other than 200. Only the wallet service's own
/// `wallet_not_found` is definite: a 404 from something else (a proxy, a
/// wrong base URL) must not refuse a transfer. The rest is ambiguous, with
/// the body quoted.
async fn unexpected(response: Response) -> Unexpected {
    let status = response.status();
    let mut body = match response.text().await {
        Ok(body) => body,
        Err(error) => return Unexpected::Other(transport(error)),
    };
    let error: Option<wallet_http::ErrorBody> = serde_json::from_str(&body).ok();
    if status == StatusCode::NOT_FOUND && error.is_some_and(|e| e.error.code == "wallet_not_found")
    {
        return Unexpected::WalletNotFound;
    }
    if status == StatusCode::UNAUTHORIZED {
        // Every call will fail alike until an operator acts: say so loudly,
        // but leave the transfers for the retrier.
        tracing::error!(
            "the wallet service refused this service's credential \
             (WALLET_SERVICE_TOKEN or WALLET_SERVICE_TOKEN_FILE)"
        );
    }
    if body.len() > QUOTED_BODY {
        let cut = (0..=QUOTED_BODY)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(cut);
    }
    let message = format!("wallet service answered {status}: {body}");
    Unexpected::Other(GatewayError::Unavailable(message))
}

/// A timeout is [`GatewayError::Timeout`]; anything else that kept the
/// answer from arriving whole is [`GatewayError::Unavailable`].
fn transport(error: reqwest::Error) -> GatewayError {
    if error.is_timeout() {
        return GatewayError::Timeout;
    }
    // reqwest's own message hides the cause ("error sending request").
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    // rustls's words for a certificate it does not accept. Like a refused
    // token, it fails every call until an operator acts.
    if message.contains("invalid peer certificate") {
        tracing::error!(
            error = %message,
            "the wallet service's certificate is not trusted by this service \
             (WALLET_SERVICE_CA_FILE, and the host in WALLET_SERVICE_URL)"
        );
    }
    GatewayError::Unavailable(message)
}
