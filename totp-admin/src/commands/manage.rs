//! The changes to one user's factor: `disable`, `reset`, `unlock`, `recovery-codes`.

use super::{
    new_recovery_codes, prove_possession, recovery_codes_json, recovery_codes_text, user_policy,
    Ctx, SOURCE,
};
use crate::audit;
use crate::error::{Error, Result};
use crate::output::emit;
use crate::sessions;
use pam_totp::config::Config;
use pam_totp::policy::Policy;
use pam_totp::store::Store;

/// `disable`: a user removes their own factor, proving they hold it.
pub fn disable(ctx: &Ctx) -> Result<()> {
    let name = ctx.caller.name().to_string();
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    if store.login_state(&name, SOURCE)?.factors.is_empty() {
        return Err(Error::failed(format!("{name} has no second factor")));
    };
    prove_possession(ctx, &config, &store, &name, "disable")?;
    store.remove_factors(&name, None)?;
    audit::done(&ctx.caller, "disable", &name, "");
    emit(&format!("Two-factor authentication is off for {name}.\n"))?;
    emit(&mandatory_note(&config, &name))
}

/// `reset --user U [--logout]` (root): factor, recovery codes and lockouts removed.
pub fn reset(ctx: &Ctx, user: &str, logout: bool) -> Result<()> {
    ctx.caller.require_root("reset")?;
    let name = ctx.caller.target_name(Some(user))?;
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    let had = store.remove_factors(&name, None)? > 0;
    audit::done(
        &ctx.caller,
        "reset",
        &name,
        if had { "factor removed" } else { "no factor" },
    );
    if had {
        emit(&format!(
            "Removed the second factor, recovery codes and lockouts of {name}.\n"
        ))?;
    } else {
        emit(&format!("{name} had no second factor; lockouts cleared.\n"))?;
    }
    emit(&mandatory_note(&config, &name))?;
    if logout {
        let how = sessions::end_sessions(&name)?;
        audit::done(&ctx.caller, "logout", &name, &how);
        emit(&format!("Ended the sessions of {name} ({how}).\n"))?;
    }
    Ok(())
}

/// `unlock --user U` (root).
pub fn unlock(ctx: &Ctx, user: &str) -> Result<()> {
    ctx.caller.require_root("unlock")?;
    let name = ctx.caller.target_name(Some(user))?;
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    store.unlock(&name)?;
    audit::done(&ctx.caller, "unlock", &name, "");
    emit(&format!(
        "Cleared the failed attempts and lockouts of {name}.\n"
    ))
}

/// `recovery-codes [--user U]`: a new set; a user proves they hold the factor first.
pub fn recovery_codes(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let name = ctx.caller.target_name(user)?;
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    if store.login_state(&name, SOURCE)?.factors.is_empty() {
        return Err(Error::failed(format!(
            "{name} has no second factor: enroll first"
        )));
    };
    if !ctx.caller.is_root() {
        prove_possession(ctx, &config, &store, &name, "recovery-codes")?;
    }
    let (codes, hashed) = new_recovery_codes(config.recovery.codes)?;
    store.replace_recovery_codes(&name, &hashed)?;
    audit::done(
        &ctx.caller,
        "recovery-codes",
        &name,
        &format!("{} new codes", codes.len()),
    );
    if ctx.json {
        return emit(&recovery_codes_json(&name, &codes));
    }
    emit("New recovery codes; the old ones no longer work.\n\n")?;
    emit(&recovery_codes_text(&codes))
}

/// What happens at the next login of a user without a factor who must have one.
fn mandatory_note(config: &Config, user: &str) -> String {
    match user_policy(config, user) {
        Ok((Policy::Mandatory, reason)) => {
            let next = if config.policy.enroll_at_login {
                "they will set up a new one at their next login"
            } else if config.policy.grace_period.secs() > 0 {
                "they must enroll again (totp-admin enroll) before their grace period ends"
            } else {
                "they cannot log in until they enroll again (totp-admin enroll, or root with --user)"
            };
            format!("A second factor is mandatory for {user} ({reason}): {next}.\n")
        }
        _ => String::new(),
    }
}
