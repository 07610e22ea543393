//! The invariants: those that hold after every step, and those of a quiet
//! system. Everything is read through the stores' read ports and the
//! simulator's own reader of the dead-letter topics; the coverage counts
//! come from diffing what the read ports show between steps.

use std::collections::{BTreeMap, BTreeSet};

use wallet_core::audit::{Audit, AuditReport, Scope, Violation};
use wallet_core::event::WALLET_EVENTS;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::memory::groups;
use wallet_core::money::Balance;
use wallet_core::outcome::{FailureReason, LedgerOutcome};
use wallet_core::ports::{LedgerReads, StoreError, TransferReads, WalletReads};
use wallet_core::runtime::DeadLetter;
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};
use wallet_core::wallet::{Reservation, ReservationState, Wallet};

use super::{Outcome, Sim};
use crate::adapters::Adapters;
use crate::client::{insufficient_amount, short};
use crate::coverage::{Transition, count};
use crate::exec::run_now;
use crate::faults::lock;
use crate::reads::{Checked, Notes};
use crate::report::Broken;

/// Rows per read after each step: every table of a run fits in one page.
pub(super) const PAGE: usize = 1 << 20;

/// Rows per read in the final checks: small, so every read port pages.
const SMALL_PAGE: usize = 7;

/// The groups that read `topic`.
fn readers(topic: &str) -> &'static [&'static str] {
    if topic == WALLET_EVENTS {
        &[groups::LEDGER]
    } else {
        &[groups::WALLET, groups::TRANSACTION]
    }
}

/// The invariant an audit violation breaks.
fn invariant(v: &Violation) -> &'static str {
    match v {
        Violation::Unbalanced { .. } => "conservation",
        Violation::SnapshotMismatch { .. } | Violation::StillReserved(_) => "snapshot",
        Violation::NegativeAvailable(_) => "negative",
        Violation::NotTerminal(..) | Violation::Stuck { .. } => "terminal",
        Violation::Disagrees { .. } => "agreement",
        Violation::PostedTwice(..) => "double_posting",
        Violation::CapturedTwice(..) | Violation::HoldDisagrees { .. } => "hold_once",
        Violation::OverRefunded { .. } => "refund_within",
    }
}

/// One of several violations, chosen independently of the order they were
/// found in, so a replay reports the same.
fn first(violations: impl IntoIterator<Item = Broken>) -> Option<Broken> {
    violations
        .into_iter()
        .min_by(|a, b| (a.invariant, &a.detail).cmp(&(b.invariant, &b.detail)))
}

fn audited(report: &AuditReport) -> Option<Broken> {
    first(
        report
            .violations
            .iter()
            .map(|v| Broken::new(invariant(v), v.to_string())),
    )
}

/// The marker of a poison message, if `payload` carries one.
fn poison_marker(payload: &str) -> Option<String> {
    let start = payload.find("poison#")?;
    let end = start + payload[start..].find(';')?;
    Some(payload[start..=end].to_owned())
}

/// The notes of broken read-port promises, and the three read ports
/// whose answers are checked.
type CheckedReads<A> = (
    Notes,
    Checked<<A as Adapters>::Transfers>,
    Checked<<A as Adapters>::Wallets>,
    Checked<<A as Adapters>::Ledger>,
);

/// What the read ports show, in one go.
struct State {
    audit: AuditReport,
    transfers: Vec<Transfer>,
    reservations: Vec<Reservation>,
    outcomes: Vec<(TransferId, LedgerOutcome)>,
    wallets: Vec<Wallet>,
}

/// Reads the state through the read ports and audits it.
async fn read_state(
    scope: Scope,
    page: usize,
    transfers: &impl TransferReads,
    wallets: &impl WalletReads,
    ledger: &impl LedgerReads,
) -> Result<State, StoreError> {
    let audit = Audit {
        scope,
        page_size: page,
        stuck_after: None,
    };
    Ok(State {
        audit: audit.run(transfers, wallets, ledger).await?,
        transfers: all(|after| transfers.transfers_page(after, page), |t| t.id).await?,
        reservations: all(
            |after| wallets.reservations_page(after, page),
            |r| r.request.transfer_id,
        )
        .await?,
        outcomes: all(|after| ledger.outcomes_page(after, page), |(t, _)| *t).await?,
        wallets: all(|after| wallets.wallets_page(after, page), |w| w.id).await?,
    })
}

