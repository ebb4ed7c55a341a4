//! Benchmark driver: authentications through real libpam (`pam_start`,
//! `pam_authenticate`, `pam_end` for each one, as sshd does per login), codes computed
//! here, one PAM service holding only the module under test. Used by
//! tests/bench/run.sh, which gives it a private mount namespace whose /dev/log is the
//! socket `listen` serves.
//!
//! ```text
//! pam-bench setup KIND DIR USERS             # KIND: totp | ga | ga-strict | oath | permit
//! pam-bench listen                           # starts the syslog listener on /dev/log, prints its pid
//! pam-bench run KIND DIR LOGINS AUTHS [--wrong]
//! pam-bench concurrent KIND DIR PROCS LOGINS ROUNDS
//! ```
//!
//! `run` authenticates the users `bench0` .. `bench{LOGINS-1}` in turn, AUTHS times in
//! all, and prints one line of `key=value`: CPU (user and system, from `getrusage`)
//! spent inside the authentications, wall time per authentication (p50, p99) and the
//! syslog lines the listener received from this process. Whenever every user has
//! logged in once, their state is put back as `setup` left it (untimed: outside the
//! CPU and wall figures), so a valid code is never a replay and a wrong one never
//! meets a lockout.
//!
//! `concurrent` starts PROCS processes at once, each logging in its own LOGINS users
//! once with valid codes, ROUNDS times (the state put back between rounds), and prints
//! the authentications per second of wall time and how many valid codes were refused.

use pam_totp::config::Config;
use pam_totp::otp::{code_at, Algorithm, OtpParams};
use pam_totp::secret::SecretKey;
use pam_totp::store::{init_store, open_for_changes, EnrollMode, Enrollment, DEFAULT_FACTOR};
use pam_totp_tests::pam_ffi::*;
use pam_totp_tests::pipe::{pipe, read_all, write_all};
use pam_totp_tests::store_support::forget_logins;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PARAMS: OtpParams = OtpParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 30,
};

/// The PAM service every kind is set up under.
const SERVICE: &str = "bench";

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

