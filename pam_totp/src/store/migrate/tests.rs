//! Real stores of schema 1 and 2, made with the SQL and the record encoding those
//! versions wrote, migrated by `store init`.

use crate::store::seal::create_host_key;
use crate::store::{SqliteStore, Store, StoreError, TestDir, SCHEMA_VERSION};
use rusqlite::Connection;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
INSERT INTO users (user, last_step) VALUES ('carol', 4000);
INSERT INTO throttle VALUES ('alice', '192.0.2.1', 3, 0), ('alice', 'pts/1', 6, 999);
INSERT INTO recovery_codes VALUES
    ('alice', x'01010101010101010101010101010101', zeroblob(32), NULL),
    ('alice', x'02020202020202020202020202020202', zeroblob(32), 300);
PRAGMA user_version = 1;
";

/// Schema 2's table.
const V2: &str = "CREATE TABLE users(user TEXT PRIMARY KEY,record BLOB NOT NULL)WITHOUT ROWID;
PRAGMA user_version = 2;";

/// A schema-2 record, encoded as that version did.
#[derive(Default)]
struct V2Record {
    /// key, algorithm (1 SHA1, 2 SHA256, 3 SHA512), digits, period, created_at
    factor: Option<(Vec<u8>, u8, u8, u64, i64)>,
    last_used_at: Option<i64>,
    last_step: Option<i64>,
    mandatory_since: Option<i64>,
    window: (i64, u32),
    sources: Vec<(&'static str, u32, i64)>,
    recovery_codes: Vec<([u8; 16], Option<i64>)>,
}

impl V2Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![2u8];
        let opt = |out: &mut Vec<u8>, v: Option<i64>| match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
        };
        match &self.factor {
            None => out.push(0),
            Some((key, algorithm, digits, period, created_at)) => {
                out.push(1);
                out.extend_from_slice(&(key.len() as u32).to_be_bytes());
                out.extend_from_slice(key);
                out.push(*algorithm);
                out.push(*digits);
                out.extend_from_slice(&period.to_be_bytes());
                out.extend_from_slice(&created_at.to_be_bytes());
                opt(&mut out, Some(*created_at));
            }
        }
        opt(&mut out, self.last_used_at);
        opt(&mut out, self.last_step);
        opt(&mut out, self.mandatory_since);
        out.extend_from_slice(&self.window.0.to_be_bytes());
        out.extend_from_slice(&self.window.1.to_be_bytes());
        out.extend_from_slice(&(self.sources.len() as u32).to_be_bytes());
        for (source, failures, locked_until) in &self.sources {
            out.extend_from_slice(&(source.len() as u32).to_be_bytes());
            out.extend_from_slice(source.as_bytes());
            out.extend_from_slice(&failures.to_be_bytes());
            out.extend_from_slice(&locked_until.to_be_bytes());
        }
        out.extend_from_slice(&(self.recovery_codes.len() as u32).to_be_bytes());
        for (salt, used_at) in &self.recovery_codes {
            out.extend_from_slice(salt);
            out.extend_from_slice(&[0u8; 32]);
            opt(&mut out, *used_at);
        }
        out
    }
}

/// A store file at `dir/totp.db` made by `sql`, root's alone, and a host key beside it.
fn old_store(dir: &Path, sql: &str) -> (PathBuf, PathBuf) {
    let path = dir.join("totp.db");
    let key = dir.join("store.key");
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    create_host_key(&key).unwrap();
    (path, key)
}

/// Before `store init`, every way of opening refuses, saying what to run.
fn assert_refused_until_migrated(path: &Path, key: &Path, found: i64) {
    let login = SqliteStore::open_for_login(path, key).unwrap();
    let err = login.login_state("alice", "x").unwrap_err();
    assert!(
        matches!(err, StoreError::Schema { found: f } if f == found),
        "{err}"
    );
    assert!(
        err.to_string().contains("run totp-admin store init"),
        "{err}"
    );
    for open in [SqliteStore::open_for_reading, SqliteStore::open_for_changes] {
        let err = open(path, key).err().unwrap();
        assert!(
            err.to_string().contains("run totp-admin store init"),
            "{err}"
        );
    }
}

/// The key in clear is gone from the file and its WAL, free pages included.
fn assert_sealed(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
    assert!(!bytes.windows(20).any(|w| w == b"12345678901234567890"));
}

#[test]
fn a_version_1_store_is_migrated_row_by_row() {
    let tmp = TestDir::new("migrate-v1");
    let (path, key) = old_store(&tmp.0, V1);
    assert_refused_until_migrated(&path, &key, 1);

    assert_eq!(SqliteStore::init(&path, &key).unwrap(), 1);
    assert_eq!(SqliteStore::init(&path, &key).unwrap(), SCHEMA_VERSION);
    let store = SqliteStore::open_for_login(&path, &key).unwrap();
    let alice = store.login_state("alice", "pts/1").unwrap();
    assert_eq!(alice.factors.len(), 1);
    let f = &alice.factors[0];
    assert_eq!(f.name, "default");
    assert_eq!(f.secret.as_bytes(), b"12345678901234567890");
    assert_eq!((f.params.digits, f.params.period), (8, 60));
    assert_eq!(
        (f.last_step, f.last_used_at, f.created_at),
        (Some(5000), Some(200), 100)
    );
    assert_eq!((alice.pair.failures, alice.pair.locked_until), (6, 999));
    assert_eq!((alice.user.window_start, alice.user.failures), (150, 2));
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    assert_eq!(store.throttle_state("alice").unwrap().0.len(), 2);
    assert_eq!(store.first_mandatory_sighting("bob", 1000).unwrap(), 77);
    assert_eq!(store.list().unwrap().len(), 1);
    // carol's factor was removed after step 4000: enrolling again starts after it.
    let secret = crate::secret::SecretKey::from_bytes(b"12345678901234567890".to_vec());
    let id = store
        .enroll(
            "carol",
            &crate::store::Enrollment {
                name: "default",
                secret: &secret,
                params: f.params,
                mode: crate::store::EnrollMode::New,
                recovery_codes: None,
                confirmed_step: None,
            },
            1,
        )
        .unwrap();
    assert_eq!(
        store.accept_step("carol", id, 4000, 1).unwrap(),
        crate::store::StepOutcome::Replayed
    );
    drop(store);
    assert_sealed(&path);
}

