//! The embedded SQLite store (schema 4): the tables of `store.rs`, one connection per
//! login or command, WAL mode, and every write that logins race on as one conditional
//! statement or one `BEGIN IMMEDIATE` transaction.
//!
//! SQLite runs with its own allocator, which does not wipe what it frees, and that is
//! enough: no secret in clear ever reaches SQLite's memory. A TOTP key is sealed
//! (`seal.rs`) before it is bound to a statement and unsealed only into a
//! [`crate::secret::SecretKey`], which wipes itself; the host key never goes near SQLite; typed codes
//! are never stored; recovery codes are stored only as salted hashes. What SQLite's page
//! cache and statements hold is what the file holds, which opens nothing without the
//! host key (test `reliability::no_secret_left_after_pam_end` scans the process).

use super::migrate;
use super::seal::{HostKey, Keyring};
use super::{
    check_store_dir, check_store_path, hashed_code, Attempt, EnrolledUser, Enrollment, Factor,
    FactorSummary, LoginState, Passed, Result, StepOutcome, Store, StoreError, UserSummary,
    SCHEMA_VERSION,
};
use crate::config::ThrottleConfig;
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::{self, HashedCode};
use crate::throttle::{self, PairFailures, UserFailures};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The WAL length, in pages, at which a login's commit copies it into the database. A
/// login opens the store anew and reads the whole WAL to find its pages (SQLite's
/// recovery, since no connection stays open between logins): short enough that this
/// costs less than the syncs of a checkpoint at every close, long enough that the
/// checkpoint's syncs are shared by many logins.
const LOGIN_CHECKPOINT_PAGES: i64 = 100;

/// How long a writer waits for another's transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Schema 4, as `store.rs` describes it.
const SCHEMA: &str = "
CREATE TABLE users(
  user TEXT PRIMARY KEY,
  mandatory_since INTEGER,
  window_start INTEGER NOT NULL DEFAULT 0,
  window_failures INTEGER NOT NULL DEFAULT 0,
  retired_step INTEGER
);
CREATE TABLE factors(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user TEXT NOT NULL,
  name TEXT NOT NULL,
  sealed_key BLOB NOT NULL,
  algorithm TEXT NOT NULL,
  digits INTEGER NOT NULL,
  period INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  last_step INTEGER,
  UNIQUE(user, name)
);
CREATE TABLE recovery_codes(
  user TEXT NOT NULL,
  salt BLOB NOT NULL,
  hash BLOB NOT NULL,
  used_at INTEGER,
  PRIMARY KEY(user, salt)
);
CREATE TABLE throttle(
  user TEXT NOT NULL,
  source TEXT NOT NULL,
  failures INTEGER NOT NULL,
  locked_until INTEGER NOT NULL,
  last_failure_at INTEGER NOT NULL,
  PRIMARY KEY(user, source)
);
CREATE TABLE remembered(
  user TEXT NOT NULL,
  source TEXT NOT NULL,
  until INTEGER NOT NULL,
  PRIMARY KEY(user, source)
);
";

/// The columns of a factor, in the order [`SqliteStore::factor_from_row`] reads them.
const FACTOR_COLUMNS: &str =
    "id, name, sealed_key, algorithm, digits, period, created_at, last_used_at, last_step";

/// A user's factors, `default` first, then in the order enrolled.
const FACTOR_ORDER: &str = "name <> 'default', id";

/// Sources whose failures are kept per user. A failure from one more source drops the
/// least restrictive row; the per-user ceiling still counts every failure.
pub const MAX_SOURCES: i64 = 64;

/// Longest source kept (a host name or tty); longer ones are cut there.
const MAX_SOURCE_BYTES: usize = 255;

/// What a connection may do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A login: reads and the writes of a login; no schema check of its own.
    Login,
    /// `totp-admin` read commands: opened read-only.
    Read,
    /// `totp-admin` write commands: every commit synchronous.
    Change,
}

