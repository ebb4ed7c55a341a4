//! What the login proved before pam_totp ran, for the two ways the module can stand in
//! front of the password module:
//!
//! - `after_publickey`: sshd reports the methods that already passed in
//!   `SSH_AUTH_INFO_0` (OpenSSH 7.8 and later, one line per method, e.g.
//!   `publickey ssh-ed25519 AAAA...`). When a public key passed, the code is all that
//!   is missing and the password is not asked. The report is believed only where sshd
//!   alone can have written it: the service is the one the argument names, and no
//!   rule of the auth stack lets the user write the PAM environment.
//! - `forward_pass`: one answer carries the password and the code; [`splits`] names the
//!   ways to cut it, and the password part is handed on as `PAM_AUTHTOK`.

use crate::stack::{self, PamRule};
use std::path::Path;

/// The PAM service that `after_publickey` trusts when the argument names none.
pub const DEFAULT_SSH_SERVICE: &str = "sshd";

/// The PAM environment variable sshd fills with the methods that passed.
pub const AUTH_INFO_VAR: &str = "SSH_AUTH_INFO_0";

/// Whether a public key passed before this PAM conversation, and why not when not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// sshd says a public key passed, and only sshd can have said it.
    Passed,
    /// No public key passed (or nothing says one did): the password stack decides.
    NotPassed,
    /// Something says a key passed, but it cannot be believed here.
    Untrusted(String),
}

/// Decides whether `auth_info` (the PAM environment's `SSH_AUTH_INFO_0`, if any) shows
/// a public key that passed, for a login to `service` whose auth stack is `rules`
/// (`Err` when it could not be read). `trusted_service` is the service the module
/// argument names.
pub fn publickey_passed(
    service: &str,
    trusted_service: &str,
    auth_info: Option<&str>,
    rules: Result<&[PamRule], &str>,
) -> KeyCheck {
    let reported = auth_info.is_some_and(|info| {
        info.lines()
            .any(|line| line.split_whitespace().next() == Some("publickey"))
    });
    if !reported {
        return KeyCheck::NotPassed;
    }
    if service != trusted_service {
        return KeyCheck::Untrusted(format!(
            "{AUTH_INFO_VAR} is believed only for service {trusted_service}"
        ));
    }
    let rules = match rules {
        Ok(r) => r,
        Err(why) => {
            return KeyCheck::Untrusted(format!(
                "cannot check who may write {AUTH_INFO_VAR}: {why}"
            ))
        }
    };
    if let Some(rule) = stack::env_writer(rules) {
        return KeyCheck::Untrusted(format!(
            "{} in {} lets the user write {AUTH_INFO_VAR}",
            rule.module_name(),
            rule.file.display()
        ));
    }
    KeyCheck::Passed
}

/// [`publickey_passed`] with the stack of `service` read from `pam_dir`.
pub fn publickey_passed_in(
    pam_dir: &Path,
    service: &str,
    trusted_service: &str,
    auth_info: Option<&str>,
) -> KeyCheck {
    // The stack is read only when there is a report to judge.
    if auth_info.is_none_or(|i| !i.contains("publickey")) {
        return KeyCheck::NotPassed;
    }
    let rules = stack::pam_rules(pam_dir, service, 0);
    publickey_passed(
        service,
        trusted_service,
        auth_info,
        rules.as_deref().map_err(String::as_str),
    )
}

/// The prompt of `forward_pass`, as google-authenticator-libpam words it, so that
/// applications configured to answer it keep working.
pub const COMBINED_PROMPT: &str = "Password & verification code: ";

/// One way to read an answer as a password followed by a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The password is `answer[..password_len]`.
    pub password_len: usize,
    /// The code is `answer[code_start..]`.
    pub code_start: usize,
}

