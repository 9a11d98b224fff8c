//! [`Supervisor`]: how a node restarts a task that failed, in place and within a budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Makes a fresh instance of a task; its argument counts the restarts so far.
pub(crate) type Factory<T> = Box<dyn FnMut(u32) -> Result<Box<T>, String> + Send + 'static>;

/// Restarts a task in place when it fails, at most `max` times within `within`; past that the
/// task fails for good. The actor keeps its queues, links and credits, so nothing upstream
/// notices; the tuples the task held are not acked and their trees replay.
pub(crate) struct Supervisor<T: ?Sized> {
    make: Factory<T>,
    restarts: VecDeque<Instant>,
    total: u32,
    max: usize,
    within: Duration,
}

impl<T: ?Sized> Supervisor<T> {
    /// A supervisor that restarts through `make`, at most `max` times within `within`.
    pub(crate) fn new(make: Factory<T>, max: usize, within: Duration) -> Self {
        Supervisor {
            make,
            restarts: VecDeque::new(),
            total: 0,
            max,
            within,
        }
    }

    /// A fresh instance, set up by `init` (`prepare` or `open`), and the number of restarts so
    /// far; `None` when the budget is spent.
    pub(crate) fn restart_with(
        &mut self,
        init: impl FnOnce(&mut T) -> Result<(), String>,
    ) -> Option<Result<(Box<T>, u32), String>> {
        self.restart()
            .map(|made| made.and_then(|(mut task, total)| init(&mut task).map(|()| (task, total))))
    }

    /// A fresh instance and the number of restarts so far, or `None` when the budget is spent.
    fn restart(&mut self) -> Option<Result<(Box<T>, u32), String>> {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.max {
            return None;
        }
        self.restarts.push_back(now);
        self.total += 1;
        Some((self.make)(self.total).map(|t| (t, self.total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_stop_once_the_budget_is_spent() {
        let mut s: Supervisor<u32> =
            Supervisor::new(Box::new(|n| Ok(Box::new(n))), 2, Duration::from_secs(60));
        assert_eq!(
            s.restart().map(|r| r.map(|(t, n)| (*t, n))),
            Some(Ok((1, 1)))
        );
        assert_eq!(
            s.restart().map(|r| r.map(|(t, n)| (*t, n))),
            Some(Ok((2, 2)))
        );
        assert!(s.restart().is_none(), "two within the minute at most");
    }
}
