//! Which acknowledgements to send, and when, for deliveries settled out of
//! order.
//!
//! A worker hands deliveries out in batches that finish in any order. A
//! requeue or a dead-letter is sent at once, for its delivery alone; acks are
//! held back and sent as one `basic.ack` with `multiple = true` covering every
//! delivery up to a tag, which is only correct once *every* delivery up to
//! that tag is settled: `multiple` acks everything unsettled at or below the
//! tag on the channel, so a delivery still being worked on below it would be
//! acked before its effect. One slow delivery must not hold the others' acks
//! (and so the prefetch window) for long: past a limit, the held acks go out
//! one by one ([`Settler::release_held`]). [`Settler`] keeps that bookkeeping;
//! it is pure (no channel), so the rule is tested without a broker.

use std::collections::BTreeSet;

use super::Disposition;

/// What to send to the broker, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `basic.nack` with `requeue = true`, this delivery only.
    Requeue(u64),
    /// `basic.reject` with `requeue = false` (dead-letter), this delivery only.
    DeadLetter(u64),
    /// `basic.ack` with `multiple = true`: every delivery up to this tag.
    AckUpTo(u64),
    /// `basic.ack`, this delivery only (held behind a slow older one).
    Ack(u64),
}

/// The deliveries of one channel that are not yet acknowledged to the broker.
#[derive(Debug, Default)]
pub struct Settler {
    /// Delivered and not yet finished by the handler.
    working: BTreeSet<u64>,
    /// Finished with [`Disposition::Ack`], ack not sent yet.
    done: BTreeSet<u64>,
}

impl Settler {
    /// A delivery was handed to the handler.
    pub fn delivered(&mut self, tag: u64) {
        self.working.insert(tag);
    }

    /// Deliveries finished by the handler; returns what to send now. Acks
    /// wait until no delivery below them is still being worked on.
    pub fn finished(
        &mut self,
        results: impl IntoIterator<Item = (u64, Disposition)>,
    ) -> Vec<Settle> {
        let mut out = Vec::new();
        for (tag, disposition) in results {
            if !self.working.remove(&tag) {
                continue; // not ours (or settled twice): never send it
            }
            match disposition {
                Disposition::Ack => {
                    self.done.insert(tag);
                }
                Disposition::Requeue => out.push(Settle::Requeue(tag)),
                Disposition::DeadLetter => out.push(Settle::DeadLetter(tag)),
            }
        }
        // Everything done below the oldest delivery still in the works.
        let limit = self.working.first().copied().unwrap_or(u64::MAX);
        if let Some(&up_to) = self.done.range(..limit).next_back() {
            self.done = self.done.split_off(&(up_to + 1));
            out.push(Settle::AckUpTo(up_to));
        }
        out
    }

    /// The held acks, one by one: for when an old delivery is taking long
    /// and the finished ones behind it would otherwise fill the prefetch
    /// window.
    pub fn release_held(&mut self) -> Vec<Settle> {
        std::mem::take(&mut self.done)
            .into_iter()
            .map(Settle::Ack)
            .collect()
    }

    /// Deliveries the handler still has.
    pub fn in_flight(&self) -> usize {
        self.working.len()
    }

    /// Finished but not acked yet (waiting for an older delivery).
    pub fn held(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::{Ack, DeadLetter, Requeue};
    use proptest::prelude::*;

    fn delivered(tags: impl IntoIterator<Item = u64>) -> Settler {
        let mut s = Settler::default();
        tags.into_iter().for_each(|t| s.delivered(t));
        s
    }

    #[test]
    fn a_batch_in_order_is_one_multiple_ack() {
        let mut s = delivered(1..=5);
        let out = s.finished((1..=5).map(|t| (t, Ack)));
        assert_eq!(out, vec![Settle::AckUpTo(5)]);
        assert_eq!((s.in_flight(), s.held()), (0, 0));
    }

    #[test]
    fn acks_wait_for_an_older_delivery_still_in_the_works() {
        let mut s = delivered(1..=6);
        // The second batch (4..=6) finishes first: 1..=3 are still working.
        assert_eq!(s.finished((4..=6).map(|t| (t, Ack))), vec![]);
        assert_eq!(s.held(), 3);
        // Part of the first batch: only what is below the oldest unfinished.
        assert_eq!(s.finished([(1, Ack)]), vec![Settle::AckUpTo(1)]);
        assert_eq!(s.finished([(3, Ack)]), vec![]);
        assert_eq!(s.finished([(2, Ack)]), vec![Settle::AckUpTo(6)]);
        assert_eq!((s.in_flight(), s.held()), (0, 0));
    }

    #[test]
    fn a_poison_message_is_settled_alone_and_does_not_block_the_acks() {
        let mut s = delivered(1..=4);
        let out = s.finished([(1, Ack), (2, DeadLetter), (3, Ack), (4, Requeue)]);
        // The individual settles go first; the multiple ack then covers 1
        // and 3 (2 and 4 are no longer unsettled on the channel).
        assert_eq!(
            out,
            vec![
                Settle::DeadLetter(2),
                Settle::Requeue(4),
                Settle::AckUpTo(3)
            ]
        );
    }

    #[test]
    fn the_multiple_ack_never_covers_a_delivery_delivered_later_and_unfinished() {
        let mut s = delivered(1..=2);
        s.delivered(3);
        assert_eq!(s.finished([(1, Ack), (2, Ack)]), vec![Settle::AckUpTo(2)]);
        s.delivered(4);
        assert_eq!(s.finished([(4, Ack)]), vec![]);
        assert_eq!(
            s.finished([(3, Requeue)]),
            vec![Settle::Requeue(3), Settle::AckUpTo(4)]
        );
    }

    #[test]
    fn held_acks_are_released_one_by_one_behind_a_slow_delivery() {
        let mut s = delivered(1..=4);
        assert_eq!(s.finished([(2, Ack), (3, Ack)]), vec![]);
        assert_eq!(s.release_held(), vec![Settle::Ack(2), Settle::Ack(3)]);
        assert_eq!(s.held(), 0);
        // The slow one finishes; 4 comes after it.
        assert_eq!(s.finished([(4, Ack)]), vec![]);
        assert_eq!(s.finished([(1, Ack)]), vec![Settle::AckUpTo(4)]);
    }

    #[test]
    fn unknown_or_repeated_tags_are_never_sent() {
        let mut s = delivered([1]);
        assert_eq!(s.finished([(7, Ack)]), vec![]);
        assert_eq!(s.finished([(1, Ack)]), vec![Settle::AckUpTo(1)]);
        assert_eq!(s.finished([(1, Ack), (1, DeadLetter)]), vec![]);
    }

    /// What the broker holds of one delivery, as the handler and the
    /// channel see it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Seen {
        Working,
        Finished(Disposition),
    }

