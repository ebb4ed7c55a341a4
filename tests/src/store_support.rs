//! Direct access to a SQLite store's tables for test and benchmark set-up: many users
//! written in one transaction, and state moved as if time had passed. Plain SQL on the
//! tables of schema 4 (pam_totp/src/store.rs describes them); keys sealed with the
//! store's own sealing under the host key file the module reads.

use pam_totp::otp::OtpParams;
use pam_totp::secret::SecretKey;
use pam_totp::store::seal::{create_host_key, HostKey};
use pam_totp::store::{SqliteStore, DEFAULT_FACTOR};
use std::path::Path;

/// A connection of the test's own to the store at `path`.
pub fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    // SQLite takes its allocator before its first use, as the module's does.
    pam_totp::store::prepare_sqlite();
    rusqlite::Connection::open(path)
}

/// A user's `default` factor, enrolled at unix time `created_at`, no recovery codes.
pub struct Enrolled {
    pub secret: SecretKey,
    pub params: OtpParams,
    pub created_at: i64,
}

pub fn enrolled(secret: SecretKey, params: OtpParams, created_at: i64) -> Enrolled {
    Enrolled {
        secret,
        params,
        created_at,
    }
}

/// Seals `secret` as the key of factor `name` of `user` under the host key at `key`,
/// as the store does.
pub fn seal(key: &Path, user: &str, name: &str, secret: &SecretKey) -> Vec<u8> {
    HostKey::load(key)
        .expect("the host key")
        .seal(user, name, secret)
        .expect("seal")
}

/// Writes the `default` factor of each user into the store at `path` (created with its
/// host key `key`, as `totp-admin store init` does, when missing) in one transaction,
/// replacing factors of the same users: what enrolling them one by one would leave,
/// without an fsync each.
pub fn write_factors(path: &Path, key: &Path, users: impl Iterator<Item = (String, Enrolled)>) {
    create_host_key(key).expect("host key");
    SqliteStore::init(path, key).expect("store init");
    let host_key = HostKey::load(key).expect("the host key");
    let mut conn = connect(path).expect("open the store");
    let tx = conn.transaction().unwrap();
    {
        let mut delete = tx
            .prepare("DELETE FROM factors WHERE user = ?1 AND name = ?2")
            .unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO factors (user, name, sealed_key, algorithm, digits, period, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        for (user, e) in users {
            delete
                .execute(rusqlite::params![user, DEFAULT_FACTOR])
                .unwrap();
            insert
                .execute(rusqlite::params![
                    user,
                    DEFAULT_FACTOR,
                    host_key.seal(&user, DEFAULT_FACTOR, &e.secret).unwrap(),
                    e.params.algorithm.as_str(),
                    e.params.digits,
                    e.params.period as i64,
                    e.created_at
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Sets when `user` was first seen mandatory and unenrolled.
pub fn set_mandatory_since(path: &Path, user: &str, since: i64) {
    let conn = connect(path).expect("open the store");
    let changed = conn
        .execute(
            "UPDATE users SET mandatory_since = ?2 WHERE user = ?1",
            rusqlite::params![user, since],
        )
        .unwrap();
    assert_eq!(changed, 1, "no row for {user:?}");
}

/// Moves the moment `user` was first seen mandatory and unenrolled `secs` back.
pub fn move_mandatory_since_back(path: &Path, user: &str, secs: i64) {
    let conn = connect(path).expect("open the store");
    let changed = conn
        .execute(
            "UPDATE users SET mandatory_since = mandatory_since - ?2 WHERE user = ?1",
            rusqlite::params![user, secs],
        )
        .unwrap();
    assert_eq!(changed, 1, "no row for {user:?}");
}

/// Forgets every accepted step and every failure, in one transaction: the state right
/// after enrollment.
pub fn forget_logins(path: &Path) {
    let mut conn = connect(path).expect("open the store");
    let tx = conn.transaction().unwrap();
    tx.execute_batch(
        "UPDATE factors SET last_step = NULL, last_used_at = NULL;
         UPDATE users SET window_start = 0, window_failures = 0;
         DELETE FROM throttle;",
    )
    .unwrap();
    tx.commit().unwrap();
}

/// The last accepted step of `user`'s `default` factor (`None`: none yet, or no factor).
pub fn last_step(path: &Path, user: &str) -> Option<i64> {
    let conn = connect(path).expect("open the store");
    conn.query_row(
        "SELECT last_step FROM factors WHERE user = ?1 AND name = ?2",
        rusqlite::params![user, DEFAULT_FACTOR],
        |r| r.get(0),
    )
    .ok()
    .flatten()
}

/// The `n`th SQL block of docs/STORE.md (0: SQLite, 1: PostgreSQL), as an admin
/// would paste it.
pub fn documented_query(n: usize) -> String {
    let doc = std::fs::read_to_string(crate::workspace().join("docs/STORE.md")).unwrap();
    doc.split("```sql\n")
        .nth(n + 1)
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("docs/STORE.md has no SQL block {n}"))
        .to_string()
}

/// Checks the rows of [`documented_query`] (`|`-separated, as sqlite3 and psql's
/// unaligned output print them): `locked` enrolled, used and locked from `source` now;
/// `unused` enrolled, never used, locked from nowhere; nobody else.
pub fn assert_documented_rows(text: &str, locked: &str, source: &str, unused: &str) {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    // "2026-12-03 20:50:00" (sqlite3), with "+00" after it (psql).
    let stamp = |s: &str| s.len() >= 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[13] == b':';
    let (first, second) = (&rows[0], &rows[1]);
    assert!(
        first[..2] == [locked, "default"]
            && stamp(first[2])
            && stamp(first[3])
            && first[4] == source
            && stamp(first[5]),
        "{text}"
    );
    assert!(
        second[..2] == [unused, "default"] && stamp(second[2]) && second[3..] == ["", "", ""],
        "{text}"
    );
}
