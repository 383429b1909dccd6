//! Graceful shutdown of an engine: refuse new requests, let running ones (streams included)
//! finish, within a grace period.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::error::Error;

/// Counts requests in flight (until their answer is finished) and turns new ones away once
/// shutdown has begun. Two atomic operations per request: no lock on the hot path.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    closing: AtomicBool,
    in_flight: AtomicUsize,
    /// Woken when the last request in flight finishes after shutdown began.
    idle: Notify,
}

/// Held by a request in flight; dropping it counts the request as finished.
#[derive(Debug)]
pub(crate) struct Ticket(Arc<Drain>);

impl Drop for Ticket {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.0.closing.load(Ordering::SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Admits a request, unless shutdown has begun.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<Ticket, Error> {
        // Counted first, checked second: a shutdown that has seen the count reach zero can never
        // be followed by a request that got in.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket(self.clone());
        if self.closing.load(Ordering::SeqCst) {
            drop(ticket);
            return Err(Error::Unavailable {
                message: "The engine is shutting down and takes no new requests.".to_owned(),
            });
        }
        Ok(ticket)
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Refuses new requests from now on and waits up to `grace` for the running ones; returns
    /// how many were still running when it gave up (0: all finished).
    pub(crate) async fn close(&self, grace: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                // Registered before the count is read, so a last request finishing in between
                // still wakes this waiter.
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        match tokio::time::timeout(grace, drained).await {
            Ok(()) => 0,
            Err(_) => self.in_flight(),
        }
    }
}
