//! A property of the whole embedded system: whatever clients ask (deposits,
//! withdrawals and transfers, valid or not, with idempotency keys repeated
//! with the same or another body) and however often events are delivered
//! again, once the system is quiet every invariant (docs/architecture.md)
//! holds and every balance equals a model kept by the test.

use std::collections::HashMap;

use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_core::audit::Scope;
use wallet_core::event::{Envelope, LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::memory::{Embedded, EmbeddedConfig, groups};
use wallet_core::outcome::FailureReason;
use wallet_core::ports::{LedgerReads, TransferReads, WalletReads};
use wallet_core::ports::{Message, Publisher};
use wallet_core::runtime::dead_letter_topic;
use wallet_core::service::{CreateError, Created, Parties, TransferRequest};
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};
use wallet_core::{Amount, Balance, Currency, IdempotencyKey, WalletId};

/// Three currencies with three different scales.
const CURRENCIES: [Currency; 3] = [Currency::USD, Currency::JPY, Currency::KWD];

/// A decimal as the client writes it: `mantissa` / 10^`scale`.
#[derive(Debug, Clone, Copy)]
struct Written {
    mantissa: i64,
    scale: u32,
}

impl Written {
    fn value(self) -> Decimal {
        Decimal::new(self.mantissa, self.scale)
    }

    /// The same number with one more trailing zero ("10.5" -> "10.50").
    fn padded(self) -> Written {
        Written {
            mantissa: self.mantissa * 10,
            scale: self.scale + 1,
        }
    }
}

/// Who is named in a request: a wallet of the run by index, an id nobody
/// opened, or a system account (which clients may not name).
#[derive(Debug, Clone, Copy)]
enum Party {
    Wallet(usize),
    Unknown,
    System,
}

#[derive(Debug, Clone)]
struct Ask {
    key: u8,
    kind: TransferKind,
    from: Party,
    to: Party,
    amount: Written,
    currency: Option<usize>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A client request.
    Create(Ask),
    /// A request made before, again, possibly with the amount padded.
    Repeat { pick: usize, pad: bool },
    /// One pass of every relay and consumer.
    Pump,
    /// Pump until nothing moves.
    Settle,
    /// Publish a copy of a message already on a topic.
    Redeliver { ledger_topic: bool, pick: usize },
}

/// Amounts up to `max` units, mostly valid for every currency.
fn written(max: i64) -> impl Strategy<Value = Written> {
    prop_oneof![
        // Whole units or one decimal: valid for USD and KWD, and for JPY
        // when whole.
        8 => (1..=max, 0u32..=1).prop_map(|(mantissa, scale)| Written { mantissa, scale }),
        // Anything: zero, three decimals (too many for USD and JPY), large.
        2 => (0..=30 * max, 0u32..=3).prop_map(|(mantissa, scale)| Written { mantissa, scale }),
    ]
}

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![
        24 => (0usize..5).prop_map(Party::Wallet),
        1 => Just(Party::Unknown),
        1 => Just(Party::System),
    ]
}

fn ask() -> impl Strategy<Value = Ask> {
    let kind = prop_oneof![
        3 => Just(TransferKind::Deposit),
        2 => Just(TransferKind::Withdrawal),
        4 => Just(TransferKind::Transfer),
    ];
    kind.prop_flat_map(|kind| {
        // Money comes in larger than it moves, so that most transfers and
        // withdrawals can be covered, and some cannot.
        let max = if kind == TransferKind::Deposit {
            2_000
        } else {
            300
        };
        let currency = prop_oneof![6 => Just(None), 1 => (0usize..3).prop_map(Some)];
        (
            0u8..64,
            Just(kind),
            party(),
            party(),
            written(max),
            currency,
        )
    })
    .prop_map(|(key, kind, from, to, amount, currency)| Ask {
        key,
        kind,
        from,
        to,
        amount,
        currency,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => ask().prop_map(Op::Create),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, pad)| Op::Repeat { pick, pad }),
        6 => Just(Op::Pump),
        2 => Just(Op::Settle),
        3 => (any::<bool>(), any::<usize>())
            .prop_map(|(ledger_topic, pick)| Op::Redeliver { ledger_topic, pick }),
    ]
}

