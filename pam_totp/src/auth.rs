//! The decisions of one login, as plain functions of the configuration, the store, the
//! login (user, service, source) and the time. The PAM glue only gathers the inputs,
//! asks the questions these functions call for and maps the [`Outcome`] to a PAM code.

use crate::config::{Config, FailMode};
use crate::otp;
use crate::policy::{Policy, PolicyReason};
use crate::recovery;
use crate::secret::Answer;
use crate::store::{Attempt, Factor, Passed, StepOutcome, Store, StoreError};
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

    /// The remote address a success is remembered for with `remember_source`: only a
    /// `PAM_RHOST` that is a literal IPv4 or IPv6 address (never a host name, which
    /// whoever controls DNS could point anywhere), and never for the services that
    /// switch user on the host itself, whatever `PAM_RHOST` they were given.
    pub fn rememberable_source(&self) -> Option<&str> {
        let rhost = self.rhost?;
        if NEVER_REMEMBERED_SERVICES.contains(&self.service) {
            return None;
        }
        rhost.parse::<std::net::IpAddr>().ok().map(|_| rhost)
    }
}

/// Services a remembered source never skips the code for: they run on the host, for a
/// user already logged in, and `PAM_RHOST` is whatever their caller says.
pub const NEVER_REMEMBERED_SERVICES: &[&str] =
    &["su", "su-l", "sudo", "sudo-i", "runuser", "runuser-l"];

/// How a login that passed proved the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Code,
    RecoveryCode,
    /// Enrolled during this login; the factor is stored in the account phase.
    EnrolledAtLogin,
    /// Not asked: passed with a code from this remote address within `remember_source`.
    RememberedSource,
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
    /// NSS knows no such account, and no policy could make a factor mandatory.
    UnknownUser,
}