/// The files a kind keeps per user, and their pristine copy.
fn state(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn pristine(dir: &Path) -> PathBuf {
    dir.join("pristine")
}

fn totp_store(dir: &Path) -> PathBuf {
    state(dir).join("totp.db")
}

fn setup(kind: &str, dir: &Path, users: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(state(dir)).unwrap();
    let svc = dir.join("services");
    std::fs::create_dir_all(&svc).unwrap();
    let st = state(dir);
    set_mode(&st, 0o700);
    let line = match kind {
        "totp" => {
            let config = dir.join("config.toml");
            write_totp_config(&config, &totp_store(dir));
            enroll_totp_users(&config, &totp_store(dir), users);
            format!(
                "auth required {} config={}\n",
                pam_totp_tests::module().display(),
                config.display()
            )
        }
        "ga" | "ga-strict" => {
            for i in 0..users {
                // No scratch codes; ga-strict adds what `google-authenticator -d -r 3
                // -R 30` asks for: one use per code, three logins per 30 s.
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
        "permit" => "auth required pam_permit.so\n".to_string(),
        other => panic!("unknown kind {other}"),
    };
    std::fs::write(svc.join(SERVICE), line).unwrap();
    copy_dir(&st, &pristine(dir));
}

/// The shipped configuration, comments and every setting, pointed at the bench's store.
fn write_totp_config(config: &Path, store: &Path) {
    let shipped =
        std::fs::read_to_string(pam_totp_tests::workspace().join("config/config.toml")).unwrap();
    let default_path = "path = \"/var/lib/pam_totp/totp.db\"";
    assert!(shipped.contains(default_path), "config/config.toml changed");
    // The host key beside the store: a benchmark's own, made by init_store.
    let key = store.with_file_name("store.key");
    let default_key = "key = \"/etc/pam_totp/store.key\"";
    assert!(shipped.contains(default_key), "config/config.toml changed");
    let text = shipped
        .replace(default_path, &format!("path = \"{}\"", store.display()))
        .replace(default_key, &format!("key = \"{}\"", key.display()));
    std::fs::write(config, text).unwrap();
    set_mode(config, 0o600);
}

/// Enrolls `bench0` .. `bench{users-1}` through the store's own API, as `totp-admin
/// store init` and `totp-admin enroll` do (one transaction each), in a scratch
/// directory under the temporary directory (tmpfs under run.sh, where their fsyncs cost
/// nothing), then copies the finished store to `store`.
fn enroll_totp_users(config: &Path, store: &Path, users: usize) {
    // SAFETY: getpid has no preconditions.
    let scratch = std::env::temp_dir().join(format!("pam-bench-{}", unsafe { libc::getpid() }));
    let _ = std::fs::remove_dir_all(&scratch);
    let scratch_store = scratch.join("store").join("totp.db");
    let scratch_config = scratch.join("config.toml");
    std::fs::create_dir_all(&scratch).unwrap();
    write_totp_config(&scratch_config, &scratch_store);
    let loaded = Config::load(&scratch_config).unwrap();
    init_store(&loaded).unwrap();
    {
        let changes = open_for_changes(&loaded).unwrap();
        for i in 0..users {
            let key = SecretKey::from_bytes(secret(i));
            let enrollment = Enrollment {
                name: DEFAULT_FACTOR,
                secret: &key,
                params: PARAMS,
                mode: EnrollMode::New,
                recovery_codes: None,
                confirmed_step: None,
            };
            changes.enroll(&user(i), &enrollment, 0).unwrap();
        }
    }
    // Closed: the last connection out checkpointed the WAL into the file.
    std::fs::copy(&scratch_store, store).unwrap();
    set_mode(store, 0o600);
    let key = store.with_file_name("store.key");
    std::fs::copy(scratch_store.with_file_name("store.key"), &key).unwrap();
    set_mode(&key, 0o400);
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(Config::load(config).is_ok());
}

/// Forgets the users' last accepted steps and every failure count, in place, as a
/// maintenance job would: no login pays for a freshly copied database.
fn reset_totp_store(store: &Path) {
    forget_logins(store);
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

/// Puts the state back as `setup` left it.
fn restore(kind: &str, dir: &Path) {
    match kind {
        "totp" => reset_totp_store(&totp_store(dir)),
        "permit" => {}
        _ => {
            for entry in std::fs::read_dir(pristine(dir)).unwrap() {
                let p = entry.unwrap().path();
                std::fs::copy(&p, state(dir).join(p.file_name().unwrap())).unwrap();
            }
        }
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

/// One whole transaction; returns whether it succeeded and its wall time.
fn authenticate(service: &CString, user_name: &str, code: &str) -> (bool, Duration) {
    let user_c = CString::new(user_name).unwrap();
    let answer = Answer {
        code: CString::new(code).unwrap(),
    };
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: &answer as *const Answer as *mut c_void,
    };
    let start = Instant::now();
    let mut pamh: *mut pam_handle_t = std::ptr::null_mut();
    // SAFETY: valid strings and conv that outlive the transaction.
    let rc = unsafe { pam_start(service.as_ptr(), user_c.as_ptr(), &conv, &mut pamh) };
    assert_eq!(rc, 0, "pam_start");
    // SAFETY: pamh is a live handle.
    let rc = unsafe { pam_authenticate(pamh, 0) };
    // SAFETY: pamh is live and not used afterwards.
    unsafe { pam_end(pamh, rc) };
    (rc == 0, start.elapsed())
}

/// CPU time this process has used so far, user and system, in µs.
fn cpu_us() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid out-pointer.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(usage.ru_utime), us(usage.ru_stime))
}

/// The code `user(i)` types now: right, or right with its last digit changed.
fn code_for(key: &SecretKey, wrong: bool) -> String {
    let mut code = code_at(key, &PARAMS, now()).to_string();
    if wrong {
        let last = code.pop().unwrap();
        code.push(if last == '0' { '1' } else { '0' });
    }
    code
}

fn keys(first: usize, count: usize) -> Vec<SecretKey> {
    (first..first + count)
        .map(|i| SecretKey::from_bytes(secret(i)))
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run(kind: &str, dir: &Path, logins: usize, auths: usize, wrong: bool) {
    assert!(logins > 0);
    let service = CString::new(SERVICE).unwrap();
    let keys = keys(0, logins);
    let names: Vec<String> = (0..logins).map(user).collect();
    restore(kind, dir);
    let mut wall = Vec::with_capacity(auths);
    let mut ok = 0;
    let (mut user_us, mut sys_us) = (0, 0);
    let mut since = cpu_us();
    for k in 0..auths {
        if k > 0 && k % logins == 0 {
            let at = cpu_us();
            user_us += at.0 - since.0;
            sys_us += at.1 - since.1;
            restore(kind, dir);
            since = cpu_us();
        }
        let i = k % logins;
        let code = code_for(&keys[i], wrong);
        let (success, took) = authenticate(&service, &names[i], &code);
        ok += usize::from(success);
        wall.push(took.as_micros() as u64);
    }
    let at = cpu_us();
    user_us += at.0 - since.0;
    sys_us += at.1 - since.1;
    // SAFETY: getpid has no preconditions.
    let lines = syslog_lines(&[unsafe { libc::getpid() }]);
    wall.sort_unstable();
    let n = auths.max(1) as f64;
    println!(
        "auths={auths} ok={ok} user_us={:.1} sys_us={:.1} cpu_us={:.1} p50_us={} p99_us={} syslog_lines={:.2}",
        user_us as f64 / n,
        sys_us as f64 / n,
        (user_us + sys_us) as f64 / n,
        percentile(&wall, 0.50),
        percentile(&wall, 0.99),
        lines as f64 / n,
    );
}

fn concurrent(kind: &str, dir: &Path, procs: usize, logins: usize, rounds: usize) {
    let mut wall = Duration::ZERO;
    let mut ok = 0;
    let mut pids = Vec::new();
    for _ in 0..rounds {
        restore(kind, dir);
        let (go_r, go_w) = pipe();
        let mut children = Vec::new();
        for p in 0..procs {
            let (r, w) = pipe();
            // SAFETY: fork in a single-threaded program; the child only authenticates,
            // writes its count and calls _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // SAFETY: the child's copy of the write end; the parent keeps its own.
                unsafe { libc::close(go_w) };
                // Every process starts when the parent closes the pipe.
                read_all(go_r);
                let service = CString::new(SERVICE).unwrap();
                let first = p * logins;
                let mut mine = 0;
                for (i, key) in keys(first, logins).iter().enumerate() {
                    let code = code_for(key, false);
                    mine += usize::from(authenticate(&service, &user(first + i), &code).0);
                }
                write_all(w, mine.to_string().as_bytes());
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: w belongs to the child now.
            unsafe { libc::close(w) };
            children.push((pid, r));
            pids.push(pid);
        }
        // SAFETY: the parent's read end is not used; closing the write end starts them.
        unsafe { libc::close(go_r) };
        let start = Instant::now();
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(go_w) };
        for (pid, r) in children {
            ok += read_all(r).trim().parse::<usize>().unwrap_or(0);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        wall += start.elapsed();
    }
    let auths = procs * logins * rounds;
    let lines = syslog_lines(&pids);
    println!(
        "procs={procs} auths={auths} ok={ok} lost={} secs={:.3} per_sec={:.0} syslog_lines={:.2}",
        auths - ok,
        wall.as_secs_f64(),
        auths as f64 / wall.as_secs_f64(),
        lines as f64 / auths.max(1) as f64,
    );
}

/// The socket `listen` serves, where the modules' syslog lines arrive.
const DEV_LOG: &str = "/dev/log";
/// Asks the listener how many lines it received from the processes named after it.
const COUNT_REQUEST: &str = "pam-bench-count";

fn unix_addr(path: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid; the family and path are set below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(path.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    (addr, len as libc::socklen_t)
}

fn datagram_socket() -> OwnedFd {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// How many syslog lines the listener received from `pids`.
fn syslog_lines(pids: &[c_int]) -> u64 {
    let sock = datagram_socket();
    // Autobind: an abstract address of the kernel's choosing, for the reply.
    let family = libc::sockaddr {
        sa_family: libc::AF_UNIX as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: binding to a sockaddr of just the family autobinds a unix socket.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &family,
            std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: timeout is a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut request = COUNT_REQUEST.to_string();
    for pid in pids {
        request.push_str(&format!(" {pid}"));
    }
    let (addr, len) = unix_addr(DEV_LOG);
    // SAFETY: request and addr are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    assert!(
        sent >= 0,
        "no syslog listener at {DEV_LOG}: {}",
        std::io::Error::last_os_error()
    );
    let mut buf = [0u8; 64];
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(n > 0, "the syslog listener did not answer");
    String::from_utf8_lossy(&buf[..n as usize])
        .trim()
        .parse()
        .unwrap()
}

/// Serves `path` as a syslog socket: receives every datagram, counts lines per
/// sending process (the kernel's SCM_CREDENTIALS, not the text), and answers count
/// requests. Prints the pid of the server, which runs in the background until killed.
fn listen(path: &str) {
    let _ = std::fs::remove_file(path);
    let sock = datagram_socket();
    let (addr, len) = unix_addr(path);
    // SAFETY: addr is a valid sockaddr_un of length len.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    assert_eq!(rc, 0, "bind {path}: {}", std::io::Error::last_os_error());
    set_mode(Path::new(path), 0o666);
    let on: c_int = 1;
    // SAFETY: on is a valid c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_PASSCRED");
    // Ready: the caller gets the server's pid once the socket exists, and stops it by
    // that pid when done.
    // SAFETY: fork in a single-threaded program.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid > 0 {
        println!("{pid}");
        return;
    }
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // SAFETY: replaces the server's stdout, so that the caller's read of the pid ends.
    unsafe { libc::dup2(null.as_raw_fd(), 1) };
    let mut lines: HashMap<c_int, u64> = HashMap::new();
    let mut buf = vec![0u8; 16384];
    let mut control = [0u64; 16];
    loop {
        // SAFETY: all-zero is a valid sockaddr_un for recvmsg to fill.
        let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_un).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: msg points at buffers that live across the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "recvmsg: {e}");
            continue;
        }
        let text = &buf[..n as usize];
        if let Some(pids) = text.strip_prefix(COUNT_REQUEST.as_bytes()) {
            let count: u64 = String::from_utf8_lossy(pids)
                .split_whitespace()
                .filter_map(|p| p.parse::<c_int>().ok())
                .map(|p| lines.get(&p).copied().unwrap_or(0))
                .sum();
            let reply = count.to_string();
            // SAFETY: reply and the sender's address are valid for the lengths given.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    libc::MSG_DONTWAIT,
                    msg.msg_name as *const libc::sockaddr,
                    msg.msg_namelen,
                )
            };
            continue;
        }
        if let Some(pid) = sender_pid(&msg) {
            *lines.entry(pid).or_default() += 1;
        }
    }
}

