//! The decision line every login writes to authpriv. Fields that come from outside
//! (user, service, source) are quoted and escaped so they cannot forge fields or lines.

use crate::auth::{Login, Outcome};
use std::fmt::Write;

const MAX_FIELD: usize = 64;

/// `"alice"`, with control characters, quotes, backslashes and non-ASCII escaped as
/// `\xNN`, and anything past 64 bytes cut and marked.
pub fn quoted(field: &str) -> String {
    let mut out = String::with_capacity(field.len().min(MAX_FIELD) + 8);
    out.push('"');
    for (i, b) in field.bytes().enumerate() {
        if i == MAX_FIELD {
            out.push_str("...");
            break;
        }
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// `user="alice" service="sshd" source="192.0.2.7"`.
pub fn login_fields(login: &Login<'_>) -> String {
    format!(
        "user={} service={} source={}",
        quoted(login.user),
        quoted(login.service),
        quoted(login.source())
    )
}

/// `user="alice" service="sshd" source="192.0.2.7" result=success reason="code accepted"`.
pub fn decision_line(login: &Login<'_>, outcome: &Outcome) -> String {
    format!("{} {outcome}", login_fields(login))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{DenyReason, Method};

    #[test]
    fn hostile_fields_are_escaped() {
        assert_eq!(quoted("alice"), "\"alice\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert_eq!(quoted("a\nresult=success"), "\"a\\x0aresult=success\"");
        assert_eq!(quoted("%s%n"), "\"%s%n\"");
        assert_eq!(quoted("é"), "\"\\xc3\\xa9\"");
        let long = "x".repeat(1000);
        assert_eq!(quoted(&long).len(), 64 + 5);
    }

    #[test]
    fn line_has_every_field() {
        let login = Login {
            user: "alice",
            service: "sshd",
            rhost: Some("192.0.2.7"),
            tty: Some("ssh"),
        };
        assert_eq!(
            decision_line(&login, &Outcome::Success(Method::Code)),
            "user=\"alice\" service=\"sshd\" source=\"192.0.2.7\" result=success reason=\"code accepted\""
        );
        let line = decision_line(
            &login,
            &Outcome::Denied(DenyReason::Throttled { wait_secs: 42 }),
        );
        assert!(
            line.ends_with("result=failure reason=\"throttled for 42 s\""),
            "{line}"
        );
    }
}