    /// A channel's view of the settles: `AckUpTo(t)` settles every
    /// unsettled delivery up to `t`, the others one delivery each.
    fn apply(
        unsettled: &mut std::collections::BTreeMap<u64, Seen>,
        out: &[Settle],
    ) -> Result<(), String> {
        for settle in out {
            match *settle {
                Settle::AckUpTo(t) => {
                    let covered: Vec<u64> = unsettled.range(..=t).map(|(k, _)| *k).collect();
                    for tag in covered {
                        match unsettled.remove(&tag) {
                            Some(Seen::Finished(Ack)) => {}
                            other => return Err(format!("{settle:?} covers {tag} ({other:?})")),
                        }
                    }
                }
                Settle::Ack(t) | Settle::Requeue(t) | Settle::DeadLetter(t) => {
                    let want = match *settle {
                        Settle::Ack(_) => Ack,
                        Settle::Requeue(_) => Requeue,
                        _ => DeadLetter,
                    };
                    match unsettled.remove(&t) {
                        Some(Seen::Finished(d)) if d == want => {}
                        other => return Err(format!("{settle:?} for {t} ({other:?})")),
                    }
                }
            }
        }
        Ok(())
    }

    fn disposition() -> impl Strategy<Value = Disposition> {
        prop_oneof![
            6 => Just(Ack),
            1 => Just(Requeue),
            1 => Just(DeadLetter),
        ]
    }

    proptest! {
        /// Deliveries arrive in order and finish in any order, in any
        /// grouping, with releases of the held acks at any point: no settle
        /// ever covers a delivery still in the works or settles one with
        /// another disposition, and once all are finished each was settled
        /// exactly once.
        #[test]
        fn every_delivery_is_settled_once_with_its_own_disposition(
            (order, dispositions, cuts) in (1usize..40).prop_flat_map(|n| (
                Just((1..=n as u64).collect::<Vec<_>>()).prop_shuffle(),
                proptest::collection::vec(disposition(), n),
                proptest::collection::vec(0u8..4, n),
            ))
        ) {
            let mut s = Settler::default();
            let mut seen = std::collections::BTreeMap::new();
            let mut delivered = 0u64;
            let mut group = Vec::new();
            for (i, tag) in order.iter().copied().enumerate() {
                // Deliveries reach the handler in tag order, up to this one
                // and sometimes a few past it.
                let frontier = (tag + u64::from(cuts[i])).min(order.len() as u64);
                while delivered < frontier {
                    delivered += 1;
                    s.delivered(delivered);
                    seen.insert(delivered, Seen::Working);
                }
                let d = dispositions[tag as usize - 1];
                seen.insert(tag, Seen::Finished(d));
                group.push((tag, d));
                // Finish in groups of varying size; release held acks now and then.
                if cuts[i] != 1 {
                    let out = s.finished(std::mem::take(&mut group));
                    prop_assert_eq!(apply(&mut seen, &out), Ok(()));
                }
                if cuts[i] == 3 {
                    let out = s.release_held();
                    prop_assert_eq!(apply(&mut seen, &out), Ok(()));
                }
            }
            let out = s.finished(group);
            prop_assert_eq!(apply(&mut seen, &out), Ok(()));
            prop_assert!(seen.is_empty(), "never settled: {:?}", seen);
            prop_assert_eq!((s.in_flight(), s.held()), (0, 0));
            // A tag finished again is never sent again.
            prop_assert_eq!(s.finished([(1, Ack)]), vec![]);
        }
    }
}
