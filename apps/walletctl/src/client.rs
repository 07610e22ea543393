//! The API client commands: thin wrappers over the public HTTP routes.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the API is and how to print its answers.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of the API (walletctl dev, or the gateway).
    #[arg(
        long,
        env = "WALLET_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `walletctl wallet ...`
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Open a wallet.
    Create {
        /// ISO currency code (USD, EUR, JPY, ...).
        #[arg(long)]
        currency: String,
    },
    /// Show a wallet's balances.
    Show {
        /// Wallet id.
        id: String,
    },
    /// List a wallet's ledger entries, newest first.
    Entries {
        /// Wallet id.
        id: String,
        /// Entries per page.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a wallet's balance in the ledger: as of a time, or now beside
    /// the wallet service's balances.
    Balance {
        /// Wallet id.
        id: String,
        /// Count the entries posted at or before this RFC 3339 time, e.g.
        /// 2026-01-31T23:59:59Z.
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// `walletctl transfers ...`
#[derive(Debug, Subcommand)]
pub enum TransfersCommand {
    /// List transfers, deposits, withdrawals and holds, newest first, one
    /// page at a time; pass the printed cursor as `--cursor` for the next.
    List {
        /// Only those this wallet sends or receives.
        #[arg(long)]
        wallet: Option<String>,
        /// Only those in this status (SUCCEEDED, FAILED, HELD, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only those of this kind (transfer, deposit, withdrawal, hold).
        #[arg(long)]
        kind: Option<String>,
        /// Only the one with this reference.
        #[arg(long)]
        reference: Option<String>,
        /// Only those created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only those created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Transfers per page.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to start: the cursor a page before printed.
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// `walletctl hold ...`
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Hold a wallet's funds for a later capture, void or expiry.
    Create {
        /// Wallet whose funds are held.
        wallet: String,
        /// Amount as a decimal string, e.g. 12.50.
        #[arg(long)]
        amount: String,
        /// Who a capture that names no receiver pays.
        #[arg(long)]
        to: Option<String>,
        /// Seconds until the hold expires (the service's default, 7 days,
        /// when absent).
        #[arg(long)]
        expires_in_s: Option<u64>,
        /// Idempotency key; a fresh one is made when absent.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        tags: TagArgs,
    },
    /// Capture a hold: pay up to what it holds, release the rest.
    Capture {
        /// Hold id.
        id: String,
        /// Amount as a decimal string; all the hold holds when absent.
        #[arg(long)]
        amount: Option<String>,
        /// Who is paid; the hold's receiver when absent.
        #[arg(long)]
        to: Option<String>,
        /// Idempotency key; a fresh one is made when absent.
        #[arg(long)]
        key: Option<String>,
        /// Wait up to this many milliseconds for the capture to finish.
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
        #[command(flatten)]
        tags: TagArgs,
    },
    /// Void a hold: its funds go back at once.
    Void {
        /// Hold id.
        id: String,
    },
    /// Show a hold.
    Show {
        /// Hold id.
        id: String,
    },
}

/// A money movement's options shared by deposit, withdraw and transfer.
#[derive(Debug, Clone, Args)]
pub struct Movement {
    /// Amount as a decimal string, e.g. 12.50.
    #[arg(long)]
    pub amount: String,
    /// Idempotency key; a fresh one is made when absent. Reuse it to retry
    /// safely.
    #[arg(long)]
    pub key: Option<String>,
    /// Wait up to this many milliseconds for the transfer to finish.
    #[arg(long, default_value_t = 5_000)]
    pub wait_ms: u64,
    #[command(flatten)]
    pub tags: TagArgs,
}

/// A request's reference and metadata.
#[derive(Debug, Clone, Default, Args)]
pub struct TagArgs {
    /// Your own name for it, unique in its wallet.
    #[arg(long)]
    pub reference: Option<String>,
    /// Your notes on it: a JSON object, e.g. '{"order":"A-17"}'.
    #[arg(long)]
    pub metadata: Option<String>,
}

impl TagArgs {
    /// `body` with the reference and metadata given; metadata that is not
    /// JSON is refused here, the rest by the service.
    fn add_to(self, mut body: Value) -> anyhow::Result<Value> {
        if let Some(reference) = self.reference {
            body["reference"] = json!(reference);
        }
        if let Some(metadata) = self.metadata {
            body["metadata"] = serde_json::from_str(&metadata).context("--metadata is not JSON")?;
        }
        Ok(body)
    }
}

/// Runs requests against one API.
pub struct Client {
    http: reqwest::Client,
    target: Target,
}

impl Client {
    /// A client of `target`.
    pub fn new(target: Target) -> Client {
        Client {
            http: reqwest::Client::new(),
            target,
        }
    }

    /// True when `--json` asks for JSON output.
    pub fn json(&self) -> bool {
        self.target.json
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url.trim_end_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.target.url))?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `wallet create|show|entries|balance`.
    pub async fn wallet(&self, command: WalletCommand) -> anyhow::Result<()> {
        let (status, body) = match &command {
            WalletCommand::Create { currency } => {
                let body = json!({ "currency": currency });
                self.send(self.http.post(self.url("/v1/wallets")).json(&body))
                    .await?
            }
            WalletCommand::Show { id } => {
                self.send(self.http.get(self.url(&format!("/v1/wallets/{id}"))))
                    .await?
            }
            WalletCommand::Entries { id, limit } => {
                let path = format!("/v1/wallets/{id}/entries?limit={limit}");
                self.send(self.http.get(self.url(&path))).await?
            }
            WalletCommand::Balance { id, as_of } => {
                let request = self
                    .http
                    .get(self.url(&format!("/v1/wallets/{id}/balance")));
                let query: Vec<_> = as_of.iter().map(|t| ("as_of", t)).collect();
                self.send(request.query(&query)).await?
            }
        };
        let summary = match command {
            WalletCommand::Entries { .. } => entries_summary,
            WalletCommand::Balance { .. } => balance_summary,
            _ => wallet_summary,
        };
        self.print(status, &body, summary)
    }

    /// `deposit` and `withdraw`: `kind` is `deposits` or `withdrawals`.
    pub async fn movement(&self, wallet: &str, kind: &str, m: Movement) -> anyhow::Result<()> {
        let path = format!("/v1/wallets/{wallet}/{kind}");
        let body = m.tags.add_to(json!({ "amount": m.amount }))?;
        self.create(&path, body, m.key, m.wait_ms).await
    }

    /// `transfer`.
    pub async fn transfer(&self, from: &str, to: &str, m: Movement) -> anyhow::Result<()> {
        let body = json!({
            "sender_wallet_id": from,
            "receiver_wallet_id": to,
            "amount": m.amount,
        });
        let body = m.tags.add_to(body)?;
        self.create("/v1/transfers", body, m.key, m.wait_ms).await
    }

    /// `refund`: a SUCCEEDED transfer's money back, all of it or `amount`.
    pub async fn refund(
        &self,
        id: &str,
        amount: Option<String>,
        key: Option<String>,
        wait_ms: u64,
        tags: TagArgs,
    ) -> anyhow::Result<()> {
        let body = match amount {
            Some(amount) => json!({ "amount": amount }),
            None => json!({}),
        };
        let body = tags.add_to(body)?;
        let path = format!("/v1/transfers/{id}/refunds");
        self.create(&path, body, key, wait_ms).await
    }

    /// `transfers list`.
    pub async fn transfers(&self, command: TransfersCommand) -> anyhow::Result<()> {
        let TransfersCommand::List {
            wallet,
            status,
            kind,
            reference,
            since,
            until,
            limit,
            cursor,
        } = command;
        let limit = limit.to_string();
        let filters = [
            ("wallet_id", wallet),
            ("status", status),
            ("kind", kind),
            ("reference", reference),
            ("since", since),
            ("until", until),
            ("limit", Some(limit)),
            ("cursor", cursor),
        ];
        let query: Vec<(&str, String)> = filters
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .collect();
        let request = self.http.get(self.url("/v1/transfers")).query(&query);
        let (status, body) = self.send(request).await?;
        self.print(status, &body, history_summary)
    }

    /// `hold create|capture|void|show`.
    pub async fn hold(&self, command: HoldCommand) -> anyhow::Result<()> {
        let key = |key: Option<String>| key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (status, body) = match command {
            HoldCommand::Create {
                wallet,
                amount,
                to,
                expires_in_s,
                key: k,
                tags,
            } => {
                let mut body = json!({ "wallet_id": wallet, "amount": amount });
                if let Some(to) = to {
                    body["receiver_wallet_id"] = json!(to);
                }
                if let Some(seconds) = expires_in_s {
                    body["expires_in_s"] = json!(seconds);
                }
                let body = tags.add_to(body)?;
                let request = self.http.post(self.url("/v1/holds"));
                self.send(request.header("Idempotency-Key", key(k)).json(&body))
                    .await?
            }
            HoldCommand::Capture {
                id,
                amount,
                to,
                key: k,
                wait_ms,
                tags,
            } => {
                let mut body = json!({});
                if let Some(amount) = amount {
                    body["amount"] = json!(amount);
                }
                if let Some(to) = to {
                    body["receiver_wallet_id"] = json!(to);
                }
                let body = tags.add_to(body)?;
                let path = format!("/v1/holds/{id}/capture");
                return self.create(&path, body, Some(key(k)), wait_ms).await;
            }
            HoldCommand::Void { id } => {
                let path = format!("/v1/holds/{id}/void");
                self.send(self.http.post(self.url(&path))).await?
            }
            HoldCommand::Show { id } => {
                let path = format!("/v1/holds/{id}");
                self.send(self.http.get(self.url(&path))).await?
            }
        };
        self.print(status, &body, hold_summary)
    }

    async fn create(
        &self,
        path: &str,
        body: Value,
        key: Option<String>,
        wait_ms: u64,
    ) -> anyhow::Result<()> {
        let key = key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let request = self
            .http
            .post(self.url(path))
            .header("Idempotency-Key", &key)
            .json(&body);
        let (status, created) = self.send(request).await?;
        if status != 202 || wait_ms == 0 {
            return self.print(status, &created, transfer_summary);
        }
        let id = created["id"].as_str().context("transfer without id")?;
        self.status(id, wait_ms).await
    }

    /// `status`: a transfer, waiting up to `wait_ms` for it to finish.
    pub async fn status(&self, id: &str, wait_ms: u64) -> anyhow::Result<()> {
        let path = format!("/v1/transfers/{id}?wait_ms={wait_ms}");
        let (status, body) = self.send(self.http.get(self.url(&path))).await?;
        self.print(status, &body, transfer_summary)
    }

    fn print(
        &self,
        status: u16,
        body: &Value,
        summary: fn(&Value) -> String,
    ) -> anyhow::Result<()> {
        if self.target.json {
            println!("{}", serde_json::to_string_pretty(body)?);
        } else if (200..300).contains(&status) {
            println!("{}", summary(body));
        }
        if (200..300).contains(&status) {
            return Ok(());
        }
        let error = &body["error"];
        let mut message = format!(
            "{status} {}: {}",
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("no message")
        );
        if let Some(id) = error["transfer_id"].as_str() {
            message.push_str(&format!(" (transfer {id})"));
        }
        bail!(message)
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn wallet_summary(w: &Value) -> String {
    format!(
        "wallet {}\n  currency   {}\n  available  {}\n  reserved   {}",
        text(&w["id"]),
        text(&w["currency"]),
        text(&w["available"]),
        text(&w["reserved"])
    )
}

fn balance_summary(b: &Value) -> String {
    let position = b["position"]
        .as_u64()
        .map_or("-".to_owned(), |p| p.to_string());
    let mut out = format!(
        "wallet {}\n  currency   {}\n  as of      {}\n  balance    {}\n  position   {position}",
        text(&b["wallet_id"]),
        text(&b["currency"]),
        b["as_of"].as_str().unwrap_or("now"),
        text(&b["balance"]),
    );
    let wallet = &b["wallet"];
    if wallet.is_object() {
        out.push_str(&format!(
            "\n  wallet service\n    available  {}\n    reserved   {}\n    updated    {}",
            text(&wallet["available"]),
            text(&wallet["reserved"]),
            text(&wallet["updated_at"])
        ));
    }
    out
}

fn transfer_summary(t: &Value) -> String {
    let mut out = format!(
        "transfer {}\n  status     {}\n  amount     {} {}\n  from       {}\n  to         {}",
        text(&t["id"]),
        text(&t["status"]),
        text(&t["amount"]),
        text(&t["currency"]),
        text(&t["sender_wallet_id"]),
        text(&t["receiver_wallet_id"])
    );
    if let Some(reason) = t["failure_reason"].as_str() {
        out.push_str(&format!("\n  reason     {reason}"));
    }
    out
}

fn hold_summary(h: &Value) -> String {
    let mut out = format!(
        "hold {}\n  status     {}\n  amount     {} {}\n  wallet     {}\n  to         {}\n  expires    {}",
        text(&h["id"]),
        text(&h["status"]),
        text(&h["amount"]),
        text(&h["currency"]),
        text(&h["wallet_id"]),
        text(&h["receiver_wallet_id"]),
        text(&h["expires_at"])
    );
    if let Some(capture) = h["captured_by"].as_str() {
        out.push_str(&format!("\n  capture    {capture}"));
    }
    if let Some(reason) = h["failure_reason"].as_str() {
        out.push_str(&format!("\n  reason     {reason}"));
    }
    out
}

fn history_summary(page: &Value) -> String {
    let transfers = page["transfers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if transfers.is_empty() {
        return "no transfers".to_owned();
    }
    let mut lines: Vec<String> = transfers
        .iter()
        .map(|t| {
            format!(
                "{}  {:<10} {:<10} {:>14} {}  {}  {} -> {}{}",
                text(&t["created_at"]),
                text(&t["kind"]),
                text(&t["status"]),
                text(&t["amount"]),
                text(&t["currency"]),
                text(&t["id"]),
                text(&t["sender_wallet_id"]),
                text(&t["receiver_wallet_id"]),
                t["reference"]
                    .as_str()
                    .map(|r| format!("  ref {r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if let Some(cursor) = page["next_cursor"].as_str() {
        lines.push(format!("next page: --cursor {cursor}"));
    }
    lines.join("\n")
}

fn entries_summary(page: &Value) -> String {
    let entries = page["entries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if entries.is_empty() {
        return "no entries".to_owned();
    }
    entries
        .iter()
        .map(|e| {
            format!(
                "#{:<6} {:<6} {:>14} {}  transfer {}",
                e["seq"],
                text(&e["direction"]),
                text(&e["amount"]),
                text(&e["currency"]),
                text(&e["transfer_id"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
