//! The local accounts and how they can log in: a login shell, a password hash that
//! can match, an SSH authorized key. Read from /etc/passwd, /etc/shadow and the
//! accounts' homes; `doctor` (lockouts) and `policy set` (who a mandatory factor
//! would refuse) judge the same facts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where sshd looks for authorized keys unless `AuthorizedKeysFile` says otherwise.
pub const DEFAULT_AUTHORIZED_KEYS: &str = ".ssh/authorized_keys .ssh/authorized_keys2";

/// Whether a hash from /etc/shadow can match a password: not empty, not locked
/// (`!`), not disabled (`*`).
pub fn usable_hash(hash: &str) -> bool {
    !hash.is_empty() && !hash.starts_with('!') && !hash.starts_with('*')
}

/// Accounts of /etc/passwd with a login shell.
pub fn login_accounts() -> Vec<(String, PathBuf)> {
    let shells: Option<Vec<String>> = std::fs::read_to_string("/etc/shells").ok().map(|t| {
        t.lines()
            .map(str::trim)
            .filter(|l| l.starts_with('/'))
            .map(str::to_string)
            .collect()
    });
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            let shell = f[6];
            let base = shell.rsplit('/').next().unwrap_or("");
            let listed = shells.as_ref().is_none_or(|s| s.iter().any(|x| x == shell));
            (listed && !matches!(base, "nologin" | "false" | ""))
                .then(|| (f[0].to_string(), PathBuf::from(f[5])))
        })
        .collect()
}

/// Accounts in /etc/shadow and whether their hash can match a password.
pub fn shadow_passwords() -> HashMap<String, bool> {
    std::fs::read_to_string("/etc/shadow")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let hash = f.next()?;
            Some((name.to_string(), usable_hash(hash)))
        })
        .collect()
}

/// Whether one of the authorized keys files (sshd's `AuthorizedKeysFile`, `%h`, `%u`
/// and `%%` expanded) holds a key line.
pub fn has_authorized_key(files: &str, name: &str, home: &Path) -> bool {
    files.split_whitespace().any(|pattern| {
        let expanded = pattern
            .replace("%%", "\u{0}")
            .replace("%h", &home.to_string_lossy())
            .replace("%u", name)
            .replace('\u{0}', "%");
        let path = if expanded.starts_with('/') {
            PathBuf::from(expanded)
        } else {
            home.join(expanded)
        };
        std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .map(str::trim)
                .any(|l| !l.is_empty() && !l.starts_with('#'))
        })
    })
}

/// The accounts with a login shell that can log in today with a password or an
/// authorized key (in the default places), in /etc/passwd order.
pub fn accounts_that_log_in() -> Vec<String> {
    let passwords = shadow_passwords();
    login_accounts()
        .into_iter()
        .filter(|(name, home)| {
            passwords.get(name).copied().unwrap_or(true)
                || has_authorized_key(DEFAULT_AUTHORIZED_KEYS, name, home)
        })
        .map(|(name, _)| name)
        .collect()
}
