//! The errors a command ends with. Each becomes exit status 1 and one line on stderr.

use pam_totp::config::ConfigError;
use pam_totp::policy::LookupError;
use pam_totp::store::StoreError;
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The caller may not do this (another user, `--config`, not root, wrong code).
    Refused(String),
    /// It could not be done (bad input, unreadable file, broken store).
    Failed(String),
}

impl Error {
    pub fn refused(why: impl Into<String>) -> Self {
        Error::Refused(why.into())
    }

    pub fn failed(why: impl Into<String>) -> Self {
        Error::Failed(why.into())
    }

    /// The message as one line: control characters (a newline in a user name or in a
    /// library's error) are shown escaped (`\xNN`) so the line cannot be split or forged.
    pub fn one_line(&self) -> String {
        let text = match self {
            Error::Refused(t) | Error::Failed(t) => t,
        };
        crate::output::escaped(text.trim())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Failed(format!("config {e}"))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Failed(e.to_string())
    }
}

impl From<LookupError> for Error {
    fn from(e: LookupError) -> Self {
        Error::Failed(e.0)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_on_one_line() {
        let e = Error::failed("no such user: eve\nroot\x1b[2J\n");
        assert_eq!(e.to_string(), "no such user: eve\\x0aroot\\x1b[2J");
    }
}