/// Every row of a paged read.
pub(super) async fn all<T, K: Copy, F: std::future::Future<Output = Result<Vec<T>, StoreError>>>(
    page: impl Fn(Option<K>) -> F,
    key: impl Fn(&T) -> K,
) -> Result<Vec<T>, StoreError> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let next = page(after).await?;
        let Some(last) = next.last() else {
            return Ok(rows);
        };
        after = Some(key(last));
        rows.extend(next);
    }
}

/// Each account's entries, paged newest first through `entries`, against
/// its balance from `balances_page`: the two read ports must agree, every
/// wallet's ledger history must sum to what it holds once quiet, and every
/// entry carries a position the store assigned (not the zero of an entry
/// not yet appended), once.
async fn histories(
    wallets: &impl WalletReads,
    ledger: &impl LedgerReads,
) -> Result<Vec<Broken>, StoreError> {
    let mut broken = Vec::new();
    let balances = all(
        |after| ledger.balances_page(after, SMALL_PAGE),
        |b| b.account,
    )
    .await?;
    let wallets = all(|after| wallets.wallets_page(after, SMALL_PAGE), |w| w.id).await?;
    let mut accounts: BTreeMap<WalletId, Balance> =
        wallets.iter().map(|w| (w.id, Balance::ZERO)).collect();
    accounts.extend(balances.iter().map(|b| (b.account, Balance::ZERO)));
    let mut seqs = BTreeSet::new();
    for (account, sum) in &mut accounts {
        let mut before = None;
        loop {
            let page = ledger.entries(*account, before, SMALL_PAGE).await?;
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            for e in &page {
                *sum = *sum + e.signed();
                if e.seq == 0 || !seqs.insert(e.seq) {
                    let detail = format!(
                        "entry of {account} with seq {} (unassigned or twice)",
                        e.seq
                    );
                    broken.push(Broken::new("read_port", detail));
                }
            }
        }
    }
    for (account, sum) in &accounts {
        let stated = balances
            .iter()
            .find(|b| b.account == *account)
            .map_or(Balance::ZERO, |b| b.balance);
        if stated != *sum {
            let detail = format!("account {account}: entries sum to {sum}, balance says {stated}");
            broken.push(Broken::new("read_port", detail));
        }
    }
    for w in &wallets {
        if w.available + w.reserved != accounts[&w.id] {
            let detail = format!(
                "wallet {} holds {}, its ledger history sums to {}",
                w.id,
                w.available + w.reserved,
                accounts[&w.id]
            );
            broken.push(Broken::new("snapshot", detail));
        }
    }
    Ok(broken)
}

/// The transfer transition from `was` to `now`, told apart by the
/// ledger's outcome.
fn transfer_transition(
    was: TransferStatus,
    now: TransferStatus,
    outcome: Option<LedgerOutcome>,
) -> Vec<Transition> {
    use TransferStatus::*;
    let refused = matches!(outcome, Some(LedgerOutcome::Failed(_)));
    let end = |status| match status {
        Captured => Some(Transition::HoldCaptured),
        Voided => Some(Transition::HoldVoided),
        Expired => Some(Transition::HoldExpired),
        _ => None,
    };
    match (was, now) {
        (Initiated, Reserved) => vec![Transition::TransferReserved],
        (Initiated, Failed) if refused => vec![Transition::TransferRefusedUnanswered],
        (Initiated, Failed) => vec![Transition::TransferRejected],
        (Initiated, Succeeded) => vec![Transition::TransferSucceededUnanswered],
        (Reserved, Succeeded) => vec![Transition::TransferSucceeded],
        (Reserved, Failed) => vec![Transition::TransferRefused],
        (Initiated, Held) => vec![Transition::HoldHeld],
        // Held and ended between two checks.
        (Initiated, ended) => [Some(Transition::HoldHeld), end(ended)]
            .into_iter()
            .flatten()
            .collect(),
        (Held, ended) => end(ended).into_iter().collect(),
        _ => Vec::new(),
    }
}