#[test]
fn a_version_2_store_is_migrated_record_by_record() {
    let tmp = TestDir::new("migrate-v2");
    let (path, key) = old_store(&tmp.0, V2);
    let records = [
        (
            "alice",
            V2Record {
                factor: Some((b"12345678901234567890".to_vec(), 2, 8, 60, 100)),
                last_used_at: Some(200),
                last_step: Some(5000),
                window: (150, 2),
                sources: vec![("192.0.2.1", 3, 0), ("pts/1", 6, 999)],
                recovery_codes: vec![([1; 16], None), ([2; 16], Some(300))],
                ..V2Record::default()
            },
        ),
        (
            "bob",
            V2Record {
                mandatory_since: Some(77),
                ..V2Record::default()
            },
        ),
        (
            "carol",
            V2Record {
                last_step: Some(4000),
                ..V2Record::default()
            },
        ),
    ];
    {
        let conn = Connection::open(&path).unwrap();
        for (user, record) in &records {
            conn.execute(
                "INSERT INTO users (user, record) VALUES (?1, ?2)",
                rusqlite::params![user, record.encode()],
            )
            .unwrap();
        }
    }
    assert_refused_until_migrated(&path, &key, 2);

    assert_eq!(SqliteStore::init(&path, &key).unwrap(), 2);
    let store = SqliteStore::open_for_changes(&path, &key).unwrap();
    let alice = store.login_state("alice", "pts/1").unwrap();
    let f = &alice.factors[0];
    assert_eq!(f.secret.as_bytes(), b"12345678901234567890");
    assert_eq!(f.params.algorithm, crate::otp::Algorithm::Sha256);
    assert_eq!((f.params.digits, f.params.period), (8, 60));
    assert_eq!(
        (f.last_step, f.last_used_at, f.created_at),
        (Some(5000), Some(200), 100)
    );
    assert_eq!((alice.pair.failures, alice.pair.locked_until), (6, 999));
    assert_eq!((alice.user.window_start, alice.user.failures), (150, 2));
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    assert_eq!(store.first_mandatory_sighting("bob", 1000).unwrap(), 77);
    assert!(store.login_state("bob", "x").unwrap().factors.is_empty());
    assert_eq!(store.list().unwrap().len(), 1);
    let retired: Option<i64> = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT retired_step FROM users WHERE user = 'carol'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(retired, Some(4000));
    drop(store);
    assert_sealed(&path);
}

/// A record that cannot be read stops the migration, and the store stays as it was.
#[test]
fn a_damaged_record_leaves_the_store_untouched() {
    let tmp = TestDir::new("migrate-bad");
    let (path, key) = old_store(&tmp.0, V2);
    Connection::open(&path)
        .unwrap()
        .execute("INSERT INTO users VALUES ('alice', x'0201')", [])
        .unwrap();
    let err = SqliteStore::init(&path, &key).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

/// Schema 3 is schema 4 without `remembered`: a store of this version's making with
/// that table dropped is one.
#[test]
fn a_version_3_store_gains_the_remembered_sources() {
    use crate::store::{EnrollMode, Enrollment, Passed, DEFAULT_FACTOR};
    let tmp = TestDir::new("migrate-v3");
    let path = tmp.0.join("totp.db");
    let key = tmp.0.join("store.key");
    create_host_key(&key).unwrap();
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(SqliteStore::init(&path, &key).unwrap(), 0);
    let secret = crate::secret::SecretKey::from_bytes(b"12345678901234567890".to_vec());
    let enrollment = Enrollment {
        name: DEFAULT_FACTOR,
        secret: &secret,
        params: crate::otp::OtpParams {
            algorithm: crate::otp::Algorithm::Sha1,
            digits: 6,
            period: 30,
        },
        mode: EnrollMode::New,
        recovery_codes: None,
        confirmed_step: None,
    };
    let id = SqliteStore::open_for_changes(&path, &key)
        .unwrap()
        .enroll("alice", &enrollment, 100)
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE remembered; PRAGMA user_version = 3;")
        .unwrap();
    assert_refused_until_migrated(&path, &key, 3);

    assert_eq!(SqliteStore::init(&path, &key).unwrap(), 3);
    let store = SqliteStore::open_for_login(&path, &key).unwrap();
    let passed = Passed {
        source: "192.0.2.1",
        remember: Some(("192.0.2.1", 5000)),
    };
    store.accept_login("alice", id, 10, 200, &passed).unwrap();
    let state = store.login_state("alice", "192.0.2.1").unwrap();
    assert_eq!(state.factors[0].secret.as_bytes(), b"12345678901234567890");
    assert_eq!(state.remembered_until, Some(5000));
    assert_eq!(SCHEMA_VERSION, 4);
}
