//! The consumer runner and the outbox relay over the in-memory bus:
//! dead letters, duplicates, transient failures, rewinds, and relay crashes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::event::{Envelope, Event, LEDGER_EVENTS, PostingFacts, WALLET_EVENTS, producer};
use crate::ids::{EventId, TransferId};
use crate::memory::{MemoryBus, MemoryLedgerStore, MemoryWalletStore};
use crate::money::{Balance, Currency};
use crate::outcome::{LedgerOutcome, ReserveOutcome};
use crate::ports::{
    Backlog, BusError, Claim, Clock, Delivery, IdGenerator, LedgerReads, Message, Outbox,
    Publisher, Subscription, WalletStore,
};
use crate::runtime::{
    ConsumerConfig, ConsumerError, ConsumerRunner, EventHandler, HandleError, Handled, Relay,
    RelayConfig, Route, dead_letter_topic,
};
use crate::service::{LedgerService, WalletService};
use crate::transfer::TransferKind;
use crate::wallet::{ReserveRequest, Wallet};

use super::fixtures::{CountingIds, FakeClock, bal, cid, now_or_never, t0, usd, user_wallet, wid};

const GROUP: &str = "wallet-service";

fn config() -> ConsumerConfig {
    ConsumerConfig {
        batch_size: 100,
        poll_wait: Duration::ZERO,
        max_retries: 2,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        stall_after: Duration::from_secs(20),
        ..ConsumerConfig::default()
    }
}

/// Records every batch it is given, by event id.
#[derive(Debug, Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<EventId>>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let ids = batch.iter().map(|e| e.event_id).collect();
        self.batches.lock().unwrap().push(ids);
        Ok(Handled::default())
    }
}

/// Fails its first `failures` calls with a transient error, then hands the
/// batch to `inner`.
struct Flaky<H> {
    inner: H,
    failures: AtomicU32,
    calls: AtomicU32,
}

impl<H> Flaky<H> {
    fn new(inner: H, failures: u32) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            failures: AtomicU32::new(failures),
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for Flaky<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(HandleError::Transient("database restarting".into()));
        }
        self.inner.handle(batch).await
    }
}

/// The wallet side with alice (100 USD) and bob (0 USD), and one reservation of
/// 30 USD from alice to bob for transfer `tid`.
struct WalletSide {
    service: Arc<WalletService<MemoryWalletStore>>,
    clock: Arc<FakeClock>,
    ids: Arc<CountingIds>,
    transfer: TransferId,
}

impl WalletSide {
    fn new() -> WalletSide {
        let clock = Arc::new(FakeClock::at(t0()));
        let ids = Arc::new(CountingIds::default());
        let store = MemoryWalletStore::new();
        now_or_never(store.open_wallet(&user_wallet(wid(1), Currency::USD, "100"))).unwrap();
        now_or_never(store.open_wallet(&user_wallet(wid(2), Currency::USD, "0"))).unwrap();
        let service = Arc::new(WalletService::new(
            store,
            clock.clone(),
            ids.clone(),
            Arc::new(Notify::new()),
        ));
        let transfer = ids.transfer_id();
        let side = WalletSide {
            service,
            clock,
            ids,
            transfer,
        };
        assert_eq!(side.reserve(transfer, "30"), ReserveOutcome::Reserved);
        side
    }

    fn reserve(&self, transfer: TransferId, amount: &str) -> ReserveOutcome {
        let request = ReserveRequest {
            tags: Default::default(),
            transfer_id: transfer,
            correlation_id: cid(1),
            kind: TransferKind::Transfer,
            sender_wallet_id: wid(1),
            receiver_wallet_id: wid(2),
            amount: usd(amount),
            currency: Currency::USD,
            expires_at: None,
            hold_id: None,
        };
        now_or_never(self.service.reserve(&request)).unwrap()
    }

    fn wallet(&self, n: u64) -> Wallet {
        now_or_never(self.service.wallet(wid(n))).unwrap().unwrap()
    }

    /// (alice available, alice reserved, bob available).
    fn balances(&self) -> (Balance, Balance, Balance) {
        let (alice, bob) = (self.wallet(1), self.wallet(2));
        (alice.available, alice.reserved, bob.available)
    }

    fn ledger_succeeded(&self, transfer: TransferId) -> Envelope {
        let facts = PostingFacts {
            tags: Default::default(),
            sender_wallet_id: wid(1),
            receiver_wallet_id: wid(2),
            amount: usd("30"),
            currency: Currency::USD,
        };
        Envelope::new(
            self.ids.event_id(),
            Event::LedgerSucceeded(facts),
            transfer,
            cid(1),
            None,
            self.clock.now(),
            producer::LEDGER,
        )
    }
}

fn finalized() -> (Balance, Balance, Balance) {
    (bal("70"), bal("0"), bal("30"))
}

fn untouched() -> (Balance, Balance, Balance) {
    (bal("70"), bal("30"), bal("0"))
}

/// A broker that is down.
struct Down;

#[async_trait]
impl Publisher for Down {
    async fn publish(&self, _: &[Message]) -> Result<(), BusError> {
        Err(BusError("broker down".into()))
    }
}

/// A handler whose store reports a broken constraint.
#[derive(Default)]
struct Broken {
    calls: AtomicU32,
}

#[async_trait]
impl EventHandler for Broken {
    async fn handle(&self, _: &[Envelope]) -> Result<Handled, HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(crate::ports::StoreError::Integrity("check constraint violated".into()).into())
    }
}

