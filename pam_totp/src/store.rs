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
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Missing(p) => write!(f, "store {}: no such file", p.display()),
            StoreError::Insecure(p, why) => write!(f, "store {}: refused: {why}", p.display()),
            StoreError::Sqlite(e) => write!(f, "store: {e}"),
            StoreError::Schema { found } => write!(
                f,
                "store schema version {found}, this version uses {SCHEMA_VERSION}: run totp-admin store init"
            ),
            StoreError::Corrupt(why) => write!(f, "store: corrupt row: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The narrow interface between the decision logic (and `totp-admin`) and a store.
pub trait Store {
    /// The user's factor and the throttle counters of (user, source).
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState>;
    /// Accepts `step` for `user` only if it is later than the last accepted step, and
    /// then clears the (user, source) failures. Exactly one of several racing callers
    /// with the same step gets `true`.
    fn accept_step(&self, user: &str, source: &str, step: i64, now: i64) -> Result<bool>;
    /// Marks an unused recovery code matching `normalized` used; clears the pair's
    /// failures on success. Exactly one racing caller gets `true`.
    fn use_recovery_code(
        &self,
        user: &str,
        source: &str,
        normalized: &[u8],
        now: i64,
    ) -> Result<bool>;
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
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS factors (
    user TEXT PRIMARY KEY NOT NULL,
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_used_at INTEGER,
    last_step INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recovery_codes (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    used_at INTEGER
);
CREATE INDEX IF NOT EXISTS recovery_codes_user ON recovery_codes(user);
CREATE TABLE IF NOT EXISTS throttle (
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (user, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_failures (
    user TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    failures INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grace (
    user TEXT PRIMARY KEY NOT NULL,
    first_seen INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Checks that the store and its directory are root's alone. A missing file is reported
/// as such, so the caller can tell "nobody enrolled yet" from "tampered with".
fn check_store_path(path: &Path) -> Result<()> {
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
        .map_err(|why| StoreError::Insecure(owned(), why))?;
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
        check_store_path(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        Self::configure(&conn, "NORMAL")?;
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
        if !path.exists() && std::fs::symlink_metadata(path).is_err() {
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
        Self::configure(&conn, "FULL")?;
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
        let store = SqliteStore {
            conn: Connection::open_in_memory()?,
        };
        store.migrate()?;
        Ok(store)
    }

    fn configure(conn: &Connection, synchronous: &str) -> Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        Ok(())
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

    fn read_factor(&self, user: &str) -> Result<Option<Factor>> {
        let row = self
            .conn
            .query_row(
                "SELECT secret, algorithm, digits, period, created_at, confirmed_at, last_used_at, last_step
                 FROM factors WHERE user = ?1",
                params![user],
                |r| {
                    Ok((
                        zeroize::Zeroizing::new(r.get::<_, Vec<u8>>(0)?),
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                    ))
                },
            )
            .optional()?;
        let Some((
            mut secret,
            algorithm,
            digits,
            period,
            created_at,
            confirmed_at,
            last_used_at,
            last_step,
        )) = row
        else {
            return Ok(None);
        };
        let algorithm: Algorithm = algorithm.parse().map_err(StoreError::Corrupt)?;
        if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) || secret.len() < 10 {
            return Err(StoreError::Corrupt(format!(
                "factor of {user:?} has bad parameters"
            )));
        }
        Ok(Some(Factor {
            secret: SecretKey::from_bytes(std::mem::take(&mut *secret)),
            params: OtpParams {
                algorithm,
                digits: digits as u32,
                period: period as u64,
            },
            created_at,
            confirmed_at,
            last_used_at,
            last_step,
        }))
    }
}

fn clear_pair(c: &Connection, user: &str, source: &str) -> Result<()> {
    c.execute(
        "DELETE FROM throttle WHERE user = ?1 AND source = ?2",
        params![user, source],
    )?;
    Ok(())
}

fn u32_from(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

impl Store for SqliteStore {
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let factor = self.read_factor(user)?;
        let (pair, user_failures) = read_throttle(&self.conn, user, source)?;
        Ok(LoginState {
            factor,
            pair,
            user: user_failures,
        })
    }

    fn accept_step(&self, user: &str, source: &str, step: i64, now: i64) -> Result<bool> {
        self.immediate(|c| {
            let changed = c.execute(
                "UPDATE factors SET last_step = ?2, last_used_at = ?3
                 WHERE user = ?1 AND (last_step IS NULL OR last_step < ?2)",
                params![user, step, now],
            )?;
            if changed == 1 {
                clear_pair(c, user, source)?;
            }
            Ok(changed == 1)
        })
    }

    fn use_recovery_code(
        &self,
        user: &str,
        source: &str,
        normalized: &[u8],
        now: i64,
    ) -> Result<bool> {
        self.immediate(|c| {
            let mut stmt = c.prepare(
                "SELECT id, salt, hash FROM recovery_codes WHERE user = ?1 AND used_at IS NULL",
            )?;
            let rows = stmt.query_map(params![user], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut found = None;
            for row in rows {
                let (id, salt, hash) = row?;
                let (Ok(salt), Ok(hash)) =
                    (<[u8; SALT_LEN]>::try_from(salt), <[u8; 32]>::try_from(hash))
                else {
                    continue;
                };
                if recovery::matches(&HashedCode { salt, hash }, normalized) {
                    found = Some(id);
                }
            }
            let Some(id) = found else { return Ok(false) };
            let changed = c.execute(
                "UPDATE recovery_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
                params![id, now],
            )?;
            if changed == 1 {
                c.execute(
                    "UPDATE factors SET last_used_at = ?2 WHERE user = ?1",
                    params![user, now],
                )?;
                clear_pair(c, user, source)?;
            }
            Ok(changed == 1)
        })
    }

    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<(PairFailures, UserFailures)> {
        self.immediate(|c| {
            let before = read_throttle(c, user, source)?;
            let pair = throttle::pair_after_failure(before.0, now, config);
            let user_f = throttle::user_after_failure(before.1, now);
            c.execute(
                "INSERT INTO throttle (user, source, failures, locked_until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, source) DO UPDATE SET failures = ?3, locked_until = ?4",
                params![user, source, pair.failures, pair.locked_until],
            )?;
            c.execute(
                "INSERT INTO user_failures (user, window_start, failures) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user) DO UPDATE SET window_start = ?2, failures = ?3",
                params![user, user_f.window_start, user_f.failures],
            )?;
            Ok((pair, user_f))
        })
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "INSERT INTO grace (user, first_seen) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET first_seen = first_seen RETURNING first_seen",
            params![user, now],
            |r| r.get(0),
        )?)
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<()> {
        self.immediate(|c| {
            // Keep the last accepted step: re-importing the same key must not reopen
            // codes that were already used.
            c.execute(
                "INSERT INTO factors (user, secret, algorithm, digits, period, created_at, confirmed_at, last_used_at, last_step)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL, NULL)
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
            write_recovery_codes(c, user, e.recovery_codes)?;
            Ok(())
        })
    }

    fn remove_user(&self, user: &str) -> Result<bool> {
        self.immediate(|c| {
            let removed = c.execute("DELETE FROM factors WHERE user = ?1", params![user])?;
            c.execute("DELETE FROM recovery_codes WHERE user = ?1", params![user])?;
            c.execute("DELETE FROM throttle WHERE user = ?1", params![user])?;
            c.execute("DELETE FROM user_failures WHERE user = ?1", params![user])?;
            Ok(removed == 1)
        })
    }

    fn unlock(&self, user: &str) -> Result<()> {
        self.immediate(|c| {
            c.execute("DELETE FROM throttle WHERE user = ?1", params![user])?;
            c.execute("DELETE FROM user_failures WHERE user = ?1", params![user])?;
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
            "SELECT f.user, f.algorithm, f.digits, f.period, f.created_at, f.last_used_at,
                    (SELECT count(*) FROM recovery_codes r WHERE r.user = f.user AND r.used_at IS NULL)
             FROM factors f ORDER BY f.user",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
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
        let (_, user_failures) = read_throttle(&self.conn, user, "")?;
        Ok((pairs, user_failures))
    }
}

fn read_throttle(c: &Connection, user: &str, source: &str) -> Result<(PairFailures, UserFailures)> {
    let pair = c
        .query_row(
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
        .unwrap_or_default();
    let user_failures = c
        .query_row(
            "SELECT window_start, failures FROM user_failures WHERE user = ?1",
            params![user],
            |r| {
                Ok(UserFailures {
                    window_start: r.get(0)?,
                    failures: u32_from(r.get(1)?),
                })
            },
        )
        .optional()?
        .unwrap_or_default();
    Ok((pair, user_failures))
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
