//! A PAM application for tests: runs `pam_authenticate` and `pam_acct_mgmt` (or calls a
//! module's `pam_sm_authenticate` directly, to see its own return code) through real
//! libpam, answering prompts from standard input, one line per prompt.
//!
//! ```text
//! pam-client SERVICE USER [--rhost HOST] [--tty TTY] [--no-acct]
//! pam-client SERVICE USER [--rhost HOST] [--tty TTY] --direct MODULE.so [ARG...]
//! ```
//!
//! With `--report`, it also prints how long `pam_authenticate` took (`auth_ms=`,
//! `auth_us=`, and `auth_cpu_us=`: user and system CPU of the whole process, helper threads included), and,
//! after `pam_end`, the threads left in the process (`threads=`) and the mappings of
//! the module still in memory (`module_maps=`).
//!
//! Every message is echoed to stdout as `STYLE: text`, and the results as
//! `auth=NAME` and `acct=NAME`. With no line left on stdin, the conversation fails.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::BufRead;

use pam_totp_tests::pam_ffi::*;

type SmFn = unsafe extern "C" fn(*mut pam_handle_t, c_int, c_int, *const *const c_char) -> c_int;

fn code_name(rc: c_int) -> String {
    let name = match rc {
        0 => "PAM_SUCCESS",
        3 => "PAM_SERVICE_ERR",
        4 => "PAM_SYSTEM_ERR",
        5 => "PAM_BUF_ERR",
        6 => "PAM_PERM_DENIED",
        7 => "PAM_AUTH_ERR",
        9 => "PAM_AUTHINFO_UNAVAIL",
        10 => "PAM_USER_UNKNOWN",
        19 => "PAM_CONV_ERR",
        25 => "PAM_IGNORE",
        26 => "PAM_ABORT",
        28 => "PAM_MODULE_UNKNOWN",
        _ => "OTHER",
    };
    format!("{name}({rc})")
}

extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    if n <= 0 || n > 32 {
        return 19;
    }
    // SAFETY: calloc'd array of n responses, handed to libpam, which frees it.
    let out =
        unsafe { libc::calloc(n as usize, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if out.is_null() {
        return 5;
    }
    for i in 0..n as usize {
        // SAFETY: Linux-PAM passes an array of n message pointers.
        let m = unsafe { &**msgs.add(i) };
        // SAFETY: each message text is a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(m.msg) }
            .to_string_lossy()
            .into_owned();
        let style = match m.msg_style {
            1 => "PROMPT_ECHO_OFF",
            2 => "PROMPT_ECHO_ON",
            3 => "ERROR_MSG",
            4 => "TEXT_INFO",
            _ => "UNKNOWN",
        };
        println!("{style}: {text}");
        if m.msg_style == 1 || m.msg_style == 2 {
            let mut line = Vec::new();
            let read = std::io::stdin()
                .lock()
                .read_until(b'\n', &mut line)
                .unwrap_or(0);
            if read == 0 {
                println!("(no answer)");
                // SAFETY: out was allocated above with calloc; no strings were set yet
                // beyond earlier ones, which are freed with it by the caller's contract.
                unsafe { libc::free(out.cast()) };
                return 19;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            // SAFETY: out has n entries and i < n.
            unsafe { (*out.add(i)).resp = malloc_answer(&line) };
        }
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    0
}

/// User and system CPU time of this process so far, in microseconds.
fn cpu_us() -> i64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    us(usage.ru_utime) + us(usage.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: pam-client SERVICE USER [--rhost H] [--tty T] [--no-acct] [--direct MODULE [ARG...]]");
        std::process::exit(2);
    }
    let service = CString::new(args[0].clone()).unwrap();
    let user = CString::new(args[1].clone()).unwrap();
    let mut rhost = None;
    let mut tty = None;
    let mut acct = true;
    let mut report = false;
    let mut direct: Option<(String, Vec<String>)> = None;
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--rhost" => {
                rhost = Some(args[i + 1].clone());
                i += 2;
            }
            "--tty" => {
                tty = Some(args[i + 1].clone());
                i += 2;
            }
            "--no-acct" => {
                acct = false;
                i += 1;
            }
            "--report" => {
                report = true;
                i += 1;
            }
            "--direct" => {
                direct = Some((args[i + 1].clone(), args[i + 2..].to_vec()));
                break;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: std::ptr::null_mut(),
    };
    let mut pamh: *mut pam_handle_t = std::ptr::null_mut();
    // SAFETY: valid C strings and conv structure that outlive the handle.
    let rc = unsafe { pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut pamh) };
    if rc != 0 {
        println!("start={}", code_name(rc));
        std::process::exit(1);
    }
    let items: Vec<(c_int, CString)> = [(PAM_RHOST, rhost), (PAM_TTY, tty)]
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| (t, CString::new(v).unwrap())))
        .collect();
    for (t, v) in &items {
        // SAFETY: pamh is valid; libpam copies the string.
        unsafe { pam_set_item(pamh, *t, v.as_ptr().cast()) };
    }
    let started = std::time::Instant::now();
    let cpu_before = cpu_us();
    let rc = if let Some((module, margs)) = direct {
        let path = CString::new(module).unwrap();
        // SAFETY: dlopen of a path; failure is checked.
        let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            println!("dlopen failed");
            std::process::exit(1);
        }
        // SAFETY: looking up a symbol in a loaded library.
        let sym = unsafe { libc::dlsym(lib, c"pam_sm_authenticate".as_ptr()) };
        if sym.is_null() {
            println!("no pam_sm_authenticate");
            std::process::exit(1);
        }
        // SAFETY: pam_sm_authenticate has this signature by the PAM module contract.
        let f: SmFn = unsafe { std::mem::transmute::<*mut c_void, SmFn>(sym) };
        let cargs: Vec<CString> = margs
            .into_iter()
            .map(|a| CString::new(a).unwrap())
            .collect();
        let ptrs: Vec<*const c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: pamh is a live handle; argv holds argc valid strings.
        unsafe { f(pamh, 0, ptrs.len() as c_int, ptrs.as_ptr()) }
    } else {
        // SAFETY: pamh is valid.
        unsafe { pam_authenticate(pamh, 0) }
    };
    println!("auth={}", code_name(rc));
    if report {
        let elapsed = started.elapsed();
        println!("auth_ms={}", elapsed.as_millis());
        println!("auth_us={}", elapsed.as_micros());
        println!("auth_cpu_us={}", cpu_us() - cpu_before);
    }
    let mut last = rc;
    if rc == 0 && acct {
        // SAFETY: pamh is valid.
        last = unsafe { pam_acct_mgmt(pamh, 0) };
        println!("acct={}", code_name(last));
        if last == 0 {
            // SAFETY: pamh is valid; 0x2 is PAM_ESTABLISH_CRED.
            let rc = unsafe { pam_setcred(pamh, 0x2) };
            println!("setcred={}", code_name(rc));
        }
    }
    // SAFETY: pamh is valid and not used afterwards.
    unsafe { pam_end(pamh, last) };
    if report {
        let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let module_maps = maps.lines().filter(|l| l.contains("pam_totp")).count();
        println!("threads={threads}");
        println!("module_maps={module_maps}");
    }
}
