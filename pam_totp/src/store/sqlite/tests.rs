//! The SQLite store's semantics, on private stores.

use super::*;
use crate::config::Duration;
use crate::secret::SecretKey;
use crate::store::{EnrollMode, TestDir, DEFAULT_FACTOR, MAX_FACTORS};

const NOW: i64 = 1_800_000_000;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(vec![byte; 20])
}

fn params() -> OtpParams {
    OtpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

fn enroll(
    store: &SqliteStore,
    user: &str,
    name: &str,
    secret: &SecretKey,
    mode: EnrollMode,
    codes: Option<&[HashedCode]>,
    confirmed_step: Option<i64>,
) -> Result<i64> {
    store.enroll(
        user,
        &Enrollment {
            name,
            secret,
            params: params(),
            mode,
            recovery_codes: codes,
            confirmed_step,
        },
        NOW,
    )
}

fn throttle_config() -> ThrottleConfig {
    ThrottleConfig {
        max_failures: 3,
        lockout: Duration(60),
        lockout_max: Duration(3600),
        user_max_failures: 5,
    }
}

#[test]
fn factors_are_listed_default_first_with_their_keys() {
    let store = SqliteStore::in_memory().unwrap();
    let spare = enroll(
        &store,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    let default = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    assert_ne!(spare, default);
    let state = store.login_state("alice", "pts/0").unwrap();
    let names: Vec<_> = state.factors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["default", "spare"]);
    assert_eq!(state.factors[0].secret.as_bytes(), key(1).as_bytes());
    assert_eq!(state.factors[0].id, default);
    assert!(store
        .login_state("bob", "pts/0")
        .unwrap()
        .factors
        .is_empty());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].factors.len(), 2);
    assert_eq!(list[0].factors[0].name, "default");
}

#[test]
fn enroll_new_over_a_factor_is_refused() {
    let store = SqliteStore::in_memory().unwrap();
    enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    let again = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(2),
        EnrollMode::New,
        None,
        None,
    );
    assert!(
        matches!(&again, Err(StoreError::Exists { user, name }) if user == "alice" && name == "default"),
        "{again:?}"
    );
    let state = store.login_state("alice", "x").unwrap();
    assert_eq!(state.factors[0].secret.as_bytes(), key(1).as_bytes());
}

#[test]
fn replace_checks_the_expected_factor_and_keeps_the_last_step() {
    let store = SqliteStore::in_memory().unwrap();
    let first = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", first, 500, NOW).unwrap(),
        StepOutcome::Accepted
    );
    // Replacing what the caller proved: a new id, the old last step.
    let mode = EnrollMode::Replace {
        expected: Some(first),
    };
    let second = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(2),
        mode,
        None,
        Some(100),
    )
    .unwrap();
    assert_ne!(first, second);
    let f = &store.login_state("alice", "x").unwrap().factors[0];
    assert_eq!((f.id, f.last_step), (second, Some(500)));
    assert_eq!(f.secret.as_bytes(), key(2).as_bytes());
    // A second replacement that proved the first factor is refused.
    let stale = enroll(&store, "alice", DEFAULT_FACTOR, &key(3), mode, None, None);
    assert!(matches!(stale, Err(StoreError::Exists { .. })), "{stale:?}");
    // Root replaces whatever is there; with nothing there, it enrolls.
    let root = EnrollMode::Replace { expected: None };
    enroll(&store, "alice", DEFAULT_FACTOR, &key(4), root, None, None).unwrap();
    enroll(&store, "bob", DEFAULT_FACTOR, &key(4), root, None, None).unwrap();
    // A replacement whose factor is gone is refused.
    let gone = EnrollMode::Replace {
        expected: Some(first),
    };
    let carol = enroll(&store, "carol", DEFAULT_FACTOR, &key(5), gone, None, None);
    assert!(matches!(carol, Err(StoreError::Exists { .. })));
}