impl<A: Adapters> Sim<A> {
    /// The read ports, each answer checked against its port's promises.
    fn checked_reads(&self) -> CheckedReads<A> {
        let notes = Notes::default();
        let (transfers, wallets, ledger) = self.world.reads();
        (
            notes.clone(),
            Checked::new(transfers.clone(), notes.clone()),
            Checked::new(wallets.clone(), notes.clone()),
            Checked::new(ledger.clone(), notes),
        )
    }

    fn read(&self, scope: Scope, page: usize) -> Result<State, Broken> {
        let (notes, transfers, wallets, ledger) = self.checked_reads();
        let state = run_now(read_state(scope, page, &transfers, &wallets, &ledger))
            .ok_or_else(|| Broken::new("stalled", "a read did not answer at once"))?
            .map_err(|e| Broken::new("store_error", format!("read: {e}")))?;
        match first(
            lock(&notes)
                .iter()
                .map(|n| Broken::new("read_port", n.clone())),
        ) {
            Some(broken) => Err(broken),
            None => Ok(state),
        }
    }

    /// What must hold after every step: the audit's invariants of any
    /// moment, no terminal transfer moving, no transfer lost, no ledger
    /// outcome changing, terminal transfers agreeing with the ledger,
    /// nothing dead-lettered but what the run provoked. A step that made no
    /// write call to any store left them as the last check saw them: only
    /// the dead-letter topics are read then.
    pub(super) fn check_always(&mut self) -> Option<Broken> {
        let broken_ports = std::mem::take(&mut lock(&self.faults).broken_ports);
        if let Some(broken) = first(broken_ports.into_iter().map(|d| Broken::new("claim", d))) {
            return Some(broken);
        }
        let writes = lock(&self.faults).observed.writes;
        if writes == 0 {
            return self.check_dead_letters();
        }
        let state = match self.read(Scope::Always, PAGE) {
            Ok(state) => state,
            Err(broken) => return Some(broken),
        };
        let opened = self.client.wallets_opened();
        if state.audit.wallets < opened {
            let detail = format!("{} wallets read, {opened} opened", state.audit.wallets);
            return Some(Broken::new("lost_wallet", detail));
        }
        audited(&state.audit)
            .or_else(|| self.observe(state))
            .or_else(|| self.check_dead_letters())
    }

