//! The metrics the core records, through the `metrics` facade: nothing is
//! recorded until the process installs a recorder (a service binary installs
//! a Prometheus one), and then each is a counter named here.
//!
//! | name | labels | counts |
//! | --- | --- | --- |
//! | `wallet_saga_transitions_total` | `to` | transfers reaching `RESERVED`, `SUCCEEDED` or `FAILED` as this process moved them |
//! | `wallet_reserve_ambiguous_total` | | reserves without a definite answer (the transfer stays INITIATED for the retrier) |
//! | `wallet_transfer_batches_total` | | batches of new transfers stored, reserved and recorded together |
//! | `wallet_transfer_batch_items_total` | | requests in those batches (divided by the batches: the mean batch size) |
//! | `wallet_transfer_requests_busy_total` | | transfer requests refused at once because too many waited for a batch |
//! | `wallet_reserve_retries_total` | | reserves the retrier attempted again |
//! | `wallet_transfer_wait_reads_total` | | reads of a transfer by long polls (`TransactionService::wait_for`): one as each starts and one each time it is woken or polls; divided by the transfers completed, the reads each cost |
//! | `wallet_events_handled_total` | `group` | events handed to a consumer's handler |
//! | `wallet_consumer_retries_total` | `group` | batches retried after a transient failure |
//! | `wallet_dead_letters_total` | `group`, `by` | events dead-lettered: `by="runner"` (undecodable, wrong type) or `by="store"` (refused in the store's unit) |
//! | `wallet_integrity_stalls_total` | `group` | consumers stopped on an integrity error, until an operator acts |
//! | `wallet_relay_published_total` | `group` | outbox records a relay published |
//! | `wallet_consumer_rejoins_total` | `group` | times a consumer started reading afresh from the committed offsets: after a failed poll, commit or rewind, or a stall |
//! | `wallet_loop_restarts_total` | `loop` | background loops that ended on an error or a panic and were started again by the supervisor |
//! | `wallet_events_held_total` | `group` | times a consumer held back an event of a newer schema version than it reads (no commit, no dead letter), until a build that reads it takes over |
//! | `wallet_events_parked_total` | `group` | events that kept failing alone, parked on the group's retry topic for its retry runner |
//! | `wallet_consumer_stalls_total` | `group` | times a consumer delivered nothing for `ConsumerConfig::stall_after` while its partitions (or, owning none, its whole group) stood behind; each is followed by a rejoin |

use crate::transfer::TransferStatus;

/// A transfer moved to `to`.
pub(crate) fn saga_transition(to: TransferStatus, n: usize) {
    let to = match to {
        TransferStatus::Initiated => return,
        TransferStatus::Reserved => "RESERVED",
        TransferStatus::Succeeded => "SUCCEEDED",
        TransferStatus::Failed => "FAILED",
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
