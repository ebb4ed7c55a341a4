//! The store: factors, recovery codes, replay and throttle state.
//!
//! One relational model, the same tables and columns in SQLite (one host, schema 3)
//! and PostgreSQL (a fleet, `store_pg.rs`), readable with `sqlite3` and `psql`:
//!
//! - `users`: one row per user with any state: when they were first seen mandatory and
//!   unenrolled (grace period), the per-user failure ceiling's hour window, and the last
//!   step accepted by a factor since removed (`retired_step`: a factor enrolled later
//!   starts after it, so a reset followed by enrolling the same key again reopens no
//!   used code);
//! - `factors`: one row per enrolled factor (`default` first), its key sealed under the
//!   host key, its parameters and the last accepted time step. `id` is never reused:
//!   it names one enrollment, so a login can tell that the factor it checked a code
//!   against is still the one enrolled when it records the step;
//! - `recovery_codes`: salted hashes, with the time each was used;
//! - `throttle`: failures per (user, source);
//! - `remembered`: the remote addresses a user passed from, each until when the code is
//!   not asked again from it (`[policy] remember_source`).
//!
//! The decision logic sees only the [`Store`] trait. Every check-and-update that two
//! logins could race on is one conditional statement or one `BEGIN IMMEDIATE`
//! transaction, so exactly one of them wins.

use crate::config::{check_owner_and_mode, ThrottleConfig};
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::HashedCode;
use crate::secret::SecretKey;
use crate::throttle::{PairFailures, UserFailures};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod migrate;
mod open;
pub mod seal;
mod sqlite;
mod transfer;
mod wipe;
pub use open::{
    init_postgresql, init_store, open_for_changes, open_for_login, open_for_reading,
    postgresql_schema_version, rekey_store, InitReport, RekeyReport, PG_SCHEMA_VERSION,
};
pub use sqlite::SqliteStore;
pub use transfer::{hashed_code, EnrolledUser};
pub use wipe::install as prepare_sqlite;

/// The SQLite schema this build reads and writes (`PRAGMA user_version`). Version 1
/// had a table per kind of row with one factor per user; version 2 one opaque row per
/// user; version 3 the tables of version 4 but `remembered`.
pub const SCHEMA_VERSION: i64 = 4;

/// The name of a user's first factor.
pub const DEFAULT_FACTOR: &str = "default";

/// The most factors one user may have; an enrollment beyond is refused
/// ([`StoreError::TooManyFactors`]), checked in the enrollment's transaction.
pub const MAX_FACTORS: usize = 8;

/// One enrolled factor.
#[derive(Debug, Clone)]
pub struct Factor {
    /// Names this enrollment; never reused, even after the factor is removed.
    pub id: i64,
    pub name: String,
    pub secret: SecretKey,
    pub params: OtpParams,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// The last time step accepted; only later steps are accepted.
    pub last_step: Option<i64>,
}

/// What a login needs to know before asking for a code.
#[derive(Debug, Clone, Default)]
pub struct LoginState {
    /// Every factor of the user, `default` first, then in the order enrolled.
    pub factors: Vec<Factor>,
    pub pair: PairFailures,
    pub user: UserFailures,
    /// Until when the source was remembered for the user (`remember_source`), if it was.
    pub remembered_until: Option<i64>,
}

/// What a login that passed writes besides its step, in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed<'a> {
    /// The source whose failures are forgotten; the attempt is given back to the user's
    /// hourly count.
    pub source: &'a str,
    /// `remember_source`: the remote address the code is not asked again from, and
    /// until when.
    pub remember: Option<(&'a str, i64)>,
}

/// Whether an answer may be checked ([`Store::begin_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted as a failure until [`Store::attempt_succeeded`] says otherwise.
    Allowed,
    /// The pair or the user is locked: refused unchecked, nothing written.
    Throttled { wait_secs: u64 },
}

/// What recording an accepted time step found ([`Store::accept_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step was later than the factor's last one and is now recorded.
    Accepted,
    /// The factor already accepted this step or a later one.
    Replayed,
    /// The factor checked against is gone (removed or replaced during the login).
    FactorChanged,
}