    /// Diffs the state against the last check's: checks what may never
    /// change and counts the transitions.
    fn observe(&mut self, state: State) -> Option<Broken> {
        let State {
            transfers,
            reservations,
            outcomes,
            wallets,
            ..
        } = state;
        let mut broken = Vec::new();
        let (transfer_reads, _, ledger_reads) = self.world.reads();
        let (transfer_reads, ledger_reads) = (transfer_reads.clone(), ledger_reads.clone());
        // What a changed row's own read answers must agree with its page.
        let by_id = |t: &Transfer| run_now(transfer_reads.transfer(t.id)).and_then(Result::ok);
        let outcome_of = |id| run_now(ledger_reads.outcome(id)).and_then(Result::ok);
        let decided = std::mem::take(&mut lock(&self.faults).observed.ledger_decided);
        let new_outcomes = outcomes
            .iter()
            .filter(|(id, _)| !self.seen.outcomes.contains_key(id))
            .count() as u64;
        if new_outcomes != decided {
            let detail =
                format!("the ledger said it decided {decided}, {new_outcomes} outcomes are new");
            broken.push(Broken::new("read_port", detail));
        }
        if outcomes.len() < self.seen.outcomes.len() {
            broken.push(Broken::new("ledger_moved", "a ledger outcome disappeared"));
        }
        for (id, outcome) in outcomes {
            match self.seen.outcomes.get(&id) {
                None => {
                    let transition = match outcome {
                        LedgerOutcome::Succeeded => Transition::LedgerPosted,
                        LedgerOutcome::Failed(r) => Transition::LedgerRejected(r),
                    };
                    count(&mut self.coverage, transition, 1);
                    if outcome_of(id) != Some(Some(outcome)) {
                        let detail = format!("outcome({id}) disagrees with outcomes_page");
                        broken.push(Broken::new("read_port", detail));
                    }
                    self.seen.outcomes.insert(id, outcome);
                }
                Some(was) if *was != outcome => broken.push(Broken::new(
                    "ledger_moved",
                    format!("the ledger's outcome on {id} was {was:?}, is now {outcome:?}"),
                )),
                Some(_) => {}
            }
        }
        if transfers.len() < self.seen.transfers.len() {
            let detail = format!(
                "{} transfers, {} before",
                transfers.len(),
                self.seen.transfers.len()
            );
            broken.push(Broken::new("lost_transfer", detail));
        }
        for t in &transfers {
            let now = (t.status, t.failure_reason);
            let outcome = self.seen.outcomes.get(&t.id);
            broken.extend(disagrees(t, outcome));
            let known = self.seen.transfers.get(&t.id).copied();
            let was = known.unwrap_or((TransferStatus::Initiated, None));
            if known == Some(now) {
                continue;
            }
            if by_id(t) != Some(Some(t.clone())) {
                let detail = format!("transfer({}) disagrees with transfers_page", t.id);
                broken.push(Broken::new("read_port", detail));
            }
            if was.0.is_terminal() {
                broken.push(Broken::new(
                    "terminal_moved",
                    format!("transfer {} was {was:?}, is now {now:?}", t.id),
                ));
                continue;
            }
            if t.status == TransferStatus::Held {
                self.seen.expiries.extend(t.expires_at.map(|at| (t.id, at)));
            } else {
                self.seen.expiries.remove(&t.id);
            }
            if was == now {
                // New, and still INITIATED.
                self.seen.transfers.insert(t.id, now);
                self.seen.initiated.insert(t.id, t.created_at);
                continue;
            }
            if t.status != TransferStatus::Initiated {
                self.seen.initiated.remove(&t.id);
            }
            for transition in transfer_transition(was.0, t.status, outcome.copied()) {
                count(&mut self.coverage, transition, 1);
            }
            if t.status == TransferStatus::Succeeded {
                self.succeeded += 1;
                if t.refund_of.is_some() {
                    count(&mut self.coverage, Transition::RefundSucceeded, 1);
                }
            }
            if t.status == TransferStatus::Failed && t.refund_of.is_some() {
                count(&mut self.coverage, Transition::RefundFailed, 1);
            }
            self.seen.transfers.insert(t.id, now);
        }
        broken.extend(holds_agree(&transfers, &reservations));
        broken.extend(refunds_within(&transfers));
        broken.extend(funds_held(&wallets, &reservations));
        for r in reservations {
            let id = r.request.transfer_id;
            let was = self.seen.reservations.get(&id).map(|w| w.state);
            if was == Some(r.state) {
                continue;
            }
            if let Some(was) =
                was.filter(|w| !matches!(w, ReservationState::Reserved | ReservationState::Held))
            {
                let invariant = if r.request.kind == TransferKind::Hold {
                    "hold_once"
                } else {
                    "reservation_moved"
                };
                let detail = format!("reservation {id} was {was:?}, is now {:?}", r.state);
                broken.push(Broken::new(invariant, detail));
            }
            for transition in reservation_transitions(was, r.state) {
                count(&mut self.coverage, transition, 1);
            }
            self.seen.reservations.insert(id, r);
        }
        let skipped = std::mem::take(&mut lock(&self.faults).observed.ledger_skipped);
        count(
            &mut self.coverage,
            Transition::LedgerDuplicateSkipped,
            skipped,
        );
        first(broken)
    }

