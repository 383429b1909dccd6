//! Graceful shutdown of an engine: refuse new requests, let running ones (streams included)
//! finish, within a grace period.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::error::Error;

/// Counts requests in flight (until their answer is finished) and turns new ones away once
/// shutdown has begun.
#[derive(Debug)]
pub(crate) struct Drain {
    closing: AtomicBool,
    in_flight: watch::Sender<usize>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            closing: AtomicBool::new(false),
            in_flight: watch::Sender::new(0),
        }
    }
}

/// Held by a request in flight; dropping it counts the request as finished.
#[derive(Debug)]
pub(crate) struct Ticket(Arc<Drain>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drain {
    /// Admits a request, unless shutdown has begun.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<Ticket, Error> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Unavailable {
                message: "The engine is shutting down and takes no new requests.".to_owned(),
            });
        }
        self.in_flight.send_modify(|n| *n += 1);
        Ok(Ticket(self.clone()))
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Refuses new requests from now on and waits up to `grace` for the running ones; returns
    /// how many were still running when it gave up (0: all finished).
    pub(crate) async fn close(&self, grace: Duration) -> usize {
        self.closing.store(true, Ordering::Release);
        let mut rx = self.in_flight.subscribe();
        let drained = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        match drained {
            Ok(Ok(_)) => 0,
            _ => self.in_flight(),
        }
    }
}