#[test]
fn accept_step_tells_replays_from_changed_factors() {
    let store = SqliteStore::in_memory().unwrap();
    let id = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        Some(10),
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", id, 10, NOW).unwrap(),
        StepOutcome::Replayed
    );
    assert_eq!(
        store.accept_step("alice", id, 11, NOW).unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(
        store.accept_step("alice", id, 11, NOW).unwrap(),
        StepOutcome::Replayed
    );
    // Another user's factor id is not this user's.
    assert_eq!(
        store.accept_step("bob", id, 12, NOW).unwrap(),
        StepOutcome::FactorChanged
    );
    let replaced = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(2),
        EnrollMode::Replace { expected: None },
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", id, 12, NOW).unwrap(),
        StepOutcome::FactorChanged
    );
    assert_eq!(
        store.accept_step("alice", replaced, 12, NOW).unwrap(),
        StepOutcome::Accepted
    );
    let f = &store.login_state("alice", "x").unwrap().factors[0];
    assert_eq!((f.last_step, f.last_used_at), (Some(12), Some(NOW)));
}

#[test]
fn begin_attempt_counts_and_refuses_without_writing() {
    let store = SqliteStore::in_memory().unwrap();
    let config = throttle_config();
    for _ in 0..3 {
        assert_eq!(
            store.begin_attempt("alice", "a", NOW, &config).unwrap(),
            Attempt::Allowed
        );
    }
    // The third failure locked the pair for 60 s; a refusal writes nothing.
    let before = store.throttle_state("alice").unwrap();
    assert_eq!(
        store.begin_attempt("alice", "a", NOW + 1, &config).unwrap(),
        Attempt::Throttled { wait_secs: 59 }
    );
    assert_eq!(store.throttle_state("alice").unwrap(), before);
    assert_eq!(before.1.failures, 3);
    // Another source still may, up to the user's ceiling of 5 an hour.
    for _ in 0..2 {
        assert_eq!(
            store.begin_attempt("alice", "b", NOW + 2, &config).unwrap(),
            Attempt::Allowed
        );
    }
    assert_eq!(
        store.begin_attempt("alice", "c", NOW + 2, &config).unwrap(),
        Attempt::Throttled {
            wait_secs: 3600 - 2
        }
    );
    // A success gives one back to the user and clears the pair.
    let passed = Passed {
        source: "b",
        remember: None,
    };
    store.attempt_succeeded("alice", &passed).unwrap();
    let (pairs, window) = store.throttle_state("alice").unwrap();
    assert_eq!(window.failures, 4);
    assert_eq!(
        pairs.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(
        store.begin_attempt("alice", "c", NOW + 3, &config).unwrap(),
        Attempt::Allowed
    );
    assert!(store.unlock("alice").unwrap());
    assert!(!store.unlock("alice").unwrap());
    assert_eq!(
        store.throttle_state("alice").unwrap().1,
        UserFailures::default()
    );
}

#[test]
fn sources_are_capped_dropping_the_least_restrictive() {
    let store = SqliteStore::in_memory().unwrap();
    let mut config = throttle_config();
    config.user_max_failures = 0;
    for _ in 0..3 {
        store
            .begin_attempt("alice", "locked", NOW, &config)
            .unwrap();
    }
    for i in 0..MAX_SOURCES + 10 {
        store
            .begin_attempt("alice", &format!("src{i:03}"), NOW, &config)
            .unwrap();
    }
    let (pairs, _) = store.throttle_state("alice").unwrap();
    assert_eq!(pairs.len() as i64, MAX_SOURCES);
    assert!(pairs.iter().any(|(s, p)| s == "locked" && p.failures == 3));
    let long = "x".repeat(1000);
    store.begin_attempt("alice", &long, NOW, &config).unwrap();
    assert_eq!(store.login_state("alice", &long).unwrap().pair.failures, 1);
}

#[test]
fn recovery_codes_are_used_once() {
    let store = SqliteStore::in_memory().unwrap();
    let codes = [
        recovery::hash_new("abcd-efgh-jkmn-pqrs").unwrap(),
        recovery::hash_new("2345-6789-abcd-efgh").unwrap(),
    ];
    enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        Some(&codes),
        None,
    )
    .unwrap();
    let normalized = recovery::normalize(&crate::secret::Answer::from("abcdefghjkmnpqrs")).unwrap();
    assert!(store.use_recovery_code("alice", &normalized, NOW).unwrap());
    assert!(!store.use_recovery_code("alice", &normalized, NOW).unwrap());
    assert!(!store.use_recovery_code("bob", &normalized, NOW).unwrap());
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    // A second factor without codes keeps the set.
    enroll(
        &store,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    store.replace_recovery_codes("alice", &codes).unwrap();
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 2);
    assert_eq!(store.list().unwrap()[0].recovery_codes_left, 2);
}

