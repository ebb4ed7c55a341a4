//! The reliability tests' PAM application: many authentications through real libpam,
//! the module's footprint across them, hostile PAM items, and a look for secrets left
//! in the process after `pam_end`. Users and keys are those of
//! `pam_totp_tests::reliability_support` (enrolled by the test); codes are computed here.
//!
//! ```text
//! pam-stress load SERVICE PREFIX PROCS PER_PROC [--first N] [--wrong-every K] [--report]
//! pam-stress memory SERVICE PREFIX COUNT
//! pam-stress integrity STORE
//! pam-stress hold STORE
//! pam-stress auth SERVICE USER_HEX RHOST_HEX TTY_HEX ANSWER_HEX
//! pam-stress secrets SERVICE USER RHOST ANSWER_MASKED CONTROL_MASKED NEEDLE_MASKED...
//! ```
//!
//! `load`: PROCS processes, each authenticating PER_PROC different users once with the
//! right code (process p takes users N + p*PER_PROC..), every K-th preceded by a wrong code;
//! prints `auths=.. ok=.. denied=.. unavailable=.. other=.. spurious=.. secs=..`, and with
//! `--report` one `ok USER STEP` line per accepted code as it happens.
//!
//! `memory`: COUNT authentications in this one process; prints the resident size, open
//! descriptors, threads and whether the module is still mapped, after the first 500 and
//! at the end.
//!
//! `integrity`: prints `integrity: ` and SQLite's `PRAGMA integrity_check` of STORE.
//!
//! `hold`: keeps a connection to STORE open (so its -wal and -shm files stay), prints
//! `holding`, and waits to be killed.
//!
//! `auth`: one transaction with hex-encoded items (any bytes; `@FILE` for the bytes of a
//! file; an empty hex string leaves the item unset); prints `auth=NAME(rc)` like
//! pam-client.
//!
//! `secrets`: one transaction from RHOST answering with ANSWER, then a scan of every
//! readable mapping of this process (the heap, the stack, every library's data) for
//! each NEEDLE; prints `found N in REGION` or `clean`, then where the scan finds the
//! CONTROL needle once it is unmasked on purpose: `control_heap=`, `control_stack=` (a
//! live frame) and `control_dead_frame=` (a frame that returned, as deep as the
//! transaction's), each `none` or the regions. Needles, the control and the answer come
//! masked (hex of each byte XOR 0x5a) so that this process holds no plain copy of its
//! own: what the scan finds, the module left behind. The transaction runs below a pad
//! of stack that the scan does not reach, so the frames it leaves are read as they were.

use pam_totp::otp::{code_at, step_at};
use pam_totp_tests::pam_ffi::*;
use pam_totp_tests::pipe::{pipe, read_all, write_all};
use pam_totp_tests::reliability_support::{code_not_near, secret, user, PARAMS};
use std::ffi::{c_int, c_void, CStr, CString};
use std::io::Write;
use std::time::Instant;

const MASK: u8 = 0x5a;

fn usage() -> ! {
    eprintln!(
        "usage: pam-stress load SERVICE PREFIX PROCS PER_PROC [--first N] [--wrong-every K] [--report]\n\
         \x20      pam-stress memory SERVICE PREFIX COUNT\n\
         \x20      pam-stress integrity STORE\n\
         \x20      pam-stress hold STORE\n\
         \x20      pam-stress auth SERVICE USER_HEX RHOST_HEX TTY_HEX ANSWER_HEX\n\
         \x20      pam-stress secrets SERVICE USER RHOST ANSWER_MASKED CONTROL_MASKED NEEDLE_MASKED..."
    );
    std::process::exit(2)
}

fn code_name(rc: c_int) -> &'static str {
    match rc {
        0 => "PAM_SUCCESS",
        4 => "PAM_SYSTEM_ERR",
        6 => "PAM_PERM_DENIED",
        7 => "PAM_AUTH_ERR",
        9 => "PAM_AUTHINFO_UNAVAIL",
        10 => "PAM_USER_UNKNOWN",
        19 => "PAM_CONV_ERR",
        25 => "PAM_IGNORE",
        _ => "OTHER",
    }
}

/// What the conversation answers: bytes, or masked bytes unmasked straight into the
/// response that the module takes, wipes and frees.
struct Answer<'a> {
    bytes: &'a [u8],
    masked: bool,
}

extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // SAFETY: appdata is the Answer passed to pam_start, alive for the transaction.
    let answer = unsafe { &*(appdata as *const Answer) };
    if n <= 0 {
        return 19;
    }
    let out = alloc_responses(n as usize);
    if out.is_null() {
        return 5;
    }
    for i in 0..n as usize {
        // SAFETY: libpam passes n message pointers.
        let style = unsafe { (**msgs.add(i)).msg_style };
        if style != PAM_PROMPT_ECHO_OFF && style != PAM_PROMPT_ECHO_ON {
            continue;
        }
        let reply = malloc_answer(answer.bytes);
        if answer.masked && !reply.is_null() {
            for j in 0..answer.bytes.len() {
                // SAFETY: reply holds bytes.len() + 1 bytes.
                unsafe { *reply.add(j) ^= MASK as std::ffi::c_char };
            }
        }
        // SAFETY: i < n entries.
        unsafe { (*out.add(i)).resp = reply };
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    0
}

/// One transaction: pam_start, the items, pam_authenticate, pam_end. Returns the
/// pam_authenticate result.
fn transaction(service: &CStr, user: &CStr, items: &[(c_int, &CStr)], answer: &Answer) -> c_int {
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: answer as *const Answer as *mut c_void,
    };
    let mut pamh: *mut pam_handle_t = std::ptr::null_mut();
    // SAFETY: valid strings and a conversation that outlive the transaction.
    let rc = unsafe { pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut pamh) };
    if rc != 0 {
        return -rc;
    }
    for (item, value) in items {
        // SAFETY: pamh is live; libpam copies the string.
        unsafe { pam_set_item(pamh, *item, value.as_ptr().cast()) };
    }
    // SAFETY: pamh is live.
    let rc = unsafe { pam_authenticate(pamh, 0) };
    // SAFETY: pamh is live and not used afterwards.
    unsafe { pam_end(pamh, rc) };
    rc
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Default)]
struct Tally {
    auths: u64,
    ok: u64,
    denied: u64,
    unavailable: u64,
    other: u64,
    spurious: u64,
}

impl Tally {
    fn count(&mut self, rc: c_int, expect_ok: bool) {
        self.auths += 1;
        match rc {
            0 => self.ok += 1,
            7 => self.denied += 1,
            9 => self.unavailable += 1,
            _ => self.other += 1,
        }
        if (rc == 0) != expect_ok || !(rc == 0 || rc == 7) {
            self.spurious += 1;
        }
    }

    fn add(&mut self, text: &str) {
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        if let [a, b, c, d, e, f] = v[..] {
            self.auths += a;
            self.ok += b;
            self.denied += c;
            self.unavailable += d;
            self.other += e;
            self.spurious += f;
        }
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.auths, self.ok, self.denied, self.unavailable, self.other, self.spurious
        )
    }
}

/// Authenticates users `first..first + count` of `prefix` once each with the right
/// code; every `wrong_every`-th first gets a wrong code, which must fail.
fn authenticate_users(
    service: &CStr,
    prefix: &str,
    first: usize,
    count: usize,
    wrong_every: usize,
    report: bool,
    mut after_each: impl FnMut(usize),
) -> Tally {
    let mut tally = Tally::default();
    let rhost = CString::new("192.0.2.200").unwrap();
    let items = [(PAM_RHOST, rhost.as_c_str())];
    let mut out = std::io::stdout().lock();
    for i in first..first + count {
        let name = CString::new(user(prefix, i)).unwrap();
        let key = secret(prefix, i);
        if wrong_every > 0 && i % wrong_every == 0 {
            let wrong = code_not_near(&key, &PARAMS, now());
            let answer = Answer {
                bytes: wrong.as_bytes(),
                masked: false,
            };
            tally.count(transaction(service, &name, &items, &answer), false);
        }
        let t = now();
        let code = code_at(&key, &PARAMS, t);
        let answer = Answer {
            bytes: code.as_bytes(),
            masked: false,
        };
        let rc = transaction(service, &name, &items, &answer);
        tally.count(rc, true);
        if report && rc == 0 {
            let _ = writeln!(out, "ok {} {}", user(prefix, i), step_at(t, PARAMS.period));
            let _ = out.flush();
        }
        after_each(i - first + 1);
    }
    tally
}

