//! The store: factors, recovery codes, replay and throttle state.
//!
//! The decision logic sees only the [`Store`] trait, so that a shared backend for fleets
//! can stand beside the embedded SQLite store without touching it. The SQLite store keeps
//! one row per user; every check-and-update that two logins could race on writes that
//! row with one conditional statement (only if it is still the row that was read), so
//! exactly one of them wins.

use crate::config::check_owner_and_mode;
use crate::config::ThrottleConfig;
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::{self, HashedCode};
use crate::secret::SecretKey;
use crate::throttle::{self, PairFailures, UserFailures};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::cell::RefCell;
use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

mod mutex;
mod open;
mod record;
mod transfer;
mod v1;
mod wipe;
pub use open::{
    init_postgresql, open_for_admin, open_for_login, postgresql_schema_version, PG_SCHEMA_VERSION,
};
pub use record::{Record, StoredFactor};
pub use transfer::{hashed_code, EnrolledUser};

/// How long a writer waits for another's transaction before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema this build reads and writes (`PRAGMA user_version`); also the first byte
/// of every stored record. Version 1 had a table per kind of row (see `v1.rs`).
pub const SCHEMA_VERSION: i64 = 2;

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
    /// The row last read or written, as stored, and whose it is: the next change to
    /// that user compares against it instead of reading the row again.
    seen: RefCell<Option<(String, Option<Row>)>>,
}

/// A user's record as stored (it holds the key: wiped when dropped).
type Row = Zeroizing<Vec<u8>>;

/// One row per user who is enrolled or has state (grace, failures), everything about
/// them in one value ([`Record`]). One small table: SQLite parses the whole schema on
/// every new connection, and every login opens one.
const SCHEMA: &str = "CREATE TABLE users(user TEXT PRIMARY KEY,record BLOB NOT NULL)WITHOUT ROWID";

/// Writers that lose a race re-read the row and try again; each lost race means that
/// another writer's change went in, so a handful of tries is plenty.
const MAX_TRIES: usize = 64;

/// Keeps the `-wal` and `-shm` files when the last connection closes (after its
/// checkpoint, which empties the WAL: `SQLITE_DEFAULT_JOURNAL_SIZE_LIMIT=0` in
/// .cargo/config.toml), instead of deleting them and creating them again at the next
/// login, with a directory fsync each time.
fn keep_wal_file(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: a valid open connection, the schema name "main" NUL-terminated, and a
    // pointer to an int, as SQLITE_FCNTL_PERSIST_WAL takes.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
}

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

/// SQLite's process-wide settings, made once before its first use: its mutexes
/// (`store/mutex.rs`) and an allocator that wipes what it frees (`store/wipe.rs`).
/// Every connection this crate opens comes after it; a program that opens connections
/// of its own with rusqlite (the tests) calls it first. Should SQLite already be in use
/// without them, rusqlite refuses to open a connection (no mutexes): the store is not
/// opened, and a login fails closed.
pub fn prepare_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Either is refused only when SQLite is already initialised (see above).
        let _ = mutex::install();
        let _ = wipe::install();
    });
}

/// Hands SQLite one of its process-wide method tables (`SQLITE_CONFIG_MUTEX`,
/// `SQLITE_CONFIG_MALLOC`), which it copies. False when SQLite is already initialised:
/// it then keeps what it had.
///
/// # Safety
/// `methods` is the struct that `op` takes, and the functions it names live as long as
/// this code.
unsafe fn sqlite_config<T>(op: std::ffi::c_int, methods: &T) -> bool {
    // SAFETY: the caller's contract; SQLite reads the struct during the call only.
    unsafe { rusqlite::ffi::sqlite3_config(op, methods as *const T) == rusqlite::ffi::SQLITE_OK }
}

impl SqliteStore {
    /// Opens an existing store for a login: no creation, no symlinks, no migration.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        prepare_sqlite();
        check_store_path(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        // synchronous=NORMAL is the compiled-in default for WAL (.cargo/config.toml):
        // a commit is not fsynced, a checkpoint is.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        keep_wal_file(&conn);
        // The schema version is checked when the first statement finds the table
        // different (see `read`): a login spends no statement on it.
        Ok(SqliteStore::new(conn))
    }

    fn new(conn: Connection) -> SqliteStore {
        SqliteStore {
            conn,
            seen: RefCell::new(None),
        }
    }

