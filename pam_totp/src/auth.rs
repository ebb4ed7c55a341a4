//! The decisions of one login, as plain functions of the configuration, the store, the
//! login (user, service, source) and the time. The PAM glue only gathers the inputs,
//! asks the questions these functions call for and maps the [`Outcome`] to a PAM code.

use crate::config::{Config, FailMode};
use crate::otp;
use crate::policy::{Policy, PolicyReason};
use crate::recovery;
use crate::secret::Answer;
use crate::store::{Attempt, Factor, StepOutcome, Store, StoreError};
use crate::throttle;
use std::fmt;

/// Answers longer than this are refused unread: no code or recovery code is this long.
pub const MAX_ANSWER_BYTES: usize = 64;

/// Who is logging in, to what, from where.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub user: &'a str,
    pub service: &'a str,
    /// `PAM_RHOST`: the remote host, for SSH.
    pub rhost: Option<&'a str>,
    /// `PAM_TTY`: the terminal, for console logins.
    pub tty: Option<&'a str>,
}

impl Login<'_> {
    /// What failures are counted against together with the user: the remote host,
    /// else the terminal.
    pub fn source(&self) -> &str {
        match (self.rhost, self.tty) {
            (Some(r), _) if !r.is_empty() => r,
            (_, Some(t)) if !t.is_empty() => t,
            _ => "unknown",
        }
    }
}

/// How a login that passed proved the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Code,
    RecoveryCode,
    /// Enrolled during this login; the factor is stored in the account phase.
    EnrolledAtLogin,
}

/// Why the module stands aside (`PAM_IGNORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    Exempt(PolicyReason),
    NotEnrolled,
    /// Mandatory but unenrolled, within the grace period that ends at this unix time.
    GracePeriod {
        until: i64,
    },
    /// The config or store is unusable and `failmode = "open"` lets the login go on.
    FailOpen(String),
}

/// Why a login is refused (`PAM_AUTH_ERR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    WrongCode,
    /// A right code for a time step that was already used.
    Replayed,
    /// A right code, but its factor was removed or replaced before its step was
    /// recorded.
    FactorChanged,
    /// The answer cannot be a code at all (empty, letters, too long).
    Malformed,
    /// Too many failures: the pair or the user waits this many seconds.
    Throttled {
        wait_secs: u64,
    },
    /// Mandatory, unenrolled, past any grace period, and no enrollment at login.
    NotEnrolled(PolicyReason),
    /// Enrollment at login: no right confirmation code was typed.
    EnrollmentNotConfirmed,
}

/// The result of a login, mapped to exactly one PAM code by the glue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `PAM_SUCCESS`.
    Success(Method),
    /// `PAM_IGNORE`.
    Ignore(IgnoreReason),
    /// `PAM_AUTH_ERR`.
    Denied(DenyReason),
    /// `PAM_AUTHINFO_UNAVAIL`: the config or store could not be used; fail closed.
    Unavailable(String),
    /// `PAM_CONV_ERR`: the application did not answer the prompt.
    ConversationFailed,
}

impl fmt::Display for Outcome {
    /// The `result=... reason=...` part of the log line. Never a code or a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success(Method::Code) => {
                f.write_str("result=success reason=\"code accepted\"")
            }
            Outcome::Success(Method::RecoveryCode) => {
                f.write_str("result=success reason=\"recovery code accepted\"")
            }
            Outcome::Success(Method::EnrolledAtLogin) => f.write_str(
                "result=success reason=\"enrolled at login, stored in the account phase\"",
            ),
            Outcome::Ignore(r) => {
                f.write_str("result=ignore reason=\"")?;
                match r {
                    IgnoreReason::Exempt(p) => write!(f, "exempt: {p}")?,
                    IgnoreReason::NotEnrolled => f.write_str("not enrolled, optional")?,
                    IgnoreReason::GracePeriod { until } => write!(
                        f,
                        "not enrolled, mandatory, in grace period until {}",
                        format_utc(*until)
                    )?,
                    IgnoreReason::FailOpen(why) => write!(f, "failmode=open: {}", unquoted(why))?,
                }
                f.write_str("\"")
            }
            Outcome::Denied(r) => {
                f.write_str("result=failure reason=\"")?;
                match r {
                    DenyReason::WrongCode => f.write_str("wrong code")?,
                    DenyReason::Replayed => f.write_str("code already used")?,
                    DenyReason::FactorChanged => f.write_str("factor changed during the login")?,
                    DenyReason::Malformed => f.write_str("malformed answer")?,
                    DenyReason::Throttled { wait_secs } => {
                        write!(f, "throttled for {wait_secs} s")?
                    }
                    DenyReason::NotEnrolled(p) => write!(f, "not enrolled, mandatory ({p})")?,
                    DenyReason::EnrollmentNotConfirmed => {
                        f.write_str("enrollment at login not confirmed")?
                    }
                }
                f.write_str("\"")
            }
            Outcome::Unavailable(why) => {
                write!(f, "result=unavailable reason=\"{}\"", unquoted(why))
            }
            Outcome::ConversationFailed => {
                f.write_str("result=conv_error reason=\"no answer to the prompt\"")
            }
        }
    }
}

/// Error text inside a quoted log field: its own double quotes become single ones.
fn unquoted(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('"') {
        text.replace('"', "'").into()
    } else {
        text.into()
    }
}

/// A message for the user (shown before the next prompt, or on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Error(String),
}

/// What the login does next, once the policy and the store have been consulted.
#[derive(Debug)]
pub enum Next {
    /// Decided without asking anything.
    Done(Outcome, Option<Notice>),
    /// Ask for a code (after the notice, if any).
    AskCode(Box<Challenge>, Option<Notice>),
    /// Mandatory and unenrolled with `enroll_at_login`: enroll within the login.
    EnrollNow,
}

