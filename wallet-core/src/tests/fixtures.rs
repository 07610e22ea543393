//! Shared test data: fixed times, ids, wallets, a clock the test moves, and
//! a way to run an in-memory service call from a synchronous mock.

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::TimeZone;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::ids::{CorrelationId, EventId, IdempotencyKey, TransferId, WalletId};
use crate::money::{Amount, Balance, Currency};
use crate::ports::{Clock, IdGenerator};
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::{Reservation, ReservationState, ReserveRequest, Wallet};

/// The moment every test starts at.
pub(crate) fn t0() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// `t0` plus some seconds.
pub(crate) fn at(seconds: i64) -> Timestamp {
    t0() + chrono::Duration::seconds(seconds)
}

/// A decimal from text, for expectations.
pub(crate) fn dec(text: &str) -> Decimal {
    text.parse().expect("test decimal")
}

/// A USD amount.
pub(crate) fn usd(text: &str) -> Amount {
    Amount::parse(text, Currency::USD).expect("valid USD amount")
}

/// A balance from text.
pub(crate) fn bal(text: &str) -> Balance {
    Balance::from_decimal(dec(text))
}

/// An amount that bypasses [`Amount::new`], as a hostile or buggy peer could
/// send it: the decimal string is taken as is.
pub(crate) fn unchecked_amount(text: &str) -> Amount {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).expect("decimal text")
}

/// A user wallet id (never a system account id: the high bits are set).
pub(crate) fn wid(n: u64) -> WalletId {
    WalletId::from_uuid(Uuid::from_u128((u128::from(n) << 64) | 0xA))
}

/// A transfer id.
pub(crate) fn tid(n: u64) -> TransferId {
    TransferId::from_uuid(Uuid::from_u128((u128::from(n) << 64) | 0xB))
}

/// An event id.
pub(crate) fn eid(n: u64) -> EventId {
    EventId::from_uuid(Uuid::from_u128((u128::from(n) << 64) | 0xC))
}

/// A correlation id.
pub(crate) fn cid(n: u64) -> CorrelationId {
    CorrelationId::from_uuid(Uuid::from_u128((u128::from(n) << 64) | 0xD))
}

/// A user wallet with `available` funds and nothing reserved.
pub(crate) fn user_wallet(id: WalletId, currency: Currency, available: &str) -> Wallet {
    Wallet {
        available: bal(available),
        ..Wallet::open(id, currency, t0())
    }
}

/// A reserve request of `amount` USD.
pub(crate) fn reserve_request(
    transfer: TransferId,
    sender: WalletId,
    receiver: WalletId,
    amount: Amount,
    currency: Currency,
) -> ReserveRequest {
    ReserveRequest {
        tags: Default::default(),
        transfer_id: transfer,
        correlation_id: cid(1),
        kind: TransferKind::between(sender, receiver),
        sender_wallet_id: sender,
        receiver_wallet_id: receiver,
        amount,
        currency,
        expires_at: None,
        hold_id: None,
    }
}

/// A recorded reservation in `state`.
pub(crate) fn reservation(request: ReserveRequest, state: ReservationState) -> Reservation {
    Reservation {
        request,
        state,
        captured_by: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

/// An INITIATED wallet-to-wallet transfer of 10 USD.
pub(crate) fn transfer(status: TransferStatus) -> Transfer {
    Transfer {
        tags: Default::default(),
        id: tid(1),
        kind: TransferKind::Transfer,
        status,
        failure_reason: None,
        sender_wallet_id: wid(1),
        receiver_wallet_id: wid(2),
        amount: usd("10"),
        currency: Currency::USD,
        correlation_id: cid(1),
        idempotency_key: IdempotencyKey::new("key-1").expect("valid key"),
        created_at: t0(),
        updated_at: t0(),
        expires_at: None,
        hold_id: None,
        captured_by: None,
        refund_of: None,
    }
}

/// A clock that only moves when the test says so.
#[derive(Debug)]
pub(crate) struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    /// Stopped at `now`.
    pub(crate) fn at(now: Timestamp) -> Self {
        FakeClock(Mutex::new(now))
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock lock");
        *now += chrono::Duration::from_std(by).expect("short duration");
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// Ids from a counter, never colliding with the fixtures above or with
/// system account ids.
#[derive(Debug, Default)]
pub(crate) struct CountingIds(AtomicU64);

impl IdGenerator for CountingIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Uuid::from_u128((u128::from(n) << 64) | 0xF)
    }
}

/// Runs a future that completes without waiting (every in-memory store
/// call does), from synchronous code such as a mock's `returning` closure.
pub(crate) fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory call had to wait"),
    }
}
