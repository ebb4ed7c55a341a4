//! The configuration file (`/etc/pam_totp/config.toml`): read with the `toml` crate
//! into the types below, checked, and guarded by the ownership and mode checks that
//! keep an unprivileged user from steering the module. `totp-admin` reads it through
//! the same functions (and edits it with `toml_edit`, on the same TOML parser), so the
//! module and the tool never disagree about what a file says.

use crate::otp::{Algorithm, OtpParams, MAX_DIGITS, MIN_DIGITS};
use crate::policy::Network;
use serde::Deserialize;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

mod error;
mod pg;
pub use error::Invalid;
pub use pg::{Backend, SslMode, Timeout};

/// Where the module and `totp-admin` read the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pam_totp/config.toml";
/// Where the store lives unless the configuration says otherwise.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/pam_totp/totp.db";
/// The host key that seals every factor's key, unless the configuration says otherwise.
pub const DEFAULT_STORE_KEY_PATH: &str = "/etc/pam_totp/store.key";
/// A configuration file larger than this is refused rather than read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub policy: PolicyConfig,
    pub enroll: EnrollConfig,
    pub totp: TotpConfig,
    pub throttle: ThrottleConfig,
    pub recovery: RecoveryConfig,
    pub store: StoreConfig,
}

/// What to do when the configuration or the store cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Refuse enrolled and mandatory users (the default).
    #[default]
    Secure,
    /// Let the login continue without a second factor, and log that it did.
    Open,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mandatory: bool,
    pub mandatory_groups: Vec<String>,
    pub exempt_groups: Vec<String>,
    pub exempt_networks: Vec<Network>,
    pub grace_period: Duration,
    /// How long an answer to the code prompt may take.
    pub prompt_timeout: Duration,
    /// How long a user who passed with a code from one remote address is not asked
    /// again from it (`0s`: always asked).
    pub remember_source: Duration,
    pub enroll_at_login: bool,
    pub enroll_confirm_codes: u32,
    pub failmode: FailMode,
}

/// The default `prompt_timeout`: time to unlock a phone and type a code.
pub const DEFAULT_PROMPT_TIMEOUT: Duration = Duration(180);
/// The shortest and longest `prompt_timeout` accepted.
const PROMPT_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration(10)..=Duration(3600);
/// The longest `remember_source` accepted: a month.
const REMEMBER_SOURCE_MAX: Duration = Duration(30 * 86_400);

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mandatory: false,
            mandatory_groups: Vec::new(),
            exempt_groups: Vec::new(),
            exempt_networks: Vec::new(),
            grace_period: Duration(0),
            prompt_timeout: DEFAULT_PROMPT_TIMEOUT,
            remember_source: Duration(0),
            enroll_at_login: false,
            enroll_confirm_codes: 1,
            failmode: FailMode::Secure,
        }
    }
}

/// How the QR code is drawn at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QrStyle {
    /// Light modules drawn as blocks: scans on a dark terminal background.
    #[default]
    DarkTerminal,
    /// Dark modules drawn as blocks: scans on a light background.
    LightTerminal,
    /// No QR code; the key and the URI are still shown.
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollConfig {
    pub qr: QrStyle,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub issuer: String,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u64,
    pub window: u64,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            issuer: String::new(),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            window: 1,
        }
    }
}

