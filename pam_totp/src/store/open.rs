//! Which store a login or `totp-admin` uses, and how it is opened: the one place that
//! reads `[store] backend`.

use super::{
    Attempt, EnrolledUser, Enrollment, LoginState, Result, SqliteStore, StepOutcome, Store,
    UserSummary, SCHEMA_VERSION,
};
use crate::config::{Backend, Config, ThrottleConfig};
use crate::recovery::HashedCode;
use crate::throttle::{PairFailures, UserFailures};

/// The PostgreSQL schema this version reads and writes (`pam_totp.schema_version`).
pub const PG_SCHEMA_VERSION: i64 = 2;

/// Opens the configured store for one login: an existing SQLite file (never created or
/// migrated), or a connection to the PostgreSQL server made when the first question is
/// asked. A module built without PostgreSQL support refuses `backend = "postgresql"`:
/// the login fails closed.
pub fn open_for_login(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_login(&config.store.path)?)),
        Backend::Postgresql => postgresql(config, false),
    }
}

/// Opens the configured store for `totp-admin`'s read commands: SQLite opened
/// read-only; nothing is created, migrated or written.
pub fn open_for_reading(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_reading(&config.store.path)?)),
        Backend::Postgresql => postgresql(config, true),
    }
}

/// Opens the configured store for `totp-admin`'s write commands: an existing store of
/// this version's schema (an older one: "run totp-admin store init"), synchronous
/// commits.
pub fn open_for_changes(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_changes(&config.store.path)?)),
        Backend::Postgresql => postgresql(config, true),
    }
}

/// What `totp-admin store init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The schema version found before: `0` when the store was created.
    pub found: i64,
    /// The schema version now.
    pub version: i64,
}

/// `totp-admin store init`: the only code that creates a store (directory 0700, file
/// 0600, schema) or migrates one to this version's schema.
pub fn init_store(config: &Config) -> Result<InitReport> {
    match config.store.backend {
        Backend::Sqlite => Ok(InitReport {
            found: SqliteStore::init(&config.store.path)?,
            version: SCHEMA_VERSION,
        }),
        Backend::Postgresql => Ok(InitReport {
            found: init_postgresql(config, None)?,
            version: PG_SCHEMA_VERSION,
        }),
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
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        (**self).login_state(user, source)
    }
    fn begin_attempt(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<Attempt> {
        (**self).begin_attempt(user, source, now, config)
    }
    fn attempt_succeeded(&self, user: &str, source: &str) -> Result<()> {
        (**self).attempt_succeeded(user, source)
    }
    fn accept_step(&self, user: &str, factor_id: i64, step: i64, now: i64) -> Result<StepOutcome> {
        (**self).accept_step(user, factor_id, step, now)
    }
    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        (**self).use_recovery_code(user, normalized, now)
    }
    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        (**self).first_mandatory_sighting(user, now)
    }
    fn enroll(&self, user: &str, enrollment: &Enrollment<'_>, now: i64) -> Result<i64> {
        (**self).enroll(user, enrollment, now)
    }
    fn remove_factors(&self, user: &str, name: Option<&str>) -> Result<u32> {
        (**self).remove_factors(user, name)
    }
    fn has_records(&self, user: &str) -> Result<bool> {
        (**self).has_records(user)
    }
    fn unlock(&self, user: &str) -> Result<bool> {
        (**self).unlock(user)
    }
    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        (**self).replace_recovery_codes(user, codes)
    }
    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        (**self).recovery_codes_left(user)
    }
    fn list(&self) -> Result<Vec<UserSummary>> {
        (**self).list()
    }
    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        (**self).throttle_state(user)
    }
    fn export(&self) -> Result<Vec<EnrolledUser>> {
        (**self).export()
    }
    fn import(&self, user: &EnrolledUser) -> Result<()> {
        (**self).import(user)
    }
}
