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
use crate::caller::{Caller, Process};
use crate::error::{Error, Result};
use crate::output::escaped;
use crate::terminal;
use pam_totp::account::Membership;
use pam_totp::auth::{self, Challenge, DenyReason, Login, Outcome};
use pam_totp::config::Config;
use pam_totp::policy::{policy_for, Policy, PolicyReason};
use pam_totp::recovery::HashedCode;
use pam_totp::store::{open_for_changes, open_for_reading, Factor, Store};
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
    /// The ids the process started with (for the password check).
    pub process: Process,
    pub caller: Caller,
    pub config_path: PathBuf,
    pub json: bool,
}

impl Ctx {
    pub fn config(&self) -> Result<Config> {
        Ok(Config::load(&self.config_path)?)
    }

    /// The store, for a command that changes it: an existing SQLite file of this
    /// version's schema, or the PostgreSQL server of `[store] backend = "postgresql"`.
    /// Only `store init` creates or migrates a store.
    pub fn store_for_changes(&self, config: &Config) -> Result<Box<dyn Store>> {
        Ok(open_for_changes(config)?)
    }

    /// The store, for a command that only reads it: SQLite opened read-only; nothing
    /// is created, migrated or written.
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
    let account = pam_totp::account::canonical_account(user)?
        .ok_or_else(|| Error::failed(format!("no such user: {user}")))?;
    let mut membership = Membership::new(&account);
    Ok(policy_for(&config.policy, None, &mut |g| {
        membership.is_member(g)
    })?)
}

/// Why a policy applies, as the caller may see it: root sees the rule (the group or
/// network, escaped); a user sees it in general terms, never which groups or networks
/// the configuration lists.
pub fn shown_reason(caller: &Caller, reason: &PolicyReason) -> String {
    if caller.is_root() {
        return escaped(&reason.to_string());
    }
    general_reason(reason).to_string()
}

/// A policy reason without the configured names.
pub fn general_reason(reason: &PolicyReason) -> &'static str {
    match reason {
        PolicyReason::ExemptGroup(_) => "member of an exempt group",
        PolicyReason::ExemptNetwork(_) => "source inside an exempt network",
        PolicyReason::MandatoryHost => "mandatory for every user on this host",
        PolicyReason::MandatoryGroup(_) => "member of a group for which it is mandatory",
        PolicyReason::Default => "no rule applies",
    }
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

/// Asks for a current code of one of `factors` (or a recovery code) until one is
/// right, at most [`MAX_TRIES`] times. Each answer goes through the same steps as at
/// login: [`Store::begin_attempt`] decides, when it arrives, whether it may be checked
/// and counts it against the user's limits (shared with logins); a success gives the
/// attempt back. The accepted code or recovery code is used up. Nothing is held while
/// the user types.
pub fn prove_possession(
    ctx: &Ctx,
    config: &Config,
    store: &dyn Store,
    user: &str,
    factors: Vec<Factor>,
    action: &str,
) -> Result<()> {
    let login = Login {
        user,
        service: SOURCE,
        rhost: None,
        tty: Some(SOURCE),
    };
    let challenge = Challenge { factors };
    for _ in 0..MAX_TRIES {
        let state = store.login_state(user, SOURCE)?;
        if let Some(wait) = throttle::wait_secs(state.pair, state.user, now(), &config.throttle) {
            audit::refused(&ctx.caller, action, user, "throttled");
            return Err(too_many(wait));
        }
        let asked_at = now();
        let answer = terminal::ask("Current code from your app (or a recovery code): ", false)?;
        // Checked against the time the answer arrived.
        match auth::check_answer(config, store, &login, &challenge, &answer, asked_at, now())? {
            Outcome::Success(_) => return Ok(()),
            Outcome::Denied(DenyReason::Throttled { wait_secs }) => {
                audit::refused(&ctx.caller, action, user, "throttled");
                return Err(too_many(wait_secs));
            }
            Outcome::Denied(DenyReason::Replayed) => {
                terminal::say("That code was already used. Wait for the next one.")?;
            }
            Outcome::Denied(DenyReason::FactorChanged) => {
                audit::refused(&ctx.caller, action, user, "factor changed meanwhile");
                return Err(Error::refused(
                    "the second factor was changed meanwhile: nothing was changed",
                ));
            }
            _ => terminal::say("Wrong code.")?,
        }
    }
    audit::refused(&ctx.caller, action, user, "wrong code");
    Err(Error::refused("wrong code: nothing was changed"))
}

fn too_many(wait: u64) -> Error {
    Error::refused(format!("too many wrong codes: try again in {wait} s"))
}

/// The user's factors now, or "USER has no second factor".
pub fn current_factors(store: &dyn Store, user: &str, hint: &str) -> Result<Vec<Factor>> {
    let factors = store.login_state(user, SOURCE)?.factors;
    if factors.is_empty() {
        return Err(Error::failed(format!(
            "{} has no second factor{hint}",
            escaped(user)
        )));
    }
    Ok(factors)
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
    text.push_str(&crate::output::json_text(&serde_json::Value::from(user)));
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
    fn users_see_reasons_in_general_terms() {
        use pam_totp::account::Account;
        let who = |uid| Caller {
            account: Account {
                name: if uid == 0 { "root" } else { "alice" }.into(),
                uid,
                gid: uid,
                home: "/".into(),
            },
            tty: "none".into(),
            login_uid: None,
        };
        let reason = PolicyReason::ExemptGroup("break\x1bglass".into());
        assert_eq!(
            shown_reason(&who(0), &reason),
            "member of exempt group break\\x1bglass"
        );
        assert_eq!(
            shown_reason(&who(1000), &reason),
            "member of an exempt group"
        );
        let reason = PolicyReason::MandatoryGroup("admins".into());
        assert!(!shown_reason(&who(1000), &reason).contains("admins"));
    }

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