    /// Reads the dead letters published since the last step. Each must be
    /// a poison message or a forged event dead-lettered by a group that
    /// must refuse it: a saga event in a dead-letter topic means a consumer
    /// refused a legitimate event.
    fn check_dead_letters(&mut self) -> Option<Broken> {
        let letters = self.world.new_dead_letters();
        self.dead_letters_seen += letters.len();
        let mut wrong = Vec::new();
        for (group, bytes) in letters {
            let Ok(letter) = serde_json::from_slice::<DeadLetter>(&bytes) else {
                let detail = format!("{group}: a dead letter that does not parse");
                wrong.push(Broken::new("dead_letter", detail));
                continue;
            };
            if let Some(marker) = poison_marker(&letter.payload) {
                let poison = self.poison.iter().find(|p| p.marker == marker);
                if let Some(poison) = poison.filter(|p| !letter.reason.starts_with(p.reason)) {
                    let detail = format!(
                        "{group} dead-lettered {marker} for {:?}, not for {:?}",
                        letter.reason, poison.reason
                    );
                    wrong.push(Broken::new("dead_letter", detail));
                }
                self.poison_seen.insert((marker, group));
                count(&mut self.coverage, Transition::DeadLetterPoison, 1);
                continue;
            }
            let expected = letter
                .event_id
                .and_then(|id| self.forged.get(&id).map(|groups| (id, groups)));
            match expected {
                Some((id, groups)) if groups.contains(&group) => {
                    self.forged_seen.insert((id, group));
                    let transition = if group == groups::WALLET {
                        Transition::DeadLetterWalletStore
                    } else {
                        Transition::DeadLetterTransferStore
                    };
                    if letter.source.is_none() {
                        count(&mut self.coverage, transition, 1);
                    }
                }
                _ => {
                    let detail = format!(
                        "{group} dead-lettered a saga event {:?}: {}",
                        letter.event_id, letter.reason
                    );
                    wrong.push(Broken::new("dead_letter", detail));
                }
            }
        }
        first(wrong)
    }

    /// The checks of a quiet system: the audit's (every transfer terminal
    /// and agreeing with the ledger, wallets equal to the ledger, nothing
    /// reserved), outcomes the requests promised, every poison message in
    /// the dead-letter topic of every group that read it, and every forged
    /// event in the dead-letter topic of every group that must refuse it.
    pub(super) fn final_checks(&mut self) -> Outcome {
        if let Some(broken) = self.check_dead_letters() {
            return Outcome::broken("final checks".to_owned(), broken);
        }
        // Small pages now: every read port pages, and an account's entries
        // are read back one page at a time.
        let state = match self.read(Scope::Quiet, SMALL_PAGE) {
            Ok(state) => state,
            Err(broken) => return Outcome::broken("final checks".to_owned(), broken),
        };
        let (notes, _, wallets, ledger) = self.checked_reads();
        let histories = match run_now(histories(&wallets, &ledger)) {
            Some(Ok(broken)) => broken,
            Some(Err(e)) => vec![Broken::new("store_error", format!("read: {e}"))],
            None => vec![Broken::new("stalled", "a read did not answer at once")],
        };
        let noted = lock(&notes).clone();
        let histories = histories
            .into_iter()
            .chain(noted.into_iter().map(|n| Broken::new("read_port", n)));
        let description = format!(
            "final checks: {} transfers, {} entries, {} poison messages, {} forged events",
            state.transfers.len(),
            state.audit.entries,
            self.poison.len(),
            self.forged.len()
        );
        let skewed = lock(&self.faults).skewed.clone();
        let now = wallet_core::ports::Clock::now(self.world.clock());
        let broken = audited(&state.audit)
            .or_else(|| quiet_holds(&state, Some(now)))
            .or_else(|| first(histories))
            .or_else(|| {
                first(
                    state
                        .transfers
                        .iter()
                        .filter_map(|t| promised(t, &skewed, &self.seen.outcomes)),
                )
            })
            .or_else(|| self.check_expected_dead_letters());
        match broken {
            Some(broken) => Outcome::broken(description, broken),
            None => Outcome::ok(description),
        }
    }