/// What a transfer request is, once resolved; equal fingerprints.
type Fingerprint = (TransferKind, WalletId, WalletId, Decimal, Currency);

/// What the test expects of the system.
#[derive(Default)]
struct Model {
    wallets: Vec<(WalletId, Currency)>,
    /// Ledger balance of every user wallet once quiet.
    balance: HashMap<WalletId, Decimal>,
    /// Ledger balance of every system account once quiet.
    system: HashMap<Currency, Decimal>,
    /// Credits accepted since the system was last answered: they may not
    /// have reached the receiver's available balance yet.
    unsettled_credits: HashMap<WalletId, Decimal>,
    /// The first answer of every key that stored a transfer.
    keys: HashMap<String, (Fingerprint, Created)>,
    /// Transfers expected to succeed.
    accepted: Vec<Transfer>,
    /// Transfers expected to fail for insufficient funds.
    refused: Vec<Transfer>,
}

impl Model {
    fn unknown() -> WalletId {
        WalletId::from_uuid(Uuid::from_u128(u128::MAX - 7))
    }

    fn id(&self, party: Party) -> WalletId {
        match party {
            Party::Wallet(i) => self.wallets[i % self.wallets.len()].0,
            Party::Unknown => Model::unknown(),
            Party::System => WalletId::system(Currency::USD),
        }
    }

    fn currency_of(&self, id: WalletId) -> Result<Currency, CreateError> {
        self.wallets
            .iter()
            .find(|(w, _)| *w == id)
            .map(|(_, c)| *c)
            .ok_or(CreateError::WalletNotFound(id))
    }

    fn request(&self, ask: &Ask) -> TransferRequest {
        let (from, to) = (self.id(ask.from), self.id(ask.to));
        let parties = match ask.kind {
            TransferKind::Transfer => Parties::Transfer {
                sender: from,
                receiver: to,
            },
            TransferKind::Deposit => Parties::Deposit(to),
            TransferKind::Withdrawal => Parties::Withdrawal(from),
            TransferKind::Hold => unreachable!("asks are transfers, deposits or withdrawals"),
        };
        TransferRequest {
            tags: Default::default(),
            key: IdempotencyKey::new(format!("key-{}", ask.key)).unwrap(),
            parties,
            amount: ask.amount.value(),
            currency: ask.currency.map(|i| CURRENCIES[i]),
        }
    }

    /// The checks the service makes before storing anything, in its order.
    fn resolve(&self, r: &TransferRequest) -> Result<Fingerprint, CreateError> {
        let (kind, sender, receiver, currency) = match r.parties {
            Parties::Transfer { sender, receiver } => {
                if sender == receiver {
                    return Err(CreateError::SameWallet);
                }
                let (s, c) = (self.currency_of(sender)?, self.currency_of(receiver)?);
                if s != c {
                    return Err(CreateError::CurrencyMismatch(format!(
                        "sender holds {s}, receiver holds {c}"
                    )));
                }
                (TransferKind::Transfer, sender, receiver, s)
            }
            Parties::Deposit(w) => {
                let c = self.currency_of(w)?;
                (TransferKind::Deposit, WalletId::system(c), w, c)
            }
            Parties::Withdrawal(w) => {
                let c = self.currency_of(w)?;
                (TransferKind::Withdrawal, w, WalletId::system(c), c)
            }
        };
        if let Some(asked) = r.currency.filter(|asked| *asked != currency) {
            return Err(CreateError::CurrencyMismatch(format!(
                "request says {asked}, wallets hold {currency}"
            )));
        }
        let amount = Amount::new(r.amount, currency)?;
        Ok((kind, sender, receiver, amount.value().normalize(), currency))
    }

    fn add(map: &mut HashMap<WalletId, Decimal>, id: WalletId, by: Decimal) {
        *map.entry(id).or_default() += by;
    }

