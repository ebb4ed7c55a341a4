//! `status` and `list`: who is enrolled, their policy, lockouts and recovery codes.

use super::{lockouts, now, shown_reason, user_policy, Ctx};
use crate::caller::{no_such_user, Target};
use crate::error::Result;
use crate::output::{boxed, emit, emit_json, escaped, field_table, time_or_never, yes_no};
use pam_totp::store::Store;
use serde_json::json;

/// `status [--user U]`.
pub fn status(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let target = ctx.caller.resolve(user)?;
    let name = match &target {
        Target::Account(a) => a.name.clone(),
        Target::Unknown(n) => n.clone(),
    };
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    let now = now();
    let factor = store.login_state(&name, "")?.factor;
    if factor.is_none() && matches!(target, Target::Unknown(_)) {
        // Unknown to NSS and not in the store: most likely a typo.
        return Err(no_such_user(&name));
    }
    let (policy, reason) = user_policy(&config, &name)?;
    let reason = shown_reason(&ctx.caller, &reason);
    let (locked, locked_sources) = lockouts(&config, &store, &name, now)?;
    let left = if factor.is_some() {
        store.recovery_codes_left(&name)?
    } else {
        0
    };
    let last_used = factor.as_ref().and_then(|f| f.last_used_at);
    if ctx.json {
        return emit_json(&json!({
            "user": name,
            "enrolled": factor.is_some(),
            "policy": policy.as_str(),
            "reason": reason,
            "locked": locked,
            "recovery_codes_left": left,
            "last_used": last_used,
        }));
    }
    let mut rows = vec![
        ("user".to_string(), escaped(&name)),
        ("enrolled".to_string(), yes_no(factor.is_some())),
        (
            "policy".to_string(),
            format!("{} ({reason})", policy.as_str()),
        ),
        ("locked".to_string(), yes_no(locked)),
    ];
    for (source, wait) in &locked_sources {
        rows.push((
            "locked from".to_string(),
            format!("{} for {wait} s more", escaped(source)),
        ));
    }
    if let Some(f) = &factor {
        rows.push(("enrolled on".to_string(), time_or_never(Some(f.created_at))));
        rows.push((
            "codes".to_string(),
            format!(
                "{}, {} digits, every {} s",
                f.params.algorithm, f.params.digits, f.params.period
            ),
        ));
        rows.push(("last used".to_string(), time_or_never(last_used)));
        rows.push(("recovery codes left".to_string(), left.to_string()));
    }
    emit(&field_table(&rows))
}

/// `list`: every enrolled user (root).
pub fn list(ctx: &Ctx) -> Result<()> {
    ctx.caller.require_root("list")?;
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    let now = now();
    let users = store.list()?;
    let mut json_rows = Vec::new();
    let mut rows = Vec::new();
    for u in &users {
        let (locked, _) = lockouts(&config, &store, &u.user, now)?;
        let policy = user_policy(&config, &u.user)
            .map(|(p, _)| p.as_str())
            .unwrap_or("unknown");
        if ctx.json {
            json_rows.push(json!({
                "user": u.user,
                "policy": policy,
                "algorithm": u.algorithm.as_str(),
                "digits": u.digits,
                "period": u.period,
                "enrolled_at": u.created_at,
                "last_used": u.last_used_at,
                "recovery_codes_left": u.recovery_codes_left,
                "locked": locked,
            }));
        } else {
            rows.push(vec![
                escaped(&u.user),
                policy.to_string(),
                time_or_never(Some(u.created_at)),
                time_or_never(u.last_used_at),
                u.recovery_codes_left.to_string(),
                yes_no(locked),
            ]);
        }
    }
    if ctx.json {
        return emit_json(&serde_json::Value::Array(json_rows));
    }
    if users.is_empty() {
        return emit("No user is enrolled.\n");
    }
    emit(&boxed(
        &[
            "User",
            "Policy",
            "Enrolled",
            "Last used",
            "Recovery codes",
            "Locked",
        ],
        &rows,
    ))
}