    /// The checks of a quiet system whose holds may still be HELD before
    /// their expiry: the audit of a quiet system, and every hold agreeing
    /// with the wallet service, whose reserved funds are exactly its holds.
    pub(super) fn quiet_checks(&mut self) -> Outcome {
        let state = match self.read(Scope::Quiet, PAGE) {
            Ok(state) => state,
            Err(broken) => return Outcome::broken("quiet checks".to_owned(), broken),
        };
        let held = state
            .transfers
            .iter()
            .filter(|t| t.status == TransferStatus::Held)
            .count();
        let description = format!(
            "quiet checks: {} transfers, {held} holds held",
            state.transfers.len()
        );
        // The drain's last round ran the sweepers after its clock advance
        // and they found nothing to end: no HELD hold is past its expiry.
        let now = wallet_core::ports::Clock::now(self.world.clock());
        match audited(&state.audit).or_else(|| quiet_holds(&state, Some(now))) {
            Some(broken) => Outcome::broken(description, broken),
            None => Outcome::ok(description),
        }
    }

    fn check_expected_dead_letters(&self) -> Option<Broken> {
        let mut missing = Vec::new();
        for poison in &self.poison {
            for group in readers(poison.topic) {
                if !self.poison_seen.contains(&(poison.marker.clone(), *group)) {
                    let detail = format!(
                        "{} on {} is not in {group}.dlq",
                        poison.marker, poison.topic
                    );
                    missing.push(Broken::new("dead_letter", detail));
                }
            }
        }
        for (id, groups) in &self.forged {
            for group in groups {
                if !self.forged_seen.contains(&(*id, *group)) {
                    let detail = format!(
                        "forged event {} was refused but is not in {group}.dlq",
                        short(id.as_uuid())
                    );
                    missing.push(Broken::new("dead_letter", detail));
                }
            }
        }
        first(missing)
    }
}

/// The reservation transitions from `was` (none: new) to `now`.
fn reservation_transitions(
    was: Option<ReservationState>,
    now: ReservationState,
) -> Vec<Transition> {
    use ReservationState::*;
    match (was, now) {
        (None, Reserved) => vec![Transition::ReservationReserved],
        (None, Rejected(reason)) => vec![Transition::ReservationRejected(reason)],
        (None, Captured) => vec![
            Transition::ReservationReserved,
            Transition::ReservationCaptured,
        ],
        (None, Released) => vec![
            Transition::ReservationReserved,
            Transition::ReservationReleased,
        ],
        (Some(Reserved), Captured) => vec![Transition::ReservationCaptured],
        (Some(Reserved), Released) => vec![Transition::ReservationReleased],
        (None, Held) => vec![Transition::ReservationHeld],
        (None, Converted) => vec![
            Transition::ReservationHeld,
            Transition::ReservationConverted,
        ],
        (None, Voided) => vec![Transition::ReservationHeld, Transition::ReservationVoided],
        (None, Expired) => vec![Transition::ReservationHeld, Transition::ReservationExpired],
        (Some(Held), Converted) => vec![Transition::ReservationConverted],
        (Some(Held), Voided) => vec![Transition::ReservationVoided],
        (Some(Held), Expired) => vec![Transition::ReservationExpired],
        _ => Vec::new(),
    }
}

/// A terminal transfer that contradicts the ledger. Checked at every step,
/// not only once quiet: SUCCEEDED comes only from a posting, FAILED only
/// when nothing was or will be posted, and ledger rows are never removed.
fn disagrees(t: &Transfer, outcome: Option<&LedgerOutcome>) -> Option<Broken> {
    let posted = outcome == Some(&LedgerOutcome::Succeeded);
    let contradicts = match t.status {
        TransferStatus::Succeeded => !posted,
        TransferStatus::Failed => posted,
        _ => false,
    };
    contradicts.then(|| {
        let detail = format!("transfer {} is {:?} but posted = {posted}", t.id, t.status);
        Broken::new("agreement", detail)
    })
}