/// What an answer to `Verification code: ` is checked against.
#[derive(Debug)]
pub struct Challenge {
    /// Every factor of the user: a code of any of them is accepted.
    pub factors: Vec<Factor>,
    /// Set when the (user, source) pair or the user must wait when the prompt is shown
    /// (for the notice; whether the answer is checked is decided when it arrives).
    pub throttled: Option<u64>,
    /// Failures of the pair so far; a success clears them.
    pub failures: u32,
}

/// The outcome when the config or store cannot be used: closed, unless the
/// configuration explicitly says `failmode = "open"`.
pub fn unavailable(failmode: FailMode, why: String) -> Outcome {
    match failmode {
        FailMode::Secure => Outcome::Unavailable(why),
        FailMode::Open => Outcome::Ignore(IgnoreReason::FailOpen(why)),
    }
}

/// Decides, for a non-exempt user, whether to ask for a code, to let the login go on
/// without one, to refuse it, or to enroll now.
pub fn start_login(
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    policy: (Policy, PolicyReason),
    now: i64,
) -> Result<Next, StoreError> {
    if policy.0 == Policy::Exempt {
        return Ok(Next::Done(
            Outcome::Ignore(IgnoreReason::Exempt(policy.1)),
            None,
        ));
    }
    let state = store.login_state(login.user, login.source())?;
    if !state.factors.is_empty() {
        let throttled = throttle::wait_secs(state.pair, state.user, now, &config.throttle);
        let notice = throttled
            .map(|secs| Notice::Error(format!("Too many failed attempts: try again in {secs} s.")));
        let challenge = Challenge {
            factors: state.factors,
            throttled,
            failures: state.pair.failures,
        };
        return Ok(Next::AskCode(Box::new(challenge), notice));
    }
    if policy.0 == Policy::Optional {
        return Ok(Next::Done(Outcome::Ignore(IgnoreReason::NotEnrolled), None));
    }
    let grace = config.policy.grace_period.secs() as i64;
    if grace > 0 {
        let until = store
            .first_mandatory_sighting(login.user, now)?
            .saturating_add(grace);
        if now < until {
            let notice = Notice::Info(format!(
                "Two-factor authentication becomes mandatory for this account on {}. \
                 Set it up before then with: totp-admin enroll",
                format_utc(until)
            ));
            return Ok(Next::Done(
                Outcome::Ignore(IgnoreReason::GracePeriod { until }),
                Some(notice),
            ));
        }
    }
    if config.policy.enroll_at_login {
        return Ok(Next::EnrollNow);
    }
    let notice = Notice::Error(
        "Two-factor authentication is required for this account, but none is set up. \
         Contact your administrator."
            .into(),
    );
    Ok(Next::Done(
        Outcome::Denied(DenyReason::NotEnrolled(policy.1)),
        Some(notice),
    ))
}

/// Checks the answer to `Verification code: `. Whether it may be checked at all, and
/// its count as a failure, are one atomic step of the store (an answer that arrives
/// while the pair or the user is locked is refused unchecked); a success gives the
/// attempt back.
pub fn check_answer(
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    challenge: &Challenge,
    answer: &Answer,
    now: i64,
) -> Result<Outcome, StoreError> {
    if let Attempt::Throttled { wait_secs } =
        store.begin_attempt(login.user, login.source(), now, &config.throttle)?
    {
        return Ok(Outcome::Denied(DenyReason::Throttled { wait_secs }));
    }
    let outcome = verify_answer(config, store, login, &challenge.factors, answer, now)?;
    if let Outcome::Success(_) = outcome {
        store.attempt_succeeded(login.user, login.source())?;
    }
    Ok(outcome)
}

fn verify_answer(
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    factors: &[Factor],
    answer: &Answer,
    now: i64,
) -> Result<Outcome, StoreError> {
    if answer.as_bytes().len() > MAX_ANSWER_BYTES * 4 {
        return Ok(Outcome::Denied(DenyReason::Malformed));
    }
    let typed = answer.without_spaces();
    if typed.as_bytes().is_empty() || typed.as_bytes().len() > MAX_ANSWER_BYTES {
        return Ok(Outcome::Denied(DenyReason::Malformed));
    }
    let Ok(unix_time) = u64::try_from(now) else {
        return Ok(Outcome::Unavailable("system clock is before 1970".into()));
    };
    let mut looked_like_a_code = false;
    for factor in factors {
        let Some(code) = otp::parse_code(typed.as_bytes(), factor.params.digits) else {
            continue;
        };
        looked_like_a_code = true;
        let Some(step) = otp::verify_code(
            &factor.secret,
            &factor.params,
            code,
            unix_time,
            config.totp.window,
        ) else {
            continue;
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        return Ok(match store.accept_step(login.user, factor.id, step, now)? {
            StepOutcome::Accepted => Outcome::Success(Method::Code),
            StepOutcome::Replayed => Outcome::Denied(DenyReason::Replayed),
            StepOutcome::FactorChanged => Outcome::Denied(DenyReason::FactorChanged),
        });
    }
    // Not a current code: it may be a recovery code (imported scratch codes are digits).
    let Some(normalized) = recovery::normalize(&typed) else {
        let reason = if looked_like_a_code {
            DenyReason::WrongCode
        } else {
            DenyReason::Malformed
        };
        return Ok(Outcome::Denied(reason));
    };
    if store.use_recovery_code(login.user, &normalized, now)? {
        return Ok(Outcome::Success(Method::RecoveryCode));
    }
    Ok(Outcome::Denied(DenyReason::WrongCode))
}

/// `2026-11-24 21:37 UTC`, without pulling in a date library.
pub fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests;
