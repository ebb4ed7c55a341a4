//! Which store a login or `totp-admin` uses, and how it is opened: the one place that
//! reads `[store] backend`.

use super::{
    seal, Attempt, EnrolledUser, Enrollment, LoginState, Passed, Result, SqliteStore, StepOutcome,
    Store, UserSummary, SCHEMA_VERSION,
};
use crate::config::{Backend, Config, ThrottleConfig};
use crate::recovery::HashedCode;
use crate::throttle::{PairFailures, UserFailures};

/// The PostgreSQL schema this version reads and writes (`pam_totp.schema_version`).
pub const PG_SCHEMA_VERSION: i64 = 3;

/// Opens the configured store for one login: an existing SQLite file (never created or
/// migrated), or a connection to the PostgreSQL server made when the first question is
/// asked. A module built without PostgreSQL support refuses `backend = "postgresql"`:
/// the login fails closed.
pub fn open_for_login(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_login(
            &config.store.path,
            &config.store.key,
        )?)),
        Backend::Postgresql => postgresql(config, false),
    }
}

/// Opens the configured store for `totp-admin`'s read commands: SQLite opened
/// read-only; nothing is created, migrated or written.
pub fn open_for_reading(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_reading(
            &config.store.path,
            &config.store.key,
        )?)),
        Backend::Postgresql => postgresql(config, true),
    }
}

/// Opens the configured store for `totp-admin`'s write commands: an existing store of
/// this version's schema (an older one: "run totp-admin store init"), synchronous
/// commits.
pub fn open_for_changes(config: &Config) -> Result<Box<dyn Store>> {
    match config.store.backend {
        Backend::Sqlite => Ok(Box::new(SqliteStore::open_for_changes(
            &config.store.path,
            &config.store.key,
        )?)),
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
    /// Whether the host key was created (it is never replaced).
    pub key_created: bool,
}

/// `totp-admin store init`: the only code that creates a store (directory 0700, file
/// 0600, schema, and the host key, 0400, when there is none) or migrates one to this
/// version's schema.
pub fn init_store(config: &Config) -> Result<InitReport> {
    let _one_at_a_time = seal::lock_key_dir(&config.store.key)?;
    let key_created = seal::create_host_key(&config.store.key)?;
    let (found, version) = match config.store.backend {
        Backend::Sqlite => (
            SqliteStore::init(&config.store.path, &config.store.key)?,
            SCHEMA_VERSION,
        ),
        Backend::Postgresql => (init_postgresql(config, None)?, PG_SCHEMA_VERSION),
    };
    Ok(InitReport {
        found,
        version,
        key_created,
    })
}

/// What `totp-admin store rekey` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Factors re-sealed under the new key.
    pub factors: u32,
    /// A run interrupted between its commit and the key file's replacement was
    /// finished instead.
    pub finished_earlier_run: bool,
}

/// `totp-admin store rekey`: a new host key, every factor re-sealed under it in one
/// transaction, then the key file replaced atomically. In that order:
///
/// 1. the new key is written to `KEY.new` (0400, synced);
/// 2. every factor is re-sealed under it in one transaction;
/// 3. `KEY.new` is renamed over `KEY`.
///
/// A crash before 2 commits leaves the store under the old key (`KEY.new` is stale
/// and replaced by the next run). Between 2 and 3 the store is sealed under `KEY.new`
/// while `KEY` still holds the old key: a login in that moment fails closed (naming
/// the key file), and the next `store rekey` finds that the factors open with
/// `KEY.new` and finishes the rename. With PostgreSQL the other hosts of the fleet need
/// the new key file too (docs/FLEET.md).
pub fn rekey_store(config: &Config) -> Result<RekeyReport> {
    let path = &config.store.key;
    let pending = seal::pending_key_path(path);
    let _one_at_a_time = seal::lock_key_dir(path)?;
    let store: Box<dyn Rekey> = match config.store.backend {
        Backend::Sqlite => Box::new(SqliteStore::open_for_changes(&config.store.path, path)?),
        Backend::Postgresql => postgresql_rekey(config)?,
    };
    if std::fs::symlink_metadata(&pending).is_ok() {
        let earlier = seal::HostKey::load(&pending)?;
        if store.opens_with(&earlier)? && !store.opens_with(&seal::HostKey::load(path)?)? {
            seal::install_pending_key(path)?;
            return Ok(RekeyReport {
                factors: 0,
                finished_earlier_run: true,
            });
        }
        std::fs::remove_file(&pending).map_err(|e| {
            super::StoreError::KeyFile(pending.clone(), format!("cannot remove: {e}"))
        })?;
    }
    let new = seal::HostKey::generate()
        .map_err(|e| super::StoreError::KeyFile(path.clone(), format!("no random key: {e}")))?;
    new.write_new(&pending)?;
    let factors = match store.reseal(&new) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&pending);
            return Err(e);
        }
    };
    seal::install_pending_key(path)?;
    Ok(RekeyReport {
        factors,
        finished_earlier_run: false,
    })
}

/// What `store rekey` needs of a backend.
trait Rekey {
    fn reseal(&self, new: &seal::HostKey) -> Result<u32>;
    fn opens_with(&self, key: &seal::HostKey) -> Result<bool>;
}

impl Rekey for SqliteStore {
    fn reseal(&self, new: &seal::HostKey) -> Result<u32> {
        SqliteStore::reseal(self, new)
    }
    fn opens_with(&self, key: &seal::HostKey) -> Result<bool> {
        SqliteStore::opens_with(self, key)
    }
}

#[cfg(feature = "postgresql")]
impl Rekey for crate::store_pg::PgStore {
    fn reseal(&self, new: &seal::HostKey) -> Result<u32> {
        crate::store_pg::PgStore::reseal(self, new)
    }
    fn opens_with(&self, key: &seal::HostKey) -> Result<bool> {
        crate::store_pg::PgStore::opens_with(self, key)
    }
}

#[cfg(feature = "postgresql")]
fn postgresql_rekey(config: &Config) -> Result<Box<dyn Rekey>> {
    Ok(Box::new(crate::store_pg::PgStore::for_admin(
        &config.store,
    )?))
}

#[cfg(not(feature = "postgresql"))]
fn postgresql_rekey(_config: &Config) -> Result<Box<dyn Rekey>> {
    Err(no_postgresql())
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
    Err(no_postgresql())
}

#[cfg(not(feature = "postgresql"))]
fn no_postgresql() -> super::StoreError {
    super::StoreError::Unsupported(
        "backend = \"postgresql\" but this build has no PostgreSQL support: install the \
         pam-totp-postgresql package (or build with --features postgresql)"
            .into(),
    )
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
    fn attempt_succeeded(&self, user: &str, passed: &Passed<'_>) -> Result<()> {
        (**self).attempt_succeeded(user, passed)
    }
    fn accept_step(&self, user: &str, factor_id: i64, step: i64, now: i64) -> Result<StepOutcome> {
        (**self).accept_step(user, factor_id, step, now)
    }
    fn accept_login(
        &self,
        user: &str,
        factor_id: i64,
        step: i64,
        now: i64,
        passed: &Passed<'_>,
    ) -> Result<StepOutcome> {
        (**self).accept_login(user, factor_id, step, now, passed)
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