/// What a transfer's request promised, once quiet: a deposit always
/// succeeds (the system account may go negative); a transfer of more than
/// anyone holds always fails for insufficient funds; a transfer whose
/// posting request the ledger saw skewed (`skewed`: the reason it must
/// refuse it for) fails for that reason, whatever it was. The audit checks
/// that nothing was posted for a FAILED one and nothing stays reserved.
fn promised(
    t: &Transfer,
    skewed: &BTreeMap<TransferId, FailureReason>,
    outcomes: &BTreeMap<TransferId, LedgerOutcome>,
) -> Option<Broken> {
    let done = (t.status, t.failure_reason);
    let broken = |want: &str| {
        let detail = format!(
            "transfer {} ended {done:?}, its request promised {want}",
            t.id
        );
        Some(Broken::new("outcome", detail))
    };
    if let Some(reason) = skewed.get(&t.id) {
        let refused = Some(&LedgerOutcome::Failed(*reason));
        if done != (TransferStatus::Failed, Some(*reason)) || outcomes.get(&t.id) != refused {
            return broken(&format!("FAILED {reason} by the ledger"));
        }
        return None;
    }
    if t.kind == TransferKind::Deposit && t.status != TransferStatus::Succeeded {
        return broken("SUCCEEDED");
    }
    let insufficient = (
        TransferStatus::Failed,
        Some(FailureReason::InsufficientFunds),
    );
    // A hold whose reserve came only after its expiry (its answer was
    // lost, the retrier came late) is refused for that first.
    let expired = (TransferStatus::Failed, Some(FailureReason::HoldExpired));
    let late_hold = t.kind == TransferKind::Hold && done == expired;
    if t.amount.value() >= insufficient_amount() && done != insufficient && !late_hold {
        return broken("FAILED insufficient_funds");
    }
    None
}

/// The hold-end invariants of any moment: a hold the transaction service
/// records as ended ended so in the wallet service (which decides it), so
/// it ends once, one way; a CAPTURED hold names a capture of it that took
/// no more than it held; a HELD hold is one the wallet service held.
fn holds_agree(transfers: &[Transfer], reservations: &[Reservation]) -> Vec<Broken> {
    let by_id: BTreeMap<TransferId, &Transfer> = transfers.iter().map(|t| (t.id, t)).collect();
    let reserved: BTreeMap<TransferId, &Reservation> = reservations
        .iter()
        .map(|r| (r.request.transfer_id, r))
        .collect();
    let mut broken = Vec::new();
    for t in transfers.iter().filter(|t| t.kind == TransferKind::Hold) {
        let r = reserved.get(&t.id);
        let state = r.map(|r| r.state);
        let agrees = match t.status {
            TransferStatus::Captured => {
                state == Some(ReservationState::Converted)
                    && t.captured_by.is_some()
                    && r.and_then(|r| r.captured_by) == t.captured_by
            }
            TransferStatus::Voided => state == Some(ReservationState::Voided),
            TransferStatus::Expired => state == Some(ReservationState::Expired),
            TransferStatus::Held => matches!(
                state,
                Some(
                    ReservationState::Held
                        | ReservationState::Converted
                        | ReservationState::Voided
                        | ReservationState::Expired
                )
            ),
            _ => true,
        };
        if !agrees {
            let detail = format!(
                "hold {} is {:?} (captured by {:?}), the wallet service has it {state:?} (captured by {:?})",
                t.id,
                t.status,
                t.captured_by,
                r.and_then(|r| r.captured_by)
            );
            broken.push(Broken::new("hold_once", detail));
        }
        if let Some(by) = t.captured_by {
            match by_id.get(&by) {
                Some(c) if c.hold_id == Some(t.id) && c.amount.value() <= t.amount.value() => {}
                Some(c) => broken.push(Broken::new(
                    "hold_once",
                    format!(
                        "hold {} of {} names capture {by} of {:?} for {}",
                        t.id, t.amount, c.hold_id, c.amount
                    ),
                )),
                None => broken.push(Broken::new(
                    "hold_once",
                    format!("hold {} names capture {by}, which does not exist", t.id),
                )),
            }
        }
    }
    broken
}