#[test]
fn a_reset_keeps_the_grace_sighting_only() {
    let store = SqliteStore::in_memory().unwrap();
    let config = throttle_config();
    assert_eq!(store.first_mandatory_sighting("alice", 100).unwrap(), 100);
    assert_eq!(store.first_mandatory_sighting("alice", 200).unwrap(), 100);
    let codes = [recovery::hash_new("abcd-efgh-jkmn-pqrs").unwrap()];
    enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        Some(&codes),
        None,
    )
    .unwrap();
    enroll(
        &store,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    store.begin_attempt("alice", "a", NOW, &config).unwrap();
    // One factor: the other and the codes stay.
    assert_eq!(store.remove_factors("alice", Some("spare")).unwrap(), 1);
    assert_eq!(store.remove_factors("alice", Some("spare")).unwrap(), 0);
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 1);
    assert_eq!(store.remove_factors("alice", None).unwrap(), 1);
    assert!(store.login_state("alice", "a").unwrap().factors.is_empty());
    assert_eq!(store.recovery_codes_left("alice").unwrap(), 0);
    assert_eq!(
        store.throttle_state("alice").unwrap(),
        (Vec::new(), UserFailures::default())
    );
    assert_eq!(store.first_mandatory_sighting("alice", 300).unwrap(), 100);
    assert!(store.has_records("alice").unwrap());
    assert!(!store.has_records("bob").unwrap());
    store.begin_attempt("bob", "a", NOW, &config).unwrap();
    assert!(store.has_records("bob").unwrap());
}

