//! The metrics the core records, through the `metrics` facade: nothing is
//! recorded until the process installs a recorder (a service binary installs
//! a Prometheus one). [`describe`] gives each its help text and unit, once
//! the recorder is installed.

use metrics::{Unit, describe_counter, describe_gauge};

use crate::transfer::{AgeBucket, TransferStatus, Unfinished};

/// Describes every metric of the core to the installed recorder: the
/// Prometheus text then carries a `# HELP` line for each.
pub fn describe() {
    describe_counter!(
        "wallet_saga_transitions_total",
        Unit::Count,
        "Transfers this process moved to RESERVED, SUCCEEDED or FAILED, and holds to HELD, CAPTURED, VOIDED or EXPIRED (label to)."
    );
    describe_counter!(
        "wallet_reserve_ambiguous_total",
        Unit::Count,
        "Reserves without a definite answer (timeout, connection error, 5xx); their transfers stay INITIATED for the retrier."
    );
    describe_counter!(
        "wallet_transfer_batches_total",
        Unit::Count,
        "Batches of new transfers stored, reserved and recorded together."
    );
    describe_counter!(
        "wallet_transfer_batch_items_total",
        Unit::Count,
        "Transfer requests in those batches; over wallet_transfer_batches_total, the mean batch size."
    );
    describe_counter!(
        "wallet_transfer_requests_busy_total",
        Unit::Count,
        "Transfer requests answered 503 at once because the batch queue was full."
    );
    describe_counter!(
        "wallet_reserve_retries_total",
        Unit::Count,
        "Reserves the retrier attempted again."
    );
    describe_counter!(
        "wallet_transfer_wait_reads_total",
        Unit::Count,
        "Reads of a transfer by long polls: one as each starts, one each time it is woken or polls."
    );
    describe_counter!(
        "wallet_events_handled_total",
        Unit::Count,
        "Events handed to a consumer's store (label group)."
    );
    describe_counter!(
        "wallet_consumer_retries_total",
        Unit::Count,
        "Consumer batches retried after a transient failure (label group)."
    );
    describe_counter!(
        "wallet_dead_letters_total",
        Unit::Count,
        "Events dead-lettered (label group; by: runner for undecodable or wrong type, store for refused by the store). Each needs an operator."
    );
    describe_counter!(
        "wallet_integrity_stalls_total",
        Unit::Count,
        "Consumers stopped on an integrity error, until an operator acts (label group)."
    );
    describe_counter!(
        "wallet_relay_published_total",
        Unit::Count,
        "Outbox records a relay published (label group)."
    );
    describe_counter!(
        "wallet_consumer_rejoins_total",
        Unit::Count,
        "Times a consumer joined its group afresh from the committed offsets: after a failed poll, commit or rewind, or a stall (label group)."
    );
    describe_counter!(
        "wallet_loop_restarts_total",
        Unit::Count,
        "Background loops that ended on an error or a panic and were started again (label loop)."
    );
    describe_counter!(
        "wallet_events_held_total",
        Unit::Count,
        "Events of a newer schema version than this build reads, held back (label group)."
    );
    describe_counter!(
        "wallet_events_parked_total",
        Unit::Count,
        "Events that kept failing alone, parked on the group's retry topic (label group)."
    );
    describe_counter!(
        "wallet_consumer_stalls_total",
        Unit::Count,
        "Times a consumer delivered nothing for the stall time while messages waited; each is followed by a rejoin (label group)."
    );
    describe_gauge!(
        "wallet_transfers_unfinished",
        Unit::Count,
        "Transfers not terminal, by status (INITIATED, RESERVED) and age since creation (lt_1m, 1m_5m, 5m_1h, gt_1h)."
    );
}

/// A transfer moved to `to`.
pub(crate) fn saga_transition(to: TransferStatus, n: usize) {
    let to = match to {
        TransferStatus::Initiated => return,
        TransferStatus::Reserved => "RESERVED",
        TransferStatus::Succeeded => "SUCCEEDED",
        other => other.as_str(),
    };
    metrics::counter!("wallet_saga_transitions_total", "to" => to).increment(n as u64);
}