/// Why a login is refused (`PAM_AUTH_ERR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    WrongCode,
    /// A right code for a time step that was already used.
    Replayed,
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
    /// NSS knows no such account, and the policy could make a factor mandatory.
    UnknownUser,
    /// The answer came later than `prompt_timeout` after the prompt: not checked.
    PromptTimedOut,
    /// The factor the code matched was removed or replaced while the prompt was open.
    FactorChanged,
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
            Outcome::Success(Method::RememberedSource) => {
                f.write_str("result=success reason=\"remembered source\"")
            }
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
                    IgnoreReason::UnknownUser => f.write_str("unknown user, optional")?,
                }
                f.write_str("\"")
            }
            Outcome::Denied(r) => {
                f.write_str("result=failure reason=\"")?;
                match r {
                    DenyReason::WrongCode => f.write_str("wrong code")?,
                    DenyReason::Replayed => f.write_str("code already used")?,
                    DenyReason::Malformed => f.write_str("malformed answer")?,
                    DenyReason::Throttled { wait_secs } => {
                        write!(f, "throttled for {wait_secs} s")?
                    }
                    DenyReason::NotEnrolled(p) => write!(f, "not enrolled, mandatory ({p})")?,
                    DenyReason::EnrollmentNotConfirmed => {
                        f.write_str("enrollment at login not confirmed")?
                    }
                    DenyReason::UnknownUser => f.write_str("unknown user")?,
                    DenyReason::PromptTimedOut => {
                        f.write_str("answer came after prompt_timeout")?
                    }
                    DenyReason::FactorChanged => f.write_str("factor changed during the login")?,
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

/// What the user is told when an answer is refused, so that they know it was the code
/// (and not the password before it) and what to do. Over SSH this is what the user
/// reads: sshd sends it with the failure, before the client asks again.
pub fn notice_after_answer(outcome: &Outcome) -> Option<Notice> {
    let Outcome::Denied(reason) = outcome else {
        return None;
    };
    let text = match reason {
        DenyReason::WrongCode | DenyReason::Malformed => "Wrong verification code.".to_string(),
        DenyReason::Replayed => "This code was already used; wait for the next one.".to_string(),
        DenyReason::Throttled { wait_secs } => {
            format!("Too many failed attempts: try again in {wait_secs} s.")
        }
        DenyReason::PromptTimedOut => {
            "The code came too late; log in again and type a current one.".to_string()
        }
        DenyReason::FactorChanged => {
            "Your second factor was changed during the login; log in again.".to_string()
        }
        _ => return None,
    };
    Some(Notice::Error(text))
}

/// What the login does next, once the policy and the store have been consulted.
#[derive(Debug)]
pub enum Next {
    /// Decided without asking anything.
    Done(Outcome, Option<Notice>),
    /// Ask for a code (after the notice, if any).
    AskCode(Box<Challenge>, Option<Notice>),
    /// The user passed with a code from this remote address within `remember_source`:
    /// a login that asks for the code on its own prompt passes without one
    /// (`Outcome::Success(Method::RememberedSource)`); one whose answer also carries the
    /// password (`forward_pass`) asks as with `AskCode`.
    Remembered(Box<Challenge>),
    /// Mandatory and unenrolled with `enroll_at_login`: enroll within the login.
    EnrollNow,
}

/// What an answer to `Verification code: ` is checked against: the user's factors
/// as they were when the prompt was shown.
#[derive(Debug)]
pub struct Challenge {
    pub factors: Vec<Factor>,
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
        // Locked already: refused without a prompt. Whether a later answer may be
        // checked is decided again, atomically, when it arrives.
        if let Some(wait_secs) = throttle::wait_secs(state.pair, state.user, now, &config.throttle)
        {
            let outcome = Outcome::Denied(DenyReason::Throttled { wait_secs });
            let notice = notice_after_answer(&outcome);
            return Ok(Next::Done(outcome, notice));
        }
        let challenge = Box::new(Challenge {
            factors: state.factors,
        });
        if remembered(config, login, state.remembered_until, now) {
            return Ok(Next::Remembered(challenge));
        }
        return Ok(Next::AskCode(challenge, None));
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

/// Whether a login is let through without a code by `remember_source`: the source is
/// one that is remembered at all ([`Login::rememberable_source`]), the user passed from
/// it and the time has not run out. A row longer than the current `remember_source`
/// (the setting was shortened) counts for nothing.
fn remembered(config: &Config, login: &Login<'_>, until: Option<i64>, now: i64) -> bool {
    let keep = config.policy.remember_source.secs() as i64;
    match (until, login.rememberable_source()) {
        (Some(until), Some(source)) => {
            keep > 0 && source == login.source() && now < until && until <= now.saturating_add(keep)
        }
        _ => false,
    }
}

/// What a success writes with its step: the pair cleared, and the source remembered
/// until `now + remember_source` when that is set and the source can be remembered.
fn passed<'a>(config: &Config, login: &'a Login<'_>, now: i64) -> Passed<'a> {
    let keep = config.policy.remember_source.secs() as i64;
    let remember = match login.rememberable_source() {
        Some(source) if keep > 0 => Some((source, now.saturating_add(keep))),
        _ => None,
    };
    Passed {
        source: login.source(),
        remember,
    }
}

/// Checks the answer to `Verification code: `, shown at `asked_at` and answered at
/// `now`. Whether the answer may be checked at all and the count of that attempt are
/// one atomic step in the store, so that any number of sessions held at the prompt get
/// no more checks than the throttle allows; a success gives the attempt back in the
/// transaction that records its step.
pub fn check_answer(
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    challenge: &Challenge,
    answer: &Answer,
    asked_at: i64,
    now: i64,
) -> Result<Outcome, StoreError> {
    let waited = now.checked_sub(asked_at).unwrap_or(i64::MAX);
    if !(0..=config.policy.prompt_timeout.secs() as i64).contains(&waited) {
        return Ok(Outcome::Denied(DenyReason::PromptTimedOut));
    }
    if let Attempt::Throttled { wait_secs } =
        store.begin_attempt(login.user, login.source(), now, &config.throttle)?
    {
        return Ok(Outcome::Denied(DenyReason::Throttled { wait_secs }));
    }
    verify_answer(config, store, login, &challenge.factors, answer, now)
}

/// `forward_pass`: checks an answer that carries the password and then the code (see
/// [`crate::first_factor::splits`]), shown at `asked_at` and answered at `now`. Counts
/// one attempt however many ways the answer is cut. Returns the outcome and how many
/// leading bytes of the answer are the password to hand on: those of the way that
/// passed, else of the first way tried (else the whole answer).
pub fn check_combined(
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    challenge: &Challenge,
    answer: &Answer,
    asked_at: i64,
    now: i64,
) -> Result<(Outcome, usize), StoreError> {
    let bytes = answer.as_bytes();
    let digits: Vec<u32> = challenge.factors.iter().map(|f| f.params.digits).collect();
    let splits = crate::first_factor::splits(bytes, &digits);
    let fallback = splits.first().map_or(bytes.len(), |s| s.password_len);
    let waited = now.checked_sub(asked_at).unwrap_or(i64::MAX);
    if !(0..=config.policy.prompt_timeout.secs() as i64).contains(&waited) {
        return Ok((Outcome::Denied(DenyReason::PromptTimedOut), fallback));
    }
    if let Attempt::Throttled { wait_secs } =
        store.begin_attempt(login.user, login.source(), now, &config.throttle)?
    {
        return Ok((
            Outcome::Denied(DenyReason::Throttled { wait_secs }),
            fallback,
        ));
    }
    let mut refusal = DenyReason::Malformed;
    for split in &splits {
        let code = Answer::new(bytes[split.code_start..].to_vec());
        match verify_answer(config, store, login, &challenge.factors, &code, now)? {
            Outcome::Success(method) => {
                return Ok((Outcome::Success(method), split.password_len));
            }
            Outcome::Denied(reason) => {
                // The most telling refusal: a replayed or changed factor over a wrong
                // code, a wrong code over an answer that held none.
                let rank = |r: &DenyReason| match r {
                    DenyReason::Malformed => 0,
                    DenyReason::WrongCode => 1,
                    _ => 2,
                };
                if rank(&reason) > rank(&refusal) {
                    refusal = reason;
                }
            }
            other => return Ok((other, fallback)),
        }
    }
    Ok((Outcome::Denied(refusal), fallback))
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
    let mut replayed = false;
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
        match store.accept_login(
            login.user,
            factor.id,
            step,
            now,
            &passed(config, login, now),
        )? {
            StepOutcome::Accepted => return Ok(Outcome::Success(Method::Code)),
            StepOutcome::Replayed => replayed = true,
            StepOutcome::FactorChanged => return Ok(Outcome::Denied(DenyReason::FactorChanged)),
        }
    }
    if replayed {
        return Ok(Outcome::Denied(DenyReason::Replayed));
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
        store.attempt_succeeded(login.user, &passed(config, login, now))?;
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
