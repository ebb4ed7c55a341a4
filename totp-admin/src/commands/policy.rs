//! `policy show` and `policy set`. `set` edits config.toml in place with toml_edit, so
//! the admin's comments and layout survive, reads the result with the module's own
//! reader (`Config::parse`) and writes nothing that does not load, then replaces the
//! file atomically with its owner and mode.

use super::{general_reason, user_policy, Ctx};
use crate::accounts::accounts_that_log_in;
use crate::audit;
use crate::cli::PolicySetArgs;
use crate::error::{Error, Result};
use crate::output::{emit, emit_json, escaped, field_table, list_cell, yes_no};
use pam_totp::account;
use pam_totp::config::{Config, ConfigError, FailMode};
use pam_totp::policy::{Policy, PolicyReason};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

/// `policy show [--user U]`. Root sees the whole policy (and, with `--user`, why it
/// applies to that user). Anyone else sees their own policy and why in general terms,
/// never the groups or networks the configuration lists (config.toml is root's alone).
pub fn show(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    if !ctx.caller.is_root() {
        return show_own(ctx, user);
    }
    let target = user.map(|u| ctx.caller.target(Some(u))).transpose()?;
    let config = ctx.config()?;
    let p = &config.policy;
    let networks: Vec<String> = p.exempt_networks.iter().map(ToString::to_string).collect();
    let for_user = match &target {
        Some(account) => Some((account.name.clone(), user_policy(&config, &account.name)?)),
        None => None,
    };
    if ctx.json {
        let mut value = json!({
            "mandatory": p.mandatory,
            "mandatory_groups": p.mandatory_groups,
            "exempt_groups": p.exempt_groups,
            "exempt_networks": networks,
            "grace_period": p.grace_period.to_string(),
            "prompt_timeout": p.prompt_timeout.to_string(),
            "enroll_at_login": p.enroll_at_login,
            "enroll_confirm_codes": p.enroll_confirm_codes,
            "failmode": failmode(&config),
        });
        if let Some((name, (policy, reason))) = &for_user {
            value["user"] = json!(name);
            value["policy"] = json!(policy.as_str());
            value["reason"] = json!(reason.to_string());
        }
        return emit_json(&value);
    }
    let mut rows = Vec::new();
    if let Some((name, (policy, reason))) = &for_user {
        rows.push(("user".to_string(), escaped(name)));
        rows.push(("policy".to_string(), policy.as_str().to_string()));
        rows.push(("reason".to_string(), escaped(&reason.to_string())));
        if !networks.is_empty() && *policy != Policy::Exempt {
            rows.push(("from exempt_networks".to_string(), "exempt".to_string()));
        }
    }
    rows.extend([
        ("mandatory".to_string(), p.mandatory.to_string()),
        (
            "mandatory_groups".to_string(),
            list_cell(&p.mandatory_groups),
        ),
        ("exempt_groups".to_string(), list_cell(&p.exempt_groups)),
        ("exempt_networks".to_string(), list_cell(&networks)),
        ("grace_period".to_string(), p.grace_period.to_string()),
        ("prompt_timeout".to_string(), p.prompt_timeout.to_string()),
        ("enroll_at_login".to_string(), p.enroll_at_login.to_string()),
        (
            "enroll_confirm_codes".to_string(),
            p.enroll_confirm_codes.to_string(),
        ),
        ("failmode".to_string(), failmode(&config).to_string()),
    ]);
    emit(&field_table(&rows))
}

/// `policy show` by a user: their own policy, why in general terms, whether logins
/// from some networks skip the code for them, and what enrollment asks of them.
fn show_own(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    let account = ctx.caller.target(user)?;
    let config = ctx.config()?;
    let view = own_view(&config, user_policy(&config, &account.name)?);
    if ctx.json {
        return emit_json(&json!({
            "user": account.name,
            "policy": view.policy.as_str(),
            "reason": view.reason,
            "exempt": view.policy == Policy::Exempt,
            "exempt_from_some_networks": view.exempt_from_some_networks,
            "grace_period": view.grace_period,
            "enroll_at_login": view.enroll_at_login,
        }));
    }
    let mut rows = vec![
        ("user".to_string(), escaped(&account.name)),
        ("policy".to_string(), view.policy.as_str().to_string()),
        ("reason".to_string(), view.reason.to_string()),
        ("exempt".to_string(), yes_no(view.policy == Policy::Exempt)),
    ];
    if view.exempt_from_some_networks {
        rows.push((
            "from some networks".to_string(),
            "exempt (no code asked)".to_string(),
        ));
    }
    if let Some(grace) = &view.grace_period {
        rows.push(("grace_period".to_string(), grace.clone()));
    }
    rows.push((
        "enroll_at_login".to_string(),
        view.enroll_at_login.to_string(),
    ));
    emit(&field_table(&rows))
}