    /// Books an accepted transfer.
    fn book(&mut self, t: &Transfer) {
        let amount = t.amount.value();
        match t.kind {
            TransferKind::Deposit => *self.system.entry(t.currency).or_default() -= amount,
            _ => Model::add(&mut self.balance, t.sender_wallet_id, -amount),
        }
        match t.kind {
            TransferKind::Withdrawal => *self.system.entry(t.currency).or_default() += amount,
            _ => {
                Model::add(&mut self.balance, t.receiver_wallet_id, amount);
                Model::add(&mut self.unsettled_credits, t.receiver_wallet_id, amount);
            }
        }
        self.accepted.push(t.clone());
    }
}

fn decimal(b: Balance) -> Decimal {
    b.value()
}

/// Sends one request and checks the answer against the model.
async fn create(system: &Embedded, model: &mut Model, request: TransferRequest) {
    let key = request.key.as_str().to_owned();
    let expected = model.resolve(&request);
    // What the sender may spend right now, read before the reserve.
    let spendable = match &expected {
        Ok((TransferKind::Deposit, ..)) | Err(_) => None,
        Ok((_, sender, ..)) => {
            let w = system.wallets.wallet(*sender).await.unwrap().unwrap();
            let settled = model.balance.get(sender).copied().unwrap_or_default();
            let in_flight = model
                .unsettled_credits
                .get(sender)
                .copied()
                .unwrap_or_default();
            let available = decimal(w.available);
            assert!(
                settled - in_flight <= available && available <= settled,
                "wallet {sender} has {available}, model says {settled} with {in_flight} in flight"
            );
            Some(available)
        }
    };
    let result = system.transactions.create(request.clone()).await;
    let fingerprint = match expected {
        Err(CreateError::CurrencyMismatch(_)) => {
            assert!(
                matches!(result, Err(CreateError::CurrencyMismatch(_))),
                "{request:?} -> {result:?}"
            );
            return;
        }
        Err(error) => {
            assert_eq!(result, Err(error), "{request:?}");
            return;
        }
        Ok(fingerprint) => fingerprint,
    };
    if let Some((first, answer)) = model.keys.get(&key) {
        if *first == fingerprint {
            let replay = Created {
                transfer: answer.transfer.clone(),
                replayed: true,
            };
            assert_eq!(result, Ok(replay), "{request:?}");
        } else {
            assert_eq!(result, Err(CreateError::KeyReused), "{request:?}");
        }
        return;
    }
    let created = result.unwrap_or_else(|e| panic!("{request:?} refused: {e}"));
    let t = &created.transfer;
    assert!(!created.replayed);
    let (kind, sender, receiver, amount, currency) = fingerprint;
    assert_eq!(
        (t.kind, t.sender_wallet_id, t.receiver_wallet_id, t.currency),
        (kind, sender, receiver, currency)
    );
    assert_eq!(t.amount.value(), amount);
    let covered = spendable.is_none_or(|available| amount <= available);
    if covered {
        assert_eq!(
            (t.status, t.failure_reason),
            (TransferStatus::Reserved, None)
        );
        model.book(t);
    } else {
        assert_eq!(
            (t.status, t.failure_reason),
            (
                TransferStatus::Failed,
                Some(FailureReason::InsufficientFunds)
            )
        );
        model.refused.push(t.clone());
    }
    model.keys.insert(key, (fingerprint, created));
}

/// Publishes a copy of a message already on a topic, keyed as the relay
/// keys it.
async fn redeliver(system: &Embedded, topic: &str, pick: usize) {
    let messages = system.bus.messages(topic);
    if messages.is_empty() {
        return;
    }
    let payload = messages[pick % messages.len()].clone();
    let key = Envelope::decode(&payload).unwrap().transfer_id.to_string();
    let copy = Message {
        topic: topic.to_owned(),
        key: key.into_bytes(),
        payload: payload.into(),
    };
    system.bus.publish(&[copy]).await.unwrap();
}