/// How an enrollment treats a factor of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollMode {
    /// Refused with [`StoreError::Exists`] when the user has a factor of that name.
    New,
    /// A first factor, which a password alone may allow: refused when the user has any
    /// factor ([`StoreError::Exists`] for one of that name, else
    /// [`StoreError::FactorsChanged`]).
    First,
    /// Another factor, after the caller proved a code or recovery code of the user's:
    /// refused when the user has a factor of that name, or none any more (removed
    /// while the caller was typing: [`StoreError::FactorsChanged`]).
    Another,
    /// Replaces the factor of that name, keeping its last accepted step. `expected`:
    /// the id of the factor the caller proved possession of; refused with
    /// [`StoreError::Exists`] when the current factor is another one (or none). `None`:
    /// whatever is there (root).
    Replace { expected: Option<i64> },
}

/// What an enrollment writes, in one transaction.
#[derive(Debug)]
pub struct Enrollment<'a> {
    pub name: &'a str,
    pub secret: &'a SecretKey,
    pub params: OtpParams,
    pub mode: EnrollMode,
    /// The user's new recovery codes, replacing the old set; `None` keeps it.
    pub recovery_codes: Option<&'a [HashedCode]>,
    /// The step of the last confirmation code: recorded as used, so that the code typed
    /// to confirm cannot also open a login.
    pub confirmed_step: Option<i64>,
}

