//! The deploy strategy's one owner. A service record says which revision is
//! wanted; this module says what the service's pool looks like at each step
//! of a deployment: which revisions' tasks take traffic and with what weight,
//! which stand by (out of the pool, kept for an instant switch back and as the
//! proxy's fallback), and which old tasks keep running.
//!
//! Only this module writes a [`ServiceRecord`]'s `live` and `standby`; the
//! reconciler, the routing publisher, the rollout and rollback ask it. A
//! weighted canary is one more layout here: the old and the new revision each
//! serve as a side with its share of the requests.

use std::time::Duration;

use wharf_spec::{DeployPolicy, StickyBy, Strategy};
use wharf_store::{CanaryRecord, ServiceRecord};

/// The weight of a side that takes all of its service's requests.
pub(crate) const FULL_WEIGHT: u32 = 100;

/// Tasks that take traffic together, with their share of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Side {
    /// Tasks of this revision; None: every ready task of a revision no other
    /// side names (a rolling deploy serves from old and new tasks alike).
    pub revision: Option<u64>,
    pub weight: u32,
}

impl Side {
    /// The key of this side's set in the proxy's pool: its revision, or 0
    /// for "every other revision" (revisions start at 1). Sticky clients are
    /// kept on a side by this key.
    pub(crate) fn key(&self) -> u64 {
        self.revision.unwrap_or(0)
    }
}

/// Where a task of some revision stands in its service's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the pool, in the given side (its set in the proxy's pool).
    Serving(Side),
    /// Out of the pool, kept running: the fallback, and the switch back.
    Standby,
    /// Out of the pool.
    Out,
}

/// A service's pool at one step of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolLayout {
    /// The revision that should run the service's replicas.
    pub desired: u64,
    /// The sides that take traffic.
    pub serving: Vec<Side>,
    /// Kept running out of the pool.
    pub standby: Option<u64>,
}

impl PoolLayout {
    /// The layout a stored record describes.
    pub(crate) fn of(s: &ServiceRecord) -> PoolLayout {
        if let Some(c) = s.canary {
            let new = c.weight.min(FULL_WEIGHT);
            let serving = vec![
                Side { revision: Some(c.from), weight: FULL_WEIGHT - new },
                Side { revision: Some(s.revision), weight: new },
            ];
            return PoolLayout { desired: s.revision, serving, standby: s.standby };
        }
        let side = Side { revision: s.live, weight: FULL_WEIGHT };
        PoolLayout { desired: s.revision, serving: vec![side], standby: s.standby }
    }

    /// Where tasks of revision `rev` stand.
    pub(crate) fn place(&self, rev: u64) -> Place {
        if let Some(side) = self.serving.iter().find(|s| s.revision == Some(rev)) {
            return Place::Serving(*side);
        }
        if self.standby == Some(rev) {
            return Place::Standby;
        }
        match self.serving.iter().find(|s| s.revision.is_none()) {
            Some(any) => Place::Serving(*any),
            None => Place::Out,
        }
    }

    /// Tasks of `rev` other than the desired revision keep running: their
    /// revision is named as a side or stands by. The rest are replaced.
    pub(crate) fn keeps(&self, rev: u64) -> bool {
        self.standby == Some(rev) || self.serving.iter().any(|s| s.revision == Some(rev))
    }

    /// The desired revision's whole set starts at once (its traffic moves by
    /// a switch), rather than a few tasks at a time within max surge.
    pub(crate) fn starts_whole(&self) -> bool {
        self.serving.iter().all(|s| s.revision.is_some())
    }

    /// The desired revision has all the traffic it will get: nothing left to switch.
    pub(crate) fn switched(&self) -> bool {
        self.serving.iter().all(|s| s.revision.is_none_or(|r| r == self.desired))
    }

    /// The revision whose tasks have the traffic (one-off tasks run it):
    /// the old one until a blue-green switch, else the desired one.
    pub(crate) fn serving_revision(&self) -> u64 {
        self.serving.iter().filter(|s| s.weight > 0).find_map(|s| s.revision).unwrap_or(self.desired)
    }