/// What a user may know of the policy as it applies to them.
#[derive(Debug, PartialEq, Eq)]
struct OwnView {
    policy: Policy,
    reason: &'static str,
    exempt_from_some_networks: bool,
    /// Only when the factor is mandatory for them.
    grace_period: Option<String>,
    enroll_at_login: bool,
}

fn own_view(config: &Config, (policy, reason): (Policy, PolicyReason)) -> OwnView {
    let p = &config.policy;
    OwnView {
        policy,
        reason: general_reason(&reason),
        exempt_from_some_networks: policy != Policy::Exempt && !p.exempt_networks.is_empty(),
        grace_period: (policy == Policy::Mandatory).then(|| p.grace_period.to_string()),
        enroll_at_login: p.enroll_at_login,
    }
}

fn failmode(config: &Config) -> &'static str {
    match config.policy.failmode {
        FailMode::Secure => "secure",
        FailMode::Open => "open",
    }
}

/// A UTF-8 byte order mark, which TOML parsers allow at the start of a file.
const BOM: char = '\u{feff}';

/// Mandatory or optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Mandatory,
    Optional,
}

/// What `policy set` changes: host-wide, or one group's membership in
/// `mandatory_groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub level: Level,
    pub group: Option<String>,
}

impl Change {
    fn describe(&self) -> String {
        let level = match self.level {
            Level::Mandatory => "mandatory",
            Level::Optional => "optional",
        };
        match &self.group {
            Some(g) => format!("{level} for group {}", escaped(g)),
            None => format!("{level} host-wide"),
        }
    }
}

/// `policy set --mandatory|--optional [--group G]` (root).
pub fn set(ctx: &Ctx, args: &PolicySetArgs) -> Result<()> {
    ctx.caller.require_root("policy set")?;
    let change = Change {
        level: if args.mandatory {
            Level::Mandatory
        } else {
            Level::Optional
        },
        group: args.group.clone(),
    };
    if let (Some(g), Level::Mandatory) = (&change.group, change.level) {
        if account::group_gid(g)?.is_none() {
            return Err(Error::failed(format!(
                "no such group: {}",
                pam_totp::log::quoted(g)
            )));
        }
    }
    // Owner, mode and validity of the current file, as the module checks them; the
    // text edited is the text checked.
    let path = &ctx.config_path;
    let (before, text) = Config::load_with_text(path)?;
    let Some(new_text) = edit_policy(path, &text, &change).map_err(Error::refused)? else {
        return emit(&format!(
            "Already {}: nothing to change.\n",
            change.describe()
        ));
    };
    let refused = if change.level == Level::Mandatory {
        let after = Config::parse(&new_text).map_err(|why| Error::failed(why.to_string()))?;
        refused_from_now_on(ctx, &before, &after)?
    } else {
        Vec::new()
    };
    if !refused.is_empty() && !args.yes {
        audit::refused(
            &ctx.caller,
            "policy-set",
            "-",
            &format!(
                "{}: {} accounts would be refused",
                change.describe(),
                refused.len()
            ),
        );
        let mut text = String::from(
            "totp-admin: these accounts can log in today and would be refused from now on \
             (not enrolled, not exempt, no grace period):\n",
        );
        text.push_str(&refused_list(&refused));
        eprint!("{text}");
        return Err(Error::refused(
            "nothing was changed: add --yes to go ahead, or enroll them first \
             (totp-admin enroll --user USER), or set [policy] grace_period so they can enroll \
             before it ends",
        ));
    }
    write_atomically(path, &new_text)?;
    audit::done(&ctx.caller, "policy-set", "-", &change.describe());
    // What the module will read from now on.
    let config = Config::load(path)?;
    emit(&format!(
        "Two-factor authentication is now {}.\n",
        change.describe()
    ))?;
    if !refused.is_empty() {
        emit(&format!(
            "These accounts are refused at login from now on, until they are enrolled \
             (totp-admin enroll --user USER):\n{}",
            refused_list(&refused)
        ))?;
    }
    if change.level == Level::Optional && change.group.is_some() && config.policy.mandatory {
        emit("Note: it is still mandatory host-wide (policy.mandatory = true).\n")?;
    }
    if change.level == Level::Optional
        && change.group.is_none()
        && !config.policy.mandatory_groups.is_empty()
    {
        emit(&format!(
            "Note: it is still mandatory for the groups {}.\n",
            escaped(&config.policy.mandatory_groups.join(", "))
        ))?;
    }
    Ok(())
}