/// The embedded SQLite store: one connection, never shared between threads, and the
/// host key its factors' keys are sealed with.
pub struct SqliteStore {
    conn: Connection,
    keys: Keyring,
}

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
                "the store file is damaged (truncated or corrupt): restore it from a backup"
            }
            _ => return StoreError::Sqlite(format!("{e} (SQLite code {})", code.extended_code)),
        };
        StoreError::Sqlite(format!("{e} (SQLite code {}): {hint}", code.extended_code))
    }
}

impl SqliteStore {
    /// Opens an existing store for a login: no creation, no symlinks, no migration, and
    /// no statement spent on the schema version (a statement that finds the tables
    /// different tells an older or newer schema apart, see [`SqliteStore::failed`]).
    /// `key`: the host key file, read only when a key is first sealed or unsealed.
    pub fn open_for_login(path: &Path, key: &Path) -> Result<SqliteStore> {
        SqliteStore::open(path, key, Access::Login)
    }

    /// Opens an existing store read-only (`SQLITE_OPEN_READ_ONLY`): never creates,
    /// migrates or writes anything. Another schema is refused.
    pub fn open_for_reading(path: &Path, key: &Path) -> Result<SqliteStore> {
        SqliteStore::open(path, key, Access::Read)
    }

    /// Opens an existing store for `totp-admin` changes: every commit is synchronous
    /// (`synchronous=FULL`). Another schema is refused: `totp-admin store init` migrates.
    pub fn open_for_changes(path: &Path, key: &Path) -> Result<SqliteStore> {
        SqliteStore::open(path, key, Access::Change)
    }

