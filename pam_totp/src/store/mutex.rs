//! SQLite's mutexes, on the kernel's futex.
//!
//! The module is loaded at every login, and each C library function it calls is one
//! more symbol for the dynamic loader to look up first. SQLite is compiled without its
//! pthread mutexes (`SQLITE_MUTEX_NOOP`, .cargo/config.toml) and given these instead,
//! before its first use (`super::prepare_sqlite`). Were they ever missing, SQLite would
//! run without locking, and rusqlite refuses to open a connection in that state: the
//! store cannot be opened, and a login fails closed.
//!
//! A lock is a word: 0 free, 1 held, 2 held with threads waiting (the classic
//! three-state futex lock). A recursive mutex also keeps its owner and depth.

use rusqlite::ffi;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

struct Lock {
    state: AtomicU32,
}

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;

impl Lock {
    const fn new() -> Lock {
        Lock {
            state: AtomicU32::new(FREE),
        }
    }

    fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn lock(&self) {
        if !self.try_lock() {
            self.lock_contended();
        }
    }

    #[cold]
    fn lock_contended(&self) {
        // A short spin first: SQLite holds its locks for a few instructions.
        for _ in 0..100 {
            std::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == FREE && self.try_lock() {
                return;
            }
        }
        // Mark the lock contended; whoever held it wakes a waiter when it lets go.
        while self.state.swap(CONTENDED, Ordering::Acquire) != FREE {
            futex_wait(&self.state, CONTENDED);
        }
    }

    fn unlock(&self) {
        if self.state.swap(FREE, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }

    fn is_held(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }
}

/// Sleeps while `word` holds `expected` (or until a wake-up, a signal or a spurious
/// return: the caller looks again).
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives as long as
    // the lock; no timeout (null). Every outcome (woken, EAGAIN, EINTR) is handled by
    // the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// What SQLite holds a pointer to (`sqlite3_mutex`).
struct Mutex {
    lock: Lock,
    recursive: bool,
    /// The owning thread of a recursive mutex (0: none), and how often it entered.
    owner: AtomicUsize,
    depth: AtomicU32,
}

impl Mutex {
    const fn new(recursive: bool) -> Mutex {
        Mutex {
            lock: Lock::new(),
            recursive,
            owner: AtomicUsize::new(0),
            depth: AtomicU32::new(0),
        }
    }