fn load(args: &[String]) {
    let [service, prefix, procs, per_proc, rest @ ..] = args else {
        usage()
    };
    let service = CString::new(service.as_str()).unwrap();
    let procs: usize = procs.parse().unwrap_or_else(|_| usage());
    let per_proc: usize = per_proc.parse().unwrap_or_else(|_| usage());
    let mut wrong_every = 0;
    let mut first = 0;
    let mut report = false;
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--wrong-every" => {
                wrong_every = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--first" => {
                first = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--report" => report = true,
            _ => usage(),
        }
    }
    let start = Instant::now();
    let tally = if procs <= 1 {
        authenticate_users(
            &service,
            prefix,
            first,
            per_proc,
            wrong_every,
            report,
            |_| {},
        )
    } else {
        let mut children = Vec::new();
        for p in 0..procs {
            let (r, w) = pipe();
            // SAFETY: fork in a single-threaded program; the child runs its share and
            // writes its tally before _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let tally = authenticate_users(
                    &service,
                    prefix,
                    first + p * per_proc,
                    per_proc,
                    wrong_every,
                    report,
                    |_| {},
                );
                write_all(w, tally.encode().as_bytes());
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: w belongs to the child now.
            unsafe { libc::close(w) };
            children.push((pid, r));
        }
        let mut total = Tally::default();
        for (pid, r) in children {
            total.add(&read_all(r));
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                total.other += 1;
                total.spurious += 1;
            }
        }
        total
    };
    println!(
        "auths={} ok={} denied={} unavailable={} other={} spurious={} secs={:.2}",
        tally.auths,
        tally.ok,
        tally.denied,
        tally.unavailable,
        tally.other,
        tally.spurious,
        start.elapsed().as_secs_f64()
    );
}

/// A field of /proc/self/status, in its unit (kB for sizes).
fn status_field(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn module_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains("pam_totp.so")
}

fn footprint(label: &str) {
    println!(
        "{label}: rss_kb={} fds={} threads={} module_mapped={}",
        status_field("VmRSS"),
        open_fds(),
        status_field("Threads"),
        module_mapped()
    );
}

fn memory(args: &[String]) {
    let [service, prefix, count] = args else {
        usage()
    };
    let service = CString::new(service.as_str()).unwrap();
    let count: usize = count.parse().unwrap_or_else(|_| usage());
    footprint("before");
    let start = Instant::now();
    let tally = authenticate_users(&service, prefix, 0, count, 10, false, |done| {
        if done == 500.min(count) {
            footprint("warm");
        }
    });
    footprint("after");
    println!(
        "auths={} ok={} denied={} unavailable={} other={} spurious={} secs={:.2}",
        tally.auths,
        tally.ok,
        tally.denied,
        tally.unavailable,
        tally.other,
        tally.spurious,
        start.elapsed().as_secs_f64()
    );
}

fn integrity(args: &[String]) {
    let [path] = args else { usage() };
    let result = pam_totp_tests::store_support::connect(std::path::Path::new(path))
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
    match result {
        Ok(text) => println!("integrity: {text}"),
        Err(e) => println!("integrity: cannot check: {e}"),
    }
}

fn hold(args: &[String]) {
    let [path] = args else { usage() };
    let conn =
        pam_totp_tests::store_support::connect(std::path::Path::new(path)).expect("open the store");
    let _: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("read the store");
    println!("holding");
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: pause(2) has no preconditions; the process ends by a signal.
        unsafe { libc::pause() };
    }
}

fn unhex(text: &str) -> Vec<u8> {
    if !text.len().is_multiple_of(2) {
        usage();
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|_| usage()))
        .collect()
}

/// An item given as hex, or as `@FILE` holding its bytes (for items longer than a
/// command-line argument may be).
fn item(arg: &str) -> Vec<u8> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read(path).expect("the item's file"),
        None => unhex(arg),
    }
}

fn auth(args: &[String]) {
    let [service, user_hex, rhost_hex, tty_hex, answer_hex] = args else {
        usage()
    };
    let service = CString::new(service.as_str()).unwrap();
    let user = CString::new(item(user_hex)).expect("no NUL in the user");
    let rhost = CString::new(item(rhost_hex)).expect("no NUL in the rhost");
    let tty = CString::new(item(tty_hex)).expect("no NUL in the tty");
    let mut items = Vec::new();
    if !rhost_hex.is_empty() {
        items.push((PAM_RHOST, rhost.as_c_str()));
    }
    if !tty_hex.is_empty() {
        items.push((PAM_TTY, tty.as_c_str()));
    }
    let answer = unhex(answer_hex);
    let answer = Answer {
        bytes: &answer,
        masked: false,
    };
    let rc = transaction(&service, &user, &items, &answer);
    println!("auth={}({rc})", code_name(rc));
}

