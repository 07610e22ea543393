//! The contract scenarios every adapter of the ports must pass.
//!
//! Each scenario is a `pub async fn` that takes a fixture, makes fresh,
//! empty stores (or a fresh bus) from it, seeds them through the ports alone,
//! and asserts what the documentation of [`crate::ports`] promises. A
//! scenario panics with a message that says what broke.
//!
//! Everything here, [`data`]'s seeding and assertion helpers included, is a
//! test: it fails by panicking, as `assert!` does, inside the test that
//! called it. None of it belongs on a path of a running program, which is
//! why it sits behind a feature an adapter enables in its dev-dependencies
//! only; the helpers a program may call (stores, services, runtime) return
//! their failures as values.
//!
//! Scenarios are grouped by the kind of adapter they check:
//!
//! | kind             | module               | the fixture makes                                       |
//! |------------------|----------------------|---------------------------------------------------------|
//! | `transfer_store` | [`transfer_store`]   | `TransferStore + TransferReads + Outbox`                |
//! | `wallet_store`   | [`wallet_store`]     | `WalletStore + WalletReads + Outbox`                    |
//! | `ledger_store`   | [`ledger_store`]     | `LedgerStore + LedgerReads + Outbox`                    |
//! | `bus`            | [`bus`]              | a `Publisher` and its subscriptions, see [`BusFixture`] |
//!
//! # Running every scenario against an adapter
//!
//! One line per kind, in an integration test of the adapter's crate, expands
//! to one `#[tokio::test]` per scenario, on a multi-threaded runtime:
//!
//! ```ignore
//! wallet_core::contract_tests!(wallet_store: || async { PgWalletStore::connect(&fresh_database().await).await.unwrap() });
//! wallet_core::contract_tests!(bus: KafkaFixture::from_env());
//! ```
//!
//! The fixture expression is evaluated once per test, inside a module named
//! after the kind that imports the caller's module (`use super::*`). Any
//! closure returning a future is a [`Fixture`]; a type can implement it
//! too, for example to hold the address of a database server in which
//! `fresh` creates a new database. A second set of the same kind in one
//! file needs its own module name: `contract_tests!(bus as bus_compacted:
//! ...)`.
//!
//! The generated tests use `#[tokio::test(flavor = "multi_thread")]`, so the
//! calling crate needs `tokio` with the `macros` and `rt-multi-thread`
//! features among its dev-dependencies. This module itself needs no more of
//! tokio than this crate does.
//!
//! The scenarios of each kind are listed once, in the hidden macro
//! `__contract_scenarios!` next to `contract_tests!`, and every adapter's
//! `contract_tests!` line runs that list as it is when built: a scenario is
//! added by writing its function in its kind's module and its name in the
//! list, and then reaches every adapter with no change to the adapters.
//! Each kind's module exposes the list as `SCENARIOS`; this crate's
//! `contract_memory` test checks it names every `pub async fn` of the
//! module, so a scenario cannot be written and forgotten.

pub mod bus;
pub mod data;
pub mod ledger_store;
mod outbox;
pub mod transfer_store;
pub mod wallet_store;

use std::future::Future;
use std::time::Duration;

use crate::ports::{Publisher, Subscription};

/// Makes fresh, empty stores of one kind.
///
/// Every scenario calls [`Fixture::fresh`] for each store it needs and
/// assumes nothing else is in it. Any closure `Fn() -> impl Future<Output =
/// Store>` is a fixture.
pub trait Fixture {
    /// The store under test.
    type Store: Send + Sync + 'static;

    /// A new, empty store that shares nothing with stores made before.
    fn fresh(&self) -> impl Future<Output = Self::Store>;
}

impl<F, Fut> Fixture for F
where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: Send + Sync + 'static,
{
    type Store = Fut::Output;

    fn fresh(&self) -> impl Future<Output = Self::Store> {
        self()
    }
}

/// Makes fresh buses and subscriptions to them, for the [`bus`] scenarios.
///
/// The scenarios name their own topics and consumer groups, unique per
/// scenario run, so an adapter may also share one broker between runs.
pub trait BusFixture {
    /// The bus: what publishes.
    type Bus: Publisher;
    /// A consumer group's reading of one topic.
    type Subscription: Subscription;