impl TotpConfig {
    /// The parameters a new factor is enrolled with.
    pub fn params(&self) -> OtpParams {
        OtpParams {
            algorithm: self.algorithm,
            digits: self.digits,
            period: self.period,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    pub max_failures: u32,
    pub lockout: Duration,
    pub lockout_max: Duration,
    pub user_max_failures: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 5,
            lockout: Duration(60),
            lockout_max: Duration(3600),
            user_max_failures: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    pub codes: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { codes: 10 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// The SQLite file (`backend = "sqlite"`).
    pub path: PathBuf,
    /// The host key that seals every factor's key (root's, mode 0400), for either
    /// backend: never beside the store, so that a copy of the store opens nothing.
    pub key: PathBuf,
    // PostgreSQL (`backend = "postgresql"`): see config/pg.rs and docs/FLEET.md.
    pub host: String,
    pub hostaddr: Option<std::net::IpAddr>,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub timeout: Timeout,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sqlite,
            path: PathBuf::from(DEFAULT_STORE_PATH),
            key: PathBuf::from(DEFAULT_STORE_KEY_PATH),
            host: String::new(),
            hostaddr: None,
            port: pg::DEFAULT_PORT,
            dbname: String::new(),
            user: String::new(),
            password_file: None,
            sslmode: SslMode::VerifyFull,
            sslrootcert: None,
            timeout: pg::DEFAULT_TIMEOUT,
        }
    }
}

/// A length of time, written with its unit: `"30s"`, `"5m"`, `"2h"` or `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

impl Duration {
    pub fn secs(self) -> u64 {
        self.0
    }
}

/// The longest duration accepted: a hundred years.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

impl std::str::FromStr for Duration {
    type Err = String;
    /// A bare number is refused, `"0"` too: seconds or days must be said.
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        if !number.is_empty() && unit.is_empty() {
            return Err(no_unit(number, &format!("{text:?}")));
        }
        let bad = || {
            format!(
                "{text:?} is not a duration; write a whole number and a unit (s, m, h or d), e.g. \"5m\""
            )
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(scale)
            .filter(|s| *s <= MAX_DURATION_SECS)
            .map(Duration)
            .ok_or_else(|| format!("{text:?} is too long; at most 36500d"))
    }
}

/// `what` (a number as written) has no unit: the four ways it could have been meant.
fn no_unit(number: &str, what: &str) -> String {
    format!(
        "{what} has no unit; write \"{number}d\", \"{number}h\", \"{number}m\" or \"{number}s\""
    )
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration in quotes, e.g. \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                text.parse().map_err(E::custom)
            }
            // `grace_period = 7`: the quotes and the unit are both missing.
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(no_unit(&n.to_string(), &n.to_string())))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
                Err(E::custom(no_unit(&n.to_string(), &n.to_string())))
            }
        }
        d.deserialize_str(Text)
    }
}

/// A setting written as a string and read through its type's `FromStr` (`"1.5s"`,
/// `"10.0.0.0/8"`), without copying the text.
pub(crate) fn from_text<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    struct Text<T>(std::marker::PhantomData<T>);
    impl<T> serde::de::Visitor<'_> for Text<T>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Text(std::marker::PhantomData))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s % 86_400 == 0 {
            write!(f, "{}d", s / 86_400)
        } else if s != 0 && s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// Why a configuration could not be used. Each is fatal: the module fails closed.