/// The wallet store's relay, as one worker of its own.
fn wallet_relay<P: Publisher>(side: &WalletSide, publisher: P) -> Relay<MemoryWalletStore, P> {
    Relay::new(
        side.service.store().clone(),
        publisher,
        Route::new(Some(WALLET_EVENTS), GROUP),
        side.clock.clone(),
        side.ids.worker_id(),
        Arc::new(Notify::new()),
        RelayConfig::default(),
    )
}

async fn publish(bus: &MemoryBus, topic: &str, key: TransferId, payload: Vec<u8>) {
    let message = Message {
        topic: topic.into(),
        key: key.to_string().into_bytes(),
        payload: payload.into(),
    };
    bus.publish(&[message]).await.unwrap();
}

fn runner<H: EventHandler>(
    bus: &MemoryBus,
    handler: H,
) -> ConsumerRunner<crate::memory::MemorySubscription, H, MemoryBus> {
    ConsumerRunner::new(
        bus.subscribe(GROUP, LEDGER_EVENTS),
        handler,
        bus.clone(),
        GROUP,
        config(),
    )
}

fn dead_letters(bus: &MemoryBus) -> Vec<Value> {
    bus.messages(&dead_letter_topic(GROUP))
        .iter()
        .map(|m| serde_json::from_slice(m).unwrap())
        .collect()
}

/// Records the trace context of every event it is given.
#[derive(Debug, Default)]
struct TraceRecorder {
    traces: Mutex<Vec<Option<crate::trace::TraceParent>>>,
}

#[async_trait]
impl EventHandler for TraceRecorder {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let mut traces = self.traces.lock().unwrap();
        traces.extend(batch.iter().map(|e| e.trace));
        Ok(Handled::default())
    }
}

mod consumer {
    use super::*;