    fn enter(&self) {
        if self.recursive {
            let me = this_thread();
            if self.owner.load(Ordering::Relaxed) == me {
                self.depth.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.lock.lock();
            self.owner.store(me, Ordering::Relaxed);
            self.depth.store(1, Ordering::Relaxed);
        } else {
            self.lock.lock();
        }
    }

    fn try_enter(&self) -> bool {
        if self.recursive {
            let me = this_thread();
            if self.owner.load(Ordering::Relaxed) == me {
                self.depth.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            if !self.lock.try_lock() {
                return false;
            }
            self.owner.store(me, Ordering::Relaxed);
            self.depth.store(1, Ordering::Relaxed);
            true
        } else {
            self.lock.try_lock()
        }
    }

    fn leave(&self) {
        if self.recursive {
            if self.depth.fetch_sub(1, Ordering::Relaxed) > 1 {
                return;
            }
            self.owner.store(0, Ordering::Relaxed);
        }
        self.lock.unlock();
    }

    fn held_here(&self) -> bool {
        if self.recursive {
            self.owner.load(Ordering::Relaxed) == this_thread()
        } else {
            self.lock.is_held()
        }
    }
}

/// A number no other live thread has: the address of this thread's own byte. A
/// recursive mutex compares it with its owner; only the owner ever stores it there.
fn this_thread() -> usize {
    thread_local! {
        static ME: u8 = const { 0 };
    }
    ME.with(|me| me as *const u8 as usize)
}

/// SQLITE_MUTEX_STATIC_MAIN (2) to SQLITE_MUTEX_STATIC_VFS3 (13).
const FIRST_STATIC: c_int = ffi::SQLITE_MUTEX_STATIC_MAIN;
static STATICS: [Mutex; 12] = [const { Mutex::new(false) }; 12];

unsafe extern "C" fn init() -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn end() -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn alloc(kind: c_int) -> *mut ffi::sqlite3_mutex {
    let mutex: *const Mutex = match kind {
        ffi::SQLITE_MUTEX_FAST => Box::into_raw(Box::new(Mutex::new(false))),
        ffi::SQLITE_MUTEX_RECURSIVE => Box::into_raw(Box::new(Mutex::new(true))),
        _ => match kind
            .checked_sub(FIRST_STATIC)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| STATICS.get(i))
        {
            Some(m) => m,
            None => return std::ptr::null_mut(),
        },
    };
    mutex.cast_mut().cast()
}

/// # Safety
/// `p` came from `alloc`.
unsafe fn mutex<'a>(p: *mut ffi::sqlite3_mutex) -> &'a Mutex {
    // SAFETY: the caller's contract: p points to a live Mutex (a static one, or a box
    // SQLite frees only through `free`, after its last use).
    unsafe { &*p.cast::<Mutex>() }
}

unsafe extern "C" fn free(p: *mut ffi::sqlite3_mutex) {
    let static_range = STATICS.as_ptr_range();
    let p = p.cast::<Mutex>().cast_const();
    if p.is_null() || static_range.contains(&p) {
        return;
    }
    // SAFETY: not static, so p is a box from `alloc`, freed once (SQLite's contract).
    drop(unsafe { Box::from_raw(p.cast_mut()) });
}

unsafe extern "C" fn enter(p: *mut ffi::sqlite3_mutex) {
    // SAFETY: SQLite passes a mutex from `alloc`.
    unsafe { mutex(p) }.enter();
}

unsafe extern "C" fn try_enter(p: *mut ffi::sqlite3_mutex) -> c_int {
    // SAFETY: SQLite passes a mutex from `alloc`.
    if unsafe { mutex(p) }.try_enter() {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_BUSY
    }
}

unsafe extern "C" fn leave(p: *mut ffi::sqlite3_mutex) {
    // SAFETY: SQLite passes a mutex from `alloc`, held by this thread.
    unsafe { mutex(p) }.leave();
}

unsafe extern "C" fn held(p: *mut ffi::sqlite3_mutex) -> c_int {
    // SAFETY: SQLite passes a mutex from `alloc` (or null: "held").
    c_int::from(p.is_null() || unsafe { mutex(p) }.held_here())
}

unsafe extern "C" fn not_held(p: *mut ffi::sqlite3_mutex) -> c_int {
    // SAFETY: as for `held`.
    c_int::from(p.is_null() || !unsafe { mutex(p) }.held_here())
}

/// Gives SQLite these mutexes. Returns false when SQLite was already initialised (it
/// then keeps what it had).
pub(super) fn install() -> bool {
    let methods = ffi::sqlite3_mutex_methods {
        xMutexInit: Some(init),
        xMutexEnd: Some(end),
        xMutexAlloc: Some(alloc),
        xMutexFree: Some(free),
        xMutexEnter: Some(enter),
        xMutexTry: Some(try_enter),
        xMutexLeave: Some(leave),
        xMutexHeld: Some(held),
        xMutexNotheld: Some(not_held),
    };
    // SAFETY: SQLITE_CONFIG_MUTEX takes a sqlite3_mutex_methods; the functions it names
    // are this file's.
    unsafe { super::sqlite_config(ffi::SQLITE_CONFIG_MUTEX, &methods) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_recursive_mutex_is_entered_again_by_its_owner_only() {
        let m = Arc::new(Mutex::new(true));
        m.enter();
        assert!(m.try_enter(), "the owner enters again");
        assert!(m.held_here());
        let other = Arc::clone(&m);
        let refused = std::thread::spawn(move || other.try_enter())
            .join()
            .unwrap();
        assert!(!refused, "another thread is refused while it is held");
        m.leave();
        assert!(m.held_here(), "still held after one of two leaves");
        m.leave();
        assert!(!m.held_here());
        let other = Arc::clone(&m);
        let taken = std::thread::spawn(move || {
            let ok = other.try_enter();
            other.leave();
            ok
        })
        .join()
        .unwrap();
        assert!(taken, "free again after the last leave");
    }

    #[test]
    fn a_fast_mutex_is_not_recursive() {
        let m = Mutex::new(false);
        assert!(m.try_enter());
        assert!(!m.try_enter());
        m.leave();
        assert!(m.try_enter());
        m.leave();
    }

    #[test]
    fn contended_increments_are_not_lost() {
        struct Shared {
            m: Mutex,
            n: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: n is only touched with m held.
        unsafe impl Sync for Shared {}
        let shared = Arc::new(Shared {
            m: Mutex::new(false),
            n: std::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        s.m.enter();
                        // SAFETY: the mutex is held.
                        unsafe { *s.n.get() += 1 };
                        s.m.leave();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: every thread has ended.
        assert_eq!(unsafe { *shared.n.get() }, 8 * 20_000);
    }

    /// Logins on 8 threads of one process against one store file: SQLite's own locks
    /// (its memory, its page cache, its list of open files) are these mutexes.
    #[test]
    fn sqlite_from_many_threads_at_once() {
        use crate::otp::{Algorithm, OtpParams};
        use crate::secret::SecretKey;
        use crate::store::{Enrollment, SqliteStore, Store};
        let tmp = crate::store::TestDir::new("mutex");
        let path = tmp.0.join("totp.db");
        let store = SqliteStore::open_or_create(&path).unwrap();
        let key = SecretKey::from_bytes(b"12345678901234567890".to_vec());
        let params = OtpParams {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        };
        for t in 0..8 {
            let e = Enrollment {
                secret: &key,
                params,
                recovery_codes: &[],
            };
            store.enroll(&format!("user{t}"), &e, 1).unwrap();
        }
        drop(store);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let user = format!("user{t}");
                    for step in 1..=60 {
                        let store = SqliteStore::open(&path).unwrap();
                        assert!(store.login_state(&user, "tty").unwrap().factor.is_some());
                        assert!(store.accept_step(&user, step, step).unwrap());
                        assert!(!store.accept_step(&user, step, step).unwrap(), "replay");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        for t in 0..8 {
            let f = store
                .login_state(&format!("user{t}"), "tty")
                .unwrap()
                .factor;
            assert_eq!(f.unwrap().last_step, Some(60));
        }
    }

    #[test]
    fn statics_are_shared_and_unknown_kinds_refused() {
        // SAFETY: alloc has no preconditions; the statics are never freed.
        unsafe {
            let a = alloc(ffi::SQLITE_MUTEX_STATIC_MAIN);
            assert_eq!(a, alloc(ffi::SQLITE_MUTEX_STATIC_MAIN));
            assert!(!alloc(ffi::SQLITE_MUTEX_STATIC_VFS3).is_null());
            assert!(alloc(ffi::SQLITE_MUTEX_STATIC_VFS3 + 1).is_null());
            assert!(alloc(-1).is_null());
            assert!(alloc(c_int::MIN).is_null());
            free(a);
            let f = alloc(ffi::SQLITE_MUTEX_FAST);
            let g = alloc(ffi::SQLITE_MUTEX_FAST);
            assert_ne!(f, g);
            free(f);
            free(g);
        }
    }
}