/// The sending process of a datagram received with SO_PASSCRED.
fn sender_pid(msg: &libc::msghdr) -> Option<c_int> {
    // SAFETY: msg was filled by recvmsg; CMSG_* walk its control buffer within
    // msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg points at a header inside the control buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_CREDENTIALS {
            // SAFETY: an SCM_CREDENTIALS message carries one ucred, maybe unaligned.
            let cred =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::ucred) };
            return Some(cred.pid);
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!(
            "usage: pam-bench setup KIND DIR USERS | listen | run KIND DIR LOGINS AUTHS [--wrong] \
             | concurrent KIND DIR PROCS LOGINS ROUNDS"
        );
        std::process::exit(2)
    };
    let number = |i: usize| -> usize { args[i].parse().unwrap_or_else(|_| usage()) };
    match args.first().map(String::as_str) {
        Some("setup") if args.len() == 4 => setup(&args[1], Path::new(&args[2]), number(3)),
        Some("listen") if args.len() == 1 => listen(DEV_LOG),
        Some("run") if args.len() == 5 || args.len() == 6 => run(
            &args[1],
            Path::new(&args[2]),
            number(3),
            number(4),
            match args.get(5).map(String::as_str) {
                None => false,
                Some("--wrong") => true,
                Some(_) => usage(),
            },
        ),
        Some("concurrent") if args.len() == 6 => concurrent(
            &args[1],
            Path::new(&args[2]),
            number(3),
            number(4),
            number(5),
        ),
        _ => usage(),
    }
}