    #[tokio::test]
    async fn a_handler_gets_the_trace_context_each_event_travelled_with() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let header: crate::trace::TraceParent =
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap();
        let own: crate::trace::TraceParent =
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap();
        let from_bytes = side.ledger_succeeded(side.transfer);
        let in_process = side.ledger_succeeded(side.transfer).traced(Some(own));
        let delivery = |payload, trace| Delivery {
            topic: LEDGER_EVENTS.into(),
            partition: 0,
            offset: 0,
            key: side.transfer.to_string().into_bytes(),
            payload,
            trace,
        };
        let deliveries = [
            delivery(from_bytes.encode().into(), Some(header)),
            delivery(crate::ports::Payload::Event(Arc::new(in_process)), None),
        ];
        let recorder = Arc::new(TraceRecorder::default());
        let runner = runner(&bus, recorder.clone());
        runner.process(&deliveries).await.unwrap();
        assert_eq!(
            *recorder.traces.lock().unwrap(),
            vec![Some(header), Some(own)],
            "bytes take their record's header; an event made in process keeps its own"
        );
    }

    #[tokio::test]
    async fn poison_messages_are_dead_lettered_with_the_reason_and_committed() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let good = side.ledger_succeeded(side.transfer);
        let mut unknown: Value = serde_json::from_slice(&good.encode()).unwrap();
        unknown["event_type"] = json!("WalletOpened");
        let mut zero: Value = serde_json::from_slice(&good.encode()).unwrap();
        zero["schema_version"] = json!(0);
        let poison = [
            b"not json".to_vec(),
            serde_json::to_vec(&unknown).unwrap(),
            serde_json::to_vec(&zero).unwrap(),
        ];
        for payload in &poison {
            publish(&bus, LEDGER_EVENTS, side.transfer, payload.clone()).await;
        }
        publish(&bus, LEDGER_EVENTS, side.transfer, good.encode()).await;
        let recorder = Arc::new(Recorder::default());
        let mut runner = runner(&bus, recorder.clone());

        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            (report.delivered, report.handled, report.dead_lettered),
            (4, 1, 3)
        );
        assert_eq!(*recorder.batches.lock().unwrap(), vec![vec![good.event_id]]);
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
        let letters = dead_letters(&bus);
        assert_eq!(letters.len(), 3);
        let expected_reasons = [
            "malformed event",
            "unknown event type \"WalletOpened\"",
            "unsupported schema version 0",
        ];
        for (offset, ((letter, payload), reason)) in letters
            .iter()
            .zip(&poison)
            .zip(expected_reasons)
            .enumerate()
        {
            assert!(
                letter["reason"].as_str().unwrap().starts_with(reason),
                "{letter}"
            );
            assert_eq!(letter["payload"], json!(String::from_utf8_lossy(payload)));
            assert_eq!(letter["source"]["topic"], json!(LEDGER_EVENTS));
            assert_eq!(letter["source"]["offset"], json!(offset));
            assert_eq!(letter["group"], json!(GROUP));
            assert_eq!(letter["event_id"], json!(null));
        }
        // Nothing is delivered again.
        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(report.delivered, 0);

        // A batch of poison only is dead-lettered and committed too.
        publish(&bus, LEDGER_EVENTS, side.transfer, b"{}".to_vec()).await;
        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            (report.delivered, report.handled, report.dead_lettered),
            (1, 0, 1)
        );
        assert_eq!(
            recorder.batches.lock().unwrap().len(),
            1,
            "handler not called"
        );
        assert_eq!(dead_letters(&bus).len(), 4);
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
    }

    #[tokio::test]
    async fn a_refusal_commits_its_dead_letter_with_it_so_no_failure_can_lose_it() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let stranger = side.ids.transfer_id();
        let outcome = side.ledger_succeeded(stranger);
        publish(&bus, LEDGER_EVENTS, stranger, outcome.encode()).await;
        // The runner's own dead-letter publisher is down: a store's refusal
        // must not depend on it.
        let mut runner = ConsumerRunner::new(
            bus.subscribe(GROUP, LEDGER_EVENTS),
            side.service.clone(),
            Down,
            GROUP,
            config(),
        );

        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!((report.handled, report.dead_lettered), (1, 0));
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0, "committed");
        assert_eq!(side.balances(), untouched());
        assert!(dead_letters(&bus).is_empty(), "not published yet");

        // Delivered again, the inbox skips it: the only dead letter is the
        // one committed with the refusal.
        publish(&bus, LEDGER_EVENTS, stranger, outcome.encode()).await;
        assert_eq!(runner.run_once(Duration::ZERO).await.unwrap().handled, 1);

        // The relay dies after publishing nothing; another one, once the
        // lease ended, publishes the dead letter once.
        let dying = wallet_relay(&side, Down);
        assert!(dying.run_once().await.is_err());
        let relay = wallet_relay(&side, bus.clone());
        assert_eq!(
            relay.run_once().await.unwrap(),
            0,
            "leased by the dead relay"
        );
        side.clock.advance(RelayConfig::default().lease);
        // The fixture's WalletReserved, then the dead letter.
        assert_eq!(relay.run_once().await.unwrap(), 2);
        assert_eq!(relay.run_once().await.unwrap(), 0);
        let letters = dead_letters(&bus);
        assert_eq!(letters.len(), 1);
        assert_eq!(
            letters[0]["reason"],
            json!(format!("no reservation for transfer {stranger}"))
        );
        assert_eq!(letters[0]["event_id"], json!(outcome.event_id));
        assert_eq!(letters[0]["group"], json!(GROUP));
        let payload = letters[0]["payload"].as_str().unwrap();
        assert_eq!(Envelope::decode(payload.as_bytes()).unwrap(), outcome);
    }

    #[tokio::test]
    async fn an_integrity_failure_stops_the_runner_without_retry_or_commit() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let outcome = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        let broken = Arc::new(Broken::default());
        let runner = runner(&bus, broken.clone());

        let loops = crate::runtime::Loops::default();
        let runner = runner.reporting_to(loops.handle("consumer wallet-service"));

        let error = runner.run().await;
        assert!(error.is_integrity(), "{error:?}");
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1, "not retried");
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 1, "not skipped");
        assert!(dead_letters(&bus).is_empty(), "not dead-lettered");
        // Readiness names the loop, where it stopped, and why.
        let unwell = loops.unwell();
        assert_eq!(unwell.len(), 1, "{unwell:?}");
        assert!(unwell[0].stalled);
        let failure = unwell[0].failure.as_ref().unwrap();
        assert_eq!(failure.place.source, format!("{LEDGER_EVENTS}[0]@0"));
        assert_eq!(
            (failure.place.event_id, failure.place.transfer_id),
            (Some(outcome.event_id), Some(side.transfer))
        );
        assert!(failure.error.contains("integrity"), "{failure:?}");
    }

    #[tokio::test]
    async fn an_event_of_a_newer_schema_version_is_held_not_dead_lettered() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let first = side.ledger_succeeded(side.transfer);
        let newer = side.ledger_succeeded(TransferId::from_uuid(uuid::Uuid::now_v7()));
        let mut newer_json: Value = serde_json::from_slice(&newer.encode()).unwrap();
        newer_json["schema_version"] = json!(crate::event::SCHEMA_VERSION + 1);
        let after = side.ledger_succeeded(TransferId::from_uuid(uuid::Uuid::now_v7()));
        publish(&bus, LEDGER_EVENTS, side.transfer, first.encode()).await;
        let newer_bytes = serde_json::to_vec(&newer_json).unwrap();
        publish(&bus, LEDGER_EVENTS, newer.transfer_id, newer_bytes).await;
        publish(&bus, LEDGER_EVENTS, after.transfer_id, after.encode()).await;
        let recorder = Arc::new(Recorder::default());
        let loops = crate::runtime::Loops::default();
        let mut runner =
            runner(&bus, recorder.clone()).reporting_to(loops.handle("consumer wallet-service"));

        for _ in 0..3 {
            let error = runner.run_once(Duration::ZERO).await.unwrap_err();
            let ConsumerError::HeldBack(held) = &error else {
                panic!("expected a hold, got {error:?}");
            };
            assert_eq!(
                (held.partition, held.offset, &held.why),
                (0, 1, &crate::runtime::Holding::NewerVersion(2))
            );
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(
            batches,
            [vec![first.event_id]],
            "what precedes the held event is handled once; what follows waits behind it"
        );
        assert_eq!(
            bus.lag(GROUP, LEDGER_EVENTS),
            2,
            "committed up to the held event"
        );
        assert!(dead_letters(&bus).is_empty(), "not poison: no dead letter");

        // The next build takes over the group: it reads the version, so
        // the held event and what waited behind it are handled.
        drop(runner);
        let next = ConsumerConfig {
            schema_version: crate::event::SCHEMA_VERSION + 1,
            ..config()
        };
        let mut runner = ConsumerRunner::new(
            bus.subscribe(GROUP, LEDGER_EVENTS),
            recorder.clone(),
            bus.clone(),
            GROUP,
            next,
        );
        runner
            .run_once(Duration::ZERO)
            .await
            .expect("read by the next build");
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches[1], [newer.event_id, after.event_id], "{batches:?}");
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
        assert!(dead_letters(&bus).is_empty());
    }

    /// Fails every batch transiently while `broken`.
    #[derive(Default)]
    struct Breakable {
        broken: std::sync::atomic::AtomicBool,
        handled: AtomicU32,
    }

    #[async_trait]
    impl EventHandler for Breakable {
        async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(HandleError::Transient("the database is down".into()));
            }
            self.handled.fetch_add(batch.len() as u32, Ordering::SeqCst);
            Ok(Handled::default())
        }
    }

    #[tokio::test]
    async fn a_failing_consumer_shows_where_it_failed_until_a_batch_goes_through() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let event = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, event.encode()).await;
        let handler = Arc::new(Breakable::default());
        handler.broken.store(true, Ordering::SeqCst);
        let loops = crate::runtime::Loops::default();
        let runner = runner(&bus, handler.clone()).reporting_to(loops.handle("consumer"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run_until(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let state = loops.states().remove(0);
        let failure = state.failure.expect("failing");
        assert!(
            failure.error.contains("the database is down"),
            "{failure:?}"
        );
        assert_eq!(failure.place.source, format!("{LEDGER_EVENTS}[0]@0"));
        assert_eq!(failure.place.event_id, Some(event.event_id));
        assert!(!state.stalled, "a transient failure is not a stall yet");

        handler.broken.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(handler.handled.load(Ordering::SeqCst), 1);
        let state = loops.states().remove(0);
        assert_eq!(state.failure, None, "a batch went through: {state:?}");
        stop.send(()).unwrap();
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_held_event_makes_the_loop_stalled_naming_it() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let newer = side.ledger_succeeded(side.transfer);
        let mut newer_json: Value = serde_json::from_slice(&newer.encode()).unwrap();
        newer_json["schema_version"] = json!(crate::event::SCHEMA_VERSION + 1);
        let newer_bytes = serde_json::to_vec(&newer_json).unwrap();
        publish(&bus, LEDGER_EVENTS, side.transfer, newer_bytes).await;
        let loops = crate::runtime::Loops::default();
        let runner =
            runner(&bus, Recorder::default()).reporting_to(loops.handle("consumer wallet-service"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run_until(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let unwell = loops.unwell();
        assert_eq!(unwell.len(), 1, "{unwell:?}");
        let failure = unwell[0].failure.as_ref().unwrap();
        assert!(failure.error.contains("schema version 2"), "{failure:?}");
        assert_eq!(failure.place.source, format!("{LEDGER_EVENTS}[0]@0"));
        stop.send(()).unwrap();
        assert!(task.await.unwrap().is_none());
    }

    /// Fails, transiently, every batch that holds the poisoned event;
    /// records the event ids of the batches it takes.
    struct Choosy {
        poisoned: EventId,
        taken: Mutex<Vec<EventId>>,
    }

    #[async_trait]
    impl EventHandler for Choosy {
        async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
            if batch.iter().any(|e| e.event_id == self.poisoned) {
                return Err(HandleError::Transient(
                    "a row lock that never clears".into(),
                ));
            }
            self.taken
                .lock()
                .unwrap()
                .extend(batch.iter().map(|e| e.event_id));
            Ok(Handled::default())
        }
    }

    #[tokio::test]
    async fn an_event_that_keeps_failing_holds_back_only_its_partition() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(2);
        let events: Vec<Envelope> = (0..12)
            .map(|_| side.ledger_succeeded(TransferId::from_uuid(uuid::Uuid::now_v7())))
            .collect();
        for e in &events {
            publish(&bus, LEDGER_EVENTS, e.transfer_id, e.encode()).await;
        }
        let poisoned = events[5].clone();
        let handler = Arc::new(Choosy {
            poisoned: poisoned.event_id,
            taken: Mutex::default(),
        });
        let mut runner = runner(&bus, handler.clone());

        let error = runner.run_once(Duration::ZERO).await.unwrap_err();
        let ConsumerError::HeldBack(held) = &error else {
            panic!("expected the failing event held back, got {error:?}");
        };
        assert!(
            matches!(held.why, crate::runtime::Holding::Failing(_)),
            "{held:?}"
        );
        let mut taken = handler.taken.lock().unwrap().clone();
        taken.sort();
        let mut others: Vec<EventId> = events
            .iter()
            .map(|e| e.event_id)
            .filter(|id| *id != poisoned.event_id)
            .collect();
        others.sort();
        assert_eq!(taken, others, "every other event of the batch is handled");
        // Where each event is, as another group reads them.
        let mut inspector = bus.subscribe("inspector", LEDGER_EVENTS);
        let placed: Vec<(u32, u64, EventId)> = inspector
            .poll(100, Duration::ZERO)
            .await
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d.partition,
                    d.offset,
                    d.payload.envelope().unwrap().event_id,
                )
            })
            .collect();
        let at = placed
            .iter()
            .find(|(_, _, id)| *id == poisoned.event_id)
            .unwrap();
        assert_eq!((held.partition, held.offset), (at.0, at.1));
        let behind = placed
            .iter()
            .filter(|(p, o, _)| *p == at.0 && *o >= at.1)
            .count();
        assert_eq!(
            bus.lag(GROUP, LEDGER_EVENTS),
            behind as u64,
            "only the failing event's partition waits, from the failing event on"
        );
        assert!(behind < events.len(), "the other partition is committed");
        assert!(dead_letters(&bus).is_empty(), "not poison: no dead letter");
    }

    #[tokio::test]
    async fn an_event_that_keeps_failing_is_parked_and_retried_until_it_passes() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(2);
        let events: Vec<Envelope> = (0..8)
            .map(|_| side.ledger_succeeded(TransferId::from_uuid(uuid::Uuid::now_v7())))
            .collect();
        for e in &events {
            publish(&bus, LEDGER_EVENTS, e.transfer_id, e.encode()).await;
        }
        let poisoned = events[3].event_id;
        let handler = Arc::new(Choosy {
            poisoned,
            taken: Mutex::default(),
        });
        let parking = ConsumerConfig {
            park: true,
            ..config()
        };
        let mut main = ConsumerRunner::new(
            bus.subscribe(GROUP, LEDGER_EVENTS),
            handler.clone(),
            bus.clone(),
            GROUP,
            parking,
        );
        let report = main.run_once(Duration::ZERO).await.unwrap();
        assert_eq!((report.delivered, report.parked), (8, 1));
        assert_eq!(
            bus.lag(GROUP, LEDGER_EVENTS),
            0,
            "nothing holds the topic back"
        );
        assert_eq!(handler.taken.lock().unwrap().len(), 7, "the rest handled");
        let retry = crate::runtime::retry_topic(GROUP);
        assert_eq!(
            retry,
            format!("{GROUP}.retry"),
            "the name operators look for"
        );
        assert_eq!(bus.len(&retry), 1, "parked on the retry topic");
        assert!(dead_letters(&bus).is_empty(), "parked, not dead-lettered");

        // The retry runner tries it again; while it fails, it waits there.
        let mut retrier = ConsumerRunner::new(
            bus.subscribe(&retry, &retry),
            handler.clone(),
            bus.clone(),
            retry.clone(),
            config(),
        );
        assert!(retrier.run_once(Duration::ZERO).await.is_err());
        assert_eq!(bus.lag(&retry, &retry), 1, "not handled: not committed");
        // Its cause cleared, it is applied, once.
        let healed = Arc::new(Recorder::default());
        let mut retrier = ConsumerRunner::new(
            bus.subscribe(&retry, &retry),
            healed.clone(),
            bus.clone(),
            retry.clone(),
            config(),
        );
        let report = retrier.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(report.handled, 1);
        assert_eq!(*healed.batches.lock().unwrap(), vec![vec![poisoned]]);
        assert_eq!(bus.lag(&retry, &retry), 0);
    }

    #[test]
    fn the_backoff_doubles_from_its_start_up_to_its_ceiling() {
        let config = ConsumerConfig::default();
        let waits: Vec<u128> = (0..9).map(|a| config.backoff(a).as_millis()).collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 1_280, 2_000, 2_000]);
        assert_eq!(config.backoff(u32::MAX), config.backoff_max, "no overflow");
    }

    #[tokio::test]
    async fn a_stopped_runner_finishes_its_batch_commits_it_and_returns() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let outcome = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        // Stopped from the start: it returns before polling anything.
        let other = MemoryBus::new(1);
        publish(&other, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        let idle = runner(&other, side.service.clone());
        assert!(idle.run_until(std::future::ready(())).await.is_none());
        assert_eq!(other.lag(GROUP, LEDGER_EVENTS), 1, "nothing polled");

        // Stopped once the first batch has been handled.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = runner(&bus, side.service.clone());
        let task = tokio::spawn(runner.run_until(async move {
            stopped.await.ok();
        }));
        while bus.lag(GROUP, LEDGER_EVENTS) > 0 {
            tokio::task::yield_now().await;
        }
        stop.send(()).unwrap();
        assert!(task.await.unwrap().is_none(), "a stop is not an error");
        assert_eq!(side.balances(), finalized(), "the batch was applied");
    }

    #[tokio::test]
    async fn an_event_published_twice_is_applied_once() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(4);
        let outcome = side.ledger_succeeded(side.transfer);
        for _ in 0..2 {
            publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        }
        let recorder = Arc::new(Recorder::default());
        let mut recording = ConsumerRunner::new(
            bus.subscribe("recorder", LEDGER_EVENTS),
            recorder.clone(),
            bus.clone(),
            "recorder",
            config(),
        );
        let report = recording.run_once(Duration::ZERO).await.unwrap();
        assert_eq!((report.delivered, report.handled), (2, 1));
        assert_eq!(
            *recorder.batches.lock().unwrap(),
            vec![vec![outcome.event_id]]
        );

        let mut runner = runner(&bus, side.service.clone());
        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!((report.delivered, report.handled), (2, 1));
        assert_eq!(side.balances(), finalized());

        // Once more, in a later batch: the store's inbox drops it.
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            (report.delivered, report.handled, report.dead_lettered),
            (1, 1, 0)
        );
        assert_eq!(side.balances(), finalized());
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
    }

    #[tokio::test]
    async fn a_ledger_failure_releases_the_reservation_once() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let failed = Envelope::new(
            side.ids.event_id(),
            Event::LedgerFailed(crate::event::LedgerFailure {
                reason: crate::outcome::FailureReason::CurrencyMismatch,
            }),
            side.transfer,
            cid(1),
            None,
            side.clock.now(),
            producer::LEDGER,
        );
        let mut runner = runner(&bus, side.service.clone());
        for _ in 0..2 {
            publish(&bus, LEDGER_EVENTS, side.transfer, failed.encode()).await;
            let report = runner.run_once(Duration::ZERO).await.unwrap();
            assert_eq!((report.delivered, report.dead_lettered), (1, 0));
            assert_eq!(side.balances(), (bal("100"), bal("0"), bal("0")));
        }
        // A success after the release contradicts the reservation: dead-lettered,
        // and nothing moves.
        let late = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, late.encode()).await;
        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(report.dead_lettered, 0, "the store dead-letters it");
        assert_eq!(side.balances(), (bal("100"), bal("0"), bal("0")));
        // The fixture's WalletReserved, then the dead letter.
        assert_eq!(
            wallet_relay(&side, bus.clone()).run_once().await.unwrap(),
            2
        );
        let letters = dead_letters(&bus);
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0]["reason"]
                .as_str()
                .unwrap()
                .contains("contradicts reservation state Released"),
            "{}",
            letters[0]
        );
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_within_the_batch() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let outcome = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        let flaky = Flaky::new(side.service.clone(), config().max_retries);
        let mut runner = runner(&bus, flaky.clone());

        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            (report.delivered, report.handled, report.dead_lettered),
            (1, 1, 0)
        );
        assert_eq!(flaky.calls(), config().max_retries + 1);
        assert_eq!(side.balances(), finalized());
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
        assert!(dead_letters(&bus).is_empty(), "transient is never poison");
    }

    #[tokio::test]
    async fn a_batch_that_keeps_failing_is_rewound_and_applied_once_later() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(1);
        let outcome = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        publish(&bus, LEDGER_EVENTS, side.transfer, b"garbage".to_vec()).await;
        let flaky = Flaky::new(side.service.clone(), config().max_retries + 1);
        let mut runner = runner(&bus, flaky.clone());

        let error = runner.run_once(Duration::ZERO).await.unwrap_err();
        assert!(matches!(error, ConsumerError::Handler(_)), "{error:?}");
        assert_eq!(flaky.calls(), config().max_retries + 1);
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 2, "nothing committed");
        assert_eq!(side.balances(), untouched());
        assert!(
            dead_letters(&bus).is_empty(),
            "dead letters wait for the batch"
        );

        let report = runner.run_once(Duration::ZERO).await.unwrap();
        assert_eq!(
            (report.delivered, report.handled, report.dead_lettered),
            (2, 1, 1)
        );
        assert_eq!(side.balances(), finalized());
        assert_eq!(bus.lag(GROUP, LEDGER_EVENTS), 0);
        assert_eq!(dead_letters(&bus).len(), 1);
        assert_eq!(runner.run_once(Duration::ZERO).await.unwrap().delivered, 0);
    }

    #[tokio::test]
    async fn a_new_subscription_resumes_from_the_committed_offsets() {
        let side = WalletSide::new();
        let bus = MemoryBus::new(2);
        let outcome = side.ledger_succeeded(side.transfer);
        publish(&bus, LEDGER_EVENTS, side.transfer, outcome.encode()).await;
        let flaky = Flaky::new(side.service.clone(), u32::MAX);
        let mut dying = runner(&bus, flaky);
        assert!(dying.run_once(Duration::ZERO).await.is_err());
        drop(dying);
        // The process restarts: a fresh subscription of the same group.
        let mut restarted = runner(&bus, side.service.clone());
        assert_eq!(
            restarted.run_once(Duration::ZERO).await.unwrap().delivered,
            1
        );
        assert_eq!(side.balances(), finalized());
    }
}

