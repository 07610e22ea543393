//! The executor: polls a future on this thread until it is done, never
//! sleeping.
//!
//! The in-memory ports never wait, so every future of the services completes
//! in one poll. A future that stays pending is either a deliberate crash (a
//! fault wrapper yielded at the await point where the simulator armed it),
//! a slow call held at its gate, or a dependency on wall time, which a
//! simulation must not have; [`drive`] tells the first apart, the caller the
//! other two by what it expected.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use crate::faults::{SharedFaults, lock};

/// Polls that a future gets before it is given up as stalled. A few spare
/// polls tolerate a future that yields once without waiting on anything.
const POLLS: usize = 8;

/// The future's output, or `None` when it did not finish without waiting.
/// A `None` future is dropped half-way, as a crashed process drops its work.
pub fn run_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
    }
    None
}

/// How a driven step ended.
#[derive(Debug)]
pub(crate) enum Driven<T> {
    /// It finished.
    Done(T),
    /// An armed crash struck at this await point: the driver stopped
    /// polling, and the future is dropped there (or, for [`drive_pinned`],
    /// must be dropped by the caller).
    Crashed(String),
    /// It waits on something else (a slow call's gate, or wall time).
    Waiting,
}

/// Polls `future` until it finishes, an armed crash strikes, or it stalls.
pub(crate) fn drive<F: Future>(future: F, faults: &SharedFaults) -> Driven<F::Output> {
    drive_pinned(pin!(future), faults)
}

/// Like [`drive`], but the future is kept when it waits, so it can be
/// polled again later (a slow call answering late).
pub(crate) fn drive_pinned<F: Future + ?Sized>(
    mut future: Pin<&mut F>,
    faults: &SharedFaults,
) -> Driven<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Driven::Done(output);
        }
        if let Some(point) = lock(faults).crashed.clone() {
            return Driven::Crashed(point);
        }
    }
    Driven::Waiting
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::faults::{CrashArm, Faults};
    use crate::rng::Rng;

    #[test]
    fn ready_futures_finish_and_pending_ones_are_dropped() {
        assert_eq!(run_now(async { 41 + 1 }), Some(42));
        assert_eq!(run_now(std::future::pending::<()>()), None);
    }

    #[test]
    fn a_crash_stops_the_step_at_its_await_point() {
        let faults = Arc::new(Mutex::new(Faults::new(Rng::new(1), 0.0)));
        lock(&faults).crash = Some(CrashArm::Count(2));
        let steps = Mutex::new(Vec::new());
        let step = async {
            for what in ["a", "b", "c"] {
                let strikes = lock(&faults).point("after", what);
                if strikes {
                    std::future::pending::<()>().await;
                }
                steps.lock().expect("steps").push(what);
            }
        };
        match drive(step, &faults) {
            Driven::Crashed(point) => assert_eq!(point, "after b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(*steps.lock().expect("steps"), ["a"]);
    }
}
