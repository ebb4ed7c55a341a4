//! The `[store]` keys of the PostgreSQL backend. They parse and are checked in every
//! build, so a config written for a fleet reads the same everywhere; a module built
//! without the `postgresql` feature refuses `backend = "postgresql"` at login.

use super::{absolute_path, Invalid, StoreConfig};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;

/// Which store holds the factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded SQLite file at `path` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL server shared by a fleet of hosts.
    Postgresql,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgresql => "postgresql",
        }
    }
}

/// TLS to the PostgreSQL server. There is no unverified middle ground: either the
/// server proves its name with a certificate from `sslrootcert`, or the config says
/// in so many words that the connection is plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SslMode {
    /// TLS required; the certificate chains to `sslrootcert` and names `host`.
    #[default]
    #[serde(rename = "verify-full")]
    VerifyFull,
    /// No TLS (a Unix socket, or a network the admin trusts).
    #[serde(rename = "disable")]
    Disable,
}

/// A deadline written `"1.5s"`, `"2s"` or `"800ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timeout(pub std::time::Duration);

/// The default `timeout`: connect, statements and close of one login together.
pub const DEFAULT_TIMEOUT: Timeout = Timeout(std::time::Duration::from_millis(1500));
/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

impl std::str::FromStr for Timeout {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!("bad timeout {text:?}: use seconds or milliseconds, e.g. \"1.5s\" or \"800ms\"")
        };
        let (number, millis_per_unit) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1000)
        } else {
            return Err(bad());
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || whole.len() > 6
            || fraction.len() > 3
            || (millis_per_unit == 1 && !fraction.is_empty())
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let fraction_ms: u64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<3}").parse().map_err(|_| bad())?
        };
        let ms = whole * millis_per_unit
            + if millis_per_unit == 1000 {
                fraction_ms
            } else {
                0
            };
        Ok(Timeout(std::time::Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::from_text(d)
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl StoreConfig {
    /// Where a login connects: `hostaddr`, else `host` when it is an address literal.
    /// `None` for a Unix socket directory. Names are never resolved at login: a DNS
    /// stall would outlast every deadline.
    pub fn server_addr(&self) -> Option<IpAddr> {
        self.hostaddr.or_else(|| self.host.parse().ok())
    }

    /// `host` names a directory holding the server's Unix socket.
    pub fn is_socket_dir(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Checks the PostgreSQL keys when `backend = "postgresql"`.
    pub(super) fn validate_backend(&self) -> Result<(), Invalid> {
        if self.backend != Backend::Postgresql {
            return Ok(());
        }
        let text_key = |key: &str, value: &str, what: &str| {
            if value.is_empty() {
                Err(Invalid::at(
                    "store.backend",
                    format!("\"postgresql\" needs store.{key} ({what})"),
                ))
            } else if value.chars().any(char::is_control) {
                Err(Invalid::at(
                    &format!("store.{key}"),
                    format!("{value:?} may not contain control characters"),
                ))
            } else {
                Ok(())
            }
        };
        text_key(
            "host",
            &self.host,
            "the server's name, or the directory of its Unix socket",
        )?;
        text_key("dbname", &self.dbname, "the database")?;
        text_key("user", &self.user, "the module's role")?;
        if self.port == 0 {
            return Err(Invalid::at(
                "store.port",
                "0 is out of range; write 1 to 65535",
            ));
        }
        if self.is_socket_dir() {
            if self.sslmode != SslMode::Disable {
                return Err(Invalid::at(
                    "store.host",
                    format!(
                        "{:?} is a socket directory: PostgreSQL has no TLS there; write sslmode = \"disable\"",
                        self.host
                    ),
                ));
            }
        } else if self.server_addr().is_none() {
            return Err(Invalid::at(
                "store.host",
                format!(
                    "{:?} is a name: set store.hostaddr to the server's address (no name is resolved at login)",
                    self.host
                ),
            ));
        }
        if self.sslmode == SslMode::VerifyFull {
            match &self.sslrootcert {
                None => {
                    return Err(Invalid::at(
                        "store.sslmode",
                        "\"verify-full\" needs store.sslrootcert (the CA that signed the server's certificate)",
                    ))
                }
                Some(p) => absolute_path("store.sslrootcert", p)?,
            }
        }
        if let Some(p) = &self.password_file {
            absolute_path("store.password_file", p)?;
        }
        let ms = self.timeout.0.as_millis();
        if !(100..=60_000).contains(&ms) {
            return Err(Invalid::at(
                "store.timeout",
                format!(
                    "\"{}\" is out of range; write \"100ms\" to \"60s\"",
                    self.timeout
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const FLEET: &str = r#"
        [store]
        backend = "postgresql"
        host = "db.example.net"
        hostaddr = "192.0.2.10"
        port = 6432
        dbname = "pam_totp"
        user = "pam_totp_login"
        password_file = "/etc/pam_totp/db-password"
        sslrootcert = "/etc/pam_totp/db-ca.pem"
        timeout = "2s"
    "#;

    #[test]
    fn every_postgresql_key() {
        let c = Config::parse(FLEET).unwrap();
        let s = &c.store;
        assert_eq!(s.backend, Backend::Postgresql);
        assert_eq!(s.server_addr(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(s.port, 6432);
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert_eq!(s.timeout, Timeout(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.store.backend, Backend::Sqlite);
        assert_eq!(c.store.sslmode, SslMode::VerifyFull);
        assert_eq!(c.store.port, DEFAULT_PORT);
        assert_eq!(c.store.timeout, DEFAULT_TIMEOUT);
        // The keys parse whatever the backend.
        Config::parse("[store]\nhost = \"db\"\ntimeout = \"3s\"").unwrap();
    }

    #[test]
    fn refused() {
        for (needle, with) in [
            ("hostaddr", "hostaddr = \"192.0.2.10\"\n"),
            ("sslrootcert", "sslrootcert = \"/etc/pam_totp/db-ca.pem\"\n"),
            ("dbname", "dbname = \"pam_totp\"\n"),
        ] {
            let text = FLEET.replace(with, "");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        for bad in [
            "sslmode = \"require\"",
            "sslmode = \"prefer\"",
            "timeout = \"1.5\"",
            "timeout = \"10ms\"",
            "timeout = \"5m\"",
            "hostaddr = \"db\"",
            "port = 0",
            "backend = \"mysql\"",
            "sslrootcert = \"ca.pem\"",
            "passfile = \"/x\"",
        ] {
            // The key's line in FLEET gives way to the bad one.
            let key = bad.split(' ').next().unwrap();
            let kept: Vec<&str> = FLEET
                .lines()
                .filter(|l| l.trim_start().split(' ').next() != Some(key))
                .collect();
            let text = format!("{}\n{bad}\n", kept.join("\n"));
            assert!(Config::parse(&text).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn socket_directory_needs_sslmode_disable() {
        let base = "[store]\nbackend = \"postgresql\"\nhost = \"/run/postgresql\"\ndbname = \"d\"\nuser = \"u\"\n";
        assert!(Config::parse(base).is_err());
        let c = Config::parse(&format!("{base}sslmode = \"disable\"\n")).unwrap();
        assert!(c.store.is_socket_dir());
        assert_eq!(c.store.server_addr(), None);
    }

    /// Every `[store]` key the shipped config lists, commented out, parses once
    /// uncommented, and together they make a valid fleet config.
    #[test]
    fn the_shipped_config_lists_the_postgresql_keys() {
        let shipped = include_str!("../../../config/config.toml");
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(setting) if !setting.starts_with([' ', '#']) && setting.contains(" = ") => {
                    setting
                }
                _ => l,
            })
            .collect();
        let text = uncommented
            .join("\n")
            .replace("backend = \"sqlite\"", "backend = \"postgresql\"");
        let c = Config::parse(&text).unwrap();
        let s = &c.store;
        assert_eq!(s.backend, Backend::Postgresql);
        assert_eq!(s.server_addr(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!((s.port, s.sslmode), (DEFAULT_PORT, SslMode::VerifyFull));
        assert!(s.password_file.is_some() && s.sslrootcert.is_some());
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn timeouts() {
        let ms = |t: &str| t.parse::<Timeout>().map(|t| t.0.as_millis());
        assert_eq!(ms("1.5s"), Ok(1500));
        assert_eq!(ms("2s"), Ok(2000));
        assert_eq!(ms("800ms"), Ok(800));
        assert_eq!(ms("0.25s"), Ok(250));
        for bad in ["", "s", "1.5", "1.5ms", "-1s", "1.2345s", "1e3ms", "1,5s"] {
            assert!(bad.parse::<Timeout>().is_err(), "{bad}");
        }
    }
}
