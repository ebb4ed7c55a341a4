//! Reliability under load, faults and hostile input, through the built module and real
//! libpam inside a sandbox: many processes on one store; `kill -9` of logins and of
//! `totp-admin` mid-way; a read-only, a full and a corrupt store; hostile PAM items
//! reaching the log; the module loaded and unloaded thousands of times in one process;
//! and no secret left in the process after `pam_end`.
//!
//! Sizes: `PAM_TOTP_LOAD_AUTHS` authentications per process in the load test (8
//! processes, 10,000 each unless set; about 80 s on 2 cores),
//! `PAM_TOTP_FAULT_OPS` killed-or-not operations in each fault test (1,000 unless
//! set), `PAM_TOTP_MEMORY_AUTHS` transactions in the memory test (10,000 unless set).
//! `PAM_TOTP_FAULT_SEED` replays one sequence of kill points.

use pam_totp::otp::{code_at, code_for_step, encode_base32, step_at, Algorithm, OtpParams};
use pam_totp::recovery;
use pam_totp::secret::SecretKey;
use pam_totp::store::{EnrollMode, Enrollment, SqliteStore, StepOutcome, Store, DEFAULT_FACTOR};
use pam_totp_tests::reliability_support::{
    enroll_many, enroll_many_with, integrity, secret, user, PARAMS,
};
use pam_totp_tests::store_support as factors;
use pam_totp_tests::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

fn stress_bin() -> PathBuf {
    let path = release_dir().join("pam-stress");
    assert!(
        path.exists(),
        "{} is missing: build with `cargo build --release --workspace`",
        path.display()
    );
    path
}

/// A service in the sandbox's own /etc/pam.d, which libpam reads without pam_wrapper
/// (the sandboxed processes see the sandbox's /etc).
fn etc_service(sb: &Sandbox, name: &str) {
    let text = format!(
        "auth required {} config={}\naccount required pam_permit.so\n",
        module().display(),
        sb.config_path().display()
    );
    write_file(&sb.dir.join("etc/pam.d").join(name), &text, 0o644);
}

/// The same stack for pam_wrapper, whose log lines the tests read.
fn wrapped_service(sb: &Sandbox, name: &str) -> PathBuf {
    sb.service(
        name,
        "auth required {module} config={config}\naccount required pam_permit.so\n",
    )
}

