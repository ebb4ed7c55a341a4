//! One file per command; what they share is here: the context, loading the
//! configuration and the store, proving possession of a factor, recovery codes.

pub mod doctor;
pub mod enroll;
pub mod import;
pub mod manage;
pub mod policy;
pub mod status;
pub mod store;

use crate::audit;
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::terminal;
use pam_totp::account::Membership;
use pam_totp::auth::{self, Challenge, DenyReason, Login, Outcome};
use pam_totp::config::Config;
use pam_totp::policy::{policy_for, Policy, PolicyReason};
use pam_totp::recovery::HashedCode;
use pam_totp::store::{open_for_changes, open_for_reading, Store};
use pam_totp::throttle;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// What failures typed into `totp-admin` are counted against (with the user), apart
/// from the sources of real logins: a lockout here does not lock SSH out, and the
/// per-user ceiling still counts both.
pub const SOURCE: &str = "totp-admin";

/// Tries at a code before the command gives up.
pub const MAX_TRIES: u32 = 3;

pub struct Ctx {
    pub caller: Caller,
    pub config_path: PathBuf,
    pub json: bool,
}

impl Ctx {
    pub fn config(&self) -> Result<Config> {
        Ok(Config::load(&self.config_path)?)
    }

    /// The store, for a command that changes it: an existing SQLite file of this
    /// version's schema (only `store init` creates or migrates one), or the PostgreSQL
    /// server of `[store] backend = "postgresql"`.
    pub fn store(&self, config: &Config) -> Result<Box<dyn Store>> {
        Ok(open_for_changes(config)?)
    }

    /// The store, for a command that only reads it: SQLite opened read-only.
    pub fn store_for_reading(&self, config: &Config) -> Result<Box<dyn Store>> {
        Ok(open_for_reading(config)?)
    }
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The user's policy as a login without a remote host sees it.
pub fn user_policy(config: &Config, user: &str) -> Result<(Policy, PolicyReason)> {
    let mut membership = Membership::new(user);
    Ok(policy_for(&config.policy, None, &mut |g| {
        membership.is_member(g)
    })?)
}

/// Whether the user must wait anywhere: a locked source or the per-user ceiling.
/// Returns the locked sources with their remaining seconds.
pub fn lockouts(
    config: &Config,
    store: &dyn Store,
    user: &str,
    now: i64,
) -> Result<(bool, Vec<(String, u64)>)> {
    let (pairs, user_failures) = store.throttle_state(user)?;
    let mut locked_sources = Vec::new();
    for (source, pair) in pairs {
        if let Some(wait) = throttle::wait_secs(pair, Default::default(), now, &config.throttle) {
            locked_sources.push((source, wait));
        }
    }
    let ceiling =
        throttle::wait_secs(Default::default(), user_failures, now, &config.throttle).is_some();
    Ok((ceiling || !locked_sources.is_empty(), locked_sources))
}

/// Asks for a current code (or a recovery code) of `factor` until one is right, at
/// most [`MAX_TRIES`] times. Failures count towards throttling like failed logins;
/// the accepted code or recovery code is used up.
pub fn prove_possession(
    ctx: &Ctx,
    config: &Config,
    store: &dyn Store,
    user: &str,
    action: &str,
) -> Result<()> {
    let login = Login {
        user,
        service: SOURCE,
        rhost: None,
        tty: Some(SOURCE),
    };
    for _ in 0..MAX_TRIES {
        let now = now();
        let state = store.login_state(user, SOURCE)?;
        if state.factors.is_empty() {
            return Err(Error::failed(format!("{user} has no second factor")));
        };
        if let Some(wait) = throttle::wait_secs(state.pair, state.user, now, &config.throttle) {
            audit::refused(&ctx.caller, action, user, "throttled");
            return Err(Error::refused(format!(
                "too many wrong codes: try again in {wait} s"
            )));
        }
        let challenge = Challenge {
            factors: state.factors,
            throttled: None,
            failures: state.pair.failures,
        };
        let answer = terminal::ask("Current code from your app (or a recovery code): ", false)?;
        // The time the answer arrived; the check counts against the user's limits.
        let now = self::now();
        match auth::check_answer(config, store, &login, &challenge, &answer, now)? {
            Outcome::Success(_) => return Ok(()),
            Outcome::Denied(DenyReason::Throttled { wait_secs }) => {
                audit::refused(&ctx.caller, action, user, "throttled");
                return Err(Error::refused(format!(
                    "too many wrong codes: try again in {wait_secs} s"
                )));
            }
            Outcome::Denied(DenyReason::Replayed) => {
                terminal::say("That code was already used. Wait for the next one.")?;
            }
            _ => terminal::say("Wrong code.")?,
        }
    }
    audit::refused(&ctx.caller, action, user, "wrong code");
    Err(Error::refused("wrong code: nothing was changed"))
}

/// `count` new recovery codes and their stored forms.
pub fn new_recovery_codes(count: u32) -> Result<(Vec<Zeroizing<String>>, Vec<HashedCode>)> {
    pam_totp::enroll::recovery_codes(count)
        .map_err(|e| Error::failed(format!("cannot make recovery codes: {e}")))
}

/// The recovery codes as people read them, to be shown once.
pub fn recovery_codes_text(codes: &[Zeroizing<String>]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::new());
    if codes.is_empty() {
        text.push_str("No recovery codes ([recovery] codes = 0).\n");
        return text;
    }
    text.push_str(
        "Recovery codes: each works once, instead of a code, if you lose your phone.\n\
         They are shown only now: print them or keep them in a password manager.\n\n",
    );
    for code in codes {
        text.push_str("    ");
        text.push_str(code);
        text.push('\n');
    }
    text
}

/// `{"user": ..., "recovery_codes": [...]}`, built by hand so that the codes stay in
/// wiping memory.
pub fn recovery_codes_json(user: &str, codes: &[Zeroizing<String>]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::from("{\"user\":"));
    text.push_str(&serde_json::Value::from(user).to_string());
    text.push_str(",\"recovery_codes\":[");
    for (i, code) in codes.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // Codes use only [a-z2-9-]: nothing to escape.
        text.push('"');
        text.push_str(code);
        text.push('"');
    }
    text.push_str("]}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_json_is_valid() {
        let codes = vec![
            Zeroizing::new("abcd-efgh".to_string()),
            Zeroizing::new("2345-6789".to_string()),
        ];
        let text = recovery_codes_json("al\"ice", &codes);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["user"], "al\"ice");
        assert_eq!(v["recovery_codes"][1], "2345-6789");
    }
}
