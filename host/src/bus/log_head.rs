//! The one wake-up point for everything that follows the log live: a
//! [`LogHead`] holds the highest sequence number this replica knows to be
//! committed. Every code path that commits to the log calls
//! [`LogHead::bump`] right after its commit (one line per site: the events
//! API, the samples writer, execution state changes). Followers (the live
//! event hub behind the provenance streams) wait on [`LogHead::subscribe`]
//! and then read the log itself, which stays the truth: a bump is only a hint
//! that there may be something new.
//!
//! With PostgreSQL and several replicas, a bump is also sent to the other
//! replicas as a `NOTIFY` and their notifications arrive here through
//! [`LogHead::observe`] (see `bus::pg_notify`). Does not read or write the
//! store itself.

use tokio::sync::{mpsc, watch};

/// Highest committed sequence number known to this replica.
#[derive(Debug)]
pub struct LogHead {
    seq: watch::Sender<i64>,
    /// Set on PostgreSQL: local bumps are forwarded as `NOTIFY`.
    remote: parking_lot::Mutex<Option<mpsc::UnboundedSender<i64>>>,
}

impl LogHead {
    /// A head starting at `seq` (the store's highest sequence number at start).
    pub fn new(seq: i64) -> LogHead {
        LogHead {
            seq: watch::channel(seq).0,
            remote: parking_lot::Mutex::new(None),
        }
    }

    /// Records that everything up to `seq` is committed (by this replica) and
    /// wakes followers; forwarded to the other replicas when they share the
    /// database. Call it after the commit, never before.
    pub fn bump(&self, seq: i64) {
        if self.observe(seq) {
            if let Some(tx) = self.remote.lock().as_ref() {
                let _ = tx.send(seq);
            }
        }
    }

    /// [`LogHead::bump`] to the highest of the sequence numbers an append
    /// returned (`None`: an item that was stored already).
    pub fn bump_stored(&self, seqs: &[Option<i64>]) {
        if let Some(top) = seqs.iter().flatten().max() {
            self.bump(*top);
        }
    }

    /// Records a head another replica announced; wakes followers but is not
    /// forwarded again. Returns whether the head moved.
    pub fn observe(&self, seq: i64) -> bool {
        self.seq.send_if_modified(|head| {
            if seq > *head {
                *head = seq;
                true
            } else {
                false
            }
        })
    }

    /// The highest sequence number known to be committed.
    pub fn current(&self) -> i64 {
        *self.seq.borrow()
    }

    /// A receiver that is marked changed whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.seq.subscribe()
    }

    /// Forwards every later local bump to `tx` (the PostgreSQL notifier).
    pub fn forward_to(&self, tx: mpsc::UnboundedSender<i64>) {
        *self.remote.lock() = Some(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_only_moves_forward_and_forwards_local_bumps_only() {
        let head = LogHead::new(5);
        let (tx, mut rx) = mpsc::unbounded_channel();
        head.forward_to(tx);
        let mut sub = head.subscribe();
        head.bump(3);
        assert_eq!(head.current(), 5);
        assert!(!sub.has_changed().unwrap());
        head.bump(7);
        assert!(sub.has_changed().unwrap());
        assert_eq!(*sub.borrow_and_update(), 7);
        assert!(head.observe(9));
        assert!(!head.observe(8));
        assert_eq!(head.current(), 9);
        assert_eq!(rx.try_recv().ok(), Some(7));
        assert!(rx.try_recv().is_err(), "observed heads are not forwarded");
    }
}