/// One factor in `totp-admin list` / `status`: no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorSummary {
    pub name: String,
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u64,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// One enrolled user in `totp-admin list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user: String,
    pub factors: Vec<FactorSummary>,
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
    /// Written by a newer or older version of pam_totp (`0`: no tables at all).
    Schema { found: i64 },
    /// A stored value is out of range (edited by hand?).
    Corrupt(String),
    /// The configured backend is not part of this build.
    Unsupported(String),
    /// The PostgreSQL server: not reached within the deadline, TLS or login refused, or a
    /// statement failed.
    Remote(String),
    /// An enrollment met a factor it did not expect: `EnrollMode::New` over an existing
    /// factor, or `Replace` whose expected factor is gone or was replaced meanwhile.
    Exists { user: String, name: String },
    /// The host key: missing, unreadable, insecure, or not the key the factors were
    /// sealed with.
    KeyFile(PathBuf, String),
    /// An enrollment of a new name for a user who has [`MAX_FACTORS`] already.
    TooManyFactors { user: String },
    /// An enrollment whose premise no longer holds: `First` for a user enrolled
    /// meanwhile, `Another` for a user whose factors were all removed meanwhile.
    FactorsChanged { user: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Missing(p) => write!(
                f,
                "store {} is missing: restore it from a backup, or create an empty one with: \
                 totp-admin store init",
                p.display()
            ),
            StoreError::Insecure(p, why) => write!(f, "store {}: refused: {why}", p.display()),
            StoreError::Sqlite(e) => write!(f, "store: {e}"),
            StoreError::Schema { found: 0 } => f.write_str(
                "store has no tables (an empty or truncated file?): restore it from a backup, \
                 or run totp-admin store init for a new, empty store",
            ),
            StoreError::Schema { found } if *found < SCHEMA_VERSION => write!(
                f,
                "store schema version {found} is older than this pam_totp reads: run \
                 totp-admin store init to migrate it"
            ),
            StoreError::Schema { found } => write!(
                f,
                "store schema version {found} is newer than this pam_totp reads: install the \
                 pam_totp that wrote it"
            ),
            StoreError::Corrupt(why) => write!(f, "store: corrupt row: {why}"),
            StoreError::Unsupported(why) => write!(f, "store: {why}"),
            StoreError::Remote(why) => write!(f, "store: postgresql: {why}"),
            StoreError::Exists { user, name } => {
                write!(f, "a factor named {name} was enrolled for {user} meanwhile")
            }
            StoreError::KeyFile(p, why) => write!(f, "store key {}: {why}", p.display()),
            StoreError::TooManyFactors { user } => write!(
                f,
                "{user} has {MAX_FACTORS} factors, the most a user may have: remove one first"
            ),
            StoreError::FactorsChanged { user } => write!(
                f,
                "the factors of {user} were changed meanwhile: nothing was written"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The narrow interface between the decision logic (and `totp-admin`) and a store.
pub trait Store {
    /// The user's factors (keys unsealed) and the throttle counters of (user, source).
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState>;
    /// Decides whether an answer may be checked, and counts it, in one atomic step:
    /// when the pair is locked at `now` or the user's hourly count has reached
    /// `user_max_failures`, `Throttled` and nothing written; else one failure more for
    /// the pair (locking it per [`crate::throttle::pair_after_failure`]) and for the
    /// user's window, and `Allowed`.
    fn begin_attempt(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<Attempt>;
    /// After a success: forgets the pair's failures, gives the attempt back to the
    /// user's hourly count and remembers the source when asked to, in one transaction.
    fn attempt_succeeded(&self, user: &str, passed: &Passed<'_>) -> Result<()>;
    /// Records `step` for the factor `factor_id` of `user` only if it is later than the
    /// factor's last accepted step, in one conditional statement: exactly one of
    /// several racing callers with the same step gets `Accepted`.
    fn accept_step(&self, user: &str, factor_id: i64, step: i64, now: i64) -> Result<StepOutcome>;
    /// A login's code: [`Store::accept_step`] and, when `Accepted`,
    /// [`Store::attempt_succeeded`], in one transaction (one commit per success).
    fn accept_login(
        &self,
        user: &str,
        factor_id: i64,
        step: i64,
        now: i64,
        passed: &Passed<'_>,
    ) -> Result<StepOutcome>;
    /// Marks an unused recovery code matching `normalized` used, in one conditional
    /// statement: exactly one racing caller gets `true`.
    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool>;
    /// When the user was first seen mandatory and unenrolled (recording `now` the first time).
    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64>;
    /// Writes a confirmed factor (and, when given, a new set of recovery codes) in one
    /// transaction, forgetting the user's remembered sources; returns the new factor's id.
    fn enroll(&self, user: &str, enrollment: &Enrollment<'_>, now: i64) -> Result<i64>;
    /// Removes the factor `name`, or with `None` every factor, the recovery codes and
    /// the throttle rows; and the user's remembered sources either way. The first mandatory sighting stays (a reset grants no new
    /// grace period), and so does the last accepted step (a factor enrolled later
    /// starts after it). Returns the number of factors removed.
    fn remove_factors(&self, user: &str, name: Option<&str>) -> Result<u32>;
    /// Whether the store holds anything under exactly this name.
    fn has_records(&self, user: &str) -> Result<bool>;
    /// Clears every throttle counter and remembered source of the user; `false` when
    /// there was no throttle counter.
    fn unlock(&self, user: &str) -> Result<bool>;
    /// Replaces the user's recovery codes.
    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()>;
    /// Unused recovery codes left.
    fn recovery_codes_left(&self, user: &str) -> Result<u32>;
    /// Every enrolled user, sorted by name, without keys.
    fn list(&self) -> Result<Vec<UserSummary>>;
    /// The user's throttle counters for every source, sorted by source, and the
    /// per-user ceiling window (for `totp-admin status`: is the user locked anywhere?).
    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)>;
    /// Every enrolled user with factors and recovery codes (`store copy`).
    fn export(&self) -> Result<Vec<EnrolledUser>>;
    /// Writes a copied user's factors and recovery codes, replacing factors of the same
    /// names; a later last step already recorded here is kept.
    fn import(&self, user: &EnrolledUser) -> Result<()>;
}

/// Whether an enrollment of the factor `name` may be written, inside the backend's
/// transaction: `current` is the id of the user's factor of that name, `count` how
/// many factors the user has. The one rule both backends apply.
pub(crate) fn check_enrollment(
    user: &str,
    name: &str,
    mode: EnrollMode,
    current: Option<i64>,
    count: usize,
) -> Result<()> {
    let exists = || StoreError::Exists {
        user: user.to_string(),
        name: name.to_string(),
    };
    let changed = || StoreError::FactorsChanged {
        user: user.to_string(),
    };
    match mode {
        EnrollMode::New | EnrollMode::First | EnrollMode::Another if current.is_some() => {
            return Err(exists())
        }
        EnrollMode::First if count > 0 => return Err(changed()),
        EnrollMode::Another if count == 0 => return Err(changed()),
        EnrollMode::Replace { expected: Some(id) } if current != Some(id) => return Err(exists()),
        _ => {}
    }
    if current.is_none() && count >= MAX_FACTORS {
        return Err(StoreError::TooManyFactors {
            user: user.to_string(),
        });
    }
    Ok(())
}

/// Checks that the store and its directory are root's alone. A missing file is reported
/// as such, so the caller can tell "never created" from "tampered with".
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
    let dir_meta = std::fs::symlink_metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::Missing(owned()),
        _ => StoreError::Insecure(owned(), format!("directory {}: {e}", dir.display())),
    })?;
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

/// A private directory (0700) for a unit test's store, removed however the test ends.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(name: &str) -> TestDir {
        use std::os::unix::fs::PermissionsExt;
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