#[test]
fn export_and_import_keep_factors_codes_and_the_later_step() {
    let from = SqliteStore::in_memory().unwrap();
    let codes = [recovery::hash_new("abcd-efgh-jkmn-pqrs").unwrap()];
    let id = enroll(
        &from,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        Some(&codes),
        Some(7),
    )
    .unwrap();
    enroll(
        &from,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    from.accept_step("alice", id, 9, NOW).unwrap();
    let to = SqliteStore::in_memory().unwrap();
    let later = enroll(
        &to,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        Some(50),
    )
    .unwrap();
    assert!(later > 0);
    let users = from.export().unwrap();
    assert_eq!(users.len(), 1);
    to.import(&users[0]).unwrap();
    let state = to.login_state("alice", "x").unwrap();
    assert_eq!(state.factors.len(), 2);
    assert_eq!(state.factors[0].last_step, Some(50));
    assert_eq!(state.factors[0].last_used_at, Some(NOW));
    assert_eq!(state.factors[1].secret.as_bytes(), key(2).as_bytes());
    assert_eq!(to.recovery_codes_left("alice").unwrap(), 1);
}

#[test]
fn opening_never_creates_and_reading_never_writes() {
    let tmp = TestDir::new("sqlite-open");
    let path = tmp.0.join("totp.db");
    let key_file = tmp.0.join("store.key");
    for open in [
        SqliteStore::open_for_login,
        SqliteStore::open_for_reading,
        SqliteStore::open_for_changes,
    ] {
        assert!(matches!(
            open(&path, &key_file),
            Err(StoreError::Missing(_))
        ));
        assert!(!path.exists());
    }
    let missing = StoreError::Missing(path.clone()).to_string();
    assert!(
        missing.ends_with("is missing: restore it from a backup, or create an empty one with: totp-admin store init"),
        "{missing}"
    );
    crate::store::seal::create_host_key(&key_file).unwrap();
    assert_eq!(SqliteStore::init(&path, &key_file).unwrap(), 0);
    assert_eq!(SqliteStore::init(&path, &key_file).unwrap(), SCHEMA_VERSION);
    let writer = SqliteStore::open_for_changes(&path, &key_file).unwrap();
    enroll(
        &writer,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    drop(writer);
    let reader = SqliteStore::open_for_reading(&path, &key_file).unwrap();
    assert_eq!(reader.list().unwrap().len(), 1);
    assert!(reader.first_mandatory_sighting("bob", 1).is_err());
    let login = SqliteStore::open_for_login(&path, &key_file).unwrap();
    assert_eq!(login.login_state("alice", "x").unwrap().factors.len(), 1);
}

#[test]
fn a_login_tells_another_schema_apart() {
    let tmp = TestDir::new("sqlite-schema");
    let path = tmp.0.join("totp.db");
    let key_file = tmp.0.join("store.key");
    for (sql, found) in [
        ("CREATE TABLE users(user TEXT PRIMARY KEY, record BLOB NOT NULL); PRAGMA user_version = 2;", 2),
        ("PRAGMA user_version = 9; CREATE TABLE x(y);", 9),
        ("", 0),
    ] {
        let _ = std::fs::remove_file(&path);
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let login = SqliteStore::open_for_login(&path, &key_file).unwrap();
        let err = login.login_state("alice", "x").unwrap_err();
        assert!(
            matches!(err, StoreError::Schema { found: f } if f == found),
            "{sql}: {err}"
        );
        for open in [SqliteStore::open_for_reading, SqliteStore::open_for_changes] {
            assert!(matches!(open(&path, &key_file), Err(StoreError::Schema { .. })));
        }
    }
    let older = StoreError::Schema { found: 2 }.to_string();
    assert!(older.contains("run totp-admin store init"), "{older}");
}

/// The key of each factor is in the file only sealed: not raw, not in base32, not in
/// hex, in the database or its WAL.
#[test]
fn the_store_file_holds_no_key() {
    let tmp = TestDir::new("sqlite-sealed");
    let path = tmp.0.join("totp.db");
    let key_file = tmp.0.join("store.key");
    crate::store::seal::create_host_key(&key_file).unwrap();
    SqliteStore::init(&path, &key_file).unwrap();
    let secrets: Vec<SecretKey> = (0..3u8)
        .map(|i| SecretKey::from_bytes((0..20).map(|j| 0x5a ^ (i * 31 + j * 7)).collect()))
        .collect();
    {
        let store = SqliteStore::open_for_changes(&path, &key_file).unwrap();
        for (i, secret) in secrets.iter().enumerate() {
            let name = if i == 0 { DEFAULT_FACTOR } else { "spare" };
            let user = format!("user{}", i % 2);
            enroll(&store, &user, name, secret, EnrollMode::New, None, None).unwrap();
        }
        let state = store.login_state("user0", "x").unwrap();
        assert_eq!(state.factors[0].secret.as_bytes(), secrets[0].as_bytes());
    }
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(tmp.0.join("totp.db-wal")) {
        bytes.extend(wal);
    }
    let lower = String::from_utf8_lossy(&bytes)
        .to_ascii_lowercase()
        .into_bytes();
    for secret in &secrets {
        let raw = secret.as_bytes();
        let base32 = crate::otp::encode_base32(secret).to_ascii_lowercase();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for (form, needle) in [
            ("raw", raw),
            ("base32", base32.as_bytes()),
            ("hex", hex.as_bytes()),
        ] {
            let haystack = if form == "raw" { &bytes } else { &lower };
            assert!(
                !haystack.windows(needle.len()).any(|w| w == needle),
                "a key in {form} form is in the store file"
            );
        }
        // Only a few leading bytes, as any data might hold by chance.
        assert!(!bytes.windows(8).any(|w| w == &raw[..8]));
    }
}

/// A key sealed for one user or factor does not open as another's: a row copied
/// across fails closed, naming the key file.
#[test]
fn a_sealed_key_copied_to_another_row_does_not_open() {
    let store = SqliteStore::in_memory().unwrap();
    enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    enroll(
        &store,
        "bob",
        DEFAULT_FACTOR,
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    enroll(&store, "bob", "spare", &key(3), EnrollMode::New, None, None).unwrap();
    store
        .conn
        .execute_batch(
            "UPDATE factors SET sealed_key = (SELECT sealed_key FROM factors WHERE user = 'alice')
             WHERE user = 'bob' AND name = 'default';
             UPDATE factors SET sealed_key = (SELECT sealed_key FROM factors
                                               WHERE user = 'bob' AND name = 'default')
             WHERE user = 'bob' AND name = 'spare';",
        )
        .unwrap();
    let err = store.login_state("bob", "x").unwrap_err();
    assert!(matches!(err, StoreError::KeyFile(..)), "{err}");
    assert!(store.login_state("alice", "x").is_ok());
}

/// A reset keeps the last accepted step: enrolling the same key again reopens no code.
#[test]
fn a_reset_reopens_no_used_step() {
    let store = SqliteStore::in_memory().unwrap();
    let id = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", id, 700, NOW).unwrap(),
        StepOutcome::Accepted
    );
    store.remove_factors("alice", None).unwrap();
    let again = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &key(1),
        EnrollMode::New,
        None,
        Some(5),
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", again, 700, NOW).unwrap(),
        StepOutcome::Replayed
    );
    assert_eq!(
        store.accept_step("alice", again, 701, NOW).unwrap(),
        StepOutcome::Accepted
    );
    // The same for one named factor.
    let spare = enroll(
        &store,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        Some(900),
    )
    .unwrap();
    assert!(spare > again);
    store.remove_factors("alice", Some("spare")).unwrap();
    let spare = enroll(
        &store,
        "alice",
        "spare",
        &key(2),
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        store.accept_step("alice", spare, 900, NOW).unwrap(),
        StepOutcome::Replayed
    );
}

#[test]
fn enrollment_modes_and_the_factor_limit() {
    let store = SqliteStore::in_memory().unwrap();
    let add = |name: &str, mode| enroll(&store, "alice", name, &key(1), mode, None, None);
    // Another needs a factor to stand beside; First needs none.
    assert!(matches!(
        add("phone", EnrollMode::Another),
        Err(StoreError::FactorsChanged { .. })
    ));
    add(DEFAULT_FACTOR, EnrollMode::First).unwrap();
    assert!(matches!(
        add("phone", EnrollMode::First),
        Err(StoreError::FactorsChanged { .. })
    ));
    assert!(matches!(
        add(DEFAULT_FACTOR, EnrollMode::Another),
        Err(StoreError::Exists { .. })
    ));
    for i in 1..MAX_FACTORS {
        add(&format!("spare{i}"), EnrollMode::Another).unwrap();
    }
    assert_eq!(
        store.login_state("alice", "x").unwrap().factors.len(),
        MAX_FACTORS
    );
    for mode in [
        EnrollMode::New,
        EnrollMode::Another,
        EnrollMode::Replace { expected: None },
    ] {
        assert!(matches!(
            add("one-more", mode),
            Err(StoreError::TooManyFactors { .. })
        ));
    }
    // Replacing one of them is no new factor.
    add("spare1", EnrollMode::Replace { expected: None }).unwrap();
    store.remove_factors("alice", Some("spare1")).unwrap();
    add("one-more", EnrollMode::Another).unwrap();
}

/// A login's success is one transaction: the step, the pair cleared, one failure given
/// back and the source remembered; a replay or a changed factor writes none of it.
#[test]
fn accept_login_records_the_step_and_the_success_together() {
    let store = SqliteStore::in_memory().unwrap();
    let secret = SecretKey::from_bytes(b"12345678901234567890".to_vec());
    let id = enroll(
        &store,
        "alice",
        DEFAULT_FACTOR,
        &secret,
        EnrollMode::New,
        None,
        None,
    )
    .unwrap();
    let config = throttle_config();
    store
        .begin_attempt("alice", "192.0.2.1", NOW, &config)
        .unwrap();
    let passed = Passed {
        source: "192.0.2.1",
        remember: Some(("192.0.2.1", NOW + 3600)),
    };
    assert_eq!(
        store.accept_login("alice", id, 10, NOW, &passed).unwrap(),
        StepOutcome::Accepted
    );
    let state = store.login_state("alice", "192.0.2.1").unwrap();
    assert_eq!(state.factors[0].last_step, Some(10));
    assert_eq!((state.pair.failures, state.user.failures), (0, 0));
    assert_eq!(state.remembered_until, Some(NOW + 3600));

    store
        .begin_attempt("alice", "192.0.2.2", NOW, &config)
        .unwrap();
    let elsewhere = Passed {
        source: "192.0.2.2",
        remember: Some(("192.0.2.2", NOW + 3600)),
    };
    assert_eq!(
        store
            .accept_login("alice", id, 10, NOW, &elsewhere)
            .unwrap(),
        StepOutcome::Replayed
    );
    assert_eq!(
        store
            .accept_login("alice", id + 100, 11, NOW, &elsewhere)
            .unwrap(),
        StepOutcome::FactorChanged
    );
    let state = store.login_state("alice", "192.0.2.2").unwrap();
    assert_eq!((state.pair.failures, state.user.failures), (1, 1));
    assert_eq!(state.remembered_until, None);
    assert!(store.unlock("alice").unwrap());
    let state = store.login_state("alice", "192.0.2.1").unwrap();
    assert_eq!(state.remembered_until, None);
}
