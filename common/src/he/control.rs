//! A deadline and a cancel switch for an encrypted evaluation, checked between encrypted
//! operations, and a count of the steps done (what progress reports show).
//!
//! The evaluation's functions do not take it as an argument: like the server key
//! ([`super::keys::ServerKeyGuard`]), it is set for the evaluating thread with
//! [`ControlGuard::set`] and carried to every worker thread the evaluation starts. Without one,
//! [`check`] never stops anything.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::HeError;

/// The deadline, cancel switch and progress of one evaluation.
#[derive(Debug)]
pub struct Control {
    started: Instant,
    deadline: Instant,
    cancelled: AtomicBool,
    steps: AtomicU64,
}

impl Control {
    /// A control whose deadline is `budget` from now.
    pub fn new(budget: Duration) -> Arc<Self> {
        let started = Instant::now();
        Arc::new(Control {
            started,
            deadline: started + budget,
            cancelled: AtomicBool::new(false),
            steps: AtomicU64::new(0),
        })
    }

    /// Stops the evaluation at its next check (the node is stopping).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Time since the control was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Steps (encrypted operations or groups of them) checked so far.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), HeError> {
        self.steps.fetch_add(1, Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::SeqCst);
        if cancelled || Instant::now() >= self.deadline {
            return Err(HeError::Stopped {
                after: self.started.elapsed(),
                steps: self.steps(),
                cancelled,
            });
        }
        Ok(())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

/// Sets the control of the current thread until dropped (then restores the previous one).
pub struct ControlGuard(Option<Arc<Control>>);

impl ControlGuard {
    /// Makes `control` the current thread's control.
    pub fn set(control: Option<Arc<Control>>) -> Self {
        ControlGuard(CURRENT.with(|c| c.replace(control)))
    }
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The current thread's control (to carry to worker threads).
pub fn current() -> Option<Arc<Control>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Counts one step; fails once the deadline passed or the evaluation was cancelled.
pub fn check() -> Result<(), HeError> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(ctl) => ctl.check(),
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_stop_after_the_deadline_or_a_cancel_and_never_without_a_control() {
        assert!(check().is_ok());
        let ctl = Control::new(Duration::from_secs(60));
        {
            let _g = ControlGuard::set(Some(ctl.clone()));
            assert!(check().is_ok());
            ctl.cancel();
            assert!(matches!(
                check(),
                Err(HeError::Stopped {
                    cancelled: true,
                    ..
                })
            ));
        }
        assert!(check().is_ok(), "the guard restores no control");
        let late = Control::new(Duration::ZERO);
        let _g = ControlGuard::set(Some(late.clone()));
        let e = check().expect_err("past its deadline");
        assert_eq!(e.code(), "deadline_exceeded");
        assert_eq!(late.steps(), 1);
    }
}