    /// A new bus with no messages on the topics the scenarios use.
    fn fresh(&self) -> impl Future<Output = Self::Bus>;

    /// Reads `topic` of `bus` as consumer group `group`, from the group's
    /// committed offsets, or from the oldest message when the group has
    /// none. A scenario drops a group's subscription before it subscribes
    /// the same group again.
    fn subscribe(
        &self,
        bus: &Self::Bus,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Self::Subscription>;

    /// How long a scenario polls for messages it expects before it fails.
    /// A broker that takes time to assign partitions to a new group needs
    /// more than the default of ten seconds.
    fn patience(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Expands to one `#[tokio::test]` per contract scenario of a kind, run
/// against a fixture.
///
/// ```ignore
/// wallet_core::contract_tests!(transfer_store: || async { MemoryTransferStore::new() });
/// wallet_core::contract_tests!(wallet_store: || async { MemoryWalletStore::new() });
/// wallet_core::contract_tests!(ledger_store: || async { MemoryLedgerStore::new() });
/// wallet_core::contract_tests!(bus: MemoryBusFixture);
/// wallet_core::contract_tests!(bus as bus_compacted: CompactedFixture);
/// ```
///
/// The kinds are `transfer_store`, `wallet_store`, `ledger_store` (whose
/// fixtures are [`contract::Fixture`](crate::contract::Fixture)s) and `bus`
/// (a [`contract::BusFixture`](crate::contract::BusFixture)). The tests are
/// generated in a module named after the kind, or after the name given with
/// `as`.
#[macro_export]
macro_rules! contract_tests {
    ($kind:ident : $fixture:expr $(,)?) => {
        $crate::contract_tests!($kind as $kind : $fixture);
    };
    ($kind:ident as $module:ident : $fixture:expr $(,)?) => {
        $crate::__contract_scenarios!($kind => __contract_tests_of($kind, $module, $fixture,));
    };
}

/// The list of every scenario of each kind: calls `$crate::$then!` with the
/// given arguments followed by the kind's scenario names in brackets. Used
/// by [`contract_tests!`] and by each kind's `SCENARIOS`; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_scenarios {
    (transfer_store => $then:ident ($($args:tt)*)) => {
        $crate::$then!($($args)* [
            begin_stores_an_initiated_transfer,
            begin_with_a_known_key_returns_the_record_and_writes_nothing,
            record_reserve_reserved_moves_to_reserved,
            record_reserve_rejected_fails_with_the_reason,
            record_reserve_ambiguous_leaves_initiated,
            record_reserve_keeps_the_keys_first_response,
            begin_batch_stores_new_keys_and_answers_the_rest_in_order,
            record_reserves_records_a_batch_in_order,
            ledger_outcomes_finish_transfers,
            ledger_outcomes_are_deduplicated_by_event_id,
            a_terminal_transfer_never_moves,
            an_outcome_for_an_unknown_transfer_is_dead_lettered,
            claim_initiated_returns_old_initiated_transfers_oldest_first,
            claim_initiated_respects_other_workers_leases,
            claim_initiated_skips_transfers_no_longer_initiated,
            claim_expired_holds_leases_due_holds_soonest_first,
            record_hold_ends_moves_held_holds_only,
            a_captures_answer_ends_its_hold,
            begin_refund_keeps_refunds_within_the_original,
            concurrent_refunds_never_exceed_the_original,
            references_are_unique_per_wallet,
            concurrent_begins_store_a_reference_once,
            history_pages_newest_first_through_its_filters,
            transfers_are_read_by_id_and_paged_in_id_order,
            unfinished_transfers_are_counted_by_status_and_age,
            outbox_claims_oldest_first_up_to_limit,
            outbox_leases_keep_records_from_other_workers,
            outbox_acknowledged_records_never_return,
            outbox_records_return_when_the_lease_ends,
            outbox_a_worker_reclaims_its_own_records,
            outbox_keeps_each_transfers_records_in_order,
        ]);
    };
    (wallet_store => $then:ident ($($args:tt)*)) => {
        $crate::$then!($($args)* [
            open_wallet_then_read_it,
            opening_an_existing_id_is_an_integrity_error,
            a_deposit_needs_no_stored_system_wallet,
            reserve_moves_available_to_reserved_and_writes_wallet_reserved,
            wallet_reserved_keeps_the_trace_context_of_its_stamp,
            reserve_is_idempotent_by_transfer_id,
            a_refused_reserve_is_remembered,
            reserve_rejects_unknown_wallets,
            reserve_rejects_the_same_wallet,
            reserve_rejects_a_currency_mismatch,
            reserve_rejects_insufficient_funds,
            a_batch_of_reserves_is_decided_in_order_with_mixed_outcomes,
            a_transfer_twice_in_one_batch_is_reserved_once,
            concurrent_batches_never_overdraw_and_share_transfers_safely,
            finalize_captures_on_ledger_succeeded,
            finalize_releases_on_ledger_failed,
            finalize_ignores_a_duplicate_event_id,
            finalize_ignores_a_second_event_with_the_same_outcome,
            finalize_refuses_a_contradictory_outcome,
            finalize_refuses_an_outcome_for_an_unknown_reservation,
            wallets_are_paged_in_id_order,
            reservations_are_paged_in_transfer_id_order,
            a_capture_converts_its_hold_once,
            holds_are_released_once_by_a_void_or_their_expiry,
            a_capture_after_the_expiry_expires_the_hold,
            concurrent_captures_and_voids_end_a_hold_once,
            a_hold_and_its_capture_in_one_batch,
            concurrent_reserves_never_overdraw,
            opposite_transfers_at_once_all_finish,
            one_transfer_reserved_from_many_tasks_at_once,
            outbox_claims_oldest_first_up_to_limit,
            outbox_leases_keep_records_from_other_workers,
            outbox_acknowledged_records_never_return,
            outbox_records_return_when_the_lease_ends,
            outbox_a_worker_reclaims_its_own_records,
            outbox_keeps_each_transfers_records_in_order,
        ]);
    };
    (ledger_store => $then:ident ($($args:tt)*)) => {
        $crate::$then!($($args)* [
            post_appends_one_balanced_posting,
            an_outcome_keeps_the_trace_context_of_its_stamp,
            post_decides_each_transfer_once,
            post_ignores_a_duplicate_event_id,
            post_rejects_a_currency_mismatch,
            post_rejects_the_same_wallet,
            system_accounts_go_negative,
            concurrent_deposits_all_post,
            entries_are_newest_first_and_cut_by_before,
            postings_are_paged_by_transfer_then_seq,
            outcomes_are_read_by_transfer_and_paged,
            balances_are_paged_in_account_order,
            balance_as_of_counts_the_entries_posted_by_then,
            outbox_claims_oldest_first_up_to_limit,
            outbox_leases_keep_records_from_other_workers,
            outbox_acknowledged_records_never_return,
            outbox_records_return_when_the_lease_ends,
            outbox_a_worker_reclaims_its_own_records,
        ]);
    };
    (bus => $then:ident ($($args:tt)*)) => {
        $crate::$then!($($args)* [
            keeps_each_keys_order_within_a_topic,
            delivers_messages_published_before_subscribing,
            rewind_redelivers_what_was_not_committed,
            rejoin_delivers_again_from_the_committed_offsets,
            a_consumer_never_skips_an_event_after_a_subscription_failure,
            a_new_subscription_starts_after_the_committed_offset,
            every_group_gets_every_message,
            delivers_payloads_as_published,
        ]);
    };
    ($other:ident => $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown contract kind `",
            ::core::stringify!($other),
            "`: expected transfer_store, wallet_store, ledger_store or bus"
        ));
    };
}

/// Generates the tests of one kind; called through [`__contract_scenarios!`]
/// by [`contract_tests!`]. Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests_of {
    ($kind:ident, $module:ident, $fixture:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::contract::$kind::$name(&$fixture).await;
                }
            )*
        }
    };
}

/// Defines a kind's `SCENARIOS` from [`__contract_scenarios!`]. Not for
/// direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_names {
    ([$($name:ident),* $(,)?]) => {
        /// The names of this kind's scenarios, in the order
        /// [`contract_tests!`](crate::contract_tests) generates them; each is
        /// a function of this module.
        pub const SCENARIOS: &[&str] = &[$(::core::stringify!($name)),*];
    };
}