/// The accounts that can log in today (a login shell and a password or an authorized
/// key, root and the caller included) that `after` makes mandatory, `before` did not,
/// and that are not enrolled: from now on they are refused at login. None when `after`
/// has a grace period or enrollment at login, which let them enroll instead. The
/// caller's own account is marked "(you)".
fn refused_from_now_on(ctx: &Ctx, before: &Config, after: &Config) -> Result<Vec<String>> {
    if after.policy.grace_period.secs() > 0 || after.policy.enroll_at_login {
        return Ok(Vec::new());
    }
    let store = ctx.store_for_reading(after)?;
    let enrolled: std::collections::HashSet<String> = store
        .list()?
        .into_iter()
        .filter(|u| !u.factors.is_empty())
        .map(|u| u.user)
        .collect();
    // Who ran it: the account logged in (under sudo, the admin's own), else root.
    let you = ctx
        .caller
        .login_uid
        .and_then(|uid| account::lookup_uid(uid).ok().flatten())
        .map_or_else(|| ctx.caller.name().to_string(), |a| a.name);
    let mut refused = Vec::new();
    for typed in accounts_that_log_in() {
        let Some(account) = account::canonical_account(&typed)? else {
            continue;
        };
        let name = account.name;
        if enrolled.contains(&name) || refused.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if user_policy(after, &name)?.0 != Policy::Mandatory
            || user_policy(before, &name)?.0 == Policy::Mandatory
        {
            continue;
        }
        let note = if name == you { " (you)" } else { "" };
        refused.push((name, note));
    }
    Ok(refused
        .into_iter()
        .map(|(name, note)| format!("{}{note}", escaped(&name)))
        .collect())
}

/// The accounts, one an indented line.
fn refused_list(accounts: &[String]) -> String {
    accounts.iter().map(|a| format!("    {a}\n")).collect()
}

