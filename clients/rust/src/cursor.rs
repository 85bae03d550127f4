//! A subscription's position in its channel's history: which epoch it is in and the last offset
//! delivered to the application. It decides what to ask for on resume (`since`) and drops any
//! message at or below the last delivered offset, so replays after a reconnect never deliver a
//! message twice or out of order.

use crate::protocol::Since;

/// Position of one subscription in its channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    epoch: Option<String>,
    last: Option<u64>,
}

/// What a subscribe acknowledgement means for the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// A first subscription: delivery starts after the channel's current offset.
    Started,
    /// A resume whose missed messages the gateway replays.
    Recovered,
    /// A resume the gateway could not serve (history trimmed, or a new epoch): messages were
    /// missed and the application must be told.
    RecoveryFailed,
}

impl Cursor {
    /// The `since` to send when (re)subscribing: known only once an epoch and an offset are.
    pub fn since(&self) -> Option<Since> {
        match (&self.epoch, self.last) {
            (Some(epoch), Some(offset)) => Some(Since {
                offset,
                epoch: epoch.clone(),
            }),
            _ => None,
        }
    }

    /// The last offset delivered (or the starting offset, before any delivery).
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Applies a subscribe ack. `offset` is the channel's offset when the gateway subscribed
    /// us, `epoch` its history epoch, `recovered` the gateway's answer to our `since`.
    pub fn on_ack(
        &mut self,
        offset: Option<u64>,
        epoch: Option<String>,
        recovered: Option<bool>,
    ) -> AckOutcome {
        let resumed = recovered.is_some();
        let epoch_changed = matches!((&self.epoch, &epoch), (Some(old), Some(new)) if old != new);
        if epoch.is_some() {
            self.epoch = epoch;
        }
        if epoch_changed {
            // Offsets of the old epoch mean nothing in the new one: restart from the ack.
            self.last = offset;
            return AckOutcome::RecoveryFailed;
        }
        if !resumed {
            // Live messages may have raced ahead of the ack; never move backwards.
            self.last = match (self.last, offset) {
                (Some(last), Some(offset)) => Some(last.max(offset)),
                (last, offset) => last.or(offset),
            };
            return AckOutcome::Started;
        }
        if recovered == Some(true) {
            AckOutcome::Recovered
        } else {
            AckOutcome::RecoveryFailed
        }
    }

    /// How many offsets were skipped before `offset`: offsets grow by one per message within
    /// an epoch, so a jump means messages this subscription never saw (dropped for a slow
    /// consumer, or trimmed from history). Zero before the position is known.
    pub fn missed_before(&self, offset: u64) -> u64 {
        match self.last {
            Some(last) if offset > last => offset - last - 1,
            _ => 0,
        }
    }

    /// Whether a message at `offset` is new and must be delivered; records it when it is.
    pub fn accept(&mut self, offset: u64) -> bool {
        if self.last.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last = Some(offset);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(c: &mut Cursor, offset: u64, epoch: &str, recovered: Option<bool>) -> AckOutcome {
        c.on_ack(Some(offset), Some(epoch.into()), recovered)
    }

    #[test]
    fn first_subscribe_starts_after_the_acked_offset() {
        let mut c = Cursor::default();
        assert_eq!(c.since(), None);
        assert_eq!(ack(&mut c, 10, "e1", None), AckOutcome::Started);
        assert_eq!(
            c.since(),
            Some(Since {
                offset: 10,
                epoch: "e1".into()
            })
        );
        assert!(!c.accept(10));
        assert!(c.accept(11));
        assert_eq!(
            c.since(),
            Some(Since {
                offset: 11,
                epoch: "e1".into()
            })
        );
    }

    #[test]
    fn messages_racing_ahead_of_the_ack_are_kept() {
        let mut c = Cursor::default();
        assert!(c.accept(11));
        assert_eq!(ack(&mut c, 10, "e1", None), AckOutcome::Started);
        assert_eq!(c.last(), Some(11));
        assert!(!c.accept(11));
        assert!(c.accept(12));
    }

    #[test]
    fn replay_after_resume_drops_duplicates_and_keeps_order() {
        let mut c = Cursor::default();
        ack(&mut c, 0, "e1", None);
        for offset in 1..=5 {
            assert!(c.accept(offset));
        }
        // Reconnect: the gateway is at 8 and replays from 4 (overlap) to 8.
        assert_eq!(ack(&mut c, 8, "e1", Some(true)), AckOutcome::Recovered);
        let delivered: Vec<u64> = [4, 5, 6, 3, 7, 8, 8]
            .into_iter()
            .filter(|o| c.accept(*o))
            .collect();
        assert_eq!(delivered, vec![6, 7, 8]);
    }

    #[test]
    fn trimmed_history_is_reported_and_delivery_goes_on() {
        let mut c = Cursor::default();
        ack(&mut c, 0, "e1", None);
        assert!(c.accept(1));
        assert_eq!(
            ack(&mut c, 500, "e1", Some(false)),
            AckOutcome::RecoveryFailed
        );
        assert!(c.accept(501));
    }

    #[test]
    fn jumps_in_offsets_are_counted_as_missed() {
        let mut c = Cursor::default();
        assert_eq!(c.missed_before(7), 0, "position unknown");
        ack(&mut c, 3, "e1", None);
        assert_eq!(c.missed_before(4), 0);
        assert!(c.accept(4));
        assert_eq!(c.missed_before(9), 4);
        assert_eq!(
            c.missed_before(2),
            0,
            "an old offset is a duplicate, not a gap"
        );
    }

    #[test]
    fn a_new_epoch_restarts_offsets() {
        let mut c = Cursor::default();
        ack(&mut c, 0, "e1", None);
        for offset in 1..=100 {
            c.accept(offset);
        }
        assert_eq!(
            ack(&mut c, 2, "e2", Some(false)),
            AckOutcome::RecoveryFailed
        );
        assert_eq!(
            c.since(),
            Some(Since {
                offset: 2,
                epoch: "e2".into()
            })
        );
        assert!(!c.accept(2));
        assert!(c.accept(3));
    }
}
