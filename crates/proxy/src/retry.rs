//! The retry policy of one request: which task is tried next, how many
//! times the request may be sent, and the budget that keeps retries from
//! piling onto a failing service. Whether a failure may be retried at all
//! is the error's to say (see [`crate::error::Retry`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::routing::Pool;

/// Times one request is sent at most; connect failures do not count (the
/// request never left), they only exclude a task.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// Retries may add at most ~20% to the load (plus a small floor), so a
/// failing service is not hit with a storm of retries. Shared by every
/// request of the proxy.
pub(crate) struct RetryBudget {
    /// Tenths of a retry.
    tokens: AtomicI64,
}

impl RetryBudget {
    const PER_REQUEST: i64 = 2;
    const PER_RETRY: i64 = 10;
    const CAP: i64 = 1000;

    pub fn new(tokens: i64) -> RetryBudget {
        RetryBudget { tokens: AtomicI64::new(tokens) }
    }

    /// Every request earns a fifth of a retry.
    pub fn deposit(&self) {
        if self.tokens.load(Ordering::Relaxed) < Self::CAP {
            self.tokens.fetch_add(Self::PER_REQUEST, Ordering::Relaxed);
        }
    }

    fn withdraw(&self) -> bool {
        if self.tokens.fetch_sub(Self::PER_RETRY, Ordering::Relaxed) >= Self::PER_RETRY {
            true
        } else {
            self.tokens.fetch_add(Self::PER_RETRY, Ordering::Relaxed);
            false
        }
    }
}

/// One request's way through a pool's tasks.
pub(crate) struct RetryPolicy<'b> {
    budget: &'b RetryBudget,
    /// Times the request was sent.
    sent: usize,
    /// Tasks that failed this request; the common case never allocates.
    tried: Vec<Arc<Backend>>,
    /// After a 5xx from the live set only the standby set is asked.
    standby_only: bool,
    /// A replay after a reset may go back to the task that reset (once, on
    /// a new connection) when it is the only one.
    same_allowed: bool,
    /// The backend set the request was assigned to (sticky or by weight).
    set: Option<u64>,
}

impl<'b> RetryPolicy<'b> {
    pub fn new(budget: &'b RetryBudget, set: Option<u64>) -> RetryPolicy<'b> {
        RetryPolicy { budget, sent: 0, tried: Vec::new(), standby_only: false, same_allowed: false, set }
    }

    /// The request was sent as often as it may be.
    pub fn exhausted(&self) -> bool {
        self.sent >= MAX_ATTEMPTS
    }

    /// The next task to try: one of the request's set not tried yet (ejected
    /// ones last), then the standby set. None when nothing is left.
    pub fn choose(&mut self, pool: &Pool) -> Option<Arc<Backend>> {
        if self.standby_only {
            return pool.pick_fallback(&self.tried);
        }
        let same = std::mem::take(&mut self.same_allowed);
        pool.pick_in(self.set, &self.tried)
            .or_else(|| if same { pool.pick_in(self.set, &[]) } else { None })
            .or_else(|| pool.pick_fallback(&self.tried))
    }

    /// The task failed this request: not to be tried again for it.
    pub fn exclude(&mut self, backend: Arc<Backend>) {
        self.tried.push(backend);
    }

    /// The last task tried, to blame in the answer when nothing answered.
    pub fn last_tried(&self) -> Option<&Arc<Backend>> {
        self.tried.last()
    }

    /// A new routing snapshot came in: tasks that failed may be back,
    /// checked healthy, unless passive checks still keep them out.
    pub fn snapshot_changed(&mut self) {
        self.tried.retain(|b| b.ejected());
    }

    /// Counts a send to `backend`; false when the budget refuses a retry.
    /// Going to the standby set is no retry storm: it is healthy and took
    /// this traffic before a bake, so it is outside the budget.
    pub fn may_send(&mut self, pool: &Pool, backend: &Arc<Backend>) -> bool {
        let to_standby = self.standby_only || pool.fallback.iter().any(|b| Arc::ptr_eq(b, backend));
        if self.sent > 0 && !to_standby && !self.budget.withdraw() {
            return false;
        }
        self.sent = self.sent.saturating_add(1);
        true
    }

    /// From now on only the standby set is asked (the live set gave a 5xx).
    pub fn standby_only(&mut self) {
        self.standby_only = true;
    }

    pub fn is_standby_only(&self) -> bool {
        self.standby_only
    }

    /// A replay after a reset: the next choice may be the same task.
    pub fn replay_allowing_same(&mut self) {
        self.same_allowed = true;
    }

    /// Every task of the pool but the standby set failed this request.
    pub fn none_left(&self, pool: &Pool) -> bool {
        pool.pick_in(self.set, &self.tried).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u16) -> Vec<Arc<Backend>> {
        (1..=n).map(|p| Arc::new(Backend::new(format!("t{p}"), ([127, 0, 0, 1], p).into()))).collect()
    }

    #[test]
    fn retry_budget_allows_about_a_fifth_of_traffic() {
        let budget = RetryBudget::new(0);
        assert!(!budget.withdraw(), "no traffic yet, no retries");
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200, "one retry per five requests when every request fails");
        for _ in 0..100_000 {
            budget.deposit();
        }
        let burst = (0..1000).filter(|_| budget.withdraw()).count();
        assert!(burst <= 101, "saved-up retries are capped: {burst}");
    }

