//! Benchmark driver: authentications through real libpam (`pam_start`,
//! `pam_authenticate`, `pam_end`), codes computed here, one service holding only the
//! module under test. Used by tests/bench/run.sh.
//!
//! ```text
//! pam-bench setup KIND DIR USERS          # KIND: totp | ga | ga-strict | oath
//! pam-bench run KIND DIR USERS AUTHS PROCS [--wrong]
//! ```
//!
//! `run` prints one line: `auths=.. ok=.. failed=.. procs=.. secs=.. per_sec=.. p50_us=.. p99_us=..`.
//! Users are taken in turn; when every user has been used once in a round, the state
//! files are restored from the copy `setup` made (untimed), so codes are never replays.

use pam_totp::otp::{code_at, Algorithm, OtpParams};
use pam_totp::secret::SecretKey;
use pam_totp_tests::pam_ffi::*;
use pam_totp_tests::pipe::{pipe, read_all, write_all};
use pam_totp_tests::store_support::{enrolled, forget_logins, write_factors};
use std::ffi::{c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::time::Instant;

const PARAMS: OtpParams = OtpParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 30,
};

fn user(i: usize) -> String {
    format!("bench{i}")
}

/// 20 bytes, different for every user.
fn secret(i: usize) -> Vec<u8> {
    format!("bench-secret-{i:07}").into_bytes()
}

