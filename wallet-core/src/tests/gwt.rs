//! A small given / when / then harness for the `decide` / `apply` state
//! machines, after cqrs-es' `TestFramework`:
//!
//! ```text
//! given(state).and(history).when(command).then_expect(event)   // and applies it
//! given(state).when(command).then_reject(rejection)
//! given(inputs).when_decided(|inputs| decide_x(..)).then_decides(decision)
//! ```

use std::fmt::Debug;

use crate::money::Amount;
use crate::transfer::{Transfer, TransferCommand, TransferEvent, TransferRejection};
use crate::wallet::{Wallet, WalletChange, WalletRejection};

use super::fixtures::at;

/// A state machine split into a rule-holding `decide` and a rule-free
/// `apply`.
pub(crate) trait Aggregate: Clone + Debug {
    /// What is asked of it.
    type Command: Debug;
    /// What it decided.
    type Event: Debug + PartialEq + Clone;
    /// Why it refused.
    type Rejection: Debug + PartialEq;
    /// Every rule.
    fn decide(&self, command: &Self::Command) -> Result<Self::Event, Self::Rejection>;
    /// No rule.
    fn apply_event(&mut self, event: Self::Event);
}

/// The command a wallet decides on its own: reserve these funds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldFunds(pub Amount);

impl Aggregate for Wallet {
    type Command = HoldFunds;
    type Event = WalletChange;
    type Rejection = WalletRejection;

    fn decide(&self, command: &HoldFunds) -> Result<WalletChange, WalletRejection> {
        self.decide_reservation(command.0)
    }

    fn apply_event(&mut self, event: WalletChange) {
        self.apply(event, at(1));
    }
}

impl Aggregate for Transfer {
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Rejection = TransferRejection;

    fn decide(&self, command: &TransferCommand) -> Result<TransferEvent, TransferRejection> {
        Transfer::decide(self, command)
    }

    fn apply_event(&mut self, event: TransferEvent) {
        self.apply(event, at(1));
    }
}

/// Starts a scenario from a state.
pub(crate) fn given<S>(state: S) -> Given<S> {
    Given { state }
}

/// The state before the command.
#[must_use]
pub(crate) struct Given<S> {
    state: S,
}

impl<S> Given<S> {
    /// The given state, for tests of `apply` alone.
    pub(crate) fn state(self) -> S {
        self.state
    }

    /// Asks any decision function about the given state (the free
    /// `decide_*` functions and `idempotency::check`).
    pub(crate) fn when_decided<O>(self, decide: impl FnOnce(&S) -> O) -> Then<S, O> {
        let outcome = decide(&self.state);
        Then {
            state: self.state,
            outcome,
        }
    }
}

impl<A: Aggregate> Given<A> {
    /// Applies earlier events to reach the state of the scenario.
    pub(crate) fn and(mut self, history: impl IntoIterator<Item = A::Event>) -> Self {
        for event in history {
            self.state.apply_event(event);
        }
        self
    }

    /// Decides `command` on the state.
    pub(crate) fn when(self, command: A::Command) -> Then<A, Result<A::Event, A::Rejection>> {
        let outcome = self.state.decide(&command);
        Then {
            state: self.state,
            outcome,
        }
    }
}

/// The state and what was decided.
#[must_use]
pub(crate) struct Then<S, O> {
    state: S,
    outcome: O,
}

impl<S, O: Debug + PartialEq> Then<S, O> {
    /// Asserts the decision; returns the (unchanged) state.
    pub(crate) fn then_decides(self, expected: O) -> S {
        assert_eq!(self.outcome, expected, "unexpected decision");
        self.state
    }

    /// The decision, for assertions the harness has no word for.
    pub(crate) fn outcome(self) -> O {
        self.outcome
    }
}

impl<S, E: Debug + PartialEq, R: Debug + PartialEq> Then<S, Result<E, R>> {
    /// Asserts a refusal; returns the state, which a refusal never changes.
    pub(crate) fn then_reject(self, expected: R) -> S {
        match self.outcome {
            Err(rejection) => assert_eq!(rejection, expected, "unexpected rejection"),
            Ok(event) => panic!("expected rejection {expected:?}, got {event:?}"),
        }
        self.state
    }

    /// Asserts an accepted decision without applying anything.
    pub(crate) fn then_ok(self, expected: E) -> S {
        match self.outcome {
            Ok(value) => assert_eq!(value, expected, "unexpected decision"),
            Err(rejection) => panic!("expected {expected:?}, got rejection {rejection:?}"),
        }
        self.state
    }
}

impl<A: Aggregate> Then<A, Result<A::Event, A::Rejection>> {
    /// Asserts the event, applies it and returns the new state.
    pub(crate) fn then_expect(self, expected: A::Event) -> A {
        let mut state = self.state;
        match self.outcome {
            Ok(event) => {
                assert_eq!(event, expected, "unexpected event");
                state.apply_event(event);
            }
            Err(rejection) => panic!("expected {expected:?}, got rejection {rejection:?}"),
        }
        state
    }
}
