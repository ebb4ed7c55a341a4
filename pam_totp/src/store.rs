//! The store: factors, recovery codes, replay and throttle state.
//!
//! The decision logic sees only the [`Store`] trait, so that a shared backend for fleets
//! can stand beside the embedded SQLite store without touching it. Every check-and-update
//! that two logins could race on is one conditional statement inside one
//! `BEGIN IMMEDIATE` transaction.

use crate::config::check_owner_and_mode;
use crate::config::ThrottleConfig;
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::{self, HashedCode, SALT_LEN};
use crate::secret::SecretKey;
use crate::throttle::{self, PairFailures, UserFailures};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod open;
mod transfer;
mod wipe;
pub use open::{
    init_postgresql, open_for_admin, open_for_login, postgresql_schema_version, PG_SCHEMA_VERSION,
};
pub use transfer::{hashed_code, EnrolledUser};

/// How long a writer waits for another's transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema this build reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// One user's enrolled factor.
#[derive(Debug, Clone)]
pub struct Factor {
    pub secret: SecretKey,
    pub params: OtpParams,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// The last time step accepted; only later steps are accepted.
    pub last_step: Option<i64>,
}

/// What a login needs to know before asking for a code.
#[derive(Debug, Clone, Default)]
pub struct LoginState {
    pub factor: Option<Factor>,
    pub pair: PairFailures,
    pub user: UserFailures,
}

/// What an enrollment writes.
#[derive(Debug)]
pub struct Enrollment<'a> {
    pub secret: &'a SecretKey,
    pub params: OtpParams,
    pub recovery_codes: &'a [HashedCode],
}

/// One row of `totp-admin list` / `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user: String,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u64,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub recovery_codes_left: u32,
}