/// `pam-stress ARGS` inside the sandbox.
fn stress(sb: &Sandbox, args: &[&str]) -> Output {
    let bin = stress_bin();
    let mut argv = vec![bin.to_str().unwrap()];
    argv.extend_from_slice(args);
    sb.run(&argv)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shell line that runs one `pam-stress auth` through pam_wrapper for `service`.
fn auth_line(sb: &Sandbox, service: &str, user: &[u8], rhost: &[u8], answer: &[u8]) -> String {
    format!(
        "timeout 20 env LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 \
         PAM_WRAPPER_SERVICE_DIR={} PAM_WRAPPER_DEBUGLEVEL=2 {} auth {service} {} {} '' {}",
        sb.dir.join("pam").join(service).display(),
        stress_bin().display(),
        hex(user),
        hex(rhost),
        hex(answer)
    )
}

/// Runs `script` with `sh -c` inside the sandbox (after the sandbox's own mounts) and
/// splits its output like pam-client's: `auth=` lines and the module's log lines.
fn sandboxed_script(sb: &Sandbox, script: &str) -> (Vec<String>, PamRun) {
    let out = sb
        .command("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = parse_run(&out);
    let auths = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("auth=").map(str::to_string))
        .collect();
    (auths, run)
}

/// One transaction with arbitrary bytes as the user, rhost, tty and answer, through
/// pam_wrapper so that the module's log lines come back.
fn hostile_auth(sb: &Sandbox, user: &[u8], rhost: &[u8], tty: &[u8], answer: &[u8]) -> PamRun {
    // Items too long for a command-line argument go through a file.
    let arg = |name: &str, bytes: &[u8]| {
        if bytes.len() < 4096 {
            return hex(bytes);
        }
        let path = sb.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("@{}", path.display())
    };
    let out = sb
        .pam_command("hostile", stress_bin())
        .args(["auth", "hostile"])
        .args([arg("user", user), arg("rhost", rhost), arg("tty", tty)])
        .arg(hex(answer))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    parse_run(&out)
}

fn parse_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// xorshift64*: the kill points, reproducible from the seed printed by each test.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = env_number("PAM_TOTP_FAULT_SEED", 0).max(1).wrapping_add(
            if std::env::var("PAM_TOTP_FAULT_SEED").is_ok() {
                0
            } else {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            },
        );
        eprintln!("{test}: PAM_TOTP_FAULT_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Starts `cmd`, kills it with SIGKILL after `delay` unless it ended first, and
/// returns its output and whether it ran to the end (rather than being killed).
/// How long one successful `totp-admin ARGS` takes, so that kill points cover all of it.
fn timed_admin(sb: &Sandbox, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = sb.admin(args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn run_and_kill(mut cmd: Command, stdin: &[u8], delay: Duration) -> (Output, bool) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let deadline = Instant::now() + delay;
    let mut finished = false;
    // Poll for an early exit; bounded by the delay.
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    if !finished {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    }
    let out = child.wait_with_output().unwrap();
    let completed = out.status.code().is_some();
    (out, completed)
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

/// 8 processes authenticate at once against one store, every one of them with right
/// codes for users of its own (and every 10th user first with a wrong code, which must
/// fail): every right code succeeds, every wrong one fails, none is refused because the
/// store was busy, and the store is intact afterwards.
#[test]
fn load_8_processes_one_store() {
    let per_proc = env_number("PAM_TOTP_LOAD_AUTHS", 2_000) as usize;
    let procs = 8;
    let sb = Sandbox::new("load");
    sb.write_config("");
    enroll_many(&sb.store_path(), &sb.key_path(), "load", procs * per_proc);
    sb.add_many_users("load", procs * per_proc);
    etc_service(&sb, "load");
    let out = stress(
        &sb,
        &[
            "load",
            "load",
            "load",
            &procs.to_string(),
            &per_proc.to_string(),
            "--wrong-every",
            "10",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("load: {text}");
    let f = parse_fields(text.lines().last().unwrap_or(""));
    let n = |k: &str| {
        f.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let right = (procs * per_proc) as u64;
    let wrong = (0..procs * per_proc).filter(|i| i % 10 == 0).count() as u64;
    assert_eq!(n("auths"), right + wrong, "{text}");
    assert_eq!(n("ok"), right, "every right code succeeds: {text}");
    assert_eq!(n("denied"), wrong, "every wrong code fails: {text}");
    assert_eq!(n("unavailable"), 0, "the store was busy for a user: {text}");
    assert_eq!(n("other"), 0, "{text}");
    assert_eq!(n("spurious"), 0, "{text}");
    assert_eq!(integrity(&sb.store_path()), "ok");
    // Every accepted step is on record: the same codes again are replays.
    let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
    for i in (0..procs * per_proc).step_by(97) {
        let state = store.login_state(&user("load", i), "x").unwrap();
        assert!(
            state.factors.first().and_then(|f| f.last_step).is_some(),
            "user {i} has no accepted step"
        );
    }
}

// ---------------------------------------------------------------------------------
// Faults: kill -9
// ---------------------------------------------------------------------------------

/// Authenticating processes killed with SIGKILL at random points. After each: the
/// store is intact, every code reported accepted is on record (so it is a replay from
/// then on, which one login checks end to end), and a user the killed process never
/// reached logs in normally. At the end every user is still enrolled.
#[test]
fn kill_authenticating_processes() {
    let ops = env_number("PAM_TOTP_FAULT_OPS", 1_000) as usize;
    let mut rng = Rng::seeded("kill_authenticating_processes");
    let per_round = 120;
    let sb = Sandbox::new("killauth");
    sb.write_config("[throttle]\nmax_failures = 1000\nuser_max_failures = 100000\n");
    // Enough users that no round runs out; rounds are counted below.
    let max_rounds = ops;
    enroll_many(
        &sb.store_path(),
        &sb.key_path(),
        "ka",
        max_rounds * per_round,
    );
    sb.add_many_users("ka", max_rounds * per_round);
    etc_service(&sb, "killauth");
    wrapped_service(&sb, "replay");
    let mut done_ops = 0;
    let mut round = 0;
    let mut replays_checked = 0;
    while done_ops < ops && round < max_rounds {
        let first = round * per_round;
        let mut cmd = sb.command(stress_bin());
        cmd.args(["load", "killauth", "ka", "1", &per_round.to_string()])
            .args([
                "--first",
                &first.to_string(),
                "--wrong-every",
                "5",
                "--report",
            ]);
        // From before the first login to well into the run.
        let delay = Duration::from_micros(2_000 + rng.below(120_000));
        let (out, completed) = run_and_kill(cmd, b"", delay);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let accepted: Vec<(String, i64)> = stdout
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("ok ")?.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect();
        // Operations: the logins reported, plus the one cut short.
        done_ops += accepted.len() + usize::from(!completed);
        assert_eq!(integrity(&sb.store_path()), "ok", "round {round}");
        let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
        for (name, step) in &accepted {
            let last = store
                .login_state(name, "x")
                .unwrap()
                .factors
                .first()
                .and_then(|f| f.last_step);
            assert!(
                last >= Some(*step),
                "round {round}: {name}'s accepted step {step} is not on record ({last:?})"
            );
        }
        drop(store);
        // End to end: the last accepted code is refused as a replay (while it is
        // still inside the window), and an untouched user logs in.
        if let Some((name, step)) = accepted.last() {
            let index: usize = name.trim_start_matches("ka").parse().unwrap();
            let now_step = step_at(unix_now(), 30) as i64;
            if now_step - step <= 1 {
                let code = code_for_step(&secret("ka", index), &PARAMS, *step as u64);
                let line = auth_line(
                    &sb,
                    "replay",
                    name.as_bytes(),
                    b"192.0.2.9",
                    code.as_bytes(),
                );
                let (auths, run) = sandboxed_script(&sb, &line);
                assert_eq!(auths.len(), 1, "{run:?}");
                assert!(
                    auths[0].starts_with("PAM_AUTH_ERR"),
                    "replay of {name}: {run:?}"
                );
                assert!(run.log_contains("code already used"), "{:?}", run.logs);
                replays_checked += 1;
            }
        }
        let untouched = first + per_round - 1;
        if !completed {
            let name = user("ka", untouched);
            let code = code_at(&secret("ka", untouched), &PARAMS, unix_now());
            let line = auth_line(
                &sb,
                "replay",
                name.as_bytes(),
                b"192.0.2.9",
                code.as_bytes(),
            );
            let (auths, run) = sandboxed_script(&sb, &line);
            assert_eq!(auths.len(), 1, "{run:?}");
            assert!(
                auths[0].starts_with("PAM_SUCCESS"),
                "round {round}: {run:?}"
            );
        }
        round += 1;
    }
    eprintln!("kill_authenticating_processes: {round} processes killed or finished, {done_ops} operations, {replays_checked} replays checked");
    assert!(replays_checked > 0, "no replay was checked end to end");
    let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
    assert_eq!(store.list().unwrap().len(), max_rounds * per_round);
}

/// A user's key and last accepted step (when enrolled), and recovery codes left.
type UserState = (Option<(Vec<u8>, Option<i64>)>, u32);

/// The state of one victim of the totp-admin kill test, read from the store.
fn victim_state(store: &SqliteStore, name: &str) -> UserState {
    let factor = store
        .login_state(name, "x")
        .unwrap()
        .factors
        .first()
        .map(|f| (f.secret.as_bytes().to_vec(), f.last_step));
    (factor, store.recovery_codes_left(name).unwrap())
}

/// `totp-admin` killed with SIGKILL at random points of `enroll --secret-stdin`,
/// `recovery-codes` and `reset`. After each: the store is intact; each operation took
/// effect whole or not at all (a factor always has its full set of recovery codes, a
/// removed one none); one that finished is in effect; users no operation touched keep
/// their factor, codes and replay state; and a step used before is never accepted again.
#[test]
fn kill_totp_admin() {
    let ops = env_number("PAM_TOTP_FAULT_OPS", 1_000) as usize;
    let mut rng = Rng::seeded("kill_totp_admin");
    let sb = Sandbox::new("killadmin");
    let stable: Vec<String> = (0..3).map(|i| format!("stable{i}")).collect();
    let victims: Vec<String> = (0..3).map(|i| format!("victim{i}")).collect();
    for name in stable.iter().chain(&victims) {
        sb.add_user(name, PASSWORD, None, &[]);
    }
    sb.write_config("");
    let key_of = |name: &str| secret(name, 0);
    for name in stable.iter().chain(&victims) {
        sb.enroll(name, &encode_base32(&key_of(name)));
    }
    // A step each user has used: it must stay used whatever happens.
    let used_step = step_at(unix_now(), 30) as i64;
    {
        let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
        for name in stable.iter().chain(&victims) {
            let id = store.login_state(name, "x").unwrap().factors[0].id;
            assert_eq!(
                store
                    .accept_step(name, id, used_step, unix_now() as i64)
                    .unwrap(),
                StepOutcome::Accepted
            );
        }
    }
    let before: Vec<_> = {
        let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
        stable.iter().map(|n| victim_state(&store, n)).collect()
    };
    // How long one operation takes, so the kill points cover all of it.
    let typical = timed_admin(&sb, &["recovery-codes", "--user", &victims[0]]);
    let mut killed = 0;
    for op in 0..ops {
        let victim = &victims[rng.below(victims.len() as u64) as usize];
        let key = encode_base32(&key_of(victim));
        let (args, stdin): (Vec<&str>, String) = match rng.below(3) {
            0 => (
                vec![
                    "--json",
                    "enroll",
                    "--user",
                    victim,
                    "--secret-stdin",
                    "--replace",
                ],
                format!("{}\n", key.as_str()),
            ),
            1 => (vec!["recovery-codes", "--user", victim], String::new()),
            _ => (vec!["reset", "--user", victim], String::new()),
        };
        let mut cmd = sb.command(totp_admin());
        cmd.arg("--config").arg(sb.config_path()).args(&args);
        let delay = Duration::from_micros(rng.below(typical.as_micros() as u64 * 2 + 1));
        let (out, completed) = run_and_kill(cmd, stdin.as_bytes(), delay);
        killed += usize::from(!completed);
        assert_eq!(integrity(&sb.store_path()), "ok", "op {op}: {args:?}");
        let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
        let (factor, codes) = victim_state(&store, victim);
        match &factor {
            Some((bytes, last_step)) => {
                assert_eq!(bytes, key_of(victim).as_bytes(), "op {op}: {victim}'s key");
                assert_eq!(codes, 10, "op {op}: {args:?} left {codes} recovery codes");
                assert!(
                    *last_step >= Some(used_step),
                    "op {op}: {args:?} reopened a used step ({last_step:?})"
                );
            }
            None => assert_eq!(codes, 0, "op {op}: {args:?} left codes without a factor"),
        }
        if completed {
            assert!(
                out.status.success() || args.contains(&"reset") || args.contains(&"recovery-codes"),
                "op {op}: {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                let enrolled = factor.is_some();
                match args
                    .iter()
                    .find(|a| ["enroll", "reset", "recovery-codes"].contains(a))
                {
                    Some(&"enroll") | Some(&"recovery-codes") => {
                        assert!(
                            enrolled,
                            "op {op}: {args:?} succeeded but {victim} is not enrolled"
                        )
                    }
                    Some(&"reset") => {
                        assert!(
                            !enrolled,
                            "op {op}: reset succeeded but {victim} is enrolled"
                        )
                    }
                    _ => unreachable!(),
                }
            }
        }
        for (name, was) in stable.iter().zip(&before) {
            assert_eq!(&victim_state(&store, name), was, "op {op}: {name} changed");
        }
    }
    eprintln!("kill_totp_admin: {ops} operations (one takes ~{typical:?}), {killed} killed");
    assert!(
        killed > ops / 10,
        "too few operations were killed to test anything"
    );
    // End to end: the step used before is still refused (while inside the window), and
    // the stable users log in with a later one.
    etc_service(&sb, "after");
    wrapped_service(&sb, "after");
    let now_step = step_at(unix_now(), 30) as i64;
    for name in &stable {
        let key = key_of(name);
        if now_step - used_step <= 1 {
            let old = code_for_step(&key, &PARAMS, used_step as u64);
            let line = auth_line(&sb, "after", name.as_bytes(), b"192.0.2.8", old.as_bytes());
            let (auths, run) = sandboxed_script(&sb, &line);
            assert!(auths[0].starts_with("PAM_AUTH_ERR"), "{name}: {run:?}");
            assert!(run.log_contains("code already used"), "{name}: {run:?}");
        }
        let step = now_step.max(used_step + 1) as u64;
        let code = code_for_step(&key, &PARAMS, step);
        let line = auth_line(&sb, "after", name.as_bytes(), b"192.0.2.8", code.as_bytes());
        let (auths, run) = sandboxed_script(&sb, &line);
        assert!(auths[0].starts_with("PAM_SUCCESS"), "{name}: {run:?}");
    }
}

// ---------------------------------------------------------------------------------
// Faults: the store's file system
// ---------------------------------------------------------------------------------

/// A sandbox with alice enrolled with [`SECRET`] through totp-admin.
fn enrolled(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("");
    sb.enroll("alice", SECRET);
    wrapped_service(&sb, "fs");
    sb
}

fn assert_fails_closed(what: &str, auth: &str, run: &PamRun, words: &[&str]) {
    assert!(
        auth.starts_with("PAM_AUTHINFO_UNAVAIL"),
        "{what}: {auth} {run:?}"
    );
    let line = run
        .logs
        .iter()
        .find(|l| l.contains("result=unavailable"))
        .unwrap_or_else(|| panic!("{what}: no log line: {:?}", run.logs));
    assert!(
        words.iter().any(|w| line.contains(w)),
        "{what}: the log line does not say why ({words:?}): {line}"
    );
}

/// The store's directory mounted read-only, with no -wal/-shm files (nothing can be
/// opened) and with them kept by another open connection (the store can be read but
/// not written): a right code and a wrong code both fail closed, since neither the
/// used step nor the failure could be recorded, with a log line that says why.
#[test]
fn read_only_store_fails_closed() {
    for held in [false, true] {
        let what = if held {
            "read-only, held open"
        } else {
            "read-only"
        };
        let sb = enrolled("readonly");
        let dir = sb.store_path().parent().unwrap().to_path_buf();
        wait_for_fresh_step(30, 5);
        let right = code(SECRET, 0);
        let hold = if held {
            format!(
                "mkfifo /tmp/ready || exit 125\n{} hold '{}' > /tmp/ready 2>/dev/null &\n\
                 HOLDER=$!\nread ready < /tmp/ready\n",
                stress_bin().display(),
                sb.store_path().display()
            )
        } else {
            String::new()
        };
        let script = format!(
            "HOLDER=\n{hold}mount -o bind,ro '{d}' '{d}' || exit 125\n{}\n{}\n\
             [ -z \"$HOLDER\" ] || {{ kill $HOLDER; wait $HOLDER; }}\n",
            auth_line(&sb, "fs", b"alice", b"192.0.2.40", right.as_bytes()),
            auth_line(&sb, "fs", b"alice", b"192.0.2.40", b"000000"),
            d = dir.display()
        );
        let (auths, run) = sandboxed_script(&sb, &script);
        assert_eq!(auths.len(), 2, "{what}: {run:?}");
        for auth in &auths {
            assert_fails_closed(what, auth, &run, &["read-only"]);
        }
        assert_eq!(integrity(&sb.store_path()), "ok", "{what}");
        // Writable again: the same code is accepted, so nothing was half-written.
        let (auths, run) = sandboxed_script(
            &sb,
            &auth_line(&sb, "fs", b"alice", b"192.0.2.40", right.as_bytes()),
        );
        assert!(auths[0].starts_with("PAM_SUCCESS"), "{what}: {run:?}");
    }
}

/// The store on a small tmpfs that is full (no room at all, or room for SQLite's
/// shared-memory file but not for the log of a write): the login fails closed with a
/// log line saying so, the process survives, and once there is room again the same
/// code is accepted and the store is intact.
#[test]
fn full_store_fails_closed() {
    for (what, leave_kb) in [("full", 0), ("nearly full", 36)] {
        let sb = enrolled("full");
        let dir = sb.store_path().parent().unwrap().to_path_buf();
        let saved = sb.dir.join("totp/saved.db");
        std::fs::copy(sb.store_path(), &saved).unwrap();
        wait_for_fresh_step(30, 8);
        let right = code(SECRET, 0);
        let script = format!(
            "set -u\n\
             mount -t tmpfs -o size=1m,mode=0700 full '{d}' || exit 125\n\
             cp -p '{saved}' '{db}' || exit 125\n\
             free_kb=$(( $(stat -f -c '%a * %S' '{d}') / 1024 ))\n\
             fill=$(( free_kb - {leave_kb} ))\n\
             [ $fill -gt 0 ] && {{ head -c ${{fill}}k /dev/zero > '{d}/fill' 2>/dev/null || true; }}\n\
             {a1}\n{a2}\n\
             rm -f '{d}/fill'\n\
             {a3}\n\
             {stress} integrity '{db}'",
            d = dir.display(),
            saved = saved.display(),
            db = sb.store_path().display(),
            a1 = auth_line(&sb, "fs", b"alice", b"192.0.2.41", right.as_bytes()),
            a2 = auth_line(&sb, "fs", b"alice", b"192.0.2.41", b"000000"),
            a3 = auth_line(&sb, "fs", b"alice", b"192.0.2.41", right.as_bytes()),
            stress = stress_bin().display(),
        );
        let (auths, run) = sandboxed_script(&sb, &script);
        assert_eq!(auths.len(), 3, "{what}: {run:?}");
        for auth in &auths[..2] {
            assert_fails_closed(what, auth, &run, &["full"]);
        }
        assert!(
            auths[2].starts_with("PAM_SUCCESS"),
            "{what}, with room again: {run:?}"
        );
        assert!(
            run.stdout.contains("integrity: ok"),
            "{what}: {}",
            run.stdout
        );
    }
}

/// Damaged store files fail closed with a log line that names the damage; the host
/// process survives each.
#[test]
fn corrupt_store_fails_closed() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &[&str]); 5] = [
        (
            "every page after the first overwritten",
            |b| {
                let page = 4096.min(b.len());
                b[page..].iter_mut().for_each(|x| *x = 0xa5);
            },
            &["damaged"],
        ),
        (
            "every page after the first zeroed",
            |b| {
                let page = 4096.min(b.len());
                b[page..].iter_mut().for_each(|x| *x = 0);
            },
            &["damaged"],
        ),
        (
            "truncated inside the header",
            |b| b.truncate(60),
            &["truncated"],
        ),
        ("truncated to one page", |b| b.truncate(4096), &["damaged"]),
        (
            "header overwritten",
            |b| {
                b[..100].iter_mut().for_each(|x| *x = b'x');
            },
            &["damaged"],
        ),
    ];
    for (what, damage, words) in cases {
        let sb = enrolled("corrupt");
        // More users, so the store has pages past the first.
        {
            let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
            let key = SecretKey::from_bytes(b"abcdefghijabcdefghij".to_vec());
            let hashed: Vec<_> = (0..10)
                .map(|i| recovery::hash_new(&format!("abcd-efgh-jkmn-pq{i:02}")).unwrap())
                .collect();
            for i in 0..200 {
                let e = Enrollment {
                    name: DEFAULT_FACTOR,
                    secret: &key,
                    params: PARAMS,
                    mode: EnrollMode::New,
                    recovery_codes: Some(&hashed),
                    confirmed_step: None,
                };
                store.enroll(&format!("filler{i}"), &e, 1).unwrap();
            }
        }
        let conn = pam_totp_tests::store_support::connect(&sb.store_path()).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(conn);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", sb.store_path().display()));
        }
        let mut bytes = std::fs::read(sb.store_path()).unwrap();
        assert!(
            bytes.len() > 8192,
            "{what}: the store has {} bytes",
            bytes.len()
        );
        damage(&mut bytes);
        std::fs::write(sb.store_path(), &bytes).unwrap();
        wait_for_fresh_step(30, 5);
        let (auths, run) = sandboxed_script(
            &sb,
            &auth_line(
                &sb,
                "fs",
                b"alice",
                b"192.0.2.42",
                code(SECRET, 0).as_bytes(),
            ),
        );
        assert_eq!(auths.len(), 1, "{what}: {run:?}");
        assert_fails_closed(what, &auths[0], &run, words);
    }
}

// ---------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------

/// User names, remote hosts and terminals with control characters, quotes, `%`
/// directives, newlines, invalid UTF-8 and 64 KB of text: each login is decided (never
/// a crash), and the one log line it writes is a single, escaped, bounded line. (A
/// module that stands aside, alone in the stack, makes libpam answer PAM_PERM_DENIED.)
#[test]
fn hostile_items_reach_the_log_escaped() {
    let sb = Sandbox::new("hostile");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("");
    sb.enroll("alice", SECRET);
    sb.service(
        "hostile",
        "auth required {module} config={config}\naccount required pam_permit.so\n",
    );
    let big = vec![b'A'; 65536];
    let forged: &[u8] = b"bob\nuser=\"alice\" result=success reason=\"code accepted\"";
    // (user, rhost, tty, expected result, what the log line must contain)
    type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            forged,
            b"192.0.2.50",
            b"",
            "PAM_PERM_DENIED",
            "user=\"bob\\x0auser=\\\"alice\\\" result=success",
        ),
        (
            b"%s%n%x%p%%",
            b"192.0.2.50",
            b"",
            "PAM_PERM_DENIED",
            "user=\"%s%n%x%p%%\"",
        ),
        (
            b"\x1b[31mroot\x7f\r",
            b"192.0.2.50",
            b"",
            "PAM_PERM_DENIED",
            "user=\"\\x1b[31mroot\\x7f\\x0d\"",
        ),
        (
            b"caf\xc3\xa9",
            b"192.0.2.50",
            b"",
            "PAM_PERM_DENIED",
            "user=\"caf\\xc3\\xa9\"",
        ),
        (
            b"alice' OR '1'='1",
            b"192.0.2.50",
            b"",
            "PAM_PERM_DENIED",
            "user=\"alice' OR '1'='1\"",
        ),
        (
            b"\xff\xfe",
            b"192.0.2.50",
            b"",
            "PAM_USER_UNKNOWN",
            "cannot determine the user",
        ),
        (
            &big,
            b"192.0.2.50",
            b"",
            "PAM_USER_UNKNOWN",
            "cannot determine the user",
        ),
        (
            b"alice",
            b"1.2.3.4\n%n%s\" result=success",
            b"",
            "PAM_AUTH_ERR",
            "source=\"1.2.3.4\\x0a%n%s\\\" result=success\"",
        ),
        (
            b"alice",
            &big,
            b"",
            "PAM_AUTH_ERR",
            "source=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA...\"",
        ),
        (
            b"alice",
            b"",
            &big,
            "PAM_AUTH_ERR",
            "source=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA...\"",
        ),
        (
            b"alice",
            b"",
            b"pts/1\n\x07%n",
            "PAM_AUTH_ERR",
            "source=\"pts/1\\x0a\\x07%n\"",
        ),
        (b"alice", b"\xc0\xaf..", b"", "PAM_AUTH_ERR", "source=\""),
    ];
    for (user, rhost, tty, want, logged) in cases {
        let shown = String::from_utf8_lossy(&user[..user.len().min(24)]).into_owned();
        let run = hostile_auth(&sb, user, rhost, tty, b"000000");
        assert!(run.auth.starts_with(want), "{shown:?}: {run:?}");
        let lines: Vec<&String> = run.logs.iter().filter(|l| l.contains("result=")).collect();
        assert_eq!(lines.len(), 1, "{shown:?}: {:?}", run.logs);
        let line = lines[0];
        assert!(line.contains(logged), "{shown:?}: {line}");
        assert!(
            line.len() < 600,
            "{shown:?}: a {} byte log line",
            line.len()
        );
        assert!(
            !line.bytes().any(|b| b.is_ascii_control()),
            "{shown:?}: {line:?}"
        );
        // No line of its own for text after a newline in an item.
        for l in run.stderr.lines().filter(|l| l.contains("result=")) {
            assert!(l.contains("SYSLOG("), "a forged line: {l}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------

/// pam_start / pam_authenticate / pam_end 10,000 times in one process (plus a wrong
/// code before every 10th): the module is unloaded after each (it is not mapped
/// between transactions), and the resident size, descriptors and threads do not grow.
#[test]
fn module_loaded_and_unloaded_without_growth() {
    let count = env_number("PAM_TOTP_MEMORY_AUTHS", 10_000) as usize;
    let sb = Sandbox::new("memory");
    sb.write_config("");
    enroll_many(&sb.store_path(), &sb.key_path(), "mem", count);
    sb.add_many_users("mem", count);
    etc_service(&sb, "memory");
    let out = stress(&sb, &["memory", "memory", "mem", &count.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let field = |label: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{label}:")))
            .unwrap_or_else(|| panic!("no {label} line: {text}"));
        parse_fields(line)
    };
    let warm = field("warm");
    let after = field("after");
    let totals = parse_fields(text.lines().last().unwrap());
    assert_eq!(totals["spurious"], "0", "{text}");
    assert_eq!(totals["ok"], count.to_string(), "{text}");
    let kb = |m: &std::collections::HashMap<String, String>| m["rss_kb"].parse::<i64>().unwrap();
    let growth = kb(&after) - kb(&warm);
    assert!(
        growth < 1024,
        "resident size grew by {growth} kB over {count} transactions: {text}"
    );
    assert_eq!(warm["fds"], after["fds"], "descriptors leaked: {text}");
    assert_eq!(after["threads"], "1", "threads left behind: {text}");
    assert_eq!(
        warm["module_mapped"], "false",
        "the module stays loaded: {text}"
    );
    assert_eq!(
        after["module_mapped"], "false",
        "the module stays loaded: {text}"
    );
}

fn masked(bytes: &[u8]) -> String {
    hex(&bytes.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>())
}

/// What the secret scan looks for of one user's key: the whole key, every 8-byte piece
/// of it (a copy cut short, or a fragment left in a block buffer, is still a leak), and
/// its base32 text. Keys are random: 8 random bytes do not occur anywhere by chance.
fn key_needles(whose: &str, key: &SecretKey) -> Vec<(String, Vec<u8>)> {
    let bytes = key.as_bytes();
    let mut needles = vec![(format!("{whose}'s key"), bytes.to_vec())];
    needles.extend(bytes.windows(8).enumerate().map(|(at, piece)| {
        (
            format!("{whose}'s key, bytes {at}..{}", at + 8),
            piece.to_vec(),
        )
    }));
    needles.push((
        format!("{whose}'s key in base32"),
        encode_base32(key).as_bytes().to_vec(),
    ));
    needles
}

/// After `pam_end`, no copy of a key is left anywhere in the process's readable memory
/// (the heap, the stack with the frames the login left behind, every library's data),
/// nor of the typed answer or the code it normalises to. The store holds 5,000 users and
/// the one who logs in sits among them, so SQLite reads pages holding its neighbours'
/// sealed rows: neither its key nor theirs may be found, whole, in base32 or as any
/// 8-byte piece. The login's record grows (wrong codes from three sources add throttle
/// rows) and shrinks (a TOTP code and a recovery code after failures remove the pair's
/// row); the scan runs after each. A control needle unmasked on purpose into the heap,
/// a live stack frame and a returned one must be found, or the scan is blind.
#[test]
fn no_secret_left_after_pam_end() {
    const USERS: usize = 5_000;
    const SCANNED: usize = 2_500;
    let sb = Sandbox::new("secrets");
    sb.write_config("[totp]\ndigits = 8\n");
    let params = OtpParams {
        algorithm: Algorithm::Sha1,
        digits: 8,
        period: 30,
    };
    // The scanned user and the users on either side of it (rows written next to each
    // other, so in the same pages of the factors table) have random keys.
    let random_keys: Vec<(usize, SecretKey)> = (SCANNED - 2..=SCANNED + 2)
        .map(|i| (i, SecretKey::generate(20).unwrap()))
        .collect();
    let key_of = |i: usize| {
        random_keys
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, k)| k.clone())
    };
    enroll_many_with(&sb.store_path(), &sb.key_path(), "sec", USERS, |i| {
        key_of(i).map(|k| factors::enrolled(k, params, 1))
    });
    sb.add_many_users("sec", USERS);
    let name = user("sec", SCANNED);
    let key = key_of(SCANNED).unwrap();
    let recovery_code = "k7m2-x9pq-4hvw-t3nz";
    let store = SqliteStore::open_for_changes(&sb.store_path(), &sb.key_path()).unwrap();
    store
        .replace_recovery_codes(&name, &[recovery::hash_new(recovery_code).unwrap()])
        .unwrap();
    etc_service(&sb, "secrets");
    let mut key_needles_all = key_needles(&name, &key);
    for (i, k) in &random_keys {
        if *i != SCANNED {
            key_needles_all.extend(key_needles(&user("sec", *i), k));
        }
    }
    // Not a secret: bytes the scan must find once pam-stress unmasks them on purpose.
    let control = SecretKey::generate(16).unwrap();
    let typed_recovery = "K7M2 X9PQ 4HVW T3NZ";
    let typed = |code: &str| format!(" {} {} ", &code[..4], &code[4..]);
    // (what, source, whether it succeeds, the sources throttled after it)
    type Run = (&'static str, &'static str, bool, &'static [&'static str]);
    let runs: [Run; 5] = [
        (
            "a wrong code from a first source",
            "192.0.2.211",
            false,
            &["192.0.2.211"],
        ),
        (
            "a wrong code from a second source",
            "192.0.2.212",
            false,
            &["192.0.2.211", "192.0.2.212"],
        ),
        (
            "a wrong code from a third source",
            "192.0.2.213",
            false,
            &["192.0.2.211", "192.0.2.212", "192.0.2.213"],
        ),
        (
            "a TOTP code after failures",
            "192.0.2.213",
            true,
            &["192.0.2.211", "192.0.2.212"],
        ),
        (
            "a recovery code after failures",
            "192.0.2.211",
            true,
            &["192.0.2.212"],
        ),
    ];
    for (what, source, succeeds, throttled) in runs {
        wait_for_fresh_step(30, 5);
        let now = unix_now();
        let code = code_at(&key, &params, now).to_string();
        let mut needles = key_needles_all.clone();
        let answer = if what.contains("recovery") {
            needles.push(("the typed recovery code".into(), typed_recovery.into()));
            needles.push(("the recovery code".into(), b"k7m2x9pq4hvwt3nz".to_vec()));
            typed_recovery.to_string()
        } else if succeeds {
            needles.push(("the typed code".into(), typed(&code).into_bytes()));
            needles.push(("the code".into(), code.clone().into_bytes()));
            typed(&code)
        } else {
            let wrong = pam_totp_tests::reliability_support::code_not_near(&key, &params, now);
            needles.push(("the typed code".into(), typed(&wrong).into_bytes()));
            needles.push(("the code typed".into(), wrong.clone().into_bytes()));
            needles.push(("the right code".into(), code.clone().into_bytes()));
            typed(&wrong)
        };
        let mut args = vec![
            "secrets".to_string(),
            "secrets".into(),
            name.clone(),
            source.into(),
            masked(answer.as_bytes()),
            masked(control.as_bytes()),
        ];
        args.extend(needles.iter().map(|(_, n)| masked(n)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = stress(&sb, &args);
        let text = String::from_utf8_lossy(&out.stdout);
        let want = if succeeds {
            "auth=PAM_SUCCESS"
        } else {
            "auth=PAM_AUTH_ERR"
        };
        assert!(
            text.contains(want),
            "{what}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or("none")
                .to_string()
        };
        assert!(
            field("stacks").starts_with("[stack]:"),
            "{what}: the main thread's stack is not among the regions scanned: {text}"
        );
        assert_ne!(
            field("control_heap"),
            "none",
            "{what}: the scan is blind: {text}"
        );
        for control in ["control_stack", "control_dead_frame"] {
            assert!(
                field(control).contains("[stack]"),
                "{what}: the scan does not see the stack ({control}): {text}"
            );
        }
        let found: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("found "))
            .map(|l| {
                let (i, region) = l.split_once(" in ").unwrap();
                let needle = match i.parse::<usize>() {
                    Ok(i) => needles[i].0.as_str(),
                    Err(_) => "the control, before it was unmasked",
                };
                format!("{needle} in {region}")
            })
            .collect();
        assert!(
            found.is_empty(),
            "after {what}, pam_end left: {found:#?}\n{text}"
        );
        assert!(text.contains("\nclean\n"), "{what}: {text}");
        assert!(!text.contains("before: found"), "{what}: {text}");
        // The record grew or shrank as the login says.
        let (pairs, _) = store.throttle_state(&name).unwrap();
        let mut sources: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
        sources.sort();
        assert_eq!(sources, throttled, "{what}: the throttle rows");
        eprintln!(
            "{what}: clean; {}",
            text.lines()
                .filter(|l| l.starts_with("control_") || l.starts_with("stacks="))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

// ---------------------------------------------------------------------------------
// store rekey
// ---------------------------------------------------------------------------------

/// Every user's factor opens with the host key at `key`, and is the key they enrolled.
fn assert_all_open_with(sb: &Sandbox, key: &std::path::Path, prefix: &str, count: usize) {
    let store = SqliteStore::open_for_reading(&sb.store_path(), key).unwrap();
    for i in 0..count {
        let state = store.login_state(&user(prefix, i), "x").unwrap();
        assert_eq!(
            state.factors.len(),
            1,
            "{} lost its factor",
            user(prefix, i)
        );
        assert_eq!(
            state.factors[0].secret.as_bytes(),
            secret(prefix, i).as_bytes(),
            "{}'s key",
            user(prefix, i)
        );
    }
}

/// Whether every factor of the store opens with the key file at `key`.
fn opens_with(sb: &Sandbox, key: &std::path::Path) -> bool {
    let host_key = pam_totp::store::seal::HostKey::load(key).unwrap();
    SqliteStore::open_for_reading(&sb.store_path(), &sb.key_path())
        .unwrap()
        .opens_with(&host_key)
        .unwrap()
}

/// `totp-admin store rekey`, run again and again while logins go on: every right code
/// either passes or fails closed (the moment between the re-sealing commit and the key
/// file's replacement), no wrong code ever passes, and afterwards every key opens with
/// the last key file and with none of the earlier ones.
#[test]
fn store_rekey_while_logins_run() {
    let rounds = 40;
    let sb = Sandbox::new("rekeylogins");
    sb.write_config("");
    enroll_many(&sb.store_path(), &sb.key_path(), "rk", rounds);
    sb.add_many_users("rk", rounds);
    wrapped_service(&sb, "rk");
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut old_keys = Vec::new();
    std::thread::scope(|s| {
        let logins = s.spawn(|| {
            let mut outcomes = Vec::new();
            // One user a round, so that no right code is a replay.
            for i in 0..rounds {
                let key = secret("rk", i);
                let t = unix_now();
                let right = code_at(&key, &PARAMS, t).to_string();
                let wrong = (0..10)
                    .map(|d| format!("{:06}", (right.parse::<u32>().unwrap() + 1 + d) % 1_000_000))
                    .find(|c| {
                        (0..4).all(|k| *c != code_at(&key, &PARAMS, t + k * 30 - 60).to_string())
                    })
                    .unwrap();
                let name = user("rk", i);
                let script = format!(
                    "{}\n{}\n",
                    auth_line(&sb, "rk", name.as_bytes(), b"192.0.2.9", wrong.as_bytes()),
                    auth_line(&sb, "rk", name.as_bytes(), b"192.0.2.9", right.as_bytes())
                );
                let (auths, run) = sandboxed_script(&sb, &script);
                assert_eq!(auths.len(), 2, "{run:?}");
                outcomes.push((name, auths, run.logs));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            outcomes
        });
        let mut rekeys = 0;
        // Bounded: the logins end after `rounds` rounds; a rekey each time round.
        while !done.load(std::sync::atomic::Ordering::SeqCst) && rekeys < 200 {
            let saved = sb.dir.join(format!("old-key-{rekeys}"));
            std::fs::copy(sb.key_path(), &saved).unwrap();
            old_keys.push(saved);
            let out = sb.admin(&["store", "rekey"], "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            rekeys += 1;
        }
        let outcomes = logins.join().unwrap();
        let mut passed = 0;
        let mut closed = 0;
        for (name, auths, logs) in &outcomes {
            assert!(
                auths[0].starts_with("PAM_AUTH_ERR")
                    || auths[0].starts_with("PAM_AUTHINFO_UNAVAIL"),
                "{name}: a wrong code gave {}: {logs:?}",
                auths[0]
            );
            if auths[1].starts_with("PAM_SUCCESS") {
                passed += 1;
            } else {
                assert!(
                    auths[1].starts_with("PAM_AUTHINFO_UNAVAIL"),
                    "{name}: the right code gave {}: {logs:?}",
                    auths[1]
                );
                closed += 1;
            }
        }
        eprintln!("rekey while logging in: {rekeys} rekeys, {passed} right codes passed, {closed} failed closed");
        assert!(rekeys >= 2, "the logins ended before a second rekey");
        assert!(
            passed > rounds / 2,
            "{passed} of {rounds} right codes passed"
        );
    });
    assert_eq!(integrity(&sb.store_path()), "ok");
    assert_all_open_with(&sb, &sb.key_path(), "rk", rounds);
    for old in &old_keys {
        assert!(!opens_with(&sb, old), "a key opens with {}", old.display());
    }
}

/// `totp-admin store rekey` killed with SIGKILL at random points: the store stays
/// intact, no enrollment is lost, and its factors open all with the key file or (killed
/// between the commit and the rename) all with the pending `KEY.new`, never some with
/// each; the next rekey finishes the job.
#[test]
fn kill_store_rekey() {
    let ops = env_number("PAM_TOTP_FAULT_OPS", 1_000).min(150) as usize;
    let count = 30;
    let mut rng = Rng::seeded("kill_store_rekey");
    let sb = Sandbox::new("killrekey");
    sb.write_config("");
    enroll_many(&sb.store_path(), &sb.key_path(), "kr", count);
    let pending = pam_totp::store::seal::pending_key_path(&sb.key_path());
    let typical = timed_admin(&sb, &["store", "rekey"]);
    let mut killed = 0;
    let mut between = 0;
    for op in 0..ops {
        let mut cmd = sb.command(totp_admin());
        cmd.arg("--config")
            .arg(sb.config_path())
            .args(["store", "rekey"]);
        let delay = Duration::from_micros(rng.below(typical.as_micros() as u64 * 2 + 1));
        let (out, completed) = run_and_kill(cmd, b"", delay);
        killed += usize::from(!completed);
        if completed {
            assert!(
                out.status.success(),
                "op {op}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(integrity(&sb.store_path()), "ok", "op {op}");
        if opens_with(&sb, &sb.key_path()) {
            assert_all_open_with(&sb, &sb.key_path(), "kr", count);
        } else {
            assert!(
                pending.exists() && opens_with(&sb, &pending),
                "op {op}: the factors open neither with the key file nor with KEY.new"
            );
            assert_all_open_with(&sb, &pending, "kr", count);
            between += 1;
        }
    }
    eprintln!(
        "kill_store_rekey: {ops} runs (one takes ~{typical:?}), {killed} killed, {between} between commit and rename"
    );
    assert!(
        killed > ops / 10,
        "too few runs were killed to test anything"
    );
    let out = sb.admin(&["store", "rekey"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_open_with(&sb, &sb.key_path(), "kr", count);
}

/// Two `store rekey` at the same moment, many times: each must leave a store whose
/// factors all open with the key file (one run's new key must never be sealed into the
/// store while the other run's key lands in the file).
#[test]
fn concurrent_store_rekeys_keep_the_store_and_its_key_together() {
    let count = 10;
    let sb = Sandbox::new("rekeyrace");
    sb.write_config("");
    enroll_many(&sb.store_path(), &sb.key_path(), "rr", count);
    for round in 0..25 {
        let start = || {
            sb.command(totp_admin())
                .arg("--config")
                .arg(sb.config_path())
                .args(["store", "rekey"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        // A run may also be refused (the other holds the store); neither may break it.
        let (a, b) = (start(), start());
        for child in [a, b] {
            child.wait_with_output().unwrap();
        }
        assert!(
            opens_with(&sb, &sb.key_path()),
            "round {round}: the store's factors do not open with the key file"
        );
        assert_all_open_with(&sb, &sb.key_path(), "rr", count);
    }
}
