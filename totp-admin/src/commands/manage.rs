//! The changes to one user's factor: `disable`, `reset`, `unlock`, `recovery-codes`.

use super::{
    current_factors, new_recovery_codes, prove_possession, recovery_codes_json,
    recovery_codes_text, shown_reason, user_policy, Ctx,
};
use crate::audit;
use crate::caller::{no_such_user, Target};
use crate::error::Result;
use crate::output::{emit, escaped};
use crate::sessions;
use pam_totp::config::Config;
use pam_totp::policy::Policy;
use pam_totp::store::Store;

/// `disable`: a user removes their own factor, proving they hold it.
pub fn disable(ctx: &Ctx) -> Result<()> {
    let name = ctx.caller.name().to_string();
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let factors = current_factors(&*store, &name, "")?;
    prove_possession(ctx, &config, &*store, &name, factors, "disable")?;
    store.remove_factors(&name, None)?;
    audit::done(&ctx.caller, "disable", &name, "");
    emit(&format!(
        "Two-factor authentication is off for {}.\n",
        escaped(&name)
    ))?;
    emit(&mandatory_note(ctx, &config, &name))
}

/// `reset --user U [--logout]` (root): factor, recovery codes and lockouts removed.
pub fn reset(ctx: &Ctx, user: &str, logout: bool) -> Result<()> {
    ctx.caller.require_root("reset")?;
    let target = ctx.caller.resolve(Some(user))?;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let name = match target {
        Target::Account(account) => account.name,
        Target::Unknown(name) => return forget(ctx, &*store, "reset", &name),
    };
    let had = store.remove_factors(&name, None)? > 0;
    audit::done(
        &ctx.caller,
        "reset",
        &name,
        if had { "factor removed" } else { "no factor" },
    );
    let shown = escaped(&name);
    if had {
        emit(&format!(
            "Removed the second factor, recovery codes and lockouts of {shown}.\n"
        ))?;
    } else {
        emit(&format!(
            "{shown} had no second factor; lockouts cleared.\n"
        ))?;
    }
    emit(&mandatory_note(ctx, &config, &name))?;
    if logout {
        let how = sessions::end_sessions(&name)?;
        audit::done(&ctx.caller, "logout", &name, &how);
        emit(&format!("Ended the sessions of {shown} ({how}).\n"))?;
    }
    Ok(())
}

/// `unlock --user U` (root).
pub fn unlock(ctx: &Ctx, user: &str) -> Result<()> {
    ctx.caller.require_root("unlock")?;
    let target = ctx.caller.resolve(Some(user))?;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let name = match target {
        Target::Account(account) => account.name,
        Target::Unknown(name) => return forget(ctx, &*store, "unlock", &name),
    };
    let had = store.unlock(&name)?;
    audit::done(
        &ctx.caller,
        "unlock",
        &name,
        if had {
            "lockouts cleared"
        } else {
            "no lockout"
        },
    );
    if had {
        emit(&format!(
            "Cleared the failed attempts and lockouts of {}.\n",
            escaped(&name)
        ))
    } else {
        emit(&format!(
            "{} had no failed attempts or lockouts.\n",
            escaped(&name)
        ))
    }
}

/// `reset` or `unlock` of a name NSS does not know: a typo (exit 1), unless the store
/// holds records under exactly that name (an account that was deleted), which are
/// then removed.
fn forget(ctx: &Ctx, store: &dyn Store, action: &str, name: &str) -> Result<()> {
    if !store.has_records(name)? {
        return Err(no_such_user(name));
    }
    store.remove_factors(name, None)?;
    store.unlock(name)?;
    audit::done(
        &ctx.caller,
        action,
        name,
        "not a user any more: records removed",
    );
    emit(&format!(
        "{} is not a user any more; removed its records.\n",
        escaped(name)
    ))
}

/// `recovery-codes [--user U]`: a new set; a user proves they hold the factor first.
pub fn recovery_codes(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let name = ctx.caller.target(user)?.name;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let factors = current_factors(&*store, &name, ": enroll first")?;
    if !ctx.caller.is_root() {
        prove_possession(ctx, &config, &*store, &name, factors, "recovery-codes")?;
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
fn mandatory_note(ctx: &Ctx, config: &Config, user: &str) -> String {
    match user_policy(config, user) {
        Ok((Policy::Mandatory, reason)) => {
            let next = if config.policy.enroll_at_login {
                "they will set up a new one at their next login"
            } else if config.policy.grace_period.secs() > 0 {
                "they must enroll again (totp-admin enroll) before their grace period ends"
            } else {
                "they cannot log in until they enroll again (totp-admin enroll, or root with --user)"
            };
            format!(
                "A second factor is mandatory for {} ({}): {next}.\n",
                escaped(user),
                shown_reason(&ctx.caller, &reason)
            )
        }
        _ => String::new(),
    }
}
