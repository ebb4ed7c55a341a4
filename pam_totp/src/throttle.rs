//! Throttling arithmetic: how long a (user, source) pair or a user must wait.
//!
//! Failures are counted per user and source, so a stranger guessing from one address
//! cannot lock the user out from everywhere. After `max_failures` failures in a row the
//! pair waits `lockout`, doubled on each further failure, up to `lockout_max`. A ceiling
//! per user (`user_max_failures` in an hour, across all sources) bounds guessing spread
//! over many addresses.

use crate::config::ThrottleConfig;

/// The window over which the per-user ceiling counts failures.
pub const USER_WINDOW_SECS: i64 = 3600;

/// The stored failure count of one (user, source) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairFailures {
    /// Failures in a row since the last success.
    pub failures: u32,
    /// Until when (unix time) the pair is refused; 0 when not locked.
    pub locked_until: i64,
}

/// The stored failure count of one user across all sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserFailures {
    pub window_start: i64,
    pub failures: u32,
}

/// The lockout that follows the `failures`-th failure in a row, if any.
pub fn lockout_after(failures: u32, config: &ThrottleConfig) -> Option<u64> {
    if failures < config.max_failures {
        return None;
    }
    let doublings = (failures - config.max_failures).min(63);
    let lockout = config
        .lockout
        .secs()
        .checked_shl(doublings)
        .filter(|l| l >> doublings == config.lockout.secs())
        .unwrap_or(u64::MAX);
    Some(lockout.min(config.lockout_max.secs()))
}

/// The pair's state after one more failure at `now`.
pub fn pair_after_failure(before: PairFailures, now: i64, config: &ThrottleConfig) -> PairFailures {
    let failures = before.failures.saturating_add(1);
    let locked_until = match lockout_after(failures, config) {
        Some(secs) => now.saturating_add(secs.min(i64::MAX as u64) as i64),
        None => 0,
    };
    PairFailures {
        failures,
        locked_until,
    }
}

/// The user's window after one more failure at `now`.
pub fn user_after_failure(before: UserFailures, now: i64) -> UserFailures {
    if now - before.window_start >= USER_WINDOW_SECS || now < before.window_start {
        UserFailures {
            window_start: now,
            failures: 1,
        }
    } else {
        UserFailures {
            window_start: before.window_start,
            failures: before.failures.saturating_add(1),
        }
    }
}

/// Seconds to wait before this pair may try again at `now`, or `None` when it may try.
pub fn wait_secs(
    pair: PairFailures,
    user: UserFailures,
    now: i64,
    config: &ThrottleConfig,
) -> Option<u64> {
    let pair_wait = (pair.locked_until > now).then(|| (pair.locked_until - now) as u64);
    let user_end = user.window_start.saturating_add(USER_WINDOW_SECS);
    let user_wait = (config.user_max_failures > 0
        && user.failures >= config.user_max_failures
        && user_end > now
        && now >= user.window_start)
        .then(|| (user_end - now) as u64);
    pair_wait.max(user_wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            max_failures: 5,
            lockout: Duration(60),
            lockout_max: Duration(3600),
            user_max_failures: 50,
        }
    }

    #[test]
    fn lockout_doubles_up_to_the_maximum() {
        let c = cfg();
        for f in 0..5 {
            assert_eq!(lockout_after(f, &c), None, "{f}");
        }
        assert_eq!(lockout_after(5, &c), Some(60));
        assert_eq!(lockout_after(6, &c), Some(120));
        assert_eq!(lockout_after(7, &c), Some(240));
        assert_eq!(lockout_after(10, &c), Some(1920));
        assert_eq!(lockout_after(11, &c), Some(3600));
        assert_eq!(lockout_after(200, &c), Some(3600));
        assert_eq!(lockout_after(u32::MAX, &c), Some(3600));
    }

    #[test]
    fn pair_locks_on_the_fifth_failure() {
        let c = cfg();
        let mut pair = PairFailures::default();
        let now = 1_000_000;
        for i in 1..=4 {
            pair = pair_after_failure(pair, now, &c);
            assert_eq!(pair.failures, i);
            assert_eq!(wait_secs(pair, UserFailures::default(), now, &c), None);
        }
        pair = pair_after_failure(pair, now, &c);
        assert_eq!(wait_secs(pair, UserFailures::default(), now, &c), Some(60));
        assert_eq!(
            wait_secs(pair, UserFailures::default(), now + 59, &c),
            Some(1)
        );
        assert_eq!(wait_secs(pair, UserFailures::default(), now + 60, &c), None);
        // The next failure after the wait doubles the lockout.
        pair = pair_after_failure(pair, now + 60, &c);
        assert_eq!(
            wait_secs(pair, UserFailures::default(), now + 60, &c),
            Some(120)
        );
    }

    #[test]
    fn user_ceiling_counts_within_an_hour() {
        let c = cfg();
        let mut user = UserFailures::default();
        let start = 5_000_000;
        for i in 0..50 {
            user = user_after_failure(user, start + i);
        }
        assert_eq!(user.failures, 50);
        assert_eq!(
            wait_secs(PairFailures::default(), user, start + 100, &c),
            Some(3500)
        );
        assert_eq!(
            wait_secs(PairFailures::default(), user, start + 3600, &c),
            None
        );
        // A failure after the window starts a new one.
        let user = user_after_failure(user, start + 3600);
        assert_eq!(
            user,
            UserFailures {
                window_start: start + 3600,
                failures: 1
            }
        );
    }

    #[test]
    fn user_ceiling_zero_disables_it() {
        let c = ThrottleConfig {
            user_max_failures: 0,
            ..cfg()
        };
        let user = UserFailures {
            window_start: 10,
            failures: 1000,
        };
        assert_eq!(wait_secs(PairFailures::default(), user, 20, &c), None);
    }

    #[test]
    fn longer_wait_wins() {
        let c = cfg();
        let pair = PairFailures {
            failures: 9,
            locked_until: 2000,
        };
        let user = UserFailures {
            window_start: 0,
            failures: 50,
        };
        assert_eq!(wait_secs(pair, user, 1000, &c), Some(2600));
    }
}