mod relay {
    use super::*;

    fn relay(
        side: &WalletSide,
        bus: &MemoryBus,
        batch_size: usize,
    ) -> Relay<MemoryWalletStore, MemoryBus> {
        let config = RelayConfig {
            batch_size,
            ..RelayConfig::default()
        };
        Relay::new(
            side.service.store().clone(),
            bus.clone(),
            Route::new(Some(WALLET_EVENTS), GROUP),
            side.clock.clone(),
            side.ids.worker_id(),
            Arc::new(Notify::new()),
            config,
        )
    }

    /// Reserves two more transfers after the fixture's one.
    fn three_holds(side: &WalletSide) -> Vec<TransferId> {
        let more: Vec<TransferId> = (0..2).map(|_| side.ids.transfer_id()).collect();
        for (t, amount) in more.iter().zip(["1", "2"]) {
            assert_eq!(side.reserve(*t, amount), ReserveOutcome::Reserved);
        }
        std::iter::once(side.transfer).chain(more).collect()
    }

    fn transfer_ids(bus: &MemoryBus) -> Vec<TransferId> {
        bus.messages(WALLET_EVENTS)
            .iter()
            .map(|m| Envelope::decode(m).unwrap().transfer_id)
            .collect()
    }

    #[tokio::test]
    async fn publishes_in_outbox_order_keyed_by_transfer_and_only_once() {
        for batch_size in [500, 2, 1] {
            let side = WalletSide::new();
            let order = three_holds(&side);
            let bus = MemoryBus::new(1);
            let relay = relay(&side, &bus, batch_size);
            let mut sent = 0;
            loop {
                let n = relay.run_once().await.unwrap();
                assert!(n <= batch_size);
                if n == 0 {
                    break;
                }
                sent += n;
            }
            assert_eq!(sent, 3);
            assert_eq!(transfer_ids(&bus), order, "batch size {batch_size}");
            let anyone = Claim::new(side.ids.worker_id(), side.clock.now(), Duration::ZERO);
            let left = side.service.store().claim(&anyone, 10).await.unwrap();
            assert!(left.is_empty(), "everything acknowledged: {left:?}");
            let mut reader = bus.subscribe("reader", WALLET_EVENTS);
            let deliveries = reader.poll(10, Duration::ZERO).await.unwrap();
            let keys: Vec<Vec<u8>> = deliveries.iter().map(|d| d.key.clone()).collect();
            let want: Vec<Vec<u8>> = order.iter().map(|t| t.to_string().into_bytes()).collect();
            assert_eq!(keys, want);
        }
    }