    /// How the proxy keeps a client on one side while a canary shares the
    /// requests: a cookie named after the service, or a hash of a header.
    /// None with one side, so no cookie outlives the canary.
    pub(crate) fn sticky(&self, service: &str, policy: &DeployPolicy) -> Option<wharf_proxy::Sticky> {
        if policy.strategy != Strategy::Canary || self.serving.len() < 2 {
            return None;
        }
        match policy.sticky.as_ref()? {
            StickyBy::Cookie => Some(wharf_proxy::Sticky::Cookie(format!("wharf-canary-{service}"))),
            StickyBy::Header(name) => {
                http::HeaderName::from_bytes(name.as_bytes()).ok().map(wharf_proxy::Sticky::Header)
            }
        }
    }

    /// The one revision that has the traffic, when the pool is held to one
    /// (what `wharf status` shows as `live`); None: every ready task.
    pub(crate) fn live(&self) -> Option<u64> {
        match self.serving.as_slice() {
            [Side { revision: Some(r), .. }] => Some(*r),
            _ => None,
        }
    }
}

/// The record of a service deployed for the first time: every ready task serves.
pub(crate) fn first_record(app: &str, service: &str, revision: u64, replicas: u32) -> ServiceRecord {
    ServiceRecord { app: app.to_string(), name: service.to_string(), revision, replicas, ..Default::default() }
}

/// The desired record of a service moving to revision `to` (a deploy, a
/// rollback, or a failed deployment going back).
///
/// Back to the revision kept on standby (a blue-green bake) or to the one a
/// canary started from: the pool switches back at once. Blue-green otherwise:
/// the revision that has the traffic keeps it until the new set is ready.
/// Canary: it keeps all of it until the new set is ready, then the steps
/// give the new set its share ([`canary_next`]). Rolling: every ready task
/// takes traffic.
pub(crate) fn moving(old: &ServiceRecord, to: u64, replicas: u32, strategy: Strategy) -> ServiceRecord {
    let serving = PoolLayout::of(old).serving_revision();
    let (live, standby, canary) = if old.standby == Some(to) || old.canary.is_some_and(|c| c.from == to) {
        (Some(to), None, None)
    } else if strategy == Strategy::Canary && old.revision != to {
        (None, None, Some(CanaryRecord { from: serving, ..Default::default() }))
    } else if strategy == Strategy::BlueGreen && old.revision != to {
        (Some(serving), None, None)
    } else {
        (None, None, None)
    };
    ServiceRecord { revision: to, replicas, live, standby, canary, ..old.clone() }
}

/// The record at a canary's next step, at `now` (clock ms): the first
/// step's share once the new set is ready, the next one when a step is
/// over, and after the last the promotion ([`promoted`]). `steps` are the
/// shares in percent. None: no canary.
pub(crate) fn canary_next(s: &ServiceRecord, steps: &[u32], interval: Duration, now: u64) -> Option<ServiceRecord> {
    let c = s.canary?;
    let step = c.step.saturating_add(1);
    let Some(&weight) = steps.get(step as usize - 1) else { return promoted(s) };
    let until = wharf_runtime::deadline::ms_after(now, interval);
    Some(ServiceRecord { canary: Some(CanaryRecord { step, weight, until, ..c }), ..s.clone() })
}

/// A canary's step is over on the clock: time for [`canary_next`]. The
/// first step waits for the new set instead (the rollout's readiness).
pub(crate) fn canary_due(s: &ServiceRecord, now: u64) -> bool {
    s.canary.is_some_and(|c| c.step > 0 && now >= c.until)
}

/// The record of a promoted canary: the new revision has all the requests
/// and the old tasks leave (drained). None: no canary.
pub(crate) fn promoted(s: &ServiceRecord) -> Option<ServiceRecord> {
    s.canary?;
    Some(ServiceRecord { live: Some(s.revision), standby: None, canary: None, ..s.clone() })
}