/// Refunds never exceed their original: only a SUCCEEDED transfer is
/// refunded, and its refunds not FAILED send back at most its amount.
fn refunds_within(transfers: &[Transfer]) -> Vec<Broken> {
    let by_id: BTreeMap<TransferId, &Transfer> = transfers.iter().map(|t| (t.id, t)).collect();
    let mut refunded: BTreeMap<TransferId, Balance> = BTreeMap::new();
    for t in transfers {
        if let Some(original) = t.refund_of {
            let sum = refunded.entry(original).or_default();
            if t.status != TransferStatus::Failed {
                *sum = *sum + Balance::from(t.amount);
            }
        }
    }
    let mut broken = Vec::new();
    for (original, sum) in refunded {
        let within = by_id.get(&original).is_some_and(|o| {
            o.status == TransferStatus::Succeeded
                && o.refund_of.is_none()
                && o.kind != TransferKind::Hold
                && sum <= Balance::from(o.amount)
        });
        if !within {
            let what = by_id
                .get(&original)
                .map(|o| format!("{:?} {:?} of {}", o.kind, o.status, o.amount));
            let detail = format!("transfer {original} ({what:?}) is refunded {sum}");
            broken.push(Broken::new("refund_within", detail));
        }
    }
    broken
}

/// Held funds never go negative, and every wallet's reserved funds are
/// exactly its reservations that hold funds: those reserved and not yet
/// finalized, and its holds still held.
fn funds_held(wallets: &[Wallet], reservations: &[Reservation]) -> Vec<Broken> {
    let mut holding: BTreeMap<WalletId, Balance> = BTreeMap::new();
    for r in reservations {
        if matches!(r.state, ReservationState::Reserved | ReservationState::Held) {
            let sum = holding.entry(r.request.sender_wallet_id).or_default();
            *sum = *sum + Balance::from(r.request.amount);
        }
    }
    let mut broken = Vec::new();
    for w in wallets.iter().filter(|w| w.id.system_currency().is_none()) {
        let want = holding.get(&w.id).copied().unwrap_or_default();
        if w.reserved.is_negative() || w.available.is_negative() || w.reserved != want {
            let detail = format!(
                "wallet {} has {} available and {} reserved; its reservations hold {want}",
                w.id, w.available, w.reserved
            );
            broken.push(Broken::new("held_funds", detail));
        }
    }
    broken
}

/// The holds of a quiet system: each agrees with the wallet service
/// exactly (HELD with funds held, FAILED with none, ended as the wallet
/// service ended it); each wallet's reserved funds are its HELD holds;
/// and, at `expired_by`, no HELD hold is past its expiry (the sweepers
/// ended them).
fn quiet_holds(state: &State, expired_by: Option<wallet_core::Timestamp>) -> Option<Broken> {
    let mut broken = holds_agree(&state.transfers, &state.reservations);
    let reserved: BTreeMap<TransferId, &Reservation> = state
        .reservations
        .iter()
        .map(|r| (r.request.transfer_id, r))
        .collect();
    let mut held: BTreeMap<WalletId, Balance> = BTreeMap::new();
    for t in state
        .transfers
        .iter()
        .filter(|t| t.kind == TransferKind::Hold)
    {
        let state = reserved.get(&t.id).map(|r| r.state);
        let agrees = match t.status {
            TransferStatus::Held => state == Some(ReservationState::Held),
            TransferStatus::Failed => matches!(state, None | Some(ReservationState::Rejected(_))),
            _ => true,
        };
        if !agrees {
            let detail = format!(
                "quiet: hold {} is {:?}, its reservation {state:?}",
                t.id, t.status
            );
            broken.push(Broken::new("hold_once", detail));
        }
        if t.status == TransferStatus::Held {
            let sum = held.entry(t.sender_wallet_id).or_default();
            *sum = *sum + Balance::from(t.amount);
            if let (Some(now), Some(at)) = (expired_by, t.expires_at)
                && at <= now
            {
                let detail = format!("hold {} expired at {at} and is still HELD at {now}", t.id);
                broken.push(Broken::new("hold_expiry", detail));
            }
        }
    }
    for w in state
        .wallets
        .iter()
        .filter(|w| w.id.system_currency().is_none())
    {
        let want = held.get(&w.id).copied().unwrap_or_default();
        if w.reserved != want {
            let detail = format!(
                "quiet: wallet {} has {} reserved, its HELD holds {want}",
                w.id, w.reserved
            );
            broken.push(Broken::new("held_funds", detail));
        }
    }
    broken.extend(refunds_within(&state.transfers));
    broken.extend(funds_held(&state.wallets, &state.reservations));
    first(broken)
}