    fn open(path: &Path, key: &Path, access: Access) -> Result<SqliteStore> {
        check_store_path(path)?;
        let mode = match access {
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::Login | Access::Change => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        // No SQLITE_OPEN_CREATE: a missing file stays missing (checked above, and raced
        // by nothing that could create it but `store init`).
        let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        super::prepare_sqlite();
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let store = SqliteStore {
            conn,
            keys: Keyring::new(key),
        };
        // totp-admin's commits are synchronous (fsynced before COMMIT returns). A login's
        // are not (WAL with synchronous=NORMAL: durable across a crash of the process,
        // not a power loss): a power loss can cost the steps and failures of the last
        // moments, and the host is down for longer than a code stays inside the window.
        // A used recovery code and an enrollment at login are fsynced (`durable`).
        // (The first statement to read the file: a damaged one is told apart here.)
        let synchronous = match access {
            Access::Login => Some("NORMAL"),
            Access::Change => Some("FULL"),
            Access::Read => None,
        };
        if let Some(mode) = synchronous {
            store
                .conn
                .pragma_update(None, "synchronous", mode)
                .map_err(|e| store.failed(e))?;
        }
        if access == Access::Login {
            // A login leaves the WAL as it is when it closes, instead of copying it into
            // the database and removing it, which is the work of a checkpoint (the WAL
            // and the database synced) and of the next login (the WAL made again, its
            // header and directory synced). The WAL is copied back by the commit that
            // finds it longer than LOGIN_CHECKPOINT_PAGES, and by `totp-admin`.
            store
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
            store
                .conn
                .pragma_update(None, "wal_autocheckpoint", LOGIN_CHECKPOINT_PAGES)?;
        }
        if access != Access::Login {
            let found = store.schema_version()?;
            if found != SCHEMA_VERSION {
                return Err(StoreError::Schema { found });
            }
        }
        Ok(store)
    }

    /// `totp-admin store init` for SQLite: creates the directory (0700), the file
    /// (0600) and the schema when missing. The host key at `key` must exist already
    /// (`init_store` makes it first). Returns the schema version found before (`0`:
    /// none).
    pub fn init(path: &Path, key: &Path) -> Result<i64> {
        let dir = path
            .parent()
            .ok_or_else(|| StoreError::Insecure(path.into(), "no directory".into()))?;
        if std::fs::symlink_metadata(dir).is_err() {
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
        super::prepare_sqlite();
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Deleted rows and dropped tables are overwritten, not just unlinked: a
        // migration drops tables that held keys in clear.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let store = SqliteStore {
            conn,
            keys: Keyring::new(key),
        };
        let found = store.migrate()?;
        if found != 0 && found != SCHEMA_VERSION {
            // Nothing of the old tables may stay in free pages or in the WAL.
            store.conn.execute_batch("VACUUM")?;
            store
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        store.integrity_check()?;
        // The WAL and shared-memory files: root's alone, whatever made them.
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                if meta.is_file() {
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
        Ok(found)
    }

    /// A private store in memory, for tests and benchmarks, sealing under a random key
    /// of its own.
    pub fn in_memory() -> Result<SqliteStore> {
        let key =
            HostKey::generate().map_err(|e| StoreError::Sqlite(format!("no random key: {e}")))?;
        let store = SqliteStore {
            conn: {
                super::prepare_sqlite();
                Connection::open_in_memory()?
            },
            keys: Keyring::with_key(Path::new("(in memory)"), key),
        };
        store.migrate()?;
        Ok(store)
    }

    fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Creates the schema when there is none, migrates schema 1 and 2 (their keys sealed
    /// under the host key), refuses a newer one, in one transaction. Returns the version
    /// found.
    fn migrate(&self) -> Result<i64> {
        // When throttle rows of an old store were last counted (it did not keep that).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.immediate(|c| {
            let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            match found {
                SCHEMA_VERSION => {}
                0 => c.execute_batch(SCHEMA)?,
                1 => migrate::from_v1(c, &self.keys, SCHEMA, now)?,
                2 => migrate::from_v2(c, &self.keys, SCHEMA, now)?,
                3 => migrate::from_v3(c)?,
                _ => return Err(StoreError::Schema { found }),
            }
            c.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(found)
        })
    }

    /// Makes this connection's commits synchronous from now on: what must not be lost
    /// to a power loss (a used recovery code, an enrollment).
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
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.failed(e))?;
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

    /// A failed statement, told apart from a store of another schema (or none): a
    /// login checks the version only when a statement found the tables different.
    fn failed(&self, e: rusqlite::Error) -> StoreError {
        match self.schema_version() {
            Ok(found) if found != SCHEMA_VERSION => StoreError::Schema { found },
            _ => e.into(),
        }
    }

    /// Re-seals every factor's key under `new` in one transaction (`store rekey`):
    /// each key must open with the current host key, or nothing changes. Returns the
    /// number of factors re-sealed.
    pub fn reseal(&self, new: &HostKey) -> Result<u32> {
        self.immediate(|c| {
            let mut rows = Vec::new();
            {
                let mut stmt = c.prepare("SELECT id, user, name, sealed_key FROM factors")?;
                let mut q = stmt.query([])?;
                while let Some(r) = q.next()? {
                    let (id, user, name): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                    let secret = self.keys.unseal(&user, &name, &r.get::<_, Vec<u8>>(3)?)?;
                    rows.push((id, new.seal(&user, &name, &secret)?));
                }
            }
            let mut update = c.prepare("UPDATE factors SET sealed_key = ?2 WHERE id = ?1")?;
            for (id, sealed) in &rows {
                update.execute(params![id, sealed])?;
            }
            Ok(rows.len() as u32)
        })
    }

    /// Whether every factor's key opens with the host key at `key` (`store rekey`
    /// finishing an interrupted run); `true` for a store without factors.
    pub fn opens_with(&self, key: &HostKey) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare("SELECT user, name, sealed_key FROM factors")?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let (user, name): (String, String) = (r.get(0)?, r.get(1)?);
            if key.unseal(&user, &name, &r.get::<_, Vec<u8>>(2)?).is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A factor from [`FACTOR_COLUMNS`], its key unsealed and its parameters checked.
    fn factor_from_row(&self, user: &str, r: &Row<'_>) -> Result<Factor> {
        let name: String = r.get(1)?;
        let sealed: Vec<u8> = r.get(2)?;
        let secret = self.keys.unseal(user, &name, &sealed)?;
        let params = params_from(user, &name, r.get(3)?, r.get(4)?, r.get(5)?)?;
        if secret.as_bytes().len() < 10 {
            return Err(StoreError::Corrupt(format!(
                "factor {name:?} of {user:?}: key too short"
            )));
        }
        Ok(Factor {
            id: r.get(0)?,
            name,
            secret,
            params,
            created_at: r.get(6)?,
            last_used_at: r.get(7)?,
            last_step: r.get(8)?,
        })
    }

    /// The user's factors, `default` first.
    fn factors(&self, user: &str) -> Result<Vec<Factor>> {
        let sql =
            format!("SELECT {FACTOR_COLUMNS} FROM factors WHERE user = ?1 ORDER BY {FACTOR_ORDER}");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.failed(e))?;
        let mut rows = stmt.query([user])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.factor_from_row(user, r)?);
        }
        Ok(out)
    }

    fn recovery_codes(&self, user: &str) -> Result<Vec<(HashedCode, Option<i64>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT salt, hash, used_at FROM recovery_codes WHERE user = ?1")?;
        let mut rows = stmt.query([user])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push((hashed_code(user, r.get(0)?, r.get(1)?)?, r.get(2)?));
        }
        Ok(out)
    }
}

