//! `status` and `list`: who is enrolled, their policy, lockouts and recovery codes.

use super::{lockouts, now, user_policy, Ctx};
use crate::error::Result;
use crate::output::{boxed, emit, emit_json, field_table, time_or_never, yes_no};
use pam_totp::store::Store;
use serde_json::json;

/// `status [--user U]`.
pub fn status(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let name = ctx.caller.target_name(user)?;
    let config = ctx.config()?;
    let store = ctx.store_for_reading(&config)?;
    let now = now();
    let factor = store
        .list()?
        .into_iter()
        .find(|u| u.user == name)
        .and_then(|u| u.factors.into_iter().next());
    if factor.is_none() && name != ctx.caller.name() {
        // Unknown to NSS and not in the store: most likely a typo.
        crate::caller::lookup_existing(&name)?;
    }
    let (policy, reason) = user_policy(&config, &name)?;
    let (locked, locked_sources) = lockouts(&config, &store, &name, now)?;
    let left = if factor.is_some() {
        store.recovery_codes_left(&name)?
    } else {
        0
    };
    let last_used = factor.as_ref().and_then(|f| f.last_used_at);
    let params = factor.as_ref().map(|f| (f.algorithm, f.digits, f.period));
    if ctx.json {
        return emit_json(&json!({
            "user": name,
            "enrolled": factor.is_some(),
            "policy": policy.as_str(),
            "reason": reason.to_string(),
            "locked": locked,
            "recovery_codes_left": left,
            "last_used": last_used,
        }));
    }
    let mut rows = vec![
        ("user".to_string(), name.clone()),
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
            format!("{source} for {wait} s more"),
        ));
    }
    if let (Some(f), Some((algorithm, digits, period))) = (&factor, params) {
        rows.push(("enrolled on".to_string(), time_or_never(Some(f.created_at))));
        rows.push((
            "codes".to_string(),
            format!("{algorithm}, {digits} digits, every {period} s"),
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
    let store = ctx.store_for_reading(&config)?;
    let now = now();
    let users = store.list()?;
    let mut json_rows = Vec::new();
    let mut rows = Vec::new();
    for u in &users {
        let (locked, _) = lockouts(&config, &store, &u.user, now)?;
        let policy = user_policy(&config, &u.user)
            .map(|(p, _)| p.as_str())
            .unwrap_or("unknown");
        let Some(f) = u.factors.first() else {
            continue;
        };
        let last_used = u.factors.iter().filter_map(|f| f.last_used_at).max();
        if ctx.json {
            json_rows.push(json!({
                "user": u.user,
                "policy": policy,
                "algorithm": f.algorithm.as_str(),
                "digits": f.digits,
                "period": f.period,
                "enrolled_at": f.created_at,
                "last_used": last_used,
                "recovery_codes_left": u.recovery_codes_left,
                "locked": locked,
            }));
        } else {
            rows.push(vec![
                u.user.clone(),
                policy.to_string(),
                time_or_never(Some(f.created_at)),
                time_or_never(last_used),
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