    #[tokio::test]
    async fn a_route_writing_the_next_version_stamps_the_events_it_publishes() {
        let side = WalletSide::new();
        let anyone = Claim::new(side.ids.worker_id(), side.clock.now(), Duration::ZERO);
        let record = side
            .service
            .store()
            .claim(&anyone, 1)
            .await
            .unwrap()
            .remove(0);
        let next = crate::event::SCHEMA_VERSION + 1;
        let route = Route::new(Some(WALLET_EVENTS), GROUP);
        let stamped = route.clone().writing(next).message(record.item.clone());
        let plain = route.message(record.item);
        let bytes = stamped.payload.to_bytes().into_owned();
        assert_eq!(
            Envelope::decode(&bytes),
            Err(crate::event::DecodeError::NewerVersion(next)),
            "this build holds it"
        );
        let read = Envelope::decode_up_to(&bytes, next).expect("the next build reads it");
        let mut as_written = plain.payload.envelope().unwrap();
        assert_eq!(as_written.schema_version, crate::event::SCHEMA_VERSION);
        as_written.schema_version = next;
        assert_eq!(read, as_written, "the same event, stamped one higher");
        assert_eq!(
            stamped.payload.envelope_up_to(next - 1),
            Err(crate::event::DecodeError::NewerVersion(next)),
            "held in process too"
        );
    }

