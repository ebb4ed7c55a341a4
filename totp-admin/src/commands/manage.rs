//! The changes to one user's factors: `disable`, `reset`, `unlock`, `recovery-codes`.

use super::{
    current_factors, new_recovery_codes, prove_possession, recovery_codes_json,
    recovery_codes_text, shown_reason, user_policy, Ctx,
};
use crate::audit;
use crate::caller::{no_such_user, Target};
use crate::cli::ResetArgs;
use crate::error::{Error, Result};
use crate::output::{emit, escaped};
use crate::sessions;
use pam_totp::config::Config;
use pam_totp::policy::Policy;
use pam_totp::store::Store;

/// `disable [--name N]`: a user removes their own factors, or one of them, proving
/// they hold one (or a recovery code).
pub fn disable(ctx: &Ctx, factor: Option<&str>) -> Result<()> {
    let name = ctx.caller.name().to_string();
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let factors = current_factors(&*store, &name, "")?;
    if let Some(factor) = factor {
        let names: Vec<String> = factors.iter().map(|f| f.name.clone()).collect();
        named_factor(&names, &name, factor)?;
    }
    prove_possession(ctx, &config, &*store, &name, factors, "disable")?;
    let left = remove(&*store, &name, factor)?;
    audit::done(&ctx.caller, "disable", &name, &removed_detail(factor));
    let shown = escaped(&name);
    match factor {
        Some(f) if left > 0 => {
            return emit(&format!(
                "Removed the factor {f} of {shown}; {left} left.\n"
            ))
        }
        _ => emit(&format!("Two-factor authentication is off for {shown}.\n"))?,
    }
    emit(&mandatory_note(ctx, &config, &name))
}

/// `reset --user U [--name N] [--logout]` (root): the factors (or the one named),
/// and with the last factor the recovery codes and lockouts, removed.
pub fn reset(ctx: &Ctx, args: &ResetArgs) -> Result<()> {
    ctx.caller.require_root("reset")?;
    let target = ctx.caller.resolve(Some(&args.user))?;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let name = match target {
        Target::Account(account) => account.name,
        Target::Unknown(name) if args.name.is_none() => {
            return forget(ctx, &*store, "reset", &name)
        }
        Target::Unknown(name) => return Err(no_such_user(&name)),
    };
    let factor = args.name.as_deref();
    let had = factor_names(&*store, &name)?;
    if let Some(f) = factor {
        named_factor(&had, &name, f)?;
    }
    let had = had.len();
    let left = remove(&*store, &name, factor)?;
    let detail = if had == 0 {
        "no factor".to_string()
    } else {
        removed_detail(factor)
    };
    audit::done(&ctx.caller, "reset", &name, &detail);
    let shown = escaped(&name);
    match factor {
        Some(f) if left > 0 => emit(&format!(
            "Removed the factor {f} of {shown}; {left} left.\n"
        ))?,
        Some(f) => emit(&format!(
            "Removed the factor {f}, the last one, the recovery codes and lockouts of {shown}.\n"
        ))?,
        None if had > 0 => emit(&format!(
            "Removed the second factor, recovery codes and lockouts of {shown}.\n"
        ))?,
        None => emit(&format!(
            "{shown} had no second factor; lockouts cleared.\n"
        ))?,
    }
    if left == 0 {
        emit(&mandatory_note(ctx, &config, &name))?;
    }
    if args.logout {
        let how = sessions::end_sessions(&name)?;
        audit::done(&ctx.caller, "logout", &name, &how);
        emit(&format!("Ended the sessions of {shown} ({how}).\n"))?;
    }
    Ok(())
}

/// Refuses a factor name the user does not have, naming the ones they have.
fn named_factor(names: &[String], user: &str, factor: &str) -> Result<()> {
    if names.iter().any(|n| n == factor) {
        return Ok(());
    }
    Err(Error::failed(format!(
        "{} has no factor named {}; the factors are: {}",
        escaped(user),
        escaped(factor),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

/// Removes the factor `factor` (or all); when none is left, the recovery codes go
/// with it (the store does that) and so do the lockouts. Returns the factors left.
fn remove(store: &dyn Store, user: &str, factor: Option<&str>) -> Result<usize> {
    store.remove_factors(user, factor)?;
    let left = factor_names(store, user)?.len();
    if left == 0 && factor.is_some() {
        store.unlock(user)?;
    }
    Ok(left)
}

/// The names of the user's factors, read without unsealing any key.
fn factor_names(store: &dyn Store, user: &str) -> Result<Vec<String>> {
    Ok(store
        .list()?
        .into_iter()
        .find(|u| u.user == user)
        .map(|u| u.factors.into_iter().map(|f| f.name).collect())
        .unwrap_or_default())
}

fn removed_detail(factor: Option<&str>) -> String {
    match factor {
        Some(f) => format!("factor {f} removed"),
        None => "factor removed".to_string(),
    }
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
