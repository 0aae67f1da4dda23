//! Waiting for a condition the kernel offers no event for (a process's exec, a fifo's
//! reader catching up): checks at growing intervals.

use std::time::{Duration, Instant};

/// Calls `done` until it returns true (then true) or `timeout` has passed (then false):
/// after intervals that grow from 20 µs to 2 ms, so a quick answer is seen quickly and a
/// slow one costs few checks.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_micros(20);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_stops_at_the_first_yes() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn poll_until_gives_up_after_the_timeout_with_few_checks() {
        let mut calls = 0;
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(30), || {
            calls += 1;
            false
        }));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // 20, 40, ... 1280 µs, then 2 ms steps: far fewer than one check per 20 µs.
        assert!(calls < 30, "{calls} checks");
    }
}