    #[tokio::test]
    async fn a_stopped_relay_publishes_what_it_claimed_then_returns() {
        let side = WalletSide::new();
        let order = three_holds(&side);
        let bus = MemoryBus::new(1);
        // Stopped from the start: one pass, then it returns.
        relay(&side, &bus, 2)
            .run_until(std::future::ready(()))
            .await;
        assert_eq!(transfer_ids(&bus), order[..2], "the claimed batch went out");
        let anyone = Claim::new(side.ids.worker_id(), side.clock.now(), Duration::ZERO);
        let left = side.service.store().claim(&anyone, 10).await.unwrap();
        assert_eq!(left.len(), 1, "the rest waits for the next relay: {left:?}");
    }

    #[tokio::test]
    async fn a_crash_before_acknowledging_republishes_and_consumers_apply_once() {
        for batch_size in [1, 10] {
            let side = WalletSide::new();
            let order = three_holds(&side);
            let bus = MemoryBus::new(2);
            // A relay publishes its claim, then dies before acknowledging it.
            let dead = relay(&side, &bus, 500);
            let claimed = dead.claim().await.unwrap();
            let messages: Vec<Message> = claimed
                .into_iter()
                .map(|r| Route::new(Some(WALLET_EVENTS), GROUP).message(r.item))
                .collect();
            bus.publish(&messages).await.unwrap();
            // Its successor waits for the lease, then publishes the batch
            // again.
            let successor = relay(&side, &bus, 500);
            assert_eq!(successor.run_once().await.unwrap(), 0);
            side.clock.advance(RelayConfig::default().lease);
            assert_eq!(successor.run_once().await.unwrap(), 3);
            assert_eq!(successor.run_once().await.unwrap(), 0);
            assert_eq!(bus.len(WALLET_EVENTS), 6);

            let ledger = Arc::new(LedgerService::new(
                MemoryLedgerStore::new(),
                side.clock.clone(),
                side.ids.clone(),
                Arc::new(Notify::new()),
            ));
            let mut consumer = ConsumerRunner::new(
                bus.subscribe("ledger-service", WALLET_EVENTS),
                ledger.clone(),
                bus.clone(),
                "ledger-service",
                ConsumerConfig {
                    batch_size,
                    ..config()
                },
            );
            let mut delivered = 0;
            loop {
                let report = consumer.run_once(Duration::ZERO).await.unwrap();
                assert_eq!(report.dead_lettered, 0);
                if report.delivered == 0 {
                    break;
                }
                delivered += report.delivered;
            }
            assert_eq!(delivered, 6);
            let store = ledger.store();
            let entries = store.postings_page(None, 100).await.unwrap();
            assert_eq!(entries.len(), 6, "two entries per transfer");
            let outcomes = store.outcomes_page(None, 100).await.unwrap();
            assert_eq!(outcomes.len(), 3);
            assert!(outcomes.iter().all(|(_, o)| *o == LedgerOutcome::Succeeded));
            let anyone = Claim::new(side.ids.worker_id(), side.clock.now(), Duration::ZERO);
            let outbox = store.claim(&anyone, 100).await.unwrap();
            let mut outcome_transfers: Vec<TransferId> =
                outbox.iter().map(|r| r.item.transfer_id()).collect();
            outcome_transfers.sort();
            let mut want = order.clone();
            want.sort();
            assert_eq!(outcome_transfers, want, "one outcome per transfer");
            let alice_balance = store
                .balances_page(None, 100)
                .await
                .unwrap()
                .into_iter()
                .find(|b| b.account == wid(1))
                .unwrap();
            assert_eq!(alice_balance.balance, bal("-33"));
        }
    }
}

