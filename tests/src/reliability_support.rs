//! What the reliability tests (tests/tests/reliability.rs) and their driver
//! (`pam-stress`) agree on: the names and keys of many enrolled users, a store holding
//! them, and a PAM service that libpam reads from the sandbox's /etc/pam.d.

use pam_totp::otp::{Algorithm, OtpParams};
use pam_totp::secret::SecretKey;
use pam_totp::store::{Enrollment, SqliteStore, Store};
use std::path::Path;

/// The parameters every user here is enrolled with.
pub const PARAMS: OtpParams = OtpParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 30,
};

/// User `index` of the users named `prefix`: `load17`.
pub fn user(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// User `index`'s key: 20 bytes, different for every user and prefix.
pub fn secret(prefix: &str, index: usize) -> SecretKey {
    let mut bytes = format!("{prefix}-{index:016}").into_bytes();
    bytes.resize(20.max(bytes.len()), b'.');
    SecretKey::from_bytes(bytes)
}

/// Enrolls `count` users `prefix0..prefix{count-1}` into the store at `path`
/// (created when missing). One user is enrolled through the library, the rest are
/// copies of its row with their own name and key, written in one transaction: a
/// store with 80,000 users is made in about a second.
pub fn enroll_many(path: &Path, prefix: &str, count: usize) {
    let template = format!("{prefix}-template");
    {
        let store = SqliteStore::open_or_create(path).expect("store");
        let key = secret(prefix, usize::MAX);
        let enrollment = Enrollment {
            secret: &key,
            params: PARAMS,
            recovery_codes: &[],
        };
        store.enroll(&template, &enrollment, 1).expect("enroll");
    }
    let mut conn = rusqlite::Connection::open(path).expect("open the store");
    let tx = conn.transaction().unwrap();
    tx.execute(
        "CREATE TEMP TABLE template AS SELECT * FROM users WHERE user = ?1",
        [&template],
    )
    .unwrap();
    {
        let mut set = tx
            .prepare("UPDATE temp.template SET user = ?1, secret = ?2")
            .unwrap();
        let mut copy = tx
            .prepare("INSERT INTO main.users SELECT * FROM temp.template")
            .unwrap();
        for i in 0..count {
            set.execute(rusqlite::params![
                user(prefix, i),
                secret(prefix, i).as_bytes()
            ])
            .unwrap();
            copy.execute([]).unwrap();
        }
    }
    tx.execute("DELETE FROM main.users WHERE user = ?1", [&template])
        .unwrap();
    tx.execute("DROP TABLE temp.template", []).unwrap();
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

/// `PRAGMA integrity_check` of the store at `path`, as SQLite words it ("ok").
pub fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open the store");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}