/// `n` reserves got no definite answer.
pub(crate) fn reserve_ambiguous(n: usize) {
    metrics::counter!("wallet_reserve_ambiguous_total").increment(n as u64);
}

/// A batch of `n` new transfer requests ran.
pub(crate) fn transfer_batch(n: usize) {
    metrics::counter!("wallet_transfer_batches_total").increment(1);
    metrics::counter!("wallet_transfer_batch_items_total").increment(n as u64);
}

/// A transfer request was refused because the batch queue was full.
pub(crate) fn transfer_requests_refused_busy() {
    metrics::counter!("wallet_transfer_requests_busy_total").increment(1);
}

/// The retrier attempted `n` reserves again.
pub(crate) fn reserve_retries(n: usize) {
    metrics::counter!("wallet_reserve_retries_total").increment(n as u64);
}

/// A long poll read its transfer.
pub(crate) fn transfer_wait_read() {
    metrics::counter!("wallet_transfer_wait_reads_total").increment(1);
}

/// A consumer handed `n` events to its handler.
pub(crate) fn events_handled(group: &str, n: usize) {
    metrics::counter!("wallet_events_handled_total", "group" => group.to_owned())
        .increment(n as u64);
}

/// A consumer retries a batch after a transient failure.
pub(crate) fn consumer_retry(group: &str) {
    metrics::counter!("wallet_consumer_retries_total", "group" => group.to_owned()).increment(1);
}

/// Who dead-lettered an event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadLetteredBy {
    /// The consumer runner: undecodable, or not an event its handler takes.
    Runner,
    /// The store, in the unit that refused it.
    Store,
}

/// `n` events of `group` were dead-lettered.
pub(crate) fn dead_letters(group: &str, by: DeadLetteredBy, n: usize) {
    if n == 0 {
        return;
    }
    let by = match by {
        DeadLetteredBy::Runner => "runner",
        DeadLetteredBy::Store => "store",
    };
    metrics::counter!("wallet_dead_letters_total", "group" => group.to_owned(), "by" => by)
        .increment(n as u64);
}

/// A consumer of `group` stopped on an integrity error.
pub(crate) fn integrity_stall(group: &str) {
    metrics::counter!("wallet_integrity_stalls_total", "group" => group.to_owned()).increment(1);
}

/// A consumer of `group` rejoined after a failure of its subscription.
pub(crate) fn consumer_rejoin(group: &str) {
    metrics::counter!("wallet_consumer_rejoins_total", "group" => group.to_owned()).increment(1);
}

/// A consumer of `group` found itself stalled (see
/// `runtime::consumer::stalled`).
pub(crate) fn consumer_stall(group: &str) {
    metrics::counter!("wallet_consumer_stalls_total", "group" => group.to_owned()).increment(1);
}

/// Background loop `name` ended (an error or a panic) and is restarted.
pub(crate) fn loop_restart(name: &str) {
    metrics::counter!("wallet_loop_restarts_total", "loop" => name.to_owned()).increment(1);
}

/// A consumer of `group` holds `n` events of a newer schema version.
pub(crate) fn events_held(group: &str, n: usize) {
    metrics::counter!("wallet_events_held_total", "group" => group.to_owned()).increment(n as u64);
}

/// A consumer of `group` parked `n` events on its retry topic.
pub(crate) fn events_parked(group: &str, n: usize) {
    metrics::counter!("wallet_events_parked_total", "group" => group.to_owned())
        .increment(n as u64);
}

/// A relay of `group` published `n` records.
pub(crate) fn relay_published(group: &str, n: usize) {
    metrics::counter!("wallet_relay_published_total", "group" => group.to_owned())
        .increment(n as u64);
}

/// The transfers not terminal, by status and age.
pub(crate) fn unfinished_transfers(unfinished: &Unfinished) {
    for status in [TransferStatus::Initiated, TransferStatus::Reserved] {
        for bucket in AgeBucket::ALL {
            metrics::gauge!(
                "wallet_transfers_unfinished",
                "status" => status.as_str(),
                "age" => bucket.label()
            )
            .set(unfinished.count(status, bucket) as f64);
        }
    }
}