    /// Opens the store for `totp-admin`, creating the directory (0700), the file (0600)
    /// and the schema when missing, and migrating an older schema forward. Writes are
    /// synchronous (`FULL`): an enrollment survives a power loss.
    pub fn open_or_create(path: &Path) -> Result<SqliteStore> {
        prepare_sqlite();
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
        let store = SqliteStore::new(conn);
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
        prepare_sqlite();
        let store = SqliteStore::new(Connection::open_in_memory()?);
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
            match version {
                SCHEMA_VERSION => {}
                1 => v1::migrate(c, SCHEMA)?,
                _ => c.execute_batch(SCHEMA)?,
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

impl SqliteStore {
    /// The stored row of `user`, if there is one. A statement that finds the table
    /// different is told apart: an older or newer schema, or no tables at all.
    fn read(&self, user: &str) -> Result<Option<Row>> {
        let row = self
            .conn
            .query_row("SELECT record FROM users WHERE user = ?1", [user], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional();
        match row {
            Ok(row) => Ok(row.map(Zeroizing::new)),
            Err(e) => match self.schema_version() {
                Ok(found) if found != SCHEMA_VERSION => Err(StoreError::Schema { found }),
                _ => Err(e.into()),
            },
        }
    }

    /// The row of `user`: the one remembered from the last read or write when there is
    /// one (a write compares against it, so a stale copy costs one more try), else a
    /// fresh read.
    fn current(&self, user: &str) -> Result<Option<Row>> {
        match self.seen.borrow_mut().take() {
            Some((who, row)) if who == user => Ok(row),
            _ => self.read(user),
        }
    }

    fn remember(&self, user: &str, row: Option<Row>) {
        *self.seen.borrow_mut() = Some((user.to_string(), row));
    }

    /// The user's record as stored now (empty when there is no row).
    fn record(&self, user: &str) -> Result<Record> {
        let row = self.read(user)?;
        let record = decode(user, row.as_ref())?;
        self.remember(user, row);
        Ok(record)
    }

    /// Reads the user's record, lets `change` edit it, and writes it back with one
    /// statement that succeeds only if the row is still the one read (compare and set);
    /// when another writer got there first, reads it again and retries. `change`
    /// returns its result and whether there is anything to write; it runs again on
    /// every try, so it must depend on the record alone. Exactly one of several racing
    /// callers wins any given change.
    fn modify<T>(
        &self,
        user: &str,
        mut change: impl FnMut(&mut Record) -> Result<(T, bool)>,
    ) -> Result<T> {
        let mut before = self.current(user)?;
        for _ in 0..MAX_TRIES {
            let mut record = decode(user, before.as_ref())?;
            let (value, write) = change(&mut record)?;
            if !write {
                self.remember(user, before);
                return Ok(value);
            }
            let after = record.encode();
            let written = match &before {
                Some(old) => self.conn.execute(
                    "UPDATE users SET record = ?3 WHERE user = ?1 AND record = ?2",
                    params![user, &old[..], &after[..]],
                )?,
                None => self.conn.execute(
                    "INSERT INTO users (user, record) VALUES (?1, ?2) ON CONFLICT (user) DO NOTHING",
                    params![user, &after[..]],
                )?,
            };
            if written == 1 {
                self.remember(user, Some(after));
                return Ok(value);
            }
            before = self.read(user)?;
        }
        Err(StoreError::Sqlite(format!(
            "the row of {user:?} kept changing under other writers; try again"
        )))
    }

    /// Every row, sorted by user.
    fn all(&self) -> Result<Vec<(String, Record)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT user, record FROM users ORDER BY user")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, bytes) = row?;
            let record = Record::decode(&user, &bytes)?;
            out.push((user, record));
        }
        Ok(out)
    }
}

fn decode(user: &str, row: Option<&Row>) -> Result<Record> {
    row.map_or_else(|| Ok(Record::default()), |b| Record::decode(user, b))
}

impl Store for SqliteStore {
    /// One statement: the user's row.
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let record = self.record(user)?;
        Ok(LoginState {
            factor: record.factor(),
            pair: record.pair(source),
            user: record.window,
        })
    }

    fn accept_step(&self, user: &str, step: i64, now: i64) -> Result<bool> {
        self.modify(user, |r| {
            if r.factor.is_none() || r.last_step.is_some_and(|last| last >= step) {
                return Ok((false, false));
            }
            r.last_step = Some(step);
            r.last_used_at = Some(now);
            Ok((true, true))
        })
    }

    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        // A used recovery code must stay used across a power loss.
        self.durable()?;
        self.modify(user, |r| {
            if r.factor.is_none() {
                return Ok((false, false));
            }
            let mut found = None;
            for (i, (code, used_at)) in r.recovery_codes.iter().enumerate() {
                if used_at.is_none() && recovery::matches(code, normalized) {
                    found = Some(i);
                }
            }
            let Some(i) = found else {
                return Ok((false, false));
            };
            r.recovery_codes[i].1 = Some(now);
            r.last_used_at = Some(now);
            Ok((true, true))
        })
    }