/// A factor's parameters as stored, checked.
fn params_from(
    user: &str,
    name: &str,
    algorithm: String,
    digits: i64,
    period: i64,
) -> Result<OtpParams> {
    let bad = || StoreError::Corrupt(format!("factor {name:?} of {user:?} has bad parameters"));
    let algorithm: Algorithm = algorithm.parse().map_err(|_| bad())?;
    if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) {
        return Err(bad());
    }
    Ok(OtpParams {
        algorithm,
        digits: digits as u32,
        period: period as u64,
    })
}

/// A source as stored: at most [`MAX_SOURCE_BYTES`], cut on a character boundary.
fn cut(source: &str) -> &str {
    if source.len() <= MAX_SOURCE_BYTES {
        return source;
    }
    let mut end = MAX_SOURCE_BYTES;
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    &source[..end]
}

fn u32_from(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

fn pair_from(r: &Row<'_>) -> rusqlite::Result<PairFailures> {
    Ok(PairFailures {
        failures: u32_from(r.get(0)?),
        locked_until: r.get(1)?,
    })
}

fn window_from(r: &Row<'_>) -> rusqlite::Result<UserFailures> {
    Ok(UserFailures {
        window_start: r.get(0)?,
        failures: u32_from(r.get(1)?),
    })
}

/// Replaces the user's recovery codes (inside the caller's transaction).
fn write_recovery_codes(
    c: &Connection,
    user: &str,
    codes: &[(HashedCode, Option<i64>)],
) -> Result<()> {
    c.execute("DELETE FROM recovery_codes WHERE user = ?1", [user])?;
    let mut insert = c.prepare(
        "INSERT INTO recovery_codes (user, salt, hash, used_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (code, used_at) in codes {
        insert.execute(params![user, &code.salt[..], &code.hash[..], used_at])?;
    }
    Ok(())
}

/// The last step accepted by a removed factor of the user: a factor enrolled later
/// starts after it.
fn retired_step(c: &Connection, user: &str) -> Result<Option<i64>> {
    Ok(c.query_row(
        "SELECT retired_step FROM users WHERE user = ?1",
        [user],
        |r| r.get(0),
    )
    .optional()?
    .flatten())
}

/// Keeps the last step of the factors about to be removed (all of the user's, or the
/// one named) in `users.retired_step`, inside the caller's transaction.
fn retire_steps(c: &Connection, user: &str, name: Option<&str>) -> Result<()> {
    let last: Option<i64> = c.query_row(
        "SELECT max(last_step) FROM factors WHERE user = ?1 AND (?2 IS NULL OR name = ?2)",
        params![user, name],
        |r| r.get(0),
    )?;
    if let Some(step) = last {
        c.execute(
            "INSERT INTO users (user, retired_step) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE
                 SET retired_step = max(coalesce(users.retired_step, excluded.retired_step),
                                        excluded.retired_step)",
            params![user, step],
        )?;
    }
    Ok(())
}

/// What a success clears and remembers (inside the caller's transaction): the pair's
/// failures, one failure of the user's window, and the remembered source.
fn record_success(c: &Connection, user: &str, passed: &Passed<'_>) -> Result<()> {
    c.execute(
        "DELETE FROM throttle WHERE user = ?1 AND source = ?2",
        [user, cut(passed.source)],
    )?;
    c.execute(
        "UPDATE users SET window_failures = max(window_failures - 1, 0)
         WHERE user = ?1 AND window_failures > 0",
        [user],
    )?;
    if let Some((source, until)) = passed.remember {
        c.execute(
            "INSERT INTO remembered (user, source, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, source) DO UPDATE SET until = excluded.until",
            params![user, cut(source), until],
        )?;
    }
    Ok(())
}

/// Forgets every source remembered for the user (inside the caller's transaction): a
/// reset, an unlock, a removed or new factor asks for a code again everywhere.
fn forget_sources(c: &Connection, user: &str) -> Result<()> {
    c.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
    Ok(())
}

/// The id and last step of the user's factor `name`, if there is one.
fn current_factor(c: &Connection, user: &str, name: &str) -> Result<Option<(i64, Option<i64>)>> {
    Ok(c.query_row(
        "SELECT id, last_step FROM factors WHERE user = ?1 AND name = ?2",
        [user, name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

impl Store for SqliteStore {
    /// Two statements: the factors, then the throttle counters and the remembered source.
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let factors = self.factors(user)?;
        let (pair, window, remembered_until) = self
            .conn
            .query_row(
                "SELECT t.failures, t.locked_until, u.window_start, u.window_failures, m.until
                 FROM (SELECT ?1 AS user) k
                 LEFT JOIN users u ON u.user = k.user
                 LEFT JOIN throttle t ON t.user = k.user AND t.source = ?2
                 LEFT JOIN remembered m ON m.user = k.user AND m.source = ?2",
                [user, cut(source)],
                |r| {
                    let pair = PairFailures {
                        failures: u32_from(r.get::<_, Option<i64>>(0)?.unwrap_or(0)),
                        locked_until: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    };
                    let window = UserFailures {
                        window_start: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                        failures: u32_from(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                    };
                    Ok((pair, window, r.get::<_, Option<i64>>(4)?))
                },
            )
            .map_err(|e| self.failed(e))?;
        Ok(LoginState {
            factors,
            pair,
            user: window,
            remembered_until,
        })
    }

    /// One `BEGIN IMMEDIATE` transaction: read the pair and the user's window, refuse
    /// (writing nothing) or count the attempt.
    fn begin_attempt(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<Attempt> {
        let source = cut(source);
        self.immediate(|c| {
            let pair = c
                .query_row(
                    "SELECT failures, locked_until FROM throttle WHERE user = ?1 AND source = ?2",
                    [user, source],
                    pair_from,
                )
                .optional()?;
            let window = c
                .query_row(
                    "SELECT window_start, window_failures FROM users WHERE user = ?1",
                    [user],
                    window_from,
                )
                .optional()?
                .unwrap_or_default();
            if let Some(wait_secs) =
                throttle::wait_secs(pair.unwrap_or_default(), window, now, config)
            {
                return Ok(Attempt::Throttled { wait_secs });
            }
            let new_pair = throttle::pair_after_failure(pair.unwrap_or_default(), now, config);
            let new_window = throttle::user_after_failure(window, now);
            c.execute(
                "INSERT INTO throttle (user, source, failures, locked_until, last_failure_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user, source) DO UPDATE SET failures = excluded.failures,
                     locked_until = excluded.locked_until, last_failure_at = excluded.last_failure_at",
                params![user, source, new_pair.failures, new_pair.locked_until, now],
            )?;
            c.execute(
                "INSERT INTO users (user, window_start, window_failures) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user) DO UPDATE SET window_start = excluded.window_start,
                     window_failures = excluded.window_failures",
                params![user, new_window.window_start, new_window.failures],
            )?;
            if pair.is_none() {
                // A new source: keep at most MAX_SOURCES rows, dropping those that
                // refuse least (unlocked with the fewest failures, else the lock that
                // ends first).
                c.execute(
                    "DELETE FROM throttle WHERE rowid IN (
                         SELECT rowid FROM throttle WHERE user = ?1 AND source <> ?2
                         ORDER BY locked_until > ?3, locked_until, failures
                         LIMIT max(0, (SELECT count(*) FROM throttle WHERE user = ?1) - ?4))",
                    params![user, source, now, MAX_SOURCES],
                )?;
            }
            Ok(Attempt::Allowed)
        })
    }

    fn attempt_succeeded(&self, user: &str, passed: &Passed<'_>) -> Result<()> {
        self.immediate(|c| record_success(c, user, passed))
    }

    /// One `BEGIN IMMEDIATE` transaction: the step, and with it what a success clears
    /// and remembers; one commit.
    fn accept_login(
        &self,
        user: &str,
        factor_id: i64,
        step: i64,
        now: i64,
        passed: &Passed<'_>,
    ) -> Result<StepOutcome> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.failed(e))?;
        let outcome = self.accept_step(user, factor_id, step, now).and_then(|o| {
            if o == StepOutcome::Accepted {
                record_success(&self.conn, user, passed)?;
            }
            Ok(o)
        });
        // Nothing to keep unless the step was accepted.
        let end = if matches!(outcome, Ok(StepOutcome::Accepted)) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        if let Err(e) = self.conn.execute_batch(end) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        outcome
    }

    /// One conditional UPDATE; when it changes nothing, a second read tells a replay
    /// from a factor that was removed or replaced meanwhile.
    fn accept_step(&self, user: &str, factor_id: i64, step: i64, now: i64) -> Result<StepOutcome> {
        let changed = self
            .conn
            .execute(
                "UPDATE factors SET last_step = ?3, last_used_at = ?4
                 WHERE id = ?1 AND user = ?2 AND (last_step IS NULL OR last_step < ?3)",
                params![factor_id, user, step, now],
            )
            .map_err(|e| self.failed(e))?;
        if changed == 1 {
            return Ok(StepOutcome::Accepted);
        }
        let exists = self
            .conn
            .query_row(
                "SELECT 1 FROM factors WHERE id = ?1 AND user = ?2",
                params![factor_id, user],
                |_| Ok(()),
            )
            .optional()?;
        Ok(match exists {
            Some(()) => StepOutcome::Replayed,
            None => StepOutcome::FactorChanged,
        })
    }

    /// The unused codes are read and compared here; the one that matches is marked used
    /// by one conditional UPDATE, which exactly one racing login wins.
    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        let mut found = None;
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT salt, hash FROM recovery_codes WHERE user = ?1 AND used_at IS NULL",
                )
                .map_err(|e| self.failed(e))?;
            let mut rows = stmt.query([user])?;
            while let Some(r) = rows.next()? {
                let code = hashed_code(user, r.get(0)?, r.get(1)?)?;
                if recovery::matches(&code, normalized) {
                    found = Some(code.salt);
                }
            }
        }
        let Some(salt) = found else {
            return Ok(false);
        };
        self.durable()?;
        let used = self.conn.execute(
            "UPDATE recovery_codes SET used_at = ?3
             WHERE user = ?1 AND salt = ?2 AND used_at IS NULL",
            params![user, &salt[..], now],
        )?;
        Ok(used == 1)
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        let since: Option<i64> = self
            .conn
            .query_row(
                "INSERT INTO users (user, mandatory_since) VALUES (?1, ?2)
                 ON CONFLICT (user) DO UPDATE
                     SET mandatory_since = coalesce(users.mandatory_since, excluded.mandatory_since)
                 RETURNING mandatory_since",
                params![user, now],
                |r| r.get(0),
            )
            .map_err(|e| self.failed(e))?;
        Ok(since.unwrap_or(now))
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<i64> {
        let sealed = self.keys.seal(user, e.name, e.secret)?;
        self.durable()?;
        self.immediate(|c| {
            let current = current_factor(c, user, e.name)?;
            let count: i64 = c.query_row(
                "SELECT count(*) FROM factors WHERE user = ?1",
                [user],
                |r| r.get(0),
            )?;
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            super::check_enrollment(user, e.name, e.mode, current.map(|(id, _)| id), count)?;
            // A replacement keeps the old factor's last step, and any factor starts
            // after the steps of the user's removed ones: enrolling the same key again
            // must not reopen codes that were already used.
            let mut last_step = e.confirmed_step.max(retired_step(c, user)?);
            if let Some((id, old_step)) = current {
                c.execute("DELETE FROM factors WHERE id = ?1", [id])?;
                last_step = last_step.max(old_step);
            }
            c.execute(
                "INSERT INTO factors (user, name, sealed_key, algorithm, digits, period,
                                      created_at, last_step)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    user,
                    e.name,
                    &sealed[..],
                    e.params.algorithm.as_str(),
                    e.params.digits,
                    e.params.period as i64,
                    now,
                    last_step
                ],
            )?;
            let id = c.last_insert_rowid();
            forget_sources(c, user)?;
            if let Some(codes) = e.recovery_codes {
                let codes: Vec<_> = codes.iter().map(|code| (code.clone(), None)).collect();
                write_recovery_codes(c, user, &codes)?;
            }
            Ok(id)
        })
    }

    fn remove_factors(&self, user: &str, name: Option<&str>) -> Result<u32> {
        self.immediate(|c| {
            retire_steps(c, user, name)?;
            let removed = match name {
                Some(name) => c.execute(
                    "DELETE FROM factors WHERE user = ?1 AND name = ?2",
                    [user, name],
                )?,
                None => c.execute("DELETE FROM factors WHERE user = ?1", [user])?,
            };
            let left: i64 = c.query_row(
                "SELECT count(*) FROM factors WHERE user = ?1",
                [user],
                |r| r.get(0),
            )?;
            if left == 0 {
                // Without a factor, recovery codes would only wait for the next
                // enrollment to become valid again.
                c.execute("DELETE FROM recovery_codes WHERE user = ?1", [user])?;
            }
            forget_sources(c, user)?;
            if name.is_none() {
                c.execute("DELETE FROM throttle WHERE user = ?1", [user])?;
                c.execute(
                    "UPDATE users SET window_start = 0, window_failures = 0 WHERE user = ?1",
                    [user],
                )?;
            }
            Ok(removed as u32)
        })
    }

    fn has_records(&self, user: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE user = ?1)
                 OR EXISTS (SELECT 1 FROM factors WHERE user = ?1)
                 OR EXISTS (SELECT 1 FROM recovery_codes WHERE user = ?1)
                 OR EXISTS (SELECT 1 FROM throttle WHERE user = ?1)
                 OR EXISTS (SELECT 1 FROM remembered WHERE user = ?1)",
            [user],
            |r| r.get(0),
        )?)
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        self.immediate(|c| {
            forget_sources(c, user)?;
            let pairs = c.execute("DELETE FROM throttle WHERE user = ?1", [user])?;
            let window = c.execute(
                "UPDATE users SET window_start = 0, window_failures = 0
                 WHERE user = ?1 AND (window_start <> 0 OR window_failures <> 0)",
                [user],
            )?;
            Ok(pairs + window > 0)
        })
    }

    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        let codes: Vec<_> = codes.iter().map(|code| (code.clone(), None)).collect();
        self.immediate(|c| write_recovery_codes(c, user, &codes))
    }

    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        let left: i64 = self.conn.query_row(
            "SELECT count(*) FROM recovery_codes WHERE user = ?1 AND used_at IS NULL",
            [user],
            |r| r.get(0),
        )?;
        Ok(u32_from(left))
    }

    fn list(&self) -> Result<Vec<UserSummary>> {
        let mut left = BTreeMap::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT user, count(*) FROM recovery_codes WHERE used_at IS NULL GROUP BY user",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                left.insert(r.get::<_, String>(0)?, u32_from(r.get(1)?));
            }
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT user, name, algorithm, digits, period, created_at, last_used_at
             FROM factors ORDER BY user, {FACTOR_ORDER}"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<UserSummary> = Vec::new();
        while let Some(r) = rows.next()? {
            let user: String = r.get(0)?;
            let name: String = r.get(1)?;
            let params = params_from(&user, &name, r.get(2)?, r.get(3)?, r.get(4)?)?;
            let factor = FactorSummary {
                name,
                algorithm: params.algorithm,
                digits: params.digits,
                period: params.period,
                created_at: r.get(5)?,
                last_used_at: r.get(6)?,
            };
            match out.last_mut() {
                Some(last) if last.user == user => last.factors.push(factor),
                _ => out.push(UserSummary {
                    recovery_codes_left: left.get(&user).copied().unwrap_or(0),
                    user,
                    factors: vec![factor],
                }),
            }
        }
        Ok(out)
    }

    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        let mut stmt = self.conn.prepare(
            "SELECT source, failures, locked_until FROM throttle WHERE user = ?1 ORDER BY source",
        )?;
        let mut rows = stmt.query([user])?;
        let mut pairs = Vec::new();
        while let Some(r) = rows.next()? {
            pairs.push((
                r.get::<_, String>(0)?,
                PairFailures {
                    failures: u32_from(r.get(1)?),
                    locked_until: r.get(2)?,
                },
            ));
        }
        let window = self
            .conn
            .query_row(
                "SELECT window_start, window_failures FROM users WHERE user = ?1",
                [user],
                window_from,
            )
            .optional()?
            .unwrap_or_default();
        Ok((pairs, window))
    }

    fn export(&self) -> Result<Vec<EnrolledUser>> {
        let users: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT DISTINCT user FROM factors ORDER BY user")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            out.push(EnrolledUser {
                factors: self.factors(&user)?,
                recovery_codes: self.recovery_codes(&user)?,
                user,
            });
        }
        Ok(out)
    }

    fn import(&self, u: &EnrolledUser) -> Result<()> {
        let mut sealed = Vec::with_capacity(u.factors.len());
        for f in &u.factors {
            sealed.push(self.keys.seal(&u.user, &f.name, &f.secret)?);
        }
        self.immediate(|c| {
            let retired = retired_step(c, &u.user)?;
            for (f, sealed) in u.factors.iter().zip(&sealed) {
                let mut last_step = f.last_step.max(retired);
                if let Some((id, old_step)) = current_factor(c, &u.user, &f.name)? {
                    c.execute("DELETE FROM factors WHERE id = ?1", [id])?;
                    last_step = last_step.max(old_step);
                }
                c.execute(
                    "INSERT INTO factors (user, name, sealed_key, algorithm, digits, period,
                                          created_at, last_used_at, last_step)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        u.user,
                        f.name,
                        &sealed[..],
                        f.params.algorithm.as_str(),
                        f.params.digits,
                        f.params.period as i64,
                        f.created_at,
                        f.last_used_at,
                        last_step
                    ],
                )?;
            }
            forget_sources(c, &u.user)?;
            write_recovery_codes(c, &u.user, &u.recovery_codes)
        })
    }
}

#[cfg(test)]
mod tests;
