//! `--max-leases`: how many leases may still be taken. Counted in
//! completions (accepted or rejected); a lost or released lease gives its
//! ticket back, so the agent keeps working until N were completed.

use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Lease one task, then call [`LeaseQuota::settle`].
    Granted,
    /// Other slots hold the remaining tickets; ask again later.
    Wait,
    /// N leases were completed: stop.
    Exhausted,
}

#[derive(Debug)]
pub(crate) struct LeaseQuota {
    max: Option<u64>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    completed: u64,
    in_flight: u64,
}

impl LeaseQuota {
    pub fn new(max: Option<u64>) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    pub fn take(&self) -> Ticket {
        let mut c = self.counts.lock().expect("quota lock");
        match self.max {
            Some(max) if c.completed >= max => Ticket::Exhausted,
            Some(max) if c.completed + c.in_flight >= max => Ticket::Wait,
            _ => {
                c.in_flight += 1;
                Ticket::Granted
            }
        }
    }

    /// Returns a ticket; `completed` says whether it counts.
    pub fn settle(&self, completed: bool) {
        let mut c = self.counts.lock().expect("quota lock");
        c.in_flight -= 1;
        if completed {
            c.completed += 1;
        }
    }

    pub fn completed(&self) -> u64 {
        self.counts.lock().expect("quota lock").completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_come_back_unless_the_lease_was_completed() {
        let q = LeaseQuota::new(Some(2));
        assert_eq!(q.take(), Ticket::Granted);
        assert_eq!(q.take(), Ticket::Granted);
        assert_eq!(q.take(), Ticket::Wait);
        q.settle(false);
        assert_eq!(q.take(), Ticket::Granted);
        q.settle(true);
        q.settle(true);
        assert_eq!(q.take(), Ticket::Exhausted);
        assert_eq!(q.completed(), 2);
        assert_eq!(LeaseQuota::new(None).take(), Ticket::Granted);
    }
}
