//! `status` and `list`: who is enrolled, their policy, lockouts and recovery codes.

use super::{lockouts, now, shown_reason, user_policy, Ctx};
use crate::caller::{no_such_user, Target};
use crate::error::Result;
use crate::output::{boxed, emit, emit_json, escaped, field_table, time_or_never, yes_no};
use pam_totp::store::{FactorSummary, Store};
use serde_json::json;

/// `status [--user U]`. Reads the store read-only, and no key: the factors come from
/// the summaries `list` uses.
pub fn status(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let target = ctx.caller.resolve(user)?;
    let name = match &target {
        Target::Account(a) => a.name.clone(),
        Target::Unknown(n) => n.clone(),
    };
    let config = ctx.config()?;
    let store = ctx.store_for_reading(&config)?;
    let now = now();
    let factors = store
        .list()?
        .into_iter()
        .find(|u| u.user == name)
        .map(|u| u.factors)
        .unwrap_or_default();
    let enrolled = !factors.is_empty();
    if !enrolled && matches!(target, Target::Unknown(_)) && !store.has_records(&name)? {
        // Unknown to NSS and not in the store: most likely a typo.
        return Err(no_such_user(&name));
    }
    let (policy, reason) = user_policy(&config, &name)?;
    let reason = shown_reason(&ctx.caller, &reason);
    let (locked, locked_sources) = lockouts(&config, &*store, &name, now)?;
    let left = if enrolled {
        store.recovery_codes_left(&name)?
    } else {
        0
    };
    let last_used = factors.iter().filter_map(|f| f.last_used_at).max();
    if ctx.json {
        return emit_json(&json!({
            "user": name,
            "enrolled": enrolled,
            "factors": factors_json(&factors),
            "policy": policy.as_str(),
            "reason": reason,
            "locked": locked,
            "recovery_codes_left": left,
            "last_used": last_used,
        }));
    }
    let mut rows = vec![
        ("user".to_string(), escaped(&name)),
        ("enrolled".to_string(), yes_no(enrolled)),
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
    for f in &factors {
        let label = |what: &str| {
            if factors.len() == 1 {
                what.to_string()
            } else {
                format!("{what} ({})", escaped(&f.name))
            }
        };
        if factors.len() > 1 {
            rows.push(("factor".to_string(), escaped(&f.name)));
        }
        rows.push((label("enrolled on"), time_or_never(Some(f.created_at))));
        rows.push((label("last used"), time_or_never(f.last_used_at)));
        rows.push((
            label("codes"),
            format!("{}, {} digits, every {} s", f.algorithm, f.digits, f.period),
        ));
    }
    if enrolled {
        rows.push(("recovery codes left".to_string(), left.to_string()));
    }
    emit(&field_table(&rows))
}

/// Each factor as `{"name", "created", "last_used"}` (unix times; `last_used` null
/// when never).
fn factors_json(factors: &[FactorSummary]) -> serde_json::Value {
    factors
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "created": f.created_at,
                "last_used": f.last_used_at,
            })
        })
        .collect()
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
        // The first factor (`default`) stands for the user in the table.
        let Some(first) = u.factors.first() else {
            continue;
        };
        let (locked, _) = lockouts(&config, &*store, &u.user, now)?;
        let policy = user_policy(&config, &u.user)
            .map(|(p, _)| p.as_str())
            .unwrap_or("unknown");
        let last_used = u.factors.iter().filter_map(|f| f.last_used_at).max();
        if ctx.json {
            json_rows.push(json!({
                "user": u.user,
                "factors": factors_json(&u.factors),
                "policy": policy,
                "algorithm": first.algorithm.as_str(),
                "digits": first.digits,
                "period": first.period,
                "enrolled_at": first.created_at,
                "last_used": last_used,
                "recovery_codes_left": u.recovery_codes_left,
                "locked": locked,
            }));
        } else {
            // One line per factor in the factor columns.
            let column = |cell: &dyn Fn(&FactorSummary) -> String| {
                u.factors.iter().map(cell).collect::<Vec<_>>().join("\n")
            };
            rows.push(vec![
                escaped(&u.user),
                policy.to_string(),
                column(&|f| escaped(&f.name)),
                column(&|f| time_or_never(Some(f.created_at))),
                column(&|f| time_or_never(f.last_used_at)),
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
            "Factor",
            "Enrolled",
            "Last used",
            "Recovery codes",
            "Locked",
        ],
        &rows,
    ))
}