mod retention {
    use std::time::Duration;

    use crate::memory::MemoryBus;
    use crate::ports::{Message, Publisher, Subscription};

    fn message(key: &str) -> Message {
        Message {
            topic: "t".into(),
            key: key.as_bytes().to_vec(),
            payload: key.as_bytes().to_vec().into(),
        }
    }

    #[tokio::test]
    async fn a_dropping_bus_keeps_only_what_some_group_has_not_committed() {
        let bus = MemoryBus::new(1).dropping_consumed();
        let mut fast = bus.subscribe("fast", "t");
        let mut slow = bus.subscribe("slow", "t");
        bus.publish(&[message("a"), message("b"), message("c")])
            .await
            .unwrap();

        let got = fast.poll(10, Duration::ZERO).await.unwrap();
        fast.commit(&got).await.unwrap();
        assert_eq!(
            bus.messages("t").len(),
            3,
            "the slow group still needs them"
        );

        let first = slow.poll(1, Duration::ZERO).await.unwrap();
        slow.commit(&first).await.unwrap();
        assert_eq!(bus.messages("t"), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(bus.len("t"), 3, "len counts every message ever published");

        // Rewinding goes back to the committed offset, which is retained.
        let rest = slow.poll(10, Duration::ZERO).await.unwrap();
        slow.rewind().await.unwrap();
        let again = slow.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(rest, again);
        assert_eq!(
            again.iter().map(|d| d.offset).collect::<Vec<_>>(),
            vec![1, 2]
        );
        slow.commit(&again).await.unwrap();
        assert!(bus.messages("t").is_empty());
        assert_eq!(bus.lag("slow", "t"), 0);

        // A group that arrives later starts at the oldest retained message.
        bus.publish(&[message("d")]).await.unwrap();
        let mut late = bus.subscribe("late", "t");
        let got = late.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![3]);
    }