#[derive(Debug)]
pub enum ConfigError {
    /// The file does not exist.
    Missing(PathBuf),
    /// The file exists but could not be opened or read.
    Unreadable(PathBuf, std::io::Error),
    /// Wrong owner, group/other-writable, not a regular file, or a symlink.
    Insecure(PathBuf, String),
    /// Not valid TOML, an unknown key, or a value out of range: where, and what to
    /// write instead.
    Invalid(PathBuf, Invalid),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing(p) => write!(f, "{}: no such file", p.display()),
            ConfigError::Unreadable(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            ConfigError::Insecure(p, why) => write!(f, "{}: refused: {why}", p.display()),
            ConfigError::Invalid(p, why) => why.fmt_in(p, f),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Refuses a file or directory that someone other than root could have written.
pub fn check_owner_and_mode(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    if meta.uid() != 0 {
        return Err(format!("{what} is owned by uid {}, not root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by group or others (mode {:04o}); run chmod go-w",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

impl Config {
    /// Reads and validates the configuration at `path`. The file must be a regular
    /// file (not a symlink), owned by root and not writable by group or others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], and the text it read: `totp-admin policy set` edits the
    /// very bytes that were checked.
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let owned = || path.to_path_buf();
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => ConfigError::Missing(owned()),
                Some(libc::ELOOP) => ConfigError::Insecure(owned(), "it is a symbolic link".into()),
                _ => ConfigError::Unreadable(owned(), e),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| ConfigError::Unreadable(owned(), e))?;
        if !meta.is_file() {
            return Err(ConfigError::Insecure(owned(), "not a regular file".into()));
        }
        check_owner_and_mode(&meta, "the file")
            .map_err(|why| ConfigError::Insecure(owned(), why))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid(
                owned(),
                Invalid::whole_file("file is too large"),
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ConfigError::Unreadable(owned(), e))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ConfigError::Invalid(owned(), Invalid::not_utf8(&e)))?;
        match Config::parse(&text) {
            Ok(config) => Ok((config, text)),
            Err(why) => Err(ConfigError::Invalid(owned(), why)),
        }
    }

    /// Parses and validates configuration text: any valid TOML (a byte order mark at
    /// the start is allowed, as the parser allows it), then the keys and values below.
    pub fn parse(text: &str) -> Result<Config, Invalid> {
        let document = toml::de::DeTable::parse(text).map_err(|e| Invalid::syntax(text, &e))?;
        let config = Config::deserialize(toml::de::Deserializer::from(document))
            .map_err(|e| Invalid::value(text, &e))?;
        config.validate().map_err(|why| why.located(text))?;
        Ok(config)
    }

    /// Checks the ranges TOML types cannot express. The error names the key; its line
    /// is found by [`Config::parse`].
    pub fn validate(&self) -> Result<(), Invalid> {
        let t = &self.totp;
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&t.digits) {
            return Err(Invalid::at(
                "totp.digits",
                format!("{} is out of range; write 6, 7 or 8", t.digits),
            ));
        }
        if !(1..=3600).contains(&t.period) {
            return Err(Invalid::at(
                "totp.period",
                format!("{} is out of range; write 1 to 3600 (seconds)", t.period),
            ));
        }
        if t.window > 10 {
            return Err(Invalid::at(
                "totp.window",
                format!("{} is out of range; write 0 to 10 (steps)", t.window),
            ));
        }
        if t.issuer.chars().any(|c| c.is_control() || c == ':') {
            return Err(Invalid::at(
                "totp.issuer",
                format!("{:?} may not contain ':' or control characters", t.issuer),
            ));
        }
        let p = &self.policy;
        if !(1..=2).contains(&p.enroll_confirm_codes) {
            return Err(Invalid::at(
                "policy.enroll_confirm_codes",
                format!("{} is out of range; write 1 or 2", p.enroll_confirm_codes),
            ));
        }
        for (key, groups) in [
            ("policy.mandatory_groups", &p.mandatory_groups),
            ("policy.exempt_groups", &p.exempt_groups),
        ] {
            for group in groups {
                if group.is_empty() || group.bytes().any(|b| b.is_ascii_control() || b == b':') {
                    return Err(Invalid::at(
                        key,
                        format!(
                            "{group:?} is not a group name (empty, or with ':' or a control character)"
                        ),
                    ));
                }
            }
        }
        if !PROMPT_TIMEOUT_RANGE.contains(&p.prompt_timeout) {
            return Err(Invalid::at(
                "policy.prompt_timeout",
                format!(
                    "\"{}\" is out of range; write \"{}\" to \"{}\"",
                    p.prompt_timeout,
                    PROMPT_TIMEOUT_RANGE.start(),
                    PROMPT_TIMEOUT_RANGE.end()
                ),
            ));
        }
        if p.remember_source > REMEMBER_SOURCE_MAX {
            return Err(Invalid::at(
                "policy.remember_source",
                format!(
                    "\"{}\" is out of range; write \"0s\" (off) to \"{}\"",
                    p.remember_source, REMEMBER_SOURCE_MAX
                ),
            ));
        }
        let th = &self.throttle;
        if th.max_failures == 0 {
            return Err(Invalid::at(
                "throttle.max_failures",
                "0 is out of range; write at least 1",
            ));
        }
        if th.lockout.secs() == 0 {
            return Err(Invalid::at(
                "throttle.lockout",
                format!("\"{}\" is out of range; write at least \"1s\"", th.lockout),
            ));
        }
        if th.lockout > th.lockout_max {
            return Err(Invalid::at(
                "throttle.lockout",
                format!(
                    "\"{}\" is longer than lockout_max = \"{}\"; write at most \"{}\", or raise lockout_max",
                    th.lockout, th.lockout_max, th.lockout_max
                ),
            ));
        }
        if self.recovery.codes > 100 {
            return Err(Invalid::at(
                "recovery.codes",
                format!("{} is out of range; write 0 to 100", self.recovery.codes),
            ));
        }
        self.store.validate_backend()?;
        for (key, path) in [
            ("store.path", &self.store.path),
            ("store.key", &self.store.key),
        ] {
            absolute_path(key, path)?;
        }
        if self.totp.issuer.chars().any(|c| c.is_control() || c == ':') {
            return Err(Invalid::at(
                "totp.issuer",
                "may not contain ':' or control characters; write a plain name".to_string(),
            ));
        }
        Ok(())
    }
}

/// Refuses a relative path (it would be relative to whatever the login's directory is).
fn absolute_path(key: &'static str, path: &Path) -> Result<(), Invalid> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Invalid::at(
            key,
            format!("{path:?} is relative; write an absolute path"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files every reader of the configuration must agree on
    /// (`pam_totp/tests/config_corpus/`, also read by totp-admin's end-to-end tests).
    fn corpus(kind: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/config_corpus")
            .join(kind);
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{}: too few files", dir.display());
        files
    }

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("").unwrap();
        assert!(!c.policy.mandatory);
        assert_eq!(c.policy.grace_period, Duration(0));
        assert_eq!(c.policy.prompt_timeout, Duration(180));
        assert_eq!(c.totp.digits, 6);
        assert_eq!(c.totp.period, 30);
        assert_eq!(c.totp.window, 1);
        assert_eq!(c.throttle.max_failures, 5);
        assert_eq!(c.throttle.lockout, Duration(60));
        assert_eq!(c.throttle.lockout_max, Duration(3600));
        assert_eq!(c.recovery.codes, 10);
        assert_eq!(c.store.path, PathBuf::from(DEFAULT_STORE_PATH));
        assert_eq!(c.store.key, PathBuf::from("/etc/pam_totp/store.key"));
        assert_eq!(c.policy.failmode, FailMode::Secure);
        assert_eq!(c.enroll.qr, QrStyle::DarkTerminal);
    }

    /// The shipped file documents the defaults: it reads as exactly what an empty file
    /// reads as.
    #[test]
    fn the_shipped_config_is_the_defaults() {
        let shipped = include_str!("../../config/config.toml");
        let config = Config::parse(shipped).unwrap();
        assert_eq!(
            format!("{config:?}"),
            format!("{:?}", Config::parse("").unwrap())
        );
        assert!(
            shipped.contains("\nprompt_timeout = \"3m\"\n"),
            "documented"
        );
        assert!(
            shipped.contains("\nkey = \"/etc/pam_totp/store.key\"\n"),
            "documented"
        );
    }

    /// Headers, dotted keys, inline tables, CR LF, comments anywhere, a byte order
    /// mark, other spellings of strings and integers: one configuration.
    #[test]
    fn every_valid_spelling_reads_the_same() {
        let reference = include_str!("../tests/config_corpus/valid/reference.toml");
        let want = Config::parse(reference).unwrap();
        let p = &want.policy;
        assert!(p.mandatory && p.enroll_at_login);
        assert_eq!(p.mandatory_groups, ["sudo", "admins"]);
        assert_eq!(p.exempt_groups, ["backup"]);
        assert_eq!(p.exempt_networks.len(), 3);
        assert_eq!(p.grace_period, Duration(7 * 86_400));
        assert_eq!(p.prompt_timeout, Duration(90));
        assert_eq!(p.remember_source, Duration(8 * 3600));
        assert_eq!(p.enroll_confirm_codes, 2);
        assert_eq!(p.failmode, FailMode::Open);
        assert_eq!(want.enroll.qr, QrStyle::LightTerminal);
        assert_eq!(want.totp.issuer, "Example Corp");
        assert_eq!(want.totp.algorithm, Algorithm::Sha256);
        assert_eq!(
            (want.totp.digits, want.totp.period, want.totp.window),
            (8, 60, 2)
        );
        let th = &want.throttle;
        assert_eq!(th.max_failures, 3);
        assert_eq!((th.lockout, th.lockout_max), (Duration(30), Duration(7200)));
        assert_eq!(th.user_max_failures, 20);
        assert_eq!(want.recovery.codes, 5);
        assert_eq!(want.store.path, Path::new("/srv/pam_totp/totp.db"));
        assert_eq!(want.store.key, Path::new("/srv/pam_totp/store.key"));
        assert_eq!(want.store.port, 6432);
        let want = format!("{want:?}");
        let files = corpus("valid");
        for (name, text) in &files {
            let got = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(format!("{got:?}"), want, "{name}");
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        for name in [
            "bom.toml",
            "crlf.toml",
            "dotted-keys.toml",
            "inline-tables.toml",
            "comments-everywhere.toml",
        ] {
            assert!(names.contains(&name), "{name} is in the corpus");
        }
        let crlf = &files.iter().find(|(n, _)| n == "crlf.toml").unwrap().1;
        assert_eq!(crlf, &reference.replace('\n', "\r\n"));
    }

    /// Each file in `invalid/` is refused with the text in its `.err` file: the file,
    /// the line, the key, and what to write instead.
    #[test]
    fn every_invalid_file_says_where_and_what_to_write() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_corpus/invalid");
        for (name, text) in corpus("invalid") {
            let want = std::fs::read_to_string(dir.join(name.replace(".toml", ".err"))).unwrap();
            let err = Config::parse(&text).unwrap_err();
            let got = ConfigError::Invalid(PathBuf::from(&name), err).to_string();
            assert_eq!(got, want.trim_end_matches('\n'), "{name}");
        }
    }

    #[test]
    fn the_error_names_the_file_the_line_and_the_key() {
        let text = "# pam_totp\n[policy]\nmandatory = true\n\n# soon\n\ngrace_period = \"7\"\n";
        let err = Config::parse(text).unwrap_err();
        assert_eq!(
            (err.line(), err.key()),
            (Some(7), Some("policy.grace_period"))
        );
        assert_eq!(
            ConfigError::Invalid(PathBuf::from(DEFAULT_CONFIG_PATH), err).to_string(),
            "/etc/pam_totp/config.toml:7: policy.grace_period: \"7\" has no unit; write \"7d\", \"7h\", \"7m\" or \"7s\""
        );
        // A range checked after reading: the line of its key, wherever it is set.
        let err = Config::parse("totp.window = 1\n\ntotp = { }\n").unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        let err = Config::parse("[totp]\nperiod = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: totp.period: 0 is out of range; write 1 to 3600 (seconds)"
        );
        // A conflict with a default names the key that is set.
        let err = Config::parse("[throttle]\n\nlockout = \"2h\"\n").unwrap_err();
        assert_eq!((err.line(), err.key()), (Some(3), Some("throttle.lockout")));
    }

    /// A file with old Mac OS line endings once read as all defaults (mandatory =
    /// false): it is refused.
    #[test]
    fn a_lone_carriage_return_is_refused() {
        for text in [
            "[policy]\rmandatory = true\r",
            "[policy]\r\nmandatory = true\r\r\n",
            "[policy]\nmandatory = true # a comment\r\n\r",
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.message().contains("carriage return"), "{text:?}: {err}");
        }
        assert!(
            Config::parse("[policy]\r\nmandatory = true\r\n")
                .unwrap()
                .policy
                .mandatory
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "mandatory = true",
            "[policy]\nmandatroy = true",
            "[totp]\ndigits = 6\nskew = 3",
            "[unknown]\n",
            "policy.mandatroy = true",
            "store = { path = \"/x\", passfile = \"/y\" }",
            "[[policy]]\nmandatory = true",
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains("unknown") || err.contains("invalid type"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for text in [
            "[totp]\ndigits = 5",
            "[totp]\ndigits = 9",
            "[totp]\nperiod = 0",
            "[totp]\nwindow = 11",
            "[totp]\nalgorithm = \"MD5\"",
            "[policy]\nenroll_confirm_codes = 3",
            "[policy]\nfailmode = \"maybe\"",
            "[policy]\nexempt_networks = [\"10.0.0.0/33\"]",
            "[policy]\nexempt_networks = [\"not-a-network\"]",
            "[policy]\nexempt_networks = [\"192.0.2.99/8\"]",
            "[policy]\nexempt_networks = [\"2001:db8::1/32\"]",
            "[policy]\ngrace_period = \"7 weeks\"",
            "[policy]\ngrace_period = \"7\"",
            "[policy]\ngrace_period = \"0\"",
            "[policy]\ngrace_period = 0",
            "[policy]\nprompt_timeout = \"9s\"",
            "[policy]\nprompt_timeout = \"61m\"",
            "[policy]\nprompt_timeout = \"180\"",
            "[policy]\nmandatory_groups = [\"\"]",
            "[throttle]\nmax_failures = 0",
            "[throttle]\nlockout = \"0s\"",
            "[throttle]\nlockout = \"2h\"\nlockout_max = \"1h\"",
            "[store]\npath = \"relative.db\"",
            "[store]\nkey = \"store.key\"",
            "[enroll]\nqr = \"sixel\"",
            "[totp]\nissuer = \"a:b\"",
            "[policy]\nmandatory = \"yes\"",
            "[policy]\nmandatory = 1.5",
            "[policy]\nmandatory = 1979-05-27",
            "not toml at all [",
        ] {
            assert!(Config::parse(text).is_err(), "accepted: {text}");
        }
        for text in [
            "[policy]\nprompt_timeout = \"10s\"",
            "[policy]\nprompt_timeout = \"1h\"",
            "[policy]\ngrace_period = \"0s\"",
            "[policy]\nexempt_networks = [\"192.0.2.99/32\", \"192.0.2.99\", \"::/0\"]",
        ] {
            assert!(Config::parse(text).is_ok(), "refused: {text}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration(30));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration(300));
        assert_eq!("2h".parse::<Duration>().unwrap(), Duration(7200));
        assert_eq!("7d".parse::<Duration>().unwrap(), Duration(604_800));
        assert_eq!("0d".parse::<Duration>().unwrap(), Duration(0));
        for bad in [
            "",
            "m",
            "5x",
            "-5m",
            "1.5h",
            "99999999999999999999d",
            "45",
            "0",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
        assert_eq!(
            "45".parse::<Duration>().unwrap_err(),
            "\"45\" has no unit; write \"45d\", \"45h\", \"45m\" or \"45s\""
        );
        assert_eq!(Duration(300).to_string(), "5m");
        assert_eq!(Duration(90).to_string(), "90s");
        assert_eq!(Duration(0).to_string(), "0s");
    }

    #[test]
    fn errors_are_one_line() {
        for text in [
            "[policy]\nmandatroy = true",
            "[policy\nmandatory = ",
            "[a]\nx = \"\\q\"\n",
            "x = [1,\n2\n",
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_names_its_line() {
        let bytes = b"[policy]\nmandatory = true\nexempt_groups = [\"\xff\"]\n".to_vec();
        let err = String::from_utf8(bytes).unwrap_err();
        assert_eq!(Invalid::not_utf8(&err).line(), Some(3));
    }
}
