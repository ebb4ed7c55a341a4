//! Version 1 of the SQLite store: a table each for users, throttle rows (user, source)
//! and recovery codes. `migrate` rewrites such a store as version 2, one row per user,
//! inside the caller's transaction.

use super::record::{Record, StoredFactor};
use super::{hashed_code, Result, StoreError};
use crate::otp::{Algorithm, OtpParams};
use crate::secret::SecretKey;
use crate::throttle::{PairFailures, UserFailures};
use rusqlite::{params, Connection};
use std::collections::BTreeMap;

/// Reads every version-1 row into records, replaces the three tables with `schema`
/// and writes the records there.
pub(super) fn migrate(c: &Connection, schema: &str) -> Result<()> {
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    {
        let mut stmt = c.prepare(
            "SELECT user, secret, algorithm, digits, period, created_at, confirmed_at,
                    last_used_at, last_step, mandatory_since, window_start, window_failures
             FROM users",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let user: String = r.get(0)?;
            let factor = match r.get::<_, Option<Vec<u8>>>(1)? {
                None => None,
                Some(secret) => Some(StoredFactor {
                    secret: SecretKey::from_bytes(secret),
                    params: OtpParams {
                        algorithm: r
                            .get::<_, Option<String>>(2)?
                            .unwrap_or_default()
                            .parse::<Algorithm>()
                            .map_err(StoreError::Corrupt)?,
                        digits: u32_from(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                        period: r.get::<_, Option<i64>>(4)?.unwrap_or(0).max(0) as u64,
                    },
                    created_at: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    confirmed_at: r.get(6)?,
                }),
            };
            let record = Record {
                factor,
                last_used_at: r.get(7)?,
                last_step: r.get(8)?,
                mandatory_since: r.get(9)?,
                window: UserFailures {
                    window_start: r.get(10)?,
                    failures: u32_from(r.get(11)?),
                },
                ..Record::default()
            };
            records.insert(user, record);
        }
    }
    {
        let mut stmt = c.prepare("SELECT user, source, failures, locked_until FROM throttle")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let pair = PairFailures {
                failures: u32_from(r.get(2)?),
                locked_until: r.get(3)?,
            };
            let source: String = r.get(1)?;
            let record = records.entry(r.get(0)?).or_default();
            record.set_pair(&source, pair, 0);
        }
    }
    {
        let mut stmt = c.prepare("SELECT user, salt, hash, used_at FROM recovery_codes")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let user: String = r.get(0)?;
            let code = hashed_code(&user, r.get(1)?, r.get(2)?)?;
            let used_at = r.get(3)?;
            records
                .entry(user)
                .or_default()
                .recovery_codes
                .push((code, used_at));
        }
    }
    c.execute_batch("DROP TABLE users; DROP TABLE throttle; DROP TABLE recovery_codes;")?;
    c.execute_batch(schema)?;
    let mut insert = c.prepare("INSERT INTO users (user, record) VALUES (?1, ?2)")?;
    for (user, record) in &records {
        // What the login would refuse as corrupt stays refused after the migration.
        let bytes = record.encode();
        super::Record::decode(user, &bytes)?;
        insert.execute(params![user, &bytes[..]])?;
    }
    Ok(())
}

fn u32_from(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use crate::store::{SqliteStore, Store};

    /// The version-1 schema and rows as that version wrote them.
    const V1: &str = "
CREATE TABLE users (user TEXT PRIMARY KEY NOT NULL, secret BLOB, algorithm TEXT, digits INTEGER,
    period INTEGER, created_at INTEGER, confirmed_at INTEGER, last_used_at INTEGER,
    last_step INTEGER, mandatory_since INTEGER, window_start INTEGER NOT NULL DEFAULT 0,
    window_failures INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE throttle (user TEXT NOT NULL, source TEXT NOT NULL, failures INTEGER NOT NULL,
    locked_until INTEGER NOT NULL, PRIMARY KEY (user, source)) WITHOUT ROWID;
CREATE TABLE recovery_codes (user TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    used_at INTEGER, PRIMARY KEY (user, salt)) WITHOUT ROWID;
INSERT INTO users VALUES ('alice', x'3132333435363738393031323334353637383930', 'SHA256', 8, 60,
    100, 101, 200, 5000, NULL, 150, 2);
INSERT INTO users (user, mandatory_since) VALUES ('bob', 77);
INSERT INTO throttle VALUES ('alice', '192.0.2.1', 3, 0), ('alice', 'pts/1', 6, 999);
INSERT INTO recovery_codes VALUES
    ('alice', x'01010101010101010101010101010101', zeroblob(32), NULL),
    ('alice', x'02020202020202020202020202020202', zeroblob(32), 300);
PRAGMA user_version = 1;
";

    #[test]
    fn a_version_1_store_is_migrated_row_by_row() {
        let tmp = crate::store::TestDir::new("v1");
        let path = tmp.0.join("totp.db");
        let _ = std::fs::remove_file(&path);
        crate::store::prepare_sqlite();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(V1)
            .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();

        let store = SqliteStore::open_or_create(&path).unwrap();
        let alice = store.login_state("alice", "pts/1").unwrap();
        let f = alice.factor.unwrap();
        assert_eq!(f.secret.as_bytes(), b"12345678901234567890");
        assert_eq!((f.params.digits, f.params.period), (8, 60));
        assert_eq!(
            (f.last_step, f.last_used_at, f.confirmed_at),
            (Some(5000), Some(200), Some(101))
        );
        assert_eq!((alice.pair.failures, alice.pair.locked_until), (6, 999));
        assert_eq!((alice.user.window_start, alice.user.failures), (150, 2));
        assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
        assert_eq!(store.throttle_state("alice").unwrap().0.len(), 2);
        assert_eq!(store.first_mandatory_sighting("bob", 1000).unwrap(), 77);
        assert_eq!(store.list().unwrap().len(), 1);
        drop(store);
        // Opened for a login: the new schema, nothing left of the old tables.
        let login = SqliteStore::open(&path).unwrap();
        assert!(login.login_state("alice", "x").unwrap().factor.is_some());
    }
}