/// The ways to read `answer` as password + code, in the order they are tried:
/// for each code length in `digits` (longest first), the password followed directly by
/// that many digits; then the password, one space, and a recovery code (everything
/// after the last space). The password part is never empty.
pub fn splits(answer: &[u8], digits: &[u32]) -> Vec<Split> {
    let mut lengths: Vec<usize> = digits.iter().map(|d| *d as usize).collect();
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    let trailing_digits = answer
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut out: Vec<Split> = lengths
        .into_iter()
        .filter(|n| *n > 0 && *n <= trailing_digits && *n < answer.len())
        .map(|n| Split {
            password_len: answer.len() - n,
            code_start: answer.len() - n,
        })
        .collect();
    if let Some(space) = answer.iter().rposition(|b| *b == b' ') {
        if space > 0 && space + 1 < answer.len() {
            out.push(Split {
                password_len: space,
                code_start: space + 1,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn rule(kind: &str, module: &str, args: &[&str]) -> PamRule {
        PamRule {
            kind: kind.into(),
            control: "required".into(),
            module: module.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            file: PathBuf::from("/etc/pam.d/sshd"),
        }
    }

    const KEY: &str = "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n";

    #[test]
    fn a_key_reported_by_sshd_passes() {
        let rules = [
            rule("auth", "pam_totp.so", &["after_publickey"]),
            rule("auth", "pam_unix.so", &[]),
            // pam_env in the session phase runs after the login was decided.
            rule("session", "pam_env.so", &["user_readenv=1"]),
        ];
        let ok = |info: Option<&str>| publickey_passed("sshd", "sshd", info, Ok(&rules));
        assert_eq!(ok(Some(KEY)), KeyCheck::Passed);
        assert_eq!(
            ok(Some(&format!("password\n{KEY}"))),
            KeyCheck::Passed,
            "any line names a method"
        );
        assert_eq!(ok(None), KeyCheck::NotPassed);
        assert_eq!(ok(Some("")), KeyCheck::NotPassed);
        assert_eq!(ok(Some("keyboard-interactive\n")), KeyCheck::NotPassed);
        assert_eq!(
            ok(Some("hostbased ssh-ed25519 AAAA\n")),
            KeyCheck::NotPassed
        );
        assert_eq!(
            ok(Some("publickeyx ssh-ed25519 AAAA\n")),
            KeyCheck::NotPassed
        );
    }

    #[test]
    fn a_report_the_user_could_have_written_is_not_believed() {
        let readenv = [
            rule("auth", "pam_env.so", &["user_readenv=1"]),
            rule("auth", "pam_totp.so", &["after_publickey"]),
        ];
        assert!(matches!(
            publickey_passed("sshd", "sshd", Some(KEY), Ok(&readenv)),
            KeyCheck::Untrusted(why) if why.contains("pam_env.so in /etc/pam.d/sshd")
        ));
        // Below the line counts too: pam_env works in pam_setcred.
        let below = [
            rule("auth", "pam_totp.so", &["after_publickey"]),
            rule("auth", "/lib/security/pam_env.so", &["user_readenv=01"]),
        ];
        assert!(matches!(
            publickey_passed("sshd", "sshd", Some(KEY), Ok(&below)),
            KeyCheck::Untrusted(_)
        ));
        let off = [
            rule("auth", "pam_env.so", &["user_readenv=0", "readenv=1"]),
            rule("auth", "pam_totp.so", &["after_publickey"]),
        ];
        assert_eq!(
            publickey_passed("sshd", "sshd", Some(KEY), Ok(&off)),
            KeyCheck::Passed
        );
        // su, sudo or any other service: the variable may come from anywhere.
        assert!(matches!(
            publickey_passed("su", "sshd", Some(KEY), Ok(&off)),
            KeyCheck::Untrusted(why) if why.contains("only for service sshd")
        ));
        assert!(matches!(
            publickey_passed("sshd", "sshd", Some(KEY), Err("unreadable")),
            KeyCheck::Untrusted(_)
        ));
    }

    fn parts<'a>(answer: &'a str, s: &Split) -> (&'a str, &'a str) {
        (&answer[..s.password_len], &answer[s.code_start..])
    }

    #[test]
    fn combined_answers_split_at_the_code() {
        let a = "correct horse123456";
        let s = splits(a.as_bytes(), &[6]);
        assert_eq!(
            s.iter().map(|s| parts(a, s)).collect::<Vec<_>>(),
            vec![("correct horse", "123456"), ("correct", "horse123456")]
        );
        // Digits in the password stay in the password.
        let a = "pw2024x12345678";
        let s = splits(a.as_bytes(), &[6, 8, 6]);
        assert_eq!(
            s.iter().map(|s| parts(a, s)).collect::<Vec<_>>(),
            vec![("pw2024x", "12345678"), ("pw2024x12", "345678")]
        );
        // A recovery code after a space.
        let a = "correct horse abcd-efgh-jkmn-pqrs";
        let s = splits(a.as_bytes(), &[6]);
        assert_eq!(
            s.iter().map(|s| parts(a, s)).collect::<Vec<_>>(),
            vec![("correct horse", "abcd-efgh-jkmn-pqrs")]
        );
        // Nothing but a code: no password to hand on.
        assert!(splits(b"123456", &[6]).is_empty());
        assert!(splits(b"12345", &[6]).is_empty());
        assert!(splits(b"", &[6]).is_empty());
        assert!(splits(b" 123456", &[6])
            .iter()
            .all(|s| s.password_len > 0 && s.code_start == 1));
        assert!(splits(b"password ", &[6]).is_empty());
    }
}