/// Every readable mapping of this process: (start, end, name).
fn readable_regions() -> Vec<(u64, u64, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let name = fields.nth(3).unwrap_or("[anonymous]").to_string();
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (perms.starts_with('r') && name != "[vvar]" && name != "[vsyscall]")
                .then_some((start, end, name))
        })
        .collect()
}

/// The needles by their first masked byte, so that one pass over memory checks them
/// all: at each position only the needles that can start there are compared. Every
/// comparison masks the byte of memory, never the needle: no plain copy of a needle is
/// made, not even in a register of its own.
struct Needles<'a> {
    all: &'a [Vec<u8>],
    by_first: Vec<Vec<usize>>,
    longest: usize,
}

impl<'a> Needles<'a> {
    fn new(all: &'a [Vec<u8>]) -> Needles<'a> {
        let mut by_first = vec![Vec::new(); 256];
        for (i, needle) in all.iter().enumerate() {
            if let Some(first) = needle.first() {
                by_first[*first as usize].push(i);
            }
        }
        let longest = all.iter().map(Vec::len).max().unwrap_or(1).max(1);
        Needles {
            all,
            by_first,
            longest,
        }
    }

    /// Marks in `hits` each needle that starts in `haystack[..starts]` (and lies in
    /// `haystack`).
    fn find(&self, haystack: &[u8], starts: usize, hits: &mut [bool]) {
        for at in 0..starts.min(haystack.len()) {
            for &i in &self.by_first[(haystack[at] ^ MASK) as usize] {
                let needle = &self.all[i];
                if !hits[i]
                    && haystack.len() - at >= needle.len()
                    && haystack[at..at + needle.len()]
                        .iter()
                        .zip(needle)
                        .all(|(h, m)| *h ^ MASK == *m)
                {
                    hits[i] = true;
                }
            }
        }
    }
}

/// A buffer in an anonymous mapping of its own (never in the malloc heap), wiped and
/// unmapped on drop.
struct ScanBuffer {
    ptr: *mut u8,
    len: usize,
}

impl ScanBuffer {
    fn new(len: usize) -> ScanBuffer {
        // SAFETY: a new private anonymous mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        ScanBuffer {
            ptr: ptr.cast(),
            len,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live mapping of len writable bytes, borrowed mutably once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for ScanBuffer {
    fn drop(&mut self) {
        self.as_mut().iter_mut().for_each(|b| *b = 0);
        // SAFETY: unmapping the mapping made in new, not used afterwards.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The regions where each needle occurs. Memory is read through /proc/self/mem in
/// chunks into a buffer of its own mapping, which is itself skipped. The stacks are
/// read like any other mapping: the main thread's `[stack]`, down to its lowest page,
/// holds the frames of calls that have returned, until a deeper call reuses them (see
/// [`below_the_scan`]).
fn scan(needles: &[Vec<u8>]) -> Vec<(usize, String)> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: usize = 1 << 20;
    let needles = Needles::new(needles);
    let overlap = needles.longest - 1;
    let mut found = Vec::new();
    let mut mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut mapping = ScanBuffer::new(CHUNK + overlap);
    let own = mapping.ptr as u64;
    let buf = mapping.as_mut();
    for (start, end, name) in readable_regions() {
        if (start..end).contains(&own) {
            continue;
        }
        let mut at = start;
        let mut carried = 0;
        let mut hits = vec![false; needles.all.len()];
        while at < end {
            let want = CHUNK.min((end - at) as usize);
            if mem.seek(SeekFrom::Start(at)).is_err() {
                break;
            }
            let mut read = 0;
            while read < want {
                match mem.read(&mut buf[carried + read..carried + want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let filled = carried + read;
            let last = read < want || at + want as u64 >= end;
            // Needles starting in the tail kept for the next chunk are looked for there,
            // whole, unless this is the region's last chunk.
            let starts = if last {
                filled
            } else {
                filled.saturating_sub(overlap)
            };
            needles.find(&buf[..filled], starts, &mut hits);
            if last {
                break;
            }
            carried = overlap.min(filled);
            buf.copy_within(filled - carried..filled, 0);
            at += want as u64;
        }
        for (i, hit) in hits.into_iter().enumerate() {
            if hit {
                found.push((i, format!("{name} {start:x}-{end:x}")));
            }
        }
    }
    found
}

/// Bytes of stack between the frame that scans and the frames of the PAM transaction:
/// far more than a scan uses, so that the frames the transaction leaves behind are still
/// there, untouched, when the scan reads the stack.
const STACK_PAD: usize = 256 * 1024;

/// Runs `f` with [`STACK_PAD`] bytes of this frame's stack above it.
#[inline(never)]
fn below_the_scan<R>(f: impl FnOnce() -> R) -> R {
    let mut pad = [0u8; STACK_PAD];
    std::hint::black_box(&mut pad);
    let result = f();
    std::hint::black_box(&pad);
    result
}

/// The longest control needle.
const CONTROL_MAX: usize = 64;

/// Unmasks `control` into a buffer of this frame's stack and returns, leaving it behind
/// in a dead frame, as a function of the module would leave a key it did not wipe.
#[inline(never)]
fn leave_on_stack(control: &[u8]) {
    let mut buf = [0u8; CONTROL_MAX];
    for (b, m) in buf.iter_mut().zip(control) {
        *b = *m ^ MASK;
    }
    std::hint::black_box(&mut buf);
}

/// Runs `f` while a live frame of the stack holds `control` unmasked, then wipes it.
#[inline(never)]
fn with_on_stack<R>(control: &[u8], f: impl FnOnce() -> R) -> R {
    let mut buf = [0u8; CONTROL_MAX];
    for (b, m) in buf.iter_mut().zip(control) {
        *b = *m ^ MASK;
    }
    std::hint::black_box(&mut buf);
    let result = f();
    buf.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&mut buf);
    result
}

/// The regions where a control needle was found, `none` when nowhere.
fn regions(found: &[(usize, String)]) -> String {
    if found.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = found.iter().map(|(_, r)| r.as_str()).collect();
    names.join(",").replace(' ', ":")
}

fn secrets(args: &[String]) {
    let [service, user, rhost, answer_masked, control_masked, needles @ ..] = args else {
        usage()
    };
    let service = CString::new(service.as_str()).unwrap();
    let user = CString::new(user.as_str()).unwrap();
    let rhost = CString::new(rhost.as_str()).unwrap();
    let control = unhex(control_masked);
    if control.len() < 8 || control.len() > CONTROL_MAX {
        usage();
    }
    // The control last, reported by name: nothing may unmask it before the controls do.
    let mut needles: Vec<Vec<u8>> = needles.iter().map(|n| unhex(n)).collect();
    needles.push(control.clone());
    let name = |i: usize| {
        if i + 1 == needles.len() {
            "control".to_string()
        } else {
            i.to_string()
        }
    };
    for (i, region) in &scan(&needles) {
        println!("before: found {} in {region}", name(*i));
    }
    let stacks: Vec<String> = readable_regions()
        .into_iter()
        .filter(|(_, _, n)| n.starts_with("[stack"))
        .map(|(start, end, n)| format!("{n}:{}", end - start))
        .collect();
    println!("stacks={}", stacks.join(","));
    let answer = unhex(answer_masked);
    let answer = Answer {
        bytes: &answer,
        masked: true,
    };
    let rc =
        below_the_scan(|| transaction(&service, &user, &[(PAM_RHOST, rhost.as_c_str())], &answer));
    println!("auth={}({rc})", code_name(rc));
    let after = scan(&needles);
    for (i, region) in &after {
        println!("found {} in {region}", name(*i));
    }
    if after.is_empty() {
        println!("clean");
    }
    // The scan must see what is there. In the heap:
    let control = &needles[needles.len() - 1..];
    let mut copy: Vec<u8> = control[0].iter().map(|b| b ^ MASK).collect();
    std::hint::black_box(&copy);
    let seen = scan(control);
    copy.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&copy);
    println!("control_heap={}", regions(&seen));
    // In a live frame of the stack:
    let seen = with_on_stack(&control[0], || scan(control));
    println!("control_stack={}", regions(&seen));
    // And in a frame that returned, as deep as the transaction's were:
    below_the_scan(|| leave_on_stack(&control[0]));
    println!("control_dead_frame={}", regions(&scan(control)));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(&args[1..]),
        Some("memory") => memory(&args[1..]),
        Some("auth") => auth(&args[1..]),
        Some("integrity") => integrity(&args[1..]),
        Some("hold") => hold(&args[1..]),
        Some("secrets") => secrets(&args[1..]),
        _ => usage(),
    }
}
