//! The invariants: those that hold after every step, and those of a quiet
//! system.

use std::collections::HashMap;

use wallet_core::audit::{Audit, Scope, Snapshot, Violation};
use wallet_core::event::WALLET_EVENTS;
use wallet_core::ids::TransferId;
use wallet_core::memory::groups;
use wallet_core::outcome::{FailureReason, LedgerOutcome};
use wallet_core::runtime::dead_letter_topic;
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};

use super::{Outcome, Sim};
use crate::client::insufficient_amount;
use crate::planted::SimLedger;
use crate::report::Broken;

/// The audit's violations over a snapshot.
fn audit(snapshot: &Snapshot, scope: Scope) -> Vec<Violation> {
    let report = crate::exec::run_now(Audit::new(scope).run(snapshot, snapshot, snapshot))
        .expect("a snapshot answers at once");
    report.expect("a snapshot does not fail").violations
}

/// Every consumer group, whose dead-letter topics are watched.
const GROUPS: [&str; 3] = [groups::LEDGER, groups::WALLET, groups::TRANSACTION];

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
    }
}

/// One of several violations, chosen independently of the order they were
/// found in (the stores list from hash maps), so a replay reports the same.
fn first(violations: impl IntoIterator<Item = Broken>) -> Option<Broken> {
    violations
        .into_iter()
        .min_by(|a, b| (a.invariant, &a.detail).cmp(&(b.invariant, &b.detail)))
}

fn audited(violations: Vec<Violation>) -> Option<Broken> {
    first(
        violations
            .iter()
            .map(|v| Broken::new(invariant(v), v.to_string())),
    )
}

/// A dead letter's original payload and reason.
fn letter(bytes: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
    (field("payload"), field("reason"))
}

impl<L: SimLedger> Sim<L> {
    /// What must hold after every step: the audit's invariants of any
    /// moment, no terminal transfer moving, no transfer lost, nothing but
    /// poison dead-lettered.
    pub(super) fn check_always(&mut self) -> Option<Broken> {
        let snapshot = self.world.snapshot();
        audited(audit(&snapshot, Scope::Always))
            .or_else(|| self.check_terminal(&snapshot.transfers))
            .or_else(|| {
                first(
                    snapshot
                        .transfers
                        .iter()
                        .filter_map(|t| disagrees(t, &snapshot.outcomes)),
                )
            })
            .or_else(|| self.check_dead_letters())
    }

    fn check_terminal(&mut self, transfers: &[Transfer]) -> Option<Broken> {
        if transfers.len() < self.transfers_seen {
            let detail = format!(
                "{} transfers, {} before",
                transfers.len(),
                self.transfers_seen
            );
            return Some(Broken::new("lost_transfer", detail));
        }
        self.transfers_seen = transfers.len();
        let mut moved = Vec::new();
        for t in transfers {
            let now = (t.status, t.failure_reason);
            match self.terminal.get(&t.id) {
                Some(&was) if was != now => moved.push(Broken::new(
                    "terminal_moved",
                    format!("transfer {} was {was:?}, is now {now:?}", t.id),
                )),
                Some(_) => {}
                None if t.status.is_terminal() => {
                    self.terminal.insert(t.id, now);
                    if t.status == TransferStatus::Succeeded {
                        self.succeeded += 1;
                    }
                }
                None => {}
            }
        }
        first(moved)
    }

    fn check_dead_letters(&mut self) -> Option<Broken> {
        let bus = self.world.bus();
        let total: usize = GROUPS.iter().map(|g| bus.len(&dead_letter_topic(g))).sum();
        if total == self.dead_letters_seen {
            return None;
        }
        self.dead_letters_seen = total;
        let mut wrong = Vec::new();
        for group in GROUPS {
            for bytes in bus.messages(&dead_letter_topic(group)) {
                let (payload, reason) = letter(&bytes);
                if !payload.contains("poison#") {
                    let detail = format!("{group} dead-lettered a saga event: {reason}");
                    wrong.push(Broken::new("dead_letter", detail));
                }
            }
        }
        first(wrong)
    }

    /// The checks of a quiet system: the audit's (every transfer terminal
    /// and agreeing with the ledger, wallets equal to the ledger, nothing
    /// reserved), outcomes the requests promised, and every poison message
    /// in the dead-letter topic of every group that read it.
    pub(super) fn final_checks(&mut self) -> Outcome {
        let snapshot = self.world.snapshot();
        let description = format!(
            "final checks: {} transfers, {} entries, {} poison messages",
            snapshot.transfers.len(),
            snapshot.entries.len(),
            self.poison.len()
        );
        let broken = audited(audit(&snapshot, Scope::Quiet))
            .or_else(|| first(snapshot.transfers.iter().filter_map(promised)))
            .or_else(|| self.check_poison());
        match broken {
            Some(broken) => Outcome::broken(description, broken),
            None => Outcome::ok(description),
        }
    }

    fn check_poison(&self) -> Option<Broken> {
        let bus = self.world.bus();
        let mut missing = Vec::new();
        for poison in &self.poison {
            for group in readers(poison.topic) {
                let topic = dead_letter_topic(group);
                let found = bus
                    .messages(&topic)
                    .iter()
                    .any(|bytes| letter(bytes).0.contains(&poison.marker));
                if !found {
                    let detail = format!("{} on {} is not in {topic}", poison.marker, poison.topic);
                    missing.push(Broken::new("dead_letter", detail));
                }
            }
        }
        first(missing)
    }
}

/// A terminal transfer that contradicts the ledger. Checked at every step,
/// not only once quiet: SUCCEEDED comes only from a posting, FAILED only
/// when nothing was or will be posted, and ledger rows are never removed.
fn disagrees(t: &Transfer, outcomes: &HashMap<TransferId, LedgerOutcome>) -> Option<Broken> {
    let posted = outcomes.get(&t.id) == Some(&LedgerOutcome::Succeeded);
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
/// anyone holds always fails for insufficient funds.
fn promised(t: &Transfer) -> Option<Broken> {
    let done = (t.status, t.failure_reason);
    let broken = |want: &str| {
        let detail = format!(
            "transfer {} ended {done:?}, its request promised {want}",
            t.id
        );
        Some(Broken::new("outcome", detail))
    };
    if t.kind == TransferKind::Deposit && t.status != TransferStatus::Succeeded {
        return broken("SUCCEEDED");
    }
    let insufficient = (
        TransferStatus::Failed,
        Some(FailureReason::InsufficientFunds),
    );
    if t.amount.value() >= insufficient_amount() && done != insufficient {
        return broken("FAILED insufficient_funds");
    }
    None
}
