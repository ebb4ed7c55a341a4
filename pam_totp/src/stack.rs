//! PAM service files: the rules of a stack with `@include`, `include` and `substack`
//! expanded. `totp-admin doctor` checks the stacks with it, and the module checks
//! that a service which enrolls at login also runs pam_totp in its account phase.

use std::path::{Path, PathBuf};

/// Where Linux-PAM reads service files.
pub const PAM_DIR: &str = "/etc/pam.d";

/// One rule of a PAM stack, after includes are expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamRule {
    pub kind: String,
    pub control: String,
    pub module: String,
    /// The module arguments, as written.
    pub args: Vec<String>,
    /// The file the rule is written in.
    pub file: PathBuf,
}

impl PamRule {
    pub fn is_totp(&self) -> bool {
        self.module_name() == "pam_totp.so"
    }

    /// The module's file name, without its directory.
    pub fn module_name(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or("")
    }

    /// Whether the rule lets the user write the PAM environment: pam_env with
    /// `user_readenv` on reads `~/.pam_environment`, a file the user writes.
    pub fn user_writes_env(&self) -> bool {
        self.module_name() == "pam_env.so"
            && self.args.iter().any(|a| {
                a.strip_prefix("user_readenv=")
                    .is_some_and(|v| v.is_empty() || !v.trim_start_matches('0').is_empty())
            })
    }
}

/// The rule of an auth stack that lets the user write the PAM environment, if any.
/// pam_env does its work in `pam_setcred`, after the whole auth stack, but a module
/// cannot tell which of its host's calls ran before: any such rule in the auth stack
/// makes the environment the user's.
pub fn env_writer(rules: &[PamRule]) -> Option<&PamRule> {
    rules
        .iter()
        .find(|r| r.kind == "auth" && r.user_writes_env())
}

/// The rules of service `name` in `pam_dir`, with includes expanded. A name that is
/// not a plain file name is refused rather than followed.
pub fn pam_rules(pam_dir: &Path, name: &str, depth: u32) -> Result<Vec<PamRule>, String> {
    if depth > 8 {
        return Err(format!("{name}: includes nest too deep"));
    }
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(format!("{name:?}: not a PAM service name"));
    }
    let file = pam_dir.join(name);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut rules = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(included) = line.strip_prefix("@include") {
            rules.extend(pam_rules(pam_dir, included.trim(), depth + 1)?);
            continue;
        }
        let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let kind = kind.trim_start_matches('-').to_ascii_lowercase();
        let rest = rest.trim_start();
        let (control, rest) = if rest.starts_with('[') {
            let end = rest.find(']').map_or(rest.len(), |i| i + 1);
            (&rest[..end], &rest[end..])
        } else {
            rest.split_once(char::is_whitespace).unwrap_or((rest, ""))
        };
        let mut words = rest.split_whitespace();
        let module = words.next().unwrap_or("").to_string();
        let args = words.map(str::to_string).collect();
        if control == "include" || control == "substack" {
            let sub = pam_rules(pam_dir, &module, depth + 1)?;
            rules.extend(sub.into_iter().filter(|r| r.kind == kind));
            continue;
        }
        rules.push(PamRule {
            kind,
            control: control.to_string(),
            module,
            args,
            file: file.clone(),
        });
    }
    Ok(rules)
}

/// Whether service `name` runs pam_totp in its account phase; `None` when its file
/// cannot be read (the application may use another directory).
pub fn has_totp_account(pam_dir: &Path, name: &str) -> Option<bool> {
    let rules = pam_rules(pam_dir, name, 0).ok()?;
    Some(rules.iter().any(|r| r.kind == "account" && r.is_totp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_and_brackets() {
        let dir = std::env::temp_dir().join(format!("pam_totp-stack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("common-account"),
            "account [success=1 new_authtok_reqd=done default=ignore] pam_unix.so\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("with"),
            "@include common-account\n-account required /lib/security/pam_totp.so # enrol\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("without"),
            "auth required pam_totp.so\naccount include common-account\n",
        )
        .unwrap();
        assert_eq!(has_totp_account(&dir, "with"), Some(true));
        assert_eq!(has_totp_account(&dir, "without"), Some(false));
        assert_eq!(has_totp_account(&dir, "missing"), None);
        assert_eq!(has_totp_account(&dir, "../etc/passwd"), None);
        let rules = pam_rules(&dir, "without", 0).unwrap();
        assert_eq!(
            rules[1].control,
            "[success=1 new_authtok_reqd=done default=ignore]"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
