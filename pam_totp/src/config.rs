//! The configuration file (`/etc/pam_totp/config.toml`): parsing, validation and the
//! ownership and mode checks that keep an unprivileged user from steering the module.

use crate::otp::{Algorithm, OtpParams, MAX_DIGITS, MIN_DIGITS};
use crate::policy::Network;
use serde::Deserialize;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

mod pg;
mod syntax;
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
    pub enroll_at_login: bool,
    pub enroll_confirm_codes: u32,
    pub failmode: FailMode,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mandatory: false,
            mandatory_groups: Vec::new(),
            exempt_groups: Vec::new(),
            exempt_networks: Vec::new(),
            grace_period: Duration(0),
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

/// A length of time, written `"30s"`, `"5m"`, `"2h"` or `"7d"` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

impl Duration {
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || format!("bad duration {text:?}: use a number with s, m, h or d, e.g. \"5m\"");
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(scale)
            .filter(|s| *s <= 100 * 365 * 86_400)
            .map(Duration)
            .ok_or_else(|| format!("duration {text:?} is too long"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d)
    }
}

/// A setting written as a string and read through its type's `FromStr` (`"5m"`,
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
    /// Not valid TOML, an unknown key, or a value out of range.
    Invalid(PathBuf, String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing(p) => write!(f, "{}: no such file", p.display()),
            ConfigError::Unreadable(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            ConfigError::Insecure(p, why) => write!(f, "{}: refused: {why}", p.display()),
            ConfigError::Invalid(p, why) => write!(f, "{}: invalid: {why}", p.display()),
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
            return Err(ConfigError::Invalid(owned(), "file is too large".into()));
        }
        let mut text = String::with_capacity(meta.len() as usize);
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| ConfigError::Unreadable(owned(), e))?;
        Config::parse(&text).map_err(|why| ConfigError::Invalid(owned(), why))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let table = syntax::parse(text)?;
        let config = Config::deserialize(syntax::At::root(table)).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges TOML types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.totp;
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&t.digits) {
            return Err(format!("totp.digits = {}: must be 6, 7 or 8", t.digits));
        }
        if !(1..=3600).contains(&t.period) {
            return Err(format!(
                "totp.period = {}: must be 1 to 3600 seconds",
                t.period
            ));
        }
        if t.window > 10 {
            return Err(format!("totp.window = {}: must be 0 to 10 steps", t.window));
        }
        let p = &self.policy;
        if !(1..=2).contains(&p.enroll_confirm_codes) {
            return Err(format!(
                "policy.enroll_confirm_codes = {}: must be 1 or 2",
                p.enroll_confirm_codes
            ));
        }
        for group in p.mandatory_groups.iter().chain(&p.exempt_groups) {
            if group.is_empty() || group.bytes().any(|b| b.is_ascii_control() || b == b':') {
                return Err(format!("policy: bad group name {group:?}"));
            }
        }
        let th = &self.throttle;
        if th.max_failures == 0 {
            return Err("throttle.max_failures must be at least 1".into());
        }
        if th.lockout.secs() == 0 || th.lockout > th.lockout_max {
            return Err(format!(
                "throttle.lockout = \"{}\" must be above zero and at most lockout_max = \"{}\"",
                th.lockout, th.lockout_max
            ));
        }
        if self.recovery.codes > 100 {
            return Err(format!(
                "recovery.codes = {}: at most 100",
                self.recovery.codes
            ));
        }
        self.store.validate_backend()?;
        if !self.store.path.is_absolute() {
            return Err(format!(
                "store.path = {:?}: must be an absolute path",
                self.store.path
            ));
        }
        if !self.store.key.is_absolute() {
            return Err(format!(
                "store.key = {:?}: must be an absolute path",
                self.store.key
            ));
        }
        if self.totp.issuer.chars().any(|c| c.is_control() || c == ':') {
            return Err("totp.issuer may not contain ':' or control characters".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("").unwrap();
        assert!(!c.policy.mandatory);
        assert_eq!(c.totp.digits, 6);
        assert_eq!(c.totp.period, 30);
        assert_eq!(c.totp.window, 1);
        assert_eq!(c.throttle.max_failures, 5);
        assert_eq!(c.throttle.lockout, Duration(60));
        assert_eq!(c.throttle.lockout_max, Duration(3600));
        assert_eq!(c.recovery.codes, 10);
        assert_eq!(c.store.path, PathBuf::from(DEFAULT_STORE_PATH));
        assert_eq!(c.policy.failmode, FailMode::Secure);
        assert_eq!(c.enroll.qr, QrStyle::DarkTerminal);
    }

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../config/config.toml");
        Config::parse(text).unwrap();
    }

    #[test]
    fn every_documented_key() {
        let c = Config::parse(
            r#"
            [policy]
            mandatory = true
            mandatory_groups = ["sudo", "admins"]
            exempt_groups = ["svc"]
            exempt_networks = ["10.0.0.0/8", "2001:db8::/32"]
            grace_period = "7d"
            enroll_at_login = true
            enroll_confirm_codes = 2
            failmode = "open"
            [enroll]
            qr = "light-terminal"
            [totp]
            issuer = "Example"
            algorithm = "SHA512"
            digits = 8
            period = 60
            window = 2
            [throttle]
            max_failures = 3
            lockout = "30s"
            lockout_max = "2h"
            user_max_failures = 20
            [recovery]
            codes = 5
            [store]
            path = "/srv/totp.db"
            "#,
        )
        .unwrap();
        assert!(c.policy.mandatory);
        assert_eq!(c.policy.grace_period, Duration(7 * 86_400));
        assert_eq!(c.policy.exempt_networks.len(), 2);
        assert_eq!(c.policy.failmode, FailMode::Open);
        assert_eq!(c.enroll.qr, QrStyle::LightTerminal);
        assert_eq!(c.totp.algorithm, Algorithm::Sha512);
        assert_eq!(c.throttle.lockout_max, Duration(7200));
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "mandatory = true",
            "[policy]\nmandatroy = true",
            "[totp]\ndigits = 6\nskew = 3",
            "[unknown]\n",
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains("unknown"), "{text}: {err}");
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
            "[policy]\ngrace_period = \"7 weeks\"",
            "[policy]\nmandatory_groups = [\"\"]",
            "[throttle]\nmax_failures = 0",
            "[throttle]\nlockout = \"2h\"\nlockout_max = \"1h\"",
            "[store]\npath = \"relative.db\"",
            "[enroll]\nqr = \"sixel\"",
            "[totp]\nissuer = \"a:b\"",
            "[policy]\nmandatory = \"yes\"",
            "not toml at all [",
        ] {
            assert!(Config::parse(text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration(30));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration(300));
        assert_eq!("2h".parse::<Duration>().unwrap(), Duration(7200));
        assert_eq!("7d".parse::<Duration>().unwrap(), Duration(604_800));
        assert_eq!("0d".parse::<Duration>().unwrap(), Duration(0));
        assert_eq!("45".parse::<Duration>().unwrap(), Duration(45));
        for bad in ["", "m", "5x", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
        assert_eq!(Duration(300).to_string(), "5m");
        assert_eq!(Duration(90).to_string(), "90s");
    }

    #[test]
    fn the_shipped_file_reads_and_errors_say_where() {
        let shipped = include_str!("../../config/config.toml");
        let config = Config::parse(shipped).unwrap();
        assert_eq!(config.store.path, Path::new("/var/lib/pam_totp/totp.db"));
        let err = Config::parse("# one\n[policy]\nmandatroy = true\n").unwrap_err();
        assert!(
            err.starts_with("[policy]: unknown field `mandatroy`"),
            "{err}"
        );
        let err = Config::parse("[policy]\ngrace_period = 5\n").unwrap_err();
        assert!(
            err.starts_with("policy.grace_period: invalid type"),
            "{err}"
        );
        let err = Config::parse("[policy]\nfailmode = \"loose\"\n").unwrap_err();
        assert!(err.starts_with("policy.failmode: unknown variant"), "{err}");
        let err = Config::parse("[throttle]\nmax_failures = -1\n").unwrap_err();
        assert!(
            err.starts_with("throttle.max_failures: invalid value"),
            "{err}"
        );
        let err = Config::parse("[policy]\nexempt_groups = [1]\n").unwrap_err();
        assert!(
            err.starts_with("policy.exempt_groups: invalid type"),
            "{err}"
        );
        let err = Config::parse("[policy]\nmandatory = 1.5\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn errors_are_one_line() {
        let err = Config::parse("[policy]\nmandatroy = true").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }
}