/// Why the store could not be used. The module fails closed on every one of them.
#[derive(Debug)]
pub enum StoreError {
    /// The store file does not exist.
    Missing(PathBuf),
    /// Wrong owner or mode on the file or its directory, or a symlink.
    Insecure(PathBuf, String),
    /// SQLite could not open or read it (corrupt, read-only directory, disk full...).
    Sqlite(String),
    /// Written by a newer or older version of pam_totp.
    Schema { found: i64 },
    /// A stored value is out of range (edited by hand?).
    Corrupt(String),
    /// The configured backend is not part of this build.
    Unsupported(String),
    /// The PostgreSQL server: not reached within the deadline, TLS or login refused, or a
    /// statement failed.
    Remote(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Missing(p) => write!(f, "store {}: no such file", p.display()),
            StoreError::Insecure(p, why) => write!(f, "store {}: refused: {why}", p.display()),
            StoreError::Sqlite(e) => write!(f, "store: {e}"),
            StoreError::Schema { found: 0 } => f.write_str(
                "store has no tables (an empty or truncated file?): restore it from a backup, \
                 or run totp-admin store init for a new, empty store",
            ),
            StoreError::Schema { found } => write!(
                f,
                "store schema version {found}, this version uses {SCHEMA_VERSION}: run totp-admin store init"
            ),
            StoreError::Corrupt(why) => write!(f, "store: corrupt row: {why}"),
            StoreError::Unsupported(why) => write!(f, "store: {why}"),
            StoreError::Remote(why) => write!(f, "store: postgresql: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    /// SQLite's words, its extended code, and what they usually mean for the admin
    /// reading the log: "disk I/O error" alone does not say that the disk is full.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let rusqlite::Error::SqliteFailure(code, _) = &e else {
            return StoreError::Sqlite(e.to_string());
        };
        let hint = match code.code {
            C::CannotOpen => {
                "cannot open the store or its -wal/-shm files: is the directory read-only?"
            }
            C::SystemIoFailure => {
                "I/O error: is the store's file system full, read-only or failing?"
            }
            C::DiskFull => "the store's file system is full",
            C::ReadOnly => "the store cannot be written: is its file system read-only?",
            C::DatabaseCorrupt | C::NotADatabase => {
                "the store file is damaged: restore it from a backup"
            }
            _ => return StoreError::Sqlite(format!("{e} (SQLite code {})", code.extended_code)),
        };
        StoreError::Sqlite(format!("{e} (SQLite code {}): {hint}", code.extended_code))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The narrow interface between the decision logic (and `totp-admin`) and a store.
pub trait Store {
    /// The user's factor and the throttle counters of (user, source).
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState>;
    /// Accepts `step` for `user` only if it is later than the last accepted step, in
    /// one conditional statement: exactly one of several racing callers with the same
    /// step gets `true`.
    fn accept_step(&self, user: &str, step: i64, now: i64) -> Result<bool>;
    /// Marks an unused recovery code matching `normalized` used. Exactly one racing
    /// caller gets `true`.
    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool>;
    /// Clears the failures of (user, source) after a success.
    fn clear_failures(&self, user: &str, source: &str) -> Result<()>;
    /// Counts one failure for (user, source) and for the user; returns the new counts.
    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<(PairFailures, UserFailures)>;
    /// When the user was first seen mandatory and unenrolled (recording `now` the first time).
    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64>;
    /// Writes a confirmed factor and its recovery codes, replacing any earlier ones.
    fn enroll(&self, user: &str, enrollment: &Enrollment<'_>, now: i64) -> Result<()>;
    /// Removes the factor, recovery codes and throttle rows. `false` when there was none.
    fn remove_user(&self, user: &str) -> Result<bool>;
    /// Clears every throttle counter of the user.
    fn unlock(&self, user: &str) -> Result<()>;
    /// Replaces the user's recovery codes.
    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()>;
    /// Unused recovery codes left.
    fn recovery_codes_left(&self, user: &str) -> Result<u32>;
    /// Every enrolled user, sorted by name.
    fn list(&self) -> Result<Vec<UserSummary>>;
    /// The user's throttle counters for every source, sorted by source, and the
    /// per-user ceiling window (for `totp-admin status`: is the user locked anywhere?).
    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)>;
    /// Every enrolled user with factor and recovery codes as stored (`store copy`).
    fn export(&self) -> Result<Vec<EnrolledUser>>;
    /// Writes a copied user as they were, replacing what this store held for them.
    fn import(&self, user: &EnrolledUser) -> Result<()>;
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

/// One row per user who is enrolled or has state (grace, failures); one per
/// (user, source) with failures; one per recovery code. Few, small tables: SQLite parses
/// the whole schema on every connection, and a login opens one.
const SCHEMA: &str = "
CREATE TABLE users (
    user TEXT PRIMARY KEY NOT NULL,
    secret BLOB,
    algorithm TEXT,
    digits INTEGER,
    period INTEGER,
    created_at INTEGER,
    confirmed_at INTEGER,
    last_used_at INTEGER,
    last_step INTEGER,
    mandatory_since INTEGER,
    window_start INTEGER NOT NULL DEFAULT 0,
    window_failures INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE throttle (
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (user, source)
) WITHOUT ROWID;
CREATE TABLE recovery_codes (
    user TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user, salt)
) WITHOUT ROWID;
";

/// Checks that the store and its directory are root's alone. A missing file is reported
/// as such, so the caller can tell "nobody enrolled yet" from "tampered with".
fn check_store_path(path: &Path) -> Result<()> {
    check_store_dir(path)?;
    check_store_file(path)
}

/// The store's directory: a real directory (not a symlink), root's, not writable by others.
fn check_store_dir(path: &Path) -> Result<()> {
    let owned = || path.to_path_buf();
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Insecure(owned(), "no directory".into()))?;
    let dir_meta = std::fs::symlink_metadata(dir)
        .map_err(|e| StoreError::Insecure(owned(), format!("directory {}: {e}", dir.display())))?;
    if !dir_meta.is_dir() {
        return Err(StoreError::Insecure(
            owned(),
            format!("{} is not a directory", dir.display()),
        ));
    }
    check_owner_and_mode(&dir_meta, "its directory")
        .map_err(|why| StoreError::Insecure(owned(), why))
}

/// The store file: a regular file (not a symlink), root's, readable by root alone.
fn check_store_file(path: &Path) -> Result<()> {
    let owned = || path.to_path_buf();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing(owned()))
        }
        Err(e) => return Err(StoreError::Insecure(owned(), e.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(StoreError::Insecure(
            owned(),
            "not a regular file (a symbolic link?)".into(),
        ));
    }
    if meta.uid() != 0 {
        return Err(StoreError::Insecure(
            owned(),
            format!("owned by uid {}, not root", meta.uid()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(StoreError::Insecure(
            owned(),
            format!(
                "mode {:04o} lets others read it; run chmod 600",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

impl SqliteStore {
    /// Opens an existing store for a login: no creation, no symlinks, no migration.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        wipe::wipe_freed_memory();
        check_store_path(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        // synchronous=NORMAL is the compiled-in default for WAL (.cargo/config.toml):
        // a commit is not fsynced, a checkpoint is.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let store = SqliteStore { conn };
        let version = store.schema_version()?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Schema { found: version });
        }
        Ok(store)
    }

    /// Opens the store for `totp-admin`, creating the directory (0700), the file (0600)
    /// and the schema when missing, and migrating an older schema forward. Writes are
    /// synchronous (`FULL`): an enrollment survives a power loss.
    pub fn open_or_create(path: &Path) -> Result<SqliteStore> {
        wipe::wipe_freed_memory();
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::Insecure(path.into(), "no directory".into()))?;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Sqlite(format!("cannot create {}: {e}", dir.display())))?;
        }
        // The directory is checked before anything is created in it.
        check_store_dir(path)?;
        if std::fs::symlink_metadata(path).is_err() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| {
                    StoreError::Sqlite(format!("cannot create {}: {e}", path.display()))
                })?;
        }
        check_store_path(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let store = SqliteStore { conn };
        store.migrate()?;
        // The WAL and shared-memory files inherit nothing: keep them root's alone.
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                if meta.is_file() {
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
        Ok(store)
    }

    /// A private store in memory, for tests and benchmarks.
    pub fn in_memory() -> Result<SqliteStore> {
        wipe::wipe_freed_memory();
        let store = SqliteStore {
            conn: Connection::open_in_memory()?,
        };
        store.migrate()?;
        Ok(store)
    }

    fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Creates or migrates the schema to [`SCHEMA_VERSION`]; refuses a newer one.
    pub fn migrate(&self) -> Result<()> {
        self.immediate(|c| {
            let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::Schema { found: version });
            }
            if version < 1 {
                c.execute_batch(SCHEMA)?;
            }
            c.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        })
    }

    /// Makes this connection's commits synchronous (fsync before COMMIT returns). A
    /// login's connection commits without it: a power loss can then cost at most the
    /// record of a code used in the last moments, which the replay window bounds.
    fn durable(&self) -> Result<()> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite finds nothing wrong.
    pub fn integrity_check(&self) -> Result<()> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(result))
        }
    }

    /// Runs `f` inside `BEGIN IMMEDIATE`: the write lock is taken up front, so racing
    /// writers queue on the busy timeout instead of failing with SQLITE_BUSY mid-way.
    fn immediate<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(&self.conn) {
            Ok(v) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The columns of a factor, in the order [`factor_from_row`] reads them from `first`.
const FACTOR_COLUMNS: &str =
    "secret, algorithm, digits, period, created_at, confirmed_at, last_used_at, last_step";

fn factor_from_row(
    user: &str,
    r: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<Option<Factor>> {
    let Some(secret) = r.get::<_, Option<Vec<u8>>>(first)? else {
        return Ok(None);
    };
    let secret = SecretKey::from_bytes(secret);
    let bad = |why: String| {
        rusqlite::Error::FromSqlConversionFailure(
            first,
            rusqlite::types::Type::Text,
            Box::new(StoreError::Corrupt(why)),
        )
    };
    let algorithm: Algorithm = r
        .get::<_, Option<String>>(first + 1)?
        .unwrap_or_default()
        .parse()
        .map_err(bad)?;
    let digits: i64 = r.get::<_, Option<i64>>(first + 2)?.unwrap_or(0);
    let period: i64 = r.get::<_, Option<i64>>(first + 3)?.unwrap_or(0);
    if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) || secret.as_bytes().len() < 10 {
        return Err(bad(format!("factor of {user:?} has bad parameters")));
    }
    Ok(Some(Factor {
        secret,
        params: OtpParams {
            algorithm,
            digits: digits as u32,
            period: period as u64,
        },
        created_at: r.get::<_, Option<i64>>(first + 4)?.unwrap_or(0),
        confirmed_at: r.get(first + 5)?,
        last_used_at: r.get(first + 6)?,
        last_step: r.get(first + 7)?,
    }))
}

fn store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
            match inner.downcast::<StoreError>() {
                Ok(store) => *store,
                Err(other) => StoreError::Sqlite(other.to_string()),
            }
        }
        other => other.into(),
    }
}

