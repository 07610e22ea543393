//! The ledger service's store: append-only entries, one outcome per
//! transfer, user accounts' currencies, inbox, and an outbox of outcome
//! events.
//!
//! A posting only inserts rows. No balance is updated per posting, neither
//! a system account's (which every deposit of a currency would touch) nor a
//! user account's: balances are sums of entries, read by `balances_page`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use wallet_core::event::{Envelope, EventStamp, Inbound, Outgoing};
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{
    AccountBalance, BalanceAsOf, Entry, PostingDecision, PostingRequest, decide_posting,
};
use wallet_core::money::Currency;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{EntryCursor, LedgerReads, LedgerStore, StoreError};
use wallet_core::time::Timestamp;

use crate::codec;
use crate::error::{Db, corrupt};
use crate::outbox::pg_outbox;
use crate::transfer::inbox_new;
use crate::{Base, PgSettings};

macro_rules! entry_columns {
    () => {
        "seq, transfer_id, account, direction, amount, currency, posted_at"
    };
}

/// The ledger service's store on its PostgreSQL database. Clones share the
/// pool.
#[derive(Debug, Clone)]
pub struct PgLedgerStore {
    base: Base,
}

impl PgLedgerStore {
    /// A store on `pool`, whose database has the ledger schema
    /// ([`crate::migrate_ledger_db`]). Needs a tokio runtime when
    /// `settings.announce_outbox` is set.
    pub fn new(pool: PgPool, settings: &PgSettings) -> Self {
        PgLedgerStore {
            base: Base::new(pool, settings),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.base.pool
    }
}

pg_outbox!(PgLedgerStore);

fn entry_of(row: &PgRow) -> Result<Entry, StoreError> {
    let currency = codec::currency(row.try_get("currency").db()?)?;
    Ok(Entry {
        seq: codec::seq(row.try_get("seq").db()?)?,
        transfer_id: TransferId::from_uuid(row.try_get("transfer_id").db()?),
        account: WalletId::from_uuid(row.try_get("account").db()?),
        direction: codec::parse_text(row.try_get("direction").db()?)?,
        amount: codec::amount(row.try_get("amount").db()?, currency)?,
        currency,
        posted_at: row.try_get("posted_at").db()?,
    })
}

fn outcome_of(outcome: &str, reason: Option<String>) -> Result<LedgerOutcome, StoreError> {
    match (outcome, reason) {
        ("succeeded", None) => Ok(LedgerOutcome::Succeeded),
        ("failed", Some(reason)) => Ok(LedgerOutcome::Failed(codec::parse_text(&reason)?)),
        (outcome, reason) => Err(corrupt(format!("outcome {outcome} {reason:?}"))),
    }
}

/// What one batch writes.
#[derive(Default)]
struct Writes {
    outcomes: Vec<(TransferId, LedgerOutcome, Timestamp)>,
    accounts: Vec<(WalletId, Currency, Timestamp)>,
    entries: Vec<Entry>,
    events: Vec<Outgoing>,
}

/// What the ledger knows before deciding a batch: earlier outcomes of its
/// transfers and the currencies of its user accounts.
async fn load_known(
    conn: &mut PgConnection,
    requests: &[&PostingRequest],
) -> Result<
    (
        HashMap<TransferId, LedgerOutcome>,
        HashMap<WalletId, Currency>,
    ),
    StoreError,
> {
    let transfers = codec::transfer_uuids(requests.iter().map(|r| r.transfer_id));
    let rows = sqlx::query(
        "SELECT transfer_id, outcome, reason FROM outcomes WHERE transfer_id = ANY($1)",
    )
    .bind(transfers)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut outcomes = HashMap::with_capacity(rows.len());
    for row in &rows {
        let outcome = outcome_of(row.try_get("outcome").db()?, row.try_get("reason").db()?)?;
        outcomes.insert(
            TransferId::from_uuid(row.try_get("transfer_id").db()?),
            outcome,
        );
    }
    let accounts = user_accounts(
        requests
            .iter()
            .flat_map(|r| [r.sender_wallet_id, r.receiver_wallet_id]),
    );
    let rows = sqlx::query("SELECT id, currency FROM accounts WHERE id = ANY($1)")
        .bind(codec::wallet_uuids(accounts))
        .fetch_all(&mut *conn)
        .await
        .db()?;
    let mut currencies = HashMap::with_capacity(rows.len());
    for row in &rows {
        currencies.insert(
            WalletId::from_uuid(row.try_get("id").db()?),
            codec::currency(row.try_get("currency").db()?)?,
        );
    }
    Ok((outcomes, currencies))
}

/// The user accounts among `ids`, each once; system accounts are known by
/// their id and have no row.
fn user_accounts(ids: impl Iterator<Item = WalletId>) -> Vec<WalletId> {
    let set: HashSet<WalletId> = ids.filter(|id| id.system_currency().is_none()).collect();
    set.into_iter().collect()
}

/// Writes a decided batch, outcomes and accounts in key order. Returns
/// false when a concurrent unit decided one of its transfers, or opened one
/// of its accounts in another currency, first: the caller then rolls back
/// and reports the unit as transient.
async fn write(conn: &mut PgConnection, writes: &mut Writes) -> Result<bool, StoreError> {
    crate::in_key_order(&mut writes.outcomes, |o| o.0);
    crate::in_key_order(&mut writes.accounts, |a| a.0);
    if !writes.outcomes.is_empty() {
        let (ids, (outcomes, (reasons, at))): (Vec<_>, (Vec<_>, (Vec<_>, Vec<_>))) = writes
            .outcomes
            .iter()
            .map(|(id, outcome, at)| {
                let (name, reason) = match outcome {
                    LedgerOutcome::Succeeded => ("succeeded", None),
                    LedgerOutcome::Failed(reason) => ("failed", Some(codec::text_of(reason))),
                };
                (id.as_uuid(), (name, (reason, *at)))
            })
            .unzip();
        let inserted = sqlx::query(
            "INSERT INTO outcomes (transfer_id, outcome, reason, decided_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
             ON CONFLICT (transfer_id) DO NOTHING",
        )
        .bind(ids)
        .bind(outcomes)
        .bind(reasons)
        .bind(at)
        .execute(&mut *conn)
        .await
        .db()?
        .rows_affected();
        if inserted != writes.outcomes.len() as u64 {
            return Ok(false);
        }
    }
    if !writes.accounts.is_empty() {
        let ids = codec::wallet_uuids(writes.accounts.iter().map(|a| a.0));
        let currencies: Vec<&str> = writes.accounts.iter().map(|a| a.1.code()).collect();
        let at: Vec<Timestamp> = writes.accounts.iter().map(|a| a.2).collect();
        // Inserted unless present; then every account must have the currency
        // it was decided with (a concurrent first posting may have won).
        let mismatched: i64 = sqlx::query_scalar(
            "WITH ins AS (
                 INSERT INTO accounts (id, currency, opened_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[])
                 ON CONFLICT (id) DO NOTHING RETURNING id)
             SELECT count(*) FROM accounts a
             JOIN UNNEST($1::uuid[], $2::text[]) AS u(id, currency) ON a.id = u.id
             WHERE a.currency <> u.currency",
        )
        .bind(&ids)
        .bind(&currencies)
        .bind(at)
        .fetch_one(&mut *conn)
        .await
        .db()?;
        if mismatched != 0 {
            return Ok(false);
        }
    }
    if !writes.entries.is_empty() {
        let e = &writes.entries;
        sqlx::query(
            "INSERT INTO entries (transfer_id, account, direction, amount, currency, posted_at)
             SELECT t, a, d, m, c, p
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[],
                         $6::timestamptz[]) WITH ORDINALITY AS u(t, a, d, m, c, p, n)
             ORDER BY n",
        )
        .bind(codec::transfer_uuids(e.iter().map(|e| e.transfer_id)))
        .bind(codec::wallet_uuids(e.iter().map(|e| e.account)))
        .bind(
            e.iter()
                .map(|e| codec::text_of(&e.direction))
                .collect::<Vec<_>>(),
        )
        .bind(e.iter().map(|e| e.amount.value()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.currency.code()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.posted_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .db()?;
    }
    crate::outbox::write(conn, &writes.events).await?;
    Ok(true)
}

#[async_trait]
impl LedgerStore for PgLedgerStore {
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError> {
        let mut tx = crate::begin(self.pool()).await.db()?;
        let mut fresh = inbox_new(&mut tx, batch.iter().map(|(e, _)| e.event_id())).await?;
        let new: Vec<&(Inbound<PostingRequest>, EventStamp)> = batch
            .iter()
            .filter(|(event, _)| fresh.remove(&event.event_id()))
            .collect();
        let requests: Vec<&PostingRequest> = new.iter().map(|(e, _)| &e.body).collect();
        if requests.is_empty() {
            tx.commit().await.db()?;
            return Ok(0);
        }
        let (mut outcomes, mut currencies) = load_known(&mut tx, &requests).await?;
        let mut writes = Writes::default();
        for (event, stamp) in new {
            let request = &event.body;
            let decision = decide_posting(
                request,
                outcomes.get(&request.transfer_id).copied(),
                currencies.get(&request.sender_wallet_id).copied(),
                currencies.get(&request.receiver_wallet_id).copied(),
                stamp.at,
            );
            let outcome = match decision {
                PostingDecision::AlreadyDecided(_) => continue,
                PostingDecision::Post(posting) => {
                    for entry in posting.entries() {
                        if entry.account.system_currency().is_none()
                            && !currencies.contains_key(&entry.account)
                        {
                            currencies.insert(entry.account, entry.currency);
                            writes
                                .accounts
                                .push((entry.account, entry.currency, entry.posted_at));
                        }
                        writes.entries.push(entry);
                    }
                    LedgerOutcome::Succeeded
                }
                PostingDecision::Reject(reason) => LedgerOutcome::Failed(reason),
            };
            outcomes.insert(request.transfer_id, outcome);
            writes
                .outcomes
                .push((request.transfer_id, outcome, stamp.at));
            let envelope = Envelope::ledger_decided(event, outcome, *stamp);
            writes.events.push(Outgoing::Event(envelope));
        }
        if !write(&mut tx, &mut writes).await? {
            drop(tx);
            return Err(StoreError::Unavailable(
                "a concurrent posting decided one of these transfers or accounts first; retry"
                    .to_owned(),
            ));
        }
        tx.commit().await.db()?;
        if !writes.events.is_empty() {
            self.base.announce();
        }
        Ok(writes.outcomes.len())
    }
}

#[async_trait]
impl LedgerReads for PgLedgerStore {
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries WHERE account = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(account.as_uuid())
        .bind(before.map_or(i64::MAX, codec::seq_param))
        .bind(codec::limit(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.iter().map(entry_of).collect()
    }

    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let rows = match after {
            Some(after) => sqlx::query(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM entries WHERE (transfer_id, seq) > ($1, $2)
                  ORDER BY transfer_id, seq LIMIT $3"
            ))
            .bind(after.transfer_id.as_uuid())
            .bind(codec::seq_param(after.seq)),
            None => sqlx::query(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM entries ORDER BY transfer_id, seq LIMIT $1"
            )),
        }
        .bind(codec::limit(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.iter().map(entry_of).collect()
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        let row = sqlx::query("SELECT outcome, reason FROM outcomes WHERE transfer_id = $1")
            .bind(transfer.as_uuid())
            .fetch_optional(self.pool())
            .await
            .db()?;
        row.map(|row| outcome_of(row.try_get("outcome").db()?, row.try_get("reason").db()?))
            .transpose()
    }

    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        let sql = "SELECT transfer_id, outcome, reason FROM outcomes
                   WHERE transfer_id > $1 ORDER BY transfer_id LIMIT $2";
        let after = after.map(|id| id.as_uuid());
        codec::uuid_page(self.pool(), sql, after, limit, |row| {
            Ok((
                TransferId::from_uuid(row.try_get("transfer_id").db()?),
                outcome_of(row.try_get("outcome").db()?, row.try_get("reason").db()?)?,
            ))
        })
        .await
    }

    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        // Sums over the account index, one group per account: a page reads
        // the entries of its accounts only.
        let sql = "SELECT account, min(currency) AS currency,
                 sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS balance
             FROM entries WHERE account > $1
             GROUP BY account ORDER BY account LIMIT $2";
        let after = after.map(|id| id.as_uuid());
        codec::uuid_page(self.pool(), sql, after, limit, |row| {
            let currency = codec::currency(row.try_get("currency").db()?)?;
            Ok(AccountBalance {
                account: WalletId::from_uuid(row.try_get("account").db()?),
                currency,
                balance: codec::balance(row.try_get("balance").db()?, currency),
            })
        })
        .await
    }

    async fn balance_as_of(
        &self,
        account: WalletId,
        as_of: Option<Timestamp>,
    ) -> Result<Option<BalanceAsOf>, StoreError> {
        let row = sqlx::query(BALANCE_AS_OF)
            .bind(account.as_uuid())
            .bind(as_of)
            .fetch_one(self.pool())
            .await
            .db()?;
        let Some(currency) = row.try_get::<Option<&str>, _>("currency").db()? else {
            return Ok(None);
        };
        let currency = codec::currency(currency)?;
        let balance: Option<rust_decimal::Decimal> = row.try_get("balance").db()?;
        let position: Option<i64> = row.try_get("position").db()?;
        Ok(Some(BalanceAsOf {
            account,
            currency,
            balance: codec::balance(balance.unwrap_or_default(), currency),
            position: position.map(codec::seq).transpose()?,
        }))
    }
}

/// An account's balance from its entries posted at or before `$2` (all of
/// them when null), by a range of `entries_account_posted_at`. The account's
/// currency comes from its first entry (by `entries_account`) when none is
/// that old; null when it has no entries at all. docs/postgres.md shows its
/// plan.
pub const BALANCE_AS_OF: &str = "
    SELECT coalesce(upto.currency,
                    (SELECT currency FROM entries WHERE account = $1 ORDER BY seq LIMIT 1)) AS currency,
           upto.balance, upto.position
    FROM (SELECT min(currency) AS currency,
                 sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS balance,
                 max(seq) AS position
          FROM entries
          WHERE account = $1 AND posted_at <= coalesce($2, 'infinity'::timestamptz)) AS upto";
