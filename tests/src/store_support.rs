//! Direct access to a SQLite store's rows for test and benchmark set-up: many users
//! written in one transaction, and state moved as if time had passed. The rows are
//! [`Record`]s, read and written with the store's own encoding.

use pam_totp::otp::OtpParams;
use pam_totp::secret::SecretKey;
use pam_totp::store::{Record, SqliteStore, StoredFactor};
use std::path::Path;

/// A connection of the test's own to the store at `path`, after the same SQLite set-up
/// as the module's (its mutexes, its wiping allocator).
pub fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    pam_totp::store::prepare_sqlite();
    rusqlite::Connection::open(path)
}

/// A record for a user enrolled at unix time `now` with `secret`, no recovery codes.
pub fn enrolled(secret: SecretKey, params: OtpParams, now: i64) -> Record {
    Record {
        factor: Some(StoredFactor {
            secret,
            params,
            created_at: now,
            confirmed_at: Some(now),
        }),
        ..Record::default()
    }
}

/// Writes `records` into the store at `path` (created when missing) in one
/// transaction, replacing rows of the same users: what enrolling them one by one would
/// leave, without an fsync each.
pub fn write_records(path: &Path, records: impl Iterator<Item = (String, Record)>) {
    drop(SqliteStore::open_or_create(path).expect("store"));
    let mut conn = connect(path).expect("open the store");
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT OR REPLACE INTO users (user, record) VALUES (?1, ?2)")
            .unwrap();
        for (user, record) in records {
            insert
                .execute(rusqlite::params![user, &record.encode()[..]])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// Lets `edit` change every row of the store at `path` (only `user`'s, when given), in
/// one transaction.
pub fn edit_records(path: &Path, user: Option<&str>, mut edit: impl FnMut(&mut Record)) {
    let mut conn = connect(path).expect("open the store");
    let tx = conn.transaction().unwrap();
    {
        let mut select = tx
            .prepare("SELECT user, record FROM users WHERE ?1 IS NULL OR user = ?1")
            .unwrap();
        let rows: Vec<(String, Vec<u8>)> = select
            .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(user.is_none() || rows.len() == 1, "no row for {user:?}");
        let mut update = tx
            .prepare("UPDATE users SET record = ?2 WHERE user = ?1")
            .unwrap();
        for (name, bytes) in rows {
            let mut record = Record::decode(&name, &bytes).unwrap();
            edit(&mut record);
            update
                .execute(rusqlite::params![name, &record.encode()[..]])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}