    #[tokio::test]
    async fn a_default_bus_keeps_everything() {
        let bus = MemoryBus::new(2);
        let mut group = bus.subscribe("g", "t");
        bus.publish(&[message("a"), message("b")]).await.unwrap();
        let got = group.poll(10, Duration::ZERO).await.unwrap();
        group.commit(&got).await.unwrap();
        assert_eq!(bus.messages("t").len(), 2);
    }
}

/// A member that never gets a message: it owns what `backlog` says, and
/// counts its rejoins. Each read of the backlog adds `progress` to the
/// group's committed offsets.
struct Stuck {
    backlog: Backlog,
    progress: u64,
    rejoins: Arc<AtomicU32>,
}

#[async_trait]
impl Subscription for Stuck {
    async fn poll(&mut self, _: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        tokio::time::sleep(wait).await;
        Ok(Vec::new())
    }
    async fn commit(&mut self, _: &[Delivery]) -> Result<(), BusError> {
        Ok(())
    }
    async fn rewind(&mut self) -> Result<(), BusError> {
        Ok(())
    }
    async fn rejoin(&mut self) -> Result<(), BusError> {
        self.rejoins.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn backlog(&mut self) -> Result<Backlog, BusError> {
        self.backlog.committed += self.progress;
        Ok(self.backlog)
    }
}

/// Runs a runner over a [`Stuck`] member for `seconds` of (paused) time;
/// how many times it rejoined, and whether readiness then shows it stalled.
async fn rejoins_within(backlog: Backlog, progress: u64, seconds: u64) -> (u32, bool) {
    let rejoins = Arc::new(AtomicU32::new(0));
    let subscription = Stuck {
        backlog,
        progress,
        rejoins: rejoins.clone(),
    };
    let loops = crate::runtime::Loops::default();
    let runner = ConsumerRunner::new(
        subscription,
        Recorder::default(),
        MemoryBus::default(),
        GROUP,
        ConsumerConfig {
            poll_wait: Duration::from_millis(100),
            ..config()
        },
    )
    .reporting_to(loops.handle("consumer"));
    let stopped = runner
        .run_until(tokio::time::sleep(Duration::from_secs(seconds)))
        .await;
    assert!(stopped.is_none(), "{stopped:?}");
    let unwell = loops.unwell();
    for state in &unwell {
        let failure = state.failure.as_ref().expect("a stalled loop says why");
        assert_eq!(
            failure.place.source,
            format!("group {GROUP}"),
            "a stall names the group, having no delivery to name"
        );
    }
    (rejoins.load(Ordering::SeqCst), !unwell.is_empty())
}

#[tokio::test(start_paused = true)]
async fn a_member_that_owns_lagging_partitions_and_delivers_nothing_rejoins() {
    let lagging = Backlog {
        owned: 2,
        owned_lag: 7,
        group_lag: 7,
        committed: 100,
    };
    assert_eq!(
        rejoins_within(lagging, 0, 19).await,
        (0, false),
        "not before stall_after"
    );
    assert_eq!(
        rejoins_within(lagging, 0, 21).await,
        (1, true),
        "once stall_after has passed; readiness shows it until a delivery"
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_owns_nothing_rejoins_only_while_its_group_stands_still() {
    let orphaned = Backlog {
        owned: 0,
        owned_lag: 0,
        group_lag: 1_400,
        committed: 100,
    };
    // One read at 20 s, a second at 40 s finds the group where it was.
    assert_eq!(rejoins_within(orphaned, 0, 39).await, (0, false));
    assert_eq!(rejoins_within(orphaned, 0, 41).await, (1, true));
    // Another member is making progress: owning nothing is fine.
    assert_eq!(rejoins_within(orphaned, 5, 90).await, (0, false));
    // A group that is not behind is not stalled.
    let idle = Backlog {
        group_lag: 0,
        ..orphaned
    };
    assert_eq!(rejoins_within(idle, 0, 90).await, (0, false));
    let caught_up = Backlog { owned: 8, ..idle };
    assert_eq!(rejoins_within(caught_up, 0, 90).await, (0, false));
}
