//! Per-channel delivery cursors: the last (offset, epoch) this node delivered for each channel
//! it is subscribed to. They make the delivery stream of each channel ordered, duplicate-free
//! and gap-checked, even across reconnects: duplicates are dropped, and a jump in offsets
//! (messages published while the subscription was down) is filled from history first.

use std::collections::HashMap;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next message in order, or the first one seen: deliver it.
    Deliver,
    /// Already delivered.
    Duplicate,
    /// Offsets after `after` and before this message are missing: fill from history first.
    /// After an epoch change `after` is 0: the whole new epoch is new to this node.
    Gap { after: u64 },
}

#[derive(Default)]
pub(crate) struct Cursors {
    last: HashMap<String, (u64, String)>,
}

impl Cursors {
    pub fn check(&self, channel: &str, offset: u64, epoch: &str) -> Verdict {
        match self.last.get(channel) {
            Some((last, last_epoch)) if last_epoch == epoch => {
                if offset <= *last {
                    Verdict::Duplicate
                } else if offset == last + 1 {
                    Verdict::Deliver
                } else {
                    Verdict::Gap { after: *last }
                }
            }
            Some(_) if offset > 1 => Verdict::Gap { after: 0 },
            _ => Verdict::Deliver,
        }
    }

    pub fn advance(&mut self, channel: &str, offset: u64, epoch: &str) {
        match self.last.get_mut(channel) {
            Some((last, last_epoch)) if last_epoch == epoch => *last = (*last).max(offset),
            _ => {
                self.last
                    .insert(channel.to_string(), (offset, epoch.to_string()));
            }
        }
    }

    pub fn forget(&mut self, channel: &str) {
        self.last.remove(channel);
    }

    /// Every channel with a cursor: (channel, last offset, epoch).
    pub fn snapshot(&self) -> Vec<(String, u64, String)> {
        self.last
            .iter()
            .map(|(channel, (offset, epoch))| (channel.clone(), *offset, epoch.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut cursors = Cursors::default();
        assert_eq!(cursors.check("c", 7, "e"), Verdict::Deliver, "first seen");
        cursors.advance("c", 7, "e");
        assert_eq!(cursors.check("c", 8, "e"), Verdict::Deliver);
        assert_eq!(cursors.check("c", 7, "e"), Verdict::Duplicate);
        assert_eq!(cursors.check("c", 11, "e"), Verdict::Gap { after: 7 });
        assert_eq!(cursors.check("c", 1, "new"), Verdict::Deliver, "new epoch");
        assert_eq!(
            cursors.check("c", 3, "new"),
            Verdict::Gap { after: 0 },
            "new epoch, its first messages missed"
        );
        cursors.advance("c", 1, "new");
        assert_eq!(cursors.snapshot(), vec![("c".into(), 1, "new".into())]);
        cursors.forget("c");
        assert_eq!(cursors.check("c", 1, "new"), Verdict::Deliver);
    }
}