    #[test]
    fn tried_tasks_are_excluded_and_the_same_task_only_on_a_replay() {
        let budget = RetryBudget::new(100);
        let pool = Pool::new("a/web", backends(1));
        let mut policy = RetryPolicy::new(&budget, None);
        let only = policy.choose(&pool).unwrap();
        policy.exclude(only.clone());
        assert!(policy.choose(&pool).is_none(), "a task that failed is not tried again");
        assert!(policy.none_left(&pool));
        policy.replay_allowing_same();
        assert!(Arc::ptr_eq(&policy.choose(&pool).unwrap(), &only), "a replay may go back to the only task");
        assert!(policy.choose(&pool).is_none(), "once");
        assert!(Arc::ptr_eq(policy.last_tried().unwrap(), &only));
    }

    #[test]
    fn sends_are_bounded_and_retries_come_out_of_the_budget() {
        let budget = RetryBudget::new(10);
        let pool = Pool::new("a/web", backends(3));
        let mut policy = RetryPolicy::new(&budget, None);
        let b = policy.choose(&pool).unwrap();
        assert!(policy.may_send(&pool, &b), "the first send is free");
        assert!(policy.may_send(&pool, &b), "one retry in the budget");
        assert!(!policy.may_send(&pool, &b), "the budget is spent");
        let budget = RetryBudget::new(1000);
        let mut policy = RetryPolicy::new(&budget, None);
        for _ in 0..MAX_ATTEMPTS {
            assert!(!policy.exhausted());
            assert!(policy.may_send(&pool, &b));
        }
        assert!(policy.exhausted());
    }

    #[test]
    fn the_standby_set_is_asked_outside_the_budget_and_alone_after_a_5xx() {
        let budget = RetryBudget::new(0);
        let (live, standby) = (backends(1), backends(2).split_off(1));
        let mut pool = Pool::new("a/web", live.clone());
        pool.fallback = standby.clone();
        let mut policy = RetryPolicy::new(&budget, None);
        assert!(Arc::ptr_eq(&policy.choose(&pool).unwrap(), &live[0]), "the live set first");
        assert!(policy.may_send(&pool, &live[0]));
        assert!(!policy.may_send(&pool, &live[0]), "a retry to the live set needs budget");
        assert!(policy.may_send(&pool, &standby[0]), "the standby set does not");
        policy.exclude(live[0].clone());
        assert!(Arc::ptr_eq(&policy.choose(&pool).unwrap(), &standby[0]), "then the standby set");
        let mut policy = RetryPolicy::new(&budget, None);
        policy.standby_only();
        assert!(policy.is_standby_only());
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&policy.choose(&pool).unwrap(), &standby[0]), "never the live set again");
        }
        policy.exclude(standby[0].clone());
        assert!(policy.choose(&pool).is_none());
    }

    #[test]
    fn a_new_snapshot_forgets_failures_of_tasks_no_longer_ejected() {
        let budget = RetryBudget::new(0);
        let pool = Pool::new("a/web", backends(2));
        let mut policy = RetryPolicy::new(&budget, None);
        pool.sets[0].backends[0].failed();
        policy.exclude(pool.sets[0].backends[0].clone());
        policy.exclude(pool.sets[0].backends[1].clone());
        assert!(policy.choose(&pool).is_none());
        policy.snapshot_changed();
        assert_eq!(&*policy.choose(&pool).unwrap().task, "t2", "the ejected one stays out");
    }
}