fn u32_from(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

fn read_pair(c: &Connection, user: &str, source: &str) -> Result<PairFailures> {
    Ok(c.query_row(
        "SELECT failures, locked_until FROM throttle WHERE user = ?1 AND source = ?2",
        params![user, source],
        |r| {
            Ok(PairFailures {
                failures: u32_from(r.get(0)?),
                locked_until: r.get(1)?,
            })
        },
    )
    .optional()?
    .unwrap_or_default())
}

fn read_window(c: &Connection, user: &str) -> Result<UserFailures> {
    Ok(c.query_row(
        "SELECT window_start, window_failures FROM users WHERE user = ?1",
        params![user],
        |r| {
            Ok(UserFailures {
                window_start: r.get(0)?,
                failures: u32_from(r.get(1)?),
            })
        },
    )
    .optional()?
    .unwrap_or_default())
}

impl Store for SqliteStore {
    /// One statement: the user's row joined with the (user, source) throttle row.
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let sql = format!(
            "SELECT {FACTOR_COLUMNS}, u.window_start, u.window_failures, t.failures, t.locked_until
             FROM users u LEFT JOIN throttle t ON t.user = u.user AND t.source = ?2
             WHERE u.user = ?1"
        );
        let state = self
            .conn
            .query_row(&sql, params![user, source], |r| {
                Ok(LoginState {
                    factor: factor_from_row(user, r, 0)?,
                    user: UserFailures {
                        window_start: r.get(8)?,
                        failures: u32_from(r.get(9)?),
                    },
                    pair: PairFailures {
                        failures: u32_from(r.get::<_, Option<i64>>(10)?.unwrap_or(0)),
                        locked_until: r.get::<_, Option<i64>>(11)?.unwrap_or(0),
                    },
                })
            })
            .optional()
            .map_err(store_error)?;
        Ok(state.unwrap_or_default())
    }

    fn accept_step(&self, user: &str, step: i64, now: i64) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE users SET last_step = ?2, last_used_at = ?3
             WHERE user = ?1 AND secret IS NOT NULL AND (last_step IS NULL OR last_step < ?2)",
            params![user, step, now],
        )?;
        Ok(changed == 1)
    }

    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        // A used recovery code must stay used across a power loss.
        self.durable()?;
        self.immediate(|c| {
            let mut stmt = c.prepare("SELECT salt, hash FROM recovery_codes WHERE user = ?1 AND used_at IS NULL")?;
            let rows = stmt.query_map(params![user], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            let mut found = None;
            for row in rows {
                let (salt, hash) = row?;
                let (Ok(salt), Ok(hash)) = (<[u8; SALT_LEN]>::try_from(salt), <[u8; 32]>::try_from(hash)) else {
                    continue;
                };
                if recovery::matches(&HashedCode { salt, hash }, normalized) {
                    found = Some(salt);
                }
            }
            let Some(salt) = found else { return Ok(false) };
            let changed = c.execute(
                "UPDATE recovery_codes SET used_at = ?3 WHERE user = ?1 AND salt = ?2 AND used_at IS NULL",
                params![user, &salt[..], now],
            )?;
            if changed == 1 {
                c.execute("UPDATE users SET last_used_at = ?2 WHERE user = ?1", params![user, now])?;
            }
            Ok(changed == 1)
        })
    }

    fn clear_failures(&self, user: &str, source: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM throttle WHERE user = ?1 AND source = ?2",
            params![user, source],
        )?;
        Ok(())
    }

    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<(PairFailures, UserFailures)> {
        self.immediate(|c| {
            let pair = throttle::pair_after_failure(read_pair(c, user, source)?, now, config);
            let window = throttle::user_after_failure(read_window(c, user)?, now);
            c.execute(
                "INSERT INTO throttle (user, source, failures, locked_until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, source) DO UPDATE SET failures = ?3, locked_until = ?4",
                params![user, source, pair.failures, pair.locked_until],
            )?;
            c.execute(
                "INSERT INTO users (user, window_start, window_failures) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user) DO UPDATE SET window_start = ?2, window_failures = ?3",
                params![user, window.window_start, window.failures],
            )?;
            Ok((pair, window))
        })
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "INSERT INTO users (user, mandatory_since) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET mandatory_since = coalesce(mandatory_since, ?2)
             RETURNING mandatory_since",
            params![user, now],
            |r| r.get(0),
        )?)
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<()> {
        // An enrollment (also one made at login) must survive a power loss.
        self.durable()?;
        self.immediate(|c| {
            // The last accepted step is kept: re-importing the same key must not reopen
            // codes that were already used.
            c.execute(
                "INSERT INTO users (user, secret, algorithm, digits, period, created_at, confirmed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (user) DO UPDATE SET secret = ?2, algorithm = ?3, digits = ?4, period = ?5,
                     created_at = ?6, confirmed_at = ?6, last_used_at = NULL",
                params![
                    user,
                    e.secret.as_bytes(),
                    e.params.algorithm.as_str(),
                    e.params.digits,
                    e.params.period as i64,
                    now
                ],
            )?;
            write_recovery_codes(c, user, e.recovery_codes)
        })
    }

    fn remove_user(&self, user: &str) -> Result<bool> {
        self.immediate(|c| {
            // The grace-period sighting stays: a reset does not grant a new grace period.
            let removed = c.execute(
                "UPDATE users SET secret = NULL, algorithm = NULL, digits = NULL, period = NULL,
                     created_at = NULL, confirmed_at = NULL, last_used_at = NULL,
                     window_start = 0, window_failures = 0
                 WHERE user = ?1 AND secret IS NOT NULL",
                params![user],
            )?;
            c.execute("DELETE FROM recovery_codes WHERE user = ?1", params![user])?;
            c.execute("DELETE FROM throttle WHERE user = ?1", params![user])?;
            Ok(removed == 1)
        })
    }

    fn unlock(&self, user: &str) -> Result<()> {
        self.immediate(|c| {
            c.execute("DELETE FROM throttle WHERE user = ?1", params![user])?;
            c.execute(
                "UPDATE users SET window_start = 0, window_failures = 0 WHERE user = ?1",
                params![user],
            )?;
            Ok(())
        })
    }

    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        self.immediate(|c| write_recovery_codes(c, user, codes))
    }

    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM recovery_codes WHERE user = ?1 AND used_at IS NULL",
            params![user],
            |r| r.get(0),
        )?;
        Ok(u32_from(n))
    }

    fn list(&self) -> Result<Vec<UserSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT u.user, u.algorithm, u.digits, u.period, u.created_at, u.last_used_at,
                    (SELECT count(*) FROM recovery_codes r WHERE r.user = u.user AND r.used_at IS NULL)
             FROM users u WHERE u.secret IS NOT NULL ORDER BY u.user",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, algorithm, digits, period, created_at, last_used_at, left) = row?;
            out.push(UserSummary {
                user,
                algorithm: algorithm.parse().map_err(StoreError::Corrupt)?,
                digits: u32_from(digits),
                period: period.max(0) as u64,
                created_at,
                last_used_at,
                recovery_codes_left: u32_from(left),
            });
        }
        Ok(out)
    }

    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        let mut stmt = self.conn.prepare(
            "SELECT source, failures, locked_until FROM throttle WHERE user = ?1 ORDER BY source",
        )?;
        let rows = stmt.query_map(params![user], |r| {
            Ok((
                r.get::<_, String>(0)?,
                PairFailures {
                    failures: u32_from(r.get(1)?),
                    locked_until: r.get(2)?,
                },
            ))
        })?;
        let pairs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((pairs, read_window(&self.conn, user)?))
    }

    fn export(&self) -> Result<Vec<EnrolledUser>> {
        transfer::export(&self.conn)
    }

    fn import(&self, user: &EnrolledUser) -> Result<()> {
        self.immediate(|c| transfer::import(c, user))
    }
}

fn write_recovery_codes(c: &Connection, user: &str, codes: &[HashedCode]) -> Result<()> {
    c.execute("DELETE FROM recovery_codes WHERE user = ?1", params![user])?;
    let mut stmt =
        c.prepare("INSERT INTO recovery_codes (user, salt, hash) VALUES (?1, ?2, ?3)")?;
    for code in codes {
        stmt.execute(params![user, &code.salt[..], &code.hash[..]])?;
    }
    Ok(())
}