    fn clear_failures(&self, user: &str, source: &str) -> Result<()> {
        self.modify(user, |r| {
            let had = r.pair(source) != PairFailures::default();
            r.clear_pair(source);
            Ok(((), had))
        })
    }

    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<(PairFailures, UserFailures)> {
        self.modify(user, |r| {
            let pair = throttle::pair_after_failure(r.pair(source), now, config);
            let window = throttle::user_after_failure(r.window, now);
            r.set_pair(source, pair, now);
            r.window = window;
            Ok(((pair, window), true))
        })
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        self.modify(user, |r| match r.mandatory_since {
            Some(since) => Ok((since, false)),
            None => {
                r.mandatory_since = Some(now);
                Ok((now, true))
            }
        })
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<()> {
        // An enrollment (also one made at login) must survive a power loss.
        self.durable()?;
        self.modify(user, |r| {
            // The last accepted step is kept: enrolling the same key again must not
            // reopen codes that were already used.
            r.factor = Some(StoredFactor {
                secret: e.secret.clone(),
                params: e.params,
                created_at: now,
                confirmed_at: Some(now),
            });
            r.last_used_at = None;
            r.recovery_codes = e.recovery_codes.iter().map(|c| (c.clone(), None)).collect();
            Ok(((), true))
        })
    }

    fn remove_user(&self, user: &str) -> Result<bool> {
        self.modify(user, |r| {
            // The grace-period sighting and the last step stay: a reset grants no new
            // grace period and reopens no used code.
            let had = r.factor.is_some();
            let kept = Record {
                last_step: r.last_step,
                mandatory_since: r.mandatory_since,
                ..Record::default()
            };
            let changed = r.encode() != kept.encode();
            *r = kept;
            Ok((had, changed))
        })
    }

    fn unlock(&self, user: &str) -> Result<()> {
        self.modify(user, |r| {
            let changed = !r.sources.is_empty() || r.window != UserFailures::default();
            r.sources.clear();
            r.window = UserFailures::default();
            Ok(((), changed))
        })
    }

    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        self.modify(user, |r| {
            r.recovery_codes = codes.iter().map(|c| (c.clone(), None)).collect();
            Ok(((), true))
        })
    }

    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        Ok(self.record(user)?.recovery_codes_left())
    }

    fn list(&self) -> Result<Vec<UserSummary>> {
        Ok(self
            .all()?
            .into_iter()
            .filter_map(|(user, r)| {
                let left = r.recovery_codes_left();
                r.factor.map(|f| UserSummary {
                    user,
                    algorithm: f.params.algorithm,
                    digits: f.params.digits,
                    period: f.params.period,
                    created_at: f.created_at,
                    last_used_at: r.last_used_at,
                    recovery_codes_left: left,
                })
            })
            .collect())
    }

    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        let record = self.record(user)?;
        Ok((record.sources, record.window))
    }

    fn export(&self) -> Result<Vec<EnrolledUser>> {
        Ok(self
            .all()?
            .into_iter()
            .filter_map(|(user, r)| {
                r.factor().map(|factor| EnrolledUser {
                    user,
                    factor,
                    recovery_codes: r.recovery_codes,
                })
            })
            .collect())
    }

    /// A later last step already recorded here is kept: a copy never reopens used codes.
    fn import(&self, u: &EnrolledUser) -> Result<()> {
        let f = &u.factor;
        self.modify(&u.user, |r| {
            r.factor = Some(StoredFactor {
                secret: f.secret.clone(),
                params: f.params,
                created_at: f.created_at,
                confirmed_at: f.confirmed_at,
            });
            r.last_used_at = f.last_used_at;
            r.last_step = r.last_step.max(f.last_step);
            r.recovery_codes = u.recovery_codes.clone();
            Ok(((), true))
        })
    }
}

/// A private directory (0700) for a unit test's store, removed however the test ends.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("pam_totp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        TestDir(dir)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
