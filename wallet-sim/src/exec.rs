//! The executor: polls a future on this thread until it is done, never
//! sleeping.
//!
//! The in-memory ports never wait, so every future of the services completes
//! in one poll. A future that stays pending is either a deliberate crash (the
//! simulator's gateway pends forever to model a process dying mid-request)
//! or a dependency on wall time, which a simulation must not have; the
//! caller tells which by what it expected.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

/// Polls that a future gets before it is given up as stalled. A few spare
/// polls tolerate a future that yields once without waiting on anything.
const POLLS: usize = 8;

/// The future's output, or `None` when it did not finish without waiting.
/// A `None` future is dropped half-way, as a crashed process drops its work.
pub fn run_now<F: Future>(future: F) -> Option<F::Output> {
    poll_now(pin!(future))
}

/// Like [`run_now`], but the future is kept when it does not finish, so it
/// can be polled again later (a slow call answering late).
pub fn poll_now<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_futures_finish_and_pending_ones_are_dropped() {
        assert_eq!(run_now(async { 41 + 1 }), Some(42));
        assert_eq!(run_now(std::future::pending::<()>()), None);
    }
}