/// The record once the desired revision's set is ready and takes all the
/// traffic; with `keep_standby` the set that had it stays for the bake.
/// None: nothing to switch.
pub(crate) fn switched(s: &ServiceRecord, keep_standby: bool) -> Option<ServiceRecord> {
    let layout = PoolLayout::of(s);
    // A canary moves by its steps, not at once.
    if layout.switched() || s.canary.is_some() {
        return None;
    }
    let standby = if keep_standby { layout.live() } else { None };
    Some(ServiceRecord { live: Some(s.revision), standby, ..s.clone() })
}

/// The record once a bake succeeded: the standby set goes. The pool stays
/// held to the desired revision, so a standby task never serves again on its
/// way out. None: nothing stands by.
pub(crate) fn baked(s: &ServiceRecord) -> Option<ServiceRecord> {
    s.standby?;
    let live = s.live.map(|_| s.revision);
    Some(ServiceRecord { live, standby: None, ..s.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(revision: u64, live: Option<u64>, standby: Option<u64>) -> ServiceRecord {
        ServiceRecord { live, standby, ..first_record("a", "web", revision, 2) }
    }

    /// In the pool with all of its service's traffic, in the side of `revision`.
    fn serving(revision: Option<u64>) -> Place {
        Place::Serving(Side { revision, weight: FULL_WEIGHT })
    }

    #[test]
    fn blue_green_keeps_traffic_on_the_running_revision_until_the_switch() {
        let r = moving(&rec(3, None, None), 4, 2, Strategy::BlueGreen);
        assert_eq!((r.revision, r.live, r.standby), (4, Some(3), None));
        let l = PoolLayout::of(&r);
        assert_eq!((l.place(3), l.place(4), l.place(2)), (serving(Some(3)), Place::Out, Place::Out));
        assert!(l.keeps(3) && !l.keeps(2) && l.starts_whole() && !l.switched());
        assert_eq!(l.serving_revision(), 3);
    }

    #[test]
    fn back_to_the_standby_revision_is_an_instant_switch() {
        let r = moving(&rec(4, Some(4), Some(3)), 3, 2, Strategy::Rolling);
        assert_eq!((r.revision, r.live, r.standby), (3, Some(3), None));
        assert!(PoolLayout::of(&r).switched());
    }

    #[test]
    fn rolling_lets_every_ready_task_serve() {
        let r = moving(&rec(3, None, None), 4, 3, Strategy::Rolling);
        assert_eq!((r.revision, r.replicas, r.live, r.standby), (4, 3, None, None));
        let l = PoolLayout::of(&r);
        assert_eq!((l.place(3), l.place(4)), (serving(None), serving(None)));
        assert!(!l.keeps(3) && !l.starts_whole() && l.switched());
        assert_eq!((l.serving_revision(), l.live()), (4, None));
    }

    #[test]
    fn a_blue_green_switch_keeps_the_old_set_on_standby_until_the_bake_ends() {
        let moving = moving(&rec(3, None, None), 4, 2, Strategy::BlueGreen);
        let on = switched(&moving, true).expect("a switch is due");
        assert_eq!((on.live, on.standby), (Some(4), Some(3)));
        let l = PoolLayout::of(&on);
        assert_eq!((l.place(4), l.place(3)), (serving(Some(4)), Place::Standby));
        assert!(l.keeps(3) && l.switched());
        assert_eq!(switched(&on, true), None, "switched once");
        let done = baked(&on).expect("a standby to let go");
        assert_eq!((done.live, done.standby), (Some(4), None));
        assert_eq!(PoolLayout::of(&done).place(3), Place::Out, "an old task never serves on its way out");
        assert_eq!(baked(&done), None);
    }

    #[test]
    fn a_switch_back_during_a_rollback_keeps_nothing_on_standby() {
        let back = switched(&rec(3, Some(4), None), false).unwrap();
        assert_eq!((back.live, back.standby), (Some(3), None));
    }

    fn side(revision: u64, weight: u32) -> Place {
        Place::Serving(Side { revision: Some(revision), weight })
    }

    #[test]
    fn a_canary_keeps_all_traffic_on_the_old_set_until_the_new_set_is_ready() {
        let r = moving(&rec(3, None, None), 4, 2, Strategy::Canary);
        assert_eq!(r.canary, Some(CanaryRecord { from: 3, step: 0, weight: 0, until: 0 }));
        let l = PoolLayout::of(&r);
        assert_eq!((l.place(3), l.place(4), l.place(2)), (side(3, 100), side(4, 0), Place::Out));
        assert!(l.keeps(3) && !l.keeps(2) && l.starts_whole() && !l.switched());
        assert_eq!((l.serving_revision(), l.live()), (3, None));
        assert_eq!(switched(&r, true), None, "a canary never switches at once");
        assert!(!canary_due(&r, u64::MAX), "the first step waits for the new set, not the clock");
    }

    #[test]
    fn a_canary_steps_through_its_shares_on_the_clock_then_is_promoted() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let (steps, interval) = ([10, 50], Duration::from_secs(60));
        let start = moving(&rec(3, None, None), 4, 2, Strategy::Canary);
        let one = canary_next(&start, &steps, interval, clock.now_ms()).expect("a canary");
        let l = PoolLayout::of(&one);
        assert_eq!((l.place(3), l.place(4)), (side(3, 90), side(4, 10)));
        assert_eq!(one.canary.map(|c| (c.step, c.weight)), Some((1, 10)));
        clock.advance(interval - Duration::from_millis(1));
        assert!(!canary_due(&one, clock.now_ms()));
        clock.advance(Duration::from_millis(1));
        assert!(canary_due(&one, clock.now_ms()), "due once the interval passed");
        let two = canary_next(&one, &steps, interval, clock.now_ms()).unwrap();
        assert_eq!((PoolLayout::of(&two).place(3), PoolLayout::of(&two).place(4)), (side(3, 50), side(4, 50)));
        assert!(!canary_due(&two, clock.now_ms()), "a new step starts its own interval");
        clock.advance(interval);
        let done = canary_next(&two, &steps, interval, clock.now_ms()).expect("promoted after the last step");
        assert_eq!((done.live, done.standby, done.canary), (Some(4), None, None));
        let l = PoolLayout::of(&done);
        assert_eq!((l.place(4), l.place(3)), (serving(Some(4)), Place::Out), "the old set leaves");
        assert!(l.switched() && !l.keeps(3));
        assert_eq!((canary_next(&done, &steps, interval, 0), promoted(&done)), (None, None));
    }

    #[test]
    fn a_canary_rolled_back_switches_all_traffic_back_at_once() {
        let start = moving(&rec(3, None, None), 4, 2, Strategy::Canary);
        let one = canary_next(&start, &[10, 50], Duration::from_secs(60), 0).unwrap();
        // A rollback moves with the strategy of the revision it returns to.
        let back = moving(&one, 3, 2, Strategy::Rolling);
        assert_eq!((back.revision, back.live, back.standby, back.canary), (3, Some(3), None, None));
        let l = PoolLayout::of(&back);
        assert_eq!((l.place(3), l.place(4)), (serving(Some(3)), Place::Out), "new tasks stop");
        assert!(l.switched());
    }

    #[test]
    fn a_canary_promoted_by_hand_skips_the_remaining_steps() {
        let start = moving(&rec(3, None, None), 4, 2, Strategy::Canary);
        let one = canary_next(&start, &[10, 50], Duration::from_secs(60), 0).unwrap();
        let done = promoted(&one).unwrap();
        assert_eq!((done.revision, done.live, done.canary), (4, Some(4), None));
    }

    #[test]
    fn blue_green_from_a_pool_held_to_one_revision_keeps_that_revision_serving() {
        // A second deploy while the first still bakes: the revision with the traffic keeps it.
        let r = moving(&rec(4, Some(4), Some(3)), 5, 2, Strategy::BlueGreen);
        assert_eq!((r.live, r.standby), (Some(4), None));
    }
}
