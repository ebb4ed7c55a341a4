//! This build's SQLite has no mutexes of its own (`SQLITE_MUTEX_NOOP`): the store installs
//! the module's before SQLite's first use. A connection opened before that must be
//! refused, and so must every store opened after it: SQLite never runs unlocked.
//! (Its own process: SQLite's set-up is once per process.)

#[test]
fn sqlite_without_the_modules_mutexes_is_never_used() {
    let refused = rusqlite::Connection::open_in_memory()
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(refused, rusqlite::Error::SqliteSingleThreadedMode),
        "{refused}"
    );
    // SQLite is now initialised without them; the store's set-up comes too late.
    let store = pam_totp::store::SqliteStore::in_memory();
    assert!(store.is_err(), "a store was opened on an unlocked SQLite");
}
