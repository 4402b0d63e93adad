//! Request scheduling policies (Lustre's NRS).
//!
//! Owns: the [`Policy`] trait a CPT's normal queue is run by, and [`Fifo`],
//! the first policy. TBF-style rate limits by job id come later. The
//! high-priority queue (PING, CONNECT) is not a policy: the service serves
//! it first.
//!
//! Must not: block or send; a policy only orders requests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::handler::Request;
use crate::time::Time;

/// Orders the requests of one CPT queue.
pub trait Policy: Send + fmt::Debug {
    /// The policy's name (for logs and metrics).
    fn name(&self) -> &'static str;
    /// Takes a request in.
    fn enqueue(&mut self, req: Request);
    /// The next request to handle at `now`, if any is eligible.
    fn dequeue(&mut self, now: Time) -> Option<Request>;
    /// Requests held.
    fn len(&self) -> usize;
    /// True when no request is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds the policy of CPT `i` when a service starts.
pub type PolicyFactory = Arc<dyn Fn(usize) -> Box<dyn Policy> + Send + Sync>;

/// The FIFO policy factory.
pub fn fifo() -> PolicyFactory {
    Arc::new(|_| Box::new(Fifo::default()))
}

/// First in, first out.
#[derive(Debug, Default)]
pub struct Fifo {
    queue: VecDeque<Request>,
}

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn enqueue(&mut self, req: Request) {
        self.queue.push_back(req);
    }

    fn dequeue(&mut self, _now: Time) -> Option<Request> {
        self.queue.pop_front()
    }

    fn len(&self) -> usize {
        self.queue.len()
    }
}