async fn run(currencies: Vec<usize>, ops: Vec<Op>) {
    // Consumed events stay on the bus so they can be delivered again.
    let mut system = Embedded::new(EmbeddedConfig {
        keep_consumed_events: true,
        ..EmbeddedConfig::default()
    });
    let mut model = Model::default();
    for c in currencies {
        let wallet = system.wallets.open(CURRENCIES[c]).await.unwrap();
        model.wallets.push((wallet.id, wallet.currency));
        model.balance.insert(wallet.id, Decimal::ZERO);
    }
    let mut asked: Vec<Ask> = Vec::new();
    for op in ops {
        let described = format!("{op:?}");
        match op {
            Op::Create(ask) => {
                let request = model.request(&ask);
                create(&system, &mut model, request).await;
                asked.push(ask);
            }
            Op::Repeat { pick, pad } => {
                if asked.is_empty() {
                    continue;
                }
                let mut ask = asked[pick % asked.len()].clone();
                if pad && ask.amount.scale < 6 {
                    ask.amount = ask.amount.padded();
                }
                let request = model.request(&ask);
                create(&system, &mut model, request).await;
            }
            Op::Pump => {
                system.pump().await;
            }
            Op::Settle => {
                system.drain().await;
                model.unsettled_credits.clear();
            }
            Op::Redeliver { ledger_topic, pick } => {
                let topic = if ledger_topic {
                    LEDGER_EVENTS
                } else {
                    WALLET_EVENTS
                };
                redeliver(&system, topic, pick).await;
            }
        }
        // Mid-saga, the invariants that hold at every moment.
        let violations = system.audit(Scope::Always).await.violations;
        assert!(violations.is_empty(), "after {described}: {violations:#?}");
    }
    system.drain().await;
    check(&system, &model).await;
}

async fn check(system: &Embedded, model: &Model) {
    let report = system.audit(Scope::Quiet).await;
    assert!(report.violations.is_empty(), "{:#?}", report.violations);

    const ALL: usize = 10_000;
    let wallets = system
        .wallets
        .store()
        .wallets_page(None, ALL)
        .await
        .unwrap();
    for w in &wallets {
        assert_eq!(
            decimal(w.available),
            model.balance[&w.id],
            "wallet {} ({})",
            w.id,
            w.currency
        );
        assert_eq!(decimal(w.reserved), Decimal::ZERO, "wallet {}", w.id);
    }
    assert_eq!(wallets.len(), model.wallets.len());
    // System accounts have no wallet: their balance is the ledger's.
    let balances = system
        .ledger
        .store()
        .balances_page(None, ALL)
        .await
        .unwrap();
    for b in balances
        .iter()
        .filter(|b| b.account.system_currency().is_some())
    {
        let expected = model.system.get(&b.currency).copied().unwrap_or_default();
        assert_eq!(
            decimal(b.balance),
            expected,
            "system account of {}",
            b.currency
        );
    }

    let transfers = system
        .transactions
        .store()
        .transfers_page(None, ALL)
        .await
        .unwrap();
    let status: HashMap<_, _> = transfers
        .iter()
        .map(|t| (t.id, (t.status, t.failure_reason)))
        .collect();
    assert_eq!(status.len(), model.keys.len(), "one transfer per new key");
    for t in &model.accepted {
        assert_eq!(status[&t.id], (TransferStatus::Succeeded, None), "{t:?}");
    }
    for t in &model.refused {
        let failed = (
            TransferStatus::Failed,
            Some(FailureReason::InsufficientFunds),
        );
        assert_eq!(status[&t.id], failed, "{t:?}");
    }
    assert_eq!(report.entries, 2 * model.accepted.len());

    for group in [groups::LEDGER, groups::WALLET, groups::TRANSACTION] {
        let dead = system.bus.messages(&dead_letter_topic(group));
        assert!(
            dead.is_empty(),
            "{group} dead-lettered {} messages",
            dead.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_quiet_system_keeps_every_invariant_and_matches_the_model(
        // Mostly USD wallets, so that many transfers are within a currency.
        currencies in prop::collection::vec(prop_oneof![4 => Just(0usize), 1 => Just(1), 1 => Just(2)], 2..=5),
        ops in prop::collection::vec(op(), 1..128),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(currencies, ops));
    }
}