/// Applies `change` to `text`, the contents of config.toml at `path`, keeping comments
/// and layout. `None` when nothing changes; an error (naming the file, the line and the
/// key) when the result would not load.
pub fn edit_policy(
    path: &Path,
    text: &str,
    change: &Change,
) -> std::result::Result<Option<String>, String> {
    let not_changed = |why: String| format!("{why}; the file was not changed");
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        not_changed(format!(
            "{}: not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let policy = doc
        .entry("policy")
        .or_insert(Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| not_changed(format!("{}: policy is not a table", path.display())))?;
    let mandatory = change.level == Level::Mandatory;
    match &change.group {
        None => set_bool(policy, "mandatory", mandatory)
            .map_err(|why| not_changed(format!("{}: {why}", path.display())))?,
        Some(group) => {
            let groups = policy
                .entry("mandatory_groups")
                .or_insert(Item::Value(Value::Array(Array::new())))
                .as_array_mut()
                .ok_or_else(|| {
                    not_changed(format!(
                        "{}: policy.mandatory_groups is not a list",
                        path.display()
                    ))
                })?;
            let present = groups.iter().any(|v| v.as_str() == Some(group));
            if mandatory && !present {
                groups.push(group.as_str());
            } else if !mandatory && present {
                groups.retain(|v| v.as_str() != Some(group));
            }
        }
    }
    let mut new_text = doc.to_string();
    // toml_edit ends lines with LF and drops a byte order mark: a file written with
    // CR LF, or with a mark (both allowed, as the module allows them), keeps them.
    if text.contains("\r\n") && !text.replace("\r\n", "").contains('\n') {
        new_text = new_text.replace("\r\n", "\n").replace('\n', "\r\n");
    }
    if text.starts_with(BOM) && !new_text.starts_with(BOM) {
        new_text.insert(0, BOM);
    }
    if new_text == text {
        return Ok(None);
    }
    // The module's reader has the last word on what may be written.
    Config::parse(&new_text).map_err(|why| {
        not_changed(format!(
            "the edited file would not load: {}",
            ConfigError::Invalid(path.to_path_buf(), why)
        ))
    })?;
    Ok(Some(new_text))
}

/// Sets a boolean, keeping the comment that follows the old value on its line.
fn set_bool(table: &mut dyn TableLike, key: &str, value: bool) -> std::result::Result<(), String> {
    match table.get_mut(key) {
        Some(item) if item.is_value() => {
            let old = item.as_value_mut().ok_or("not a value")?;
            if old.as_bool() == Some(value) {
                return Ok(());
            }
            let decor = old.decor().clone();
            *old = Value::from(value);
            *old.decor_mut() = decor;
        }
        Some(_) => return Err(format!("policy.{key} is not a value")),
        None => {
            table.insert(key, toml_edit::value(value));
        }
    }
    Ok(())
}

/// Replaces `path` with `text` atomically: a new file in the same directory with the
/// old one's owner, group and mode, flushed, then renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let fail =
        |what: &str, e: std::io::Error| Error::failed(format!("{}: {what}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).map_err(|e| fail("cannot stat", e))?;
    if !meta.file_type().is_file() {
        return Err(Error::failed(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.totp-admin.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| fail("cannot create a temporary file", e))?;
        std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| fail("cannot set the owner", e))?;
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| fail("cannot set the mode", e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| fail("cannot write", e))?;
        file.sync_all().map_err(|e| fail("cannot flush", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("cannot replace", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../config/config.toml");

    fn edit(text: &str, change: &Change) -> std::result::Result<Option<String>, String> {
        edit_policy(Path::new("/etc/pam_totp/config.toml"), text, change)
    }

    fn change(level: Level, group: Option<&str>) -> Change {
        Change {
            level,
            group: group.map(str::to_string),
        }
    }

    #[test]
    fn a_user_sees_no_configured_names() {
        let config = Config::parse(
            "[policy]\nexempt_groups = [\"breakglass\"]\nmandatory_groups = [\"admins\"]\n\
             exempt_networks = [\"10.0.0.0/8\"]\ngrace_period = \"3d\"\n",
        )
        .unwrap();
        let view = own_view(
            &config,
            (
                Policy::Mandatory,
                PolicyReason::MandatoryGroup("admins".into()),
            ),
        );
        let text = format!("{view:?}");
        for secret in ["admins", "breakglass", "10.0.0.0"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(view.exempt_from_some_networks);
        assert_eq!(view.grace_period.as_deref(), Some("3d"));
        let exempt = own_view(
            &config,
            (
                Policy::Exempt,
                PolicyReason::ExemptGroup("breakglass".into()),
            ),
        );
        assert_eq!(exempt.reason, "member of an exempt group");
        assert!(!exempt.exempt_from_some_networks);
        assert_eq!(exempt.grace_period, None);
    }

    #[test]
    fn host_wide_keeps_comments_and_layout() {
        let out = edit(SHIPPED, &change(Level::Mandatory, None))
            .unwrap()
            .unwrap();
        assert!(Config::parse(&out).unwrap().policy.mandatory);
        // Exactly one line changed; every comment is still there.
        let before: Vec<&str> = SHIPPED.lines().collect();
        let after: Vec<&str> = out.lines().collect();
        assert_eq!(before.len(), after.len());
        let diff: Vec<(&&str, &&str)> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        assert_eq!(diff, vec![(&"mandatory = false", &"mandatory = true")]);
        // And back.
        let back = edit(&out, &change(Level::Optional, None)).unwrap().unwrap();
        assert_eq!(back, SHIPPED);
    }

    #[test]
    fn trailing_comments_survive() {
        let text = "# top\n[policy]\nmandatory = false   # host-wide\n# after\n";
        let out = edit(text, &change(Level::Mandatory, None))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "# top\n[policy]\nmandatory = true   # host-wide\n# after\n"
        );
    }

    #[test]
    fn groups_are_added_and_removed() {
        let out = edit(SHIPPED, &change(Level::Mandatory, Some("admins")))
            .unwrap()
            .unwrap();
        assert!(out.contains("mandatory_groups = [\"admins\"]"), "{out}");
        let out = edit(&out, &change(Level::Mandatory, Some("sudo")))
            .unwrap()
            .unwrap();
        assert_eq!(
            Config::parse(&out).unwrap().policy.mandatory_groups,
            vec!["admins".to_string(), "sudo".to_string()]
        );
        assert_eq!(
            edit(&out, &change(Level::Mandatory, Some("sudo"))).unwrap(),
            None
        );
        let out = edit(&out, &change(Level::Optional, Some("admins")))
            .unwrap()
            .unwrap();
        assert_eq!(
            Config::parse(&out).unwrap().policy.mandatory_groups,
            vec!["sudo".to_string()]
        );
        let out = edit(&out, &change(Level::Optional, Some("sudo")))
            .unwrap()
            .unwrap();
        assert_eq!(out, SHIPPED, "back to the original text");
        assert!(out.contains("# ... or only of the members of these groups"));
    }

    #[test]
    fn a_missing_policy_table_is_created() {
        let text = "# only a store\n[store]\npath = \"/x/y.db\"\n";
        let out = edit(text, &change(Level::Mandatory, Some("wheel")))
            .unwrap()
            .unwrap();
        assert!(out.starts_with("# only a store\n[store]\n"));
        let c = Config::parse(&out).unwrap();
        assert_eq!(c.policy.mandatory_groups, vec!["wheel".to_string()]);
        assert_eq!(c.store.path, PathBuf::from("/x/y.db"));
    }

    #[test]
    fn nothing_to_change() {
        assert_eq!(edit(SHIPPED, &change(Level::Optional, None)).unwrap(), None);
        assert_eq!(
            edit(SHIPPED, &change(Level::Optional, Some("nobody"))).unwrap(),
            None
        );
    }

    #[test]
    fn invalid_results_are_refused() {
        let err = edit(SHIPPED, &change(Level::Mandatory, Some("bad:group"))).unwrap_err();
        let line = 1 + SHIPPED
            .lines()
            .position(|l| l.starts_with("mandatory_groups"))
            .unwrap();
        assert_eq!(
            err,
            format!(
                "the edited file would not load: /etc/pam_totp/config.toml:{line}: \
                 policy.mandatory_groups: \"bad:group\" is not a group name (empty, or with ':' \
                 or a control character); the file was not changed"
            )
        );
        let err = edit(
            "[policy]\nmandatory_groups = \"sudo\"\n",
            &change(Level::Mandatory, Some("x")),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "/etc/pam_totp/config.toml: policy.mandatory_groups is not a list; the file was not changed"
        );
        assert!(edit("policy = 3\n", &change(Level::Mandatory, None)).is_err());
        assert!(edit("[policy\n", &change(Level::Mandatory, None)).is_err());
        // An existing unknown key makes every result invalid.
        let err = edit(
            "[policy]\nmandatroy = false\n",
            &change(Level::Mandatory, None),
        )
        .unwrap_err();
        assert!(
            err.contains("/etc/pam_totp/config.toml:2: policy.mandatroy: unknown key"),
            "{err}"
        );
    }

    /// Whatever way the file spells its policy (dotted keys, an inline table, CR LF
    /// line ends, a byte order mark), the edit lands in it and the module's reader
    /// reads the result.
    #[test]
    fn every_spelling_is_edited_in_place() {
        for (text, want) in [
            (
                "policy.mandatory = false # host\npolicy.exempt_groups = []\n",
                "policy.mandatory = true # host\npolicy.exempt_groups = []\n",
            ),
            (
                "policy = { mandatory = false, exempt_groups = [] }\n",
                "policy = { mandatory = true, exempt_groups = [] }\n",
            ),
            (
                "[policy]\r\nmandatory = false\r\n",
                "[policy]\r\nmandatory = true\r\n",
            ),
            (
                "\u{feff}[policy]\nmandatory = false\n",
                "\u{feff}[policy]\nmandatory = true\n",
            ),
        ] {
            let out = edit(text, &change(Level::Mandatory, None))
                .unwrap()
                .unwrap();
            assert_eq!(out, want, "{text:?}");
            assert!(Config::parse(&out).unwrap().policy.mandatory);
        }
        let out = edit(
            "policy.mandatory_groups = [\"sudo\"]\n",
            &change(Level::Mandatory, Some("admins")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            Config::parse(&out).unwrap().policy.mandatory_groups,
            ["sudo", "admins"]
        );
    }

    #[test]
    fn atomic_write_keeps_owner_and_mode() {
        let dir = std::env::temp_dir().join(format!("totp-admin-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "[policy]\nmandatory = false\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, "[policy]\nmandatory = true\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[policy]\nmandatory = true\n"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
