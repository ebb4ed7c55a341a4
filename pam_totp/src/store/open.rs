//! Which store a login or `totp-admin` uses: the one function that reads
//! `[store] backend`.

use super::{Result, SqliteStore, Store};
use crate::config::{Backend, Config};

/// The PostgreSQL schema this version reads and writes (`pam_totp.schema_version`).
pub const PG_SCHEMA_VERSION: i64 = 1;

/// Opens the configured store for one login: an existing SQLite file, or a connection
/// to the PostgreSQL server made when the first question is asked. A module built
/// without PostgreSQL support refuses `backend = "postgresql"`: the login fails closed.
pub fn open_for_login(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open(&config.store.path)?)),
        Backend::Postgresql => postgresql(config, false),
    }
}

/// Opens the configured store for `totp-admin`: the SQLite file is created or migrated
/// when needed; a PostgreSQL schema must have been made with `totp-admin store init`.
pub fn open_for_admin(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_or_create(&config.store.path)?)),
        Backend::Postgresql => postgresql(config, true),
    }
}

/// `totp-admin store init` for PostgreSQL: creates or migrates the schema and, with
/// `login_role`, grants that role what a login needs. Returns the version found before
/// (0: none).
#[cfg(feature = "postgresql")]
pub fn init_postgresql(config: &Config, login_role: Option<&str>) -> Result<i64> {
    let store = crate::store_pg::PgStore::for_admin(&config.store)?;
    let found = store.migrate()?;
    if let Some(role) = login_role {
        store.grant_login_role(role)?;
    }
    Ok(found)
}

/// The PostgreSQL schema version (`0`: none yet), read the way a login reads: with the
/// config's role, TLS settings and deadline (`totp-admin doctor`).
#[cfg(feature = "postgresql")]
pub fn postgresql_schema_version(config: &Config) -> Result<i64> {
    crate::store_pg::PgStore::for_login(&config.store)?.schema_version()
}

#[cfg(not(feature = "postgresql"))]
pub fn postgresql_schema_version(config: &Config) -> Result<i64> {
    postgresql(config, false).map(|_| 0)
}

#[cfg(not(feature = "postgresql"))]
pub fn init_postgresql(config: &Config, _login_role: Option<&str>) -> Result<i64> {
    postgresql(config, true).map(|_| 0)
}

#[cfg(feature = "postgresql")]
fn postgresql(config: &Config, admin: bool) -> Result<Box<dyn Store>> {
    let store = if admin {
        crate::store_pg::PgStore::for_admin(&config.store)?
    } else {
        crate::store_pg::PgStore::for_login(&config.store)?
    };
    Ok(Box::new(store))
}

#[cfg(not(feature = "postgresql"))]
fn postgresql(_config: &Config, _admin: bool) -> Result<Box<dyn Store>> {
    Err(super::StoreError::Unsupported(
        "backend = \"postgresql\" but this build has no PostgreSQL support: install the \
         pam-totp-postgresql package (or build with --features postgresql)"
            .into(),
    ))
}

/// A boxed store is a store: callers pass `&store` whichever backend it is.
impl<S: Store + ?Sized> Store for Box<S> {
    fn login_state(&self, user: &str, source: &str) -> Result<super::LoginState> {
        (**self).login_state(user, source)
    }
    fn accept_step(&self, user: &str, step: i64, now: i64) -> Result<bool> {
        (**self).accept_step(user, step, now)
    }
    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        (**self).use_recovery_code(user, normalized, now)
    }
    fn clear_failures(&self, user: &str, source: &str) -> Result<()> {
        (**self).clear_failures(user, source)
    }
    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &crate::config::ThrottleConfig,
    ) -> Result<(crate::throttle::PairFailures, crate::throttle::UserFailures)> {
        (**self).record_failure(user, source, now, config)
    }
    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        (**self).first_mandatory_sighting(user, now)
    }
    fn enroll(&self, user: &str, enrollment: &super::Enrollment<'_>, now: i64) -> Result<()> {
        (**self).enroll(user, enrollment, now)
    }
    fn remove_user(&self, user: &str) -> Result<bool> {
        (**self).remove_user(user)
    }
    fn unlock(&self, user: &str) -> Result<()> {
        (**self).unlock(user)
    }
    fn replace_recovery_codes(
        &self,
        user: &str,
        codes: &[crate::recovery::HashedCode],
    ) -> Result<()> {
        (**self).replace_recovery_codes(user, codes)
    }
    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        (**self).recovery_codes_left(user)
    }
    fn list(&self) -> Result<Vec<super::UserSummary>> {
        (**self).list()
    }
    fn throttle_state(
        &self,
        user: &str,
    ) -> Result<(
        Vec<(String, crate::throttle::PairFailures)>,
        crate::throttle::UserFailures,
    )> {
        (**self).throttle_state(user)
    }
    fn export(&self) -> Result<Vec<super::EnrolledUser>> {
        (**self).export()
    }
    fn import(&self, user: &super::EnrolledUser) -> Result<()> {
        (**self).import(user)
    }
}
