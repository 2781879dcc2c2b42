//! PUNNET-PATCH: who waits to publish a disconnected client's last will, by client id.
//! A connection's task waits after it ends; a newer connection with the same client id
//! tells it to fire or cancel the will. Upstream kept this map inline and unwrapped
//! every step: a connection that failed before its wait (a peer gone before its
//! CONNACK) left its entry behind, the next connection with that client id panicked on
//! the dead channel while holding the lock, and the poisoned lock then made every later
//! connection of every client panic — the broker accepted no one any more.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use flume::{Receiver, Sender};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AwaitingWill {
    Cancel,
    Fire,
}

#[derive(Default)]
pub(crate) struct WillHandlers {
    waiting: Mutex<HashMap<String, Sender<AwaitingWill>>>,
}

impl WillHandlers {
    /// The map stays consistent at every step, so a panic elsewhere while it was held
    /// is no reason to refuse every later connection.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Sender<AwaitingWill>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of `client_id` arrives: an earlier one still waiting fires its will
    /// (clean session) or drops it, and this one is registered to be told in turn.
    pub(crate) fn take_over(
        &self,
        client_id: &str,
        clean_session: bool,
    ) -> (Sender<AwaitingWill>, Receiver<AwaitingWill>) {
        let (tx, rx) = flume::bounded(1);
        let earlier = self.lock().insert(client_id.to_owned(), tx.clone());
        if let Some(earlier) = earlier {
            let verdict = if clean_session {
                AwaitingWill::Fire
            } else {
                AwaitingWill::Cancel
            };
            // An earlier connection that never reached its wait has nobody listening.
            let _ = earlier.try_send(verdict);
        }
        (tx, rx)
    }

    /// This connection is done waiting (or never will): forget it, unless a newer
    /// connection of the same client id has taken its place.
    pub(crate) fn forget(&self, client_id: &str, mine: &Sender<AwaitingWill>) {
        let mut waiting = self.lock();
        if waiting.get(client_id).is_some_and(|s| s.same_channel(mine)) {
            waiting.remove(client_id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_never_waited_does_not_break_the_next() {
        let wills = WillHandlers::default();
        let (_tx, rx) = wills.take_over("board", true);
        drop(rx); // failed before its CONNACK: nobody waits on it
        let (_tx2, rx2) = wills.take_over("board", true);
        assert!(
            rx2.try_recv().is_err(),
            "the new connection is not told anything"
        );
        let (_tx3, _rx3) = wills.take_over("other", false);
        assert_eq!(wills.len(), 2);
    }

    #[test]
    fn the_earlier_connection_is_told_whether_to_fire() {
        let wills = WillHandlers::default();
        let (_tx, rx) = wills.take_over("board", false);
        let (_tx2, rx2) = wills.take_over("board", true);
        assert_eq!(rx.try_recv(), Ok(AwaitingWill::Fire));
        let _ = wills.take_over("board", false);
        assert_eq!(rx2.try_recv(), Ok(AwaitingWill::Cancel));
    }

    #[test]
    fn an_old_connection_forgetting_leaves_the_new_one() {
        let wills = WillHandlers::default();
        let (old, _rx) = wills.take_over("board", true);
        let (_new, new_rx) = wills.take_over("board", true);
        wills.forget("board", &old);
        assert_eq!(wills.len(), 1);
        let _ = wills.take_over("board", true);
        assert_eq!(new_rx.try_recv(), Ok(AwaitingWill::Fire));
        let (latest, _) = wills.take_over("x", true);
        wills.forget("x", &latest);
        assert!(wills.lock().get("x").is_none());
    }

    #[test]
    fn a_poisoned_lock_still_serves() {
        let wills = std::sync::Arc::new(WillHandlers::default());
        let w = wills.clone();
        let _ = std::thread::spawn(move || {
            let _guard = w.waiting.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(wills.waiting.is_poisoned());
        let (_tx, _rx) = wills.take_over("board", true);
        assert_eq!(wills.len(), 1);
    }
}