fn base32(bytes: &[u8]) -> String {
    pam_totp::otp::encode_base32(&SecretKey::from_bytes(bytes.to_vec())).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The state a kind keeps per user, and its pristine copy.
fn state(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn pristine(dir: &Path) -> PathBuf {
    dir.join("pristine")
}

fn setup(kind: &str, dir: &Path, users: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(state(dir)).unwrap();
    let svc = dir.join("services");
    std::fs::create_dir_all(&svc).unwrap();
    let st = state(dir);
    let line = match kind {
        "totp" => {
            // The shipped file, comments and all, pointed at the benchmark's store.
            let config = dir.join("config.toml");
            let shipped =
                std::fs::read_to_string(pam_totp_tests::workspace().join("config/config.toml"))
                    .unwrap();
            let default_path = "path = \"/var/lib/pam_totp/totp.db\"";
            assert!(shipped.contains(default_path), "config/config.toml changed");
            let text = shipped.replace(
                default_path,
                &format!(
                    "path = \"{0}/totp.db\"\nkey = \"{0}/store.key\"",
                    st.display()
                ),
            );
            std::fs::write(&config, text).unwrap();
            set_mode(&config, 0o600);
            set_mode(&st, 0o700);
            let store_path = st.join("totp.db");
            let params = OtpParams {
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
            };
            write_factors(
                &store_path,
                &st.join("store.key"),
                (0..users).map(|i| {
                    let key = SecretKey::from_bytes(secret(i));
                    (user(i), enrolled(key, params, 0))
                }),
            );
            format!(
                "auth required {} config={}\n",
                module_path().display(),
                config.display()
            )
        }
        "ga" | "ga-strict" => {
            for i in 0..users {
                let mut text = format!("{}\n\" TOTP_AUTH\n\" WINDOW_SIZE 3\n", base32(&secret(i)));
                if kind == "ga-strict" {
                    text.push_str("\" RATE_LIMIT 3 30\n\" DISALLOW_REUSE\n");
                }
                let path = st.join(user(i));
                std::fs::write(&path, text).unwrap();
                set_mode(&path, 0o600);
            }
            format!(
                "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n",
                st.display()
            )
        }
        "oath" => {
            let mut text = String::new();
            for i in 0..users {
                text.push_str(&format!("HOTP/T30 {} - {}\n", user(i), hex(&secret(i))));
            }
            let path = st.join("users.oath");
            std::fs::write(&path, text).unwrap();
            set_mode(&path, 0o600);
            format!(
                "auth required pam_oath.so usersfile={} window=1 digits=6\n",
                path.display()
            )
        }
        other => panic!("unknown kind {other}"),
    };
    std::fs::write(svc.join("bench"), line).unwrap();
    std::fs::write(svc.join("other"), "auth required pam_deny.so\n").unwrap();
    copy_dir(&st, &pristine(dir));
}

fn module_path() -> PathBuf {
    std::env::var_os("PAM_TOTP_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| pam_totp_tests::release_dir().join("libpam_totp.so"))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Puts the state back as `setup` left it. The SQLite store is reset in place, as a
/// maintenance job would, so that no login pays for a freshly copied database; the
/// other modules' files are copied back.
fn restore(dir: &Path) {
    let st = state(dir);
    let db = st.join("totp.db");
    if db.exists() {
        forget_logins(&db);
        return;
    }
    for entry in std::fs::read_dir(&st).unwrap() {
        let p = entry.unwrap().path();
        let _ = std::fs::remove_file(p);
    }
    for entry in std::fs::read_dir(pristine(dir)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, st.join(p.file_name().unwrap())).unwrap();
    }
}

struct Answer {
    code: CString,
}

extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: appdata is the Answer passed to pam_start, alive for the transaction.
    let answer = unsafe { &*(appdata as *const Answer) };
    let out = alloc_responses(n.max(0) as usize);
    if out.is_null() {
        return 5;
    }
    for i in 0..n.max(0) as usize {
        // SAFETY: libpam passes n message pointers.
        let style = unsafe { (**msgs.add(i)).msg_style };
        if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
            // SAFETY: i < n entries.
            unsafe { (*out.add(i)).resp = malloc_answer(answer.code.as_bytes()) };
        }
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    0
}

/// One whole transaction; returns whether it succeeded and how long it took (µs).
fn authenticate(service: &CString, user_name: &str, code: &str) -> (bool, u64) {
    let user_c = CString::new(user_name).unwrap();
    let answer = Answer {
        code: CString::new(code).unwrap(),
    };
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: &answer as *const Answer as *mut c_void,
    };
    let start = Instant::now();
    let mut pamh: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid strings and conv that outlive the transaction.
    let rc = unsafe { pam_start(service.as_ptr(), user_c.as_ptr(), &conv, &mut pamh) };
    assert_eq!(rc, 0, "pam_start");
    // SAFETY: pamh is a live handle.
    let rc = unsafe { pam_authenticate(pamh, 0) };
    // SAFETY: pamh is live and not used afterwards.
    unsafe { pam_end(pamh, rc) };
    (rc == 0, start.elapsed().as_micros() as u64)
}

/// CPU time (user + system) this process has used so far, in µs.
fn cpu_us() -> u64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// What one process measured: latencies, successes, and the CPU spent inside the
/// authentications (state restores excluded).
struct Slice {
    latencies: Vec<u64>,
    ok: usize,
    cpu_us: u64,
}

/// Runs `auths` authentications over users [first, first + users).
fn run_slice(
    dir: &Path,
    first: usize,
    users: usize,
    auths: usize,
    wrong: bool,
    restore_state: bool,
) -> Slice {
    let service = CString::new("bench").unwrap();
    let mut lat = Vec::with_capacity(auths);
    let mut ok = 0;
    let keys: Vec<SecretKey> = (first..first + users)
        .map(|i| SecretKey::from_bytes(secret(i)))
        .collect();
    let mut cpu = 0;
    let mut since = cpu_us();
    for k in 0..auths {
        if k > 0 && k % users == 0 && restore_state {
            cpu += cpu_us() - since;
            restore(dir);
            since = cpu_us();
        }
        let i = k % users;
        let mut code = code_at(&keys[i], &PARAMS, now()).to_string();
        if wrong {
            let last = code.pop().unwrap();
            code.push(if last == '0' { '1' } else { '0' });
        }
        let (success, us) = authenticate(&service, &user(first + i), &code);
        ok += usize::from(success);
        lat.push(us);
    }
    cpu += cpu_us() - since;
    Slice {
        latencies: lat,
        ok,
        cpu_us: cpu,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(dir: &Path, users: usize, auths: usize, procs: usize, wrong: bool) {
    restore(dir);
    let start = Instant::now();
    let (mut lat, ok, cpu) = if procs <= 1 {
        let slice = run_slice(dir, 0, users, auths, wrong, true);
        (slice.latencies, slice.ok, slice.cpu_us)
    } else {
        // Each process gets its own users, so no valid code is a replay of another's.
        assert!(users >= procs, "need at least one user per process");
        let per_users = users / procs;
        let per_auths = auths / procs;
        assert!(
            per_auths <= per_users || procs == 1,
            "with several processes, use at least as many users as auths"
        );
        let mut children = Vec::new();
        for p in 0..procs {
            let (r, w) = pipe();
            // SAFETY: fork in a single-threaded program; the child only runs the slice
            // and writes its results before _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let slice = run_slice(dir, p * per_users, per_users, per_auths, wrong, false);
                let mut text = format!("{} {}", slice.ok, slice.cpu_us);
                for l in slice.latencies {
                    text.push_str(&format!(" {l}"));
                }
                write_all(w, text.as_bytes());
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: w belongs to the child now.
            unsafe { libc::close(w) };
            children.push((pid, r));
        }
        let mut all = Vec::new();
        let mut ok = 0;
        let mut cpu = 0;
        for (pid, r) in children {
            let text = read_all(r);
            let mut it = text.split_whitespace();
            ok += it.next().unwrap_or("0").parse::<usize>().unwrap();
            cpu += it.next().unwrap_or("0").parse::<u64>().unwrap();
            all.extend(it.map(|v| v.parse::<u64>().unwrap()));
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        (all, ok, cpu)
    };
    // One process: the time spent inside authentications (restores excluded); several:
    // the wall time of the whole run (they restore nothing).
    let secs = if procs <= 1 {
        lat.iter().sum::<u64>() as f64 / 1e6
    } else {
        start.elapsed().as_secs_f64()
    };
    lat.sort_unstable();
    let n = lat.len();
    println!(
        "auths={n} ok={ok} failed={} procs={procs} users={users} secs={secs:.3} per_sec={:.0} p50_us={} p99_us={} cpu_us_per_auth={}",
        n - ok,
        n as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu / n.max(1) as u64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: pam-bench setup KIND DIR USERS | pam-bench run KIND DIR USERS AUTHS PROCS [--wrong]");
        std::process::exit(2)
    };
    match args.first().map(String::as_str) {
        Some("setup") if args.len() == 4 => setup(
            &args[1],
            Path::new(&args[2]),
            args[3].parse().unwrap_or_else(|_| usage()),
        ),
        Some("run") if args.len() >= 6 => run(
            Path::new(&args[2]),
            args[3].parse().unwrap_or_else(|_| usage()),
            args[4].parse().unwrap_or_else(|_| usage()),
            args[5].parse().unwrap_or_else(|_| usage()),
            args.get(6).map(String::as_str) == Some("--wrong"),
        ),
        _ => usage(),
    }
}
