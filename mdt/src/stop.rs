//! [`StopSignal`]: how the MDT's threads pause between rounds — a bounded
//! wait that a stop request ends at once (no sleeping).

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A stop flag threads can wait on.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    /// Asks every waiter to stop.
    pub fn stop(&self) {
        *self.stopped.lock() = true;
        self.cv.notify_all();
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits up to `d`; true when a stop was asked.
    pub fn wait(&self, d: Duration) -> bool {
        let mut g = self.stopped.lock();
        if !*g {
            self.cv.wait_for(&mut g, d);
        }
        *g
    }
}
