//! What an unprivileged user, or a slip of root's, must not be able to do through
//! `totp-admin`: stop or freeze it while it holds what every login needs; turn a
//! wrong code into a success through a failed write; bring back an empty store; print
//! terminal escapes to root; read a root-only policy; get past the password check as
//! root-by-setuid or around pam_faillock; lose or double an enrollment; reset names
//! that do not exist.

use pam_totp_tests::admin_support::{strip_ansi, AdminWorld, Run};
use pam_totp_tests::freeze_support::{inode_of, write_locks, Freezer, Jitter};
use pam_totp_tests::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse";
const STACK: &str = "auth required {module} config={config}\naccount required pam_permit.so\n";
/// As a real stack has it: a password module first (here one that always passes), then
/// pam_totp. A PAM_IGNORE from pam_totp then lets the login in.
const STACK_AFTER_PASSWORD: &str = "auth required pam_permit.so\n\
     auth required {module} config={config}\naccount required pam_permit.so\n";
/// A second key, for replacements.
const OTHER_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Problems found along a test, reported together at the end.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

fn world(name: &str, config: &str) -> AdminWorld {
    let w = AdminWorld::new(name, config);
    w.sb.add_group("admins");
    w.sb.add_user("alice", PASSWORD, None, &[]);
    w.sb.add_user("bob", PASSWORD, None, &[]);
    w.sb.service("login", STACK);
    w
}

fn lines(answers: &[&str]) -> Vec<u8> {
    answers
        .iter()
        .flat_map(|a| format!("{a}\n").into_bytes())
        .collect()
}

/// A login through the built module with `answer` at the code prompt.
fn login(w: &AdminWorld, user: &str, answer: &str) -> PamRun {
    w.sb.pam("login", user, &["--rhost", "192.0.2.10"], &lines(&[answer]))
}

/// A code of `secret` that is certainly not the current one (nor the next or last).
fn wrong_code(secret: &str) -> String {
    let right: u32 = code(secret, 0).parse().unwrap();
    format!("{:06}", (right + 500_000) % 1_000_000)
}

/// (uid, gid) of a sandbox user.
fn ids(w: &AdminWorld, user: &str) -> (u32, u32) {
    let get = |flag: &str| -> u32 {
        let out = w.sb.run(&["id", flag, user]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (get("-u"), get("-g"))
}

fn enrolled(w: &AdminWorld, user: &str) -> bool {
    let status = w.as_root(&["status", "--user", user, "--json"], "");
    status.json_has("enrolled", "true")
}

/// The standard output of a child, collected as it comes, to wait for a prompt.
struct Watch {
    text: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn new(stream: impl Read + Send + 'static) -> Watch {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Watch {
            text,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Waits (at most `limit`) until `needle` has been written.
    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Everything, once the writer has closed its end.
    fn finish(mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.text()
    }
}

/// Waits at most `limit` for a child of the test; kills it (it is the test's own)
/// when it does not end.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `user` signals `pid` (a process the test started) with `signal`: whether it was
/// allowed.
fn user_kill(w: &AdminWorld, user: &str, signal: &str, pid: u32) -> bool {
    let out = w
        .user_command(user, &[], "/bin/kill")
        .args([signal, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status.success()
}

/// Root (the test) sends a signal to a process it started.
fn root_kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

// ---------------------------------------------------------------------------------
// A stopped or frozen tool.
// ---------------------------------------------------------------------------------

/// The caller cannot SIGSTOP the tool while it waits at a prompt with the store open
/// (the current-code prompt of `disable`) or after the password check (the
/// confirmation-code prompt of a first `enroll`).
#[test]
fn the_caller_cannot_stop_the_tool_at_its_prompts() {
    let w = world("bypass-sigstop", "");
    w.sb.add_user("carol", PASSWORD, None, &[]);
    w.sb.enroll("bob", SECRET);
    // Sanity: the users can signal their own processes, so a refusal below is the
    // tool's doing.
    let mut own = w
        .user_command("bob", &[], "sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/exe", own.id()))
        .map(|p| !p.ends_with("sleep"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        user_kill(&w, "bob", "-KILL", own.id()),
        "bob cannot signal his own process"
    );
    assert!(wait_bounded(&mut own, Duration::from_secs(10)).is_some());
    let mut findings = Findings::default();

    for (user, args, first_input, prompt) in [
        ("bob", &["disable"][..], None, "Current code"),
        (
            "carol",
            &["enroll", "--qr", "none"][..],
            Some(format!("{PASSWORD}\n")),
            "Code: ",
        ),
    ] {
        let mut tool = w
            .user_command(user, &[], w.bin.to_str().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = tool.id();
        let mut stdin = tool.stdin.take().unwrap();
        if let Some(input) = &first_input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        let out = Watch::new(tool.stdout.take().unwrap());
        let err = Watch::new(tool.stderr.take().unwrap());
        let waiting = out.wait_for(prompt, Duration::from_secs(15));
        assert!(
            waiting,
            "{user} {args:?} never reached {prompt:?}: {} {}",
            out.text(),
            err.text()
        );
        let stopped = user_kill(&w, user, "-STOP", pid);
        findings.check(!stopped, || {
            format!(
                "{user} could SIGSTOP `totp-admin {}` at {prompt:?}",
                args.join(" ")
            )
        });
        if stopped {
            root_kill("-CONT", pid);
        }
        drop(stdin);
        let status = wait_bounded(&mut tool, Duration::from_secs(15));
        assert!(
            status.is_some(),
            "the tool did not end once its input closed"
        );
        out.finish();
        err.finish();
    }
    findings.assert_none();
}

const FREEZE_CONFIG: &str = "[throttle]\nmax_failures = 100000\nuser_max_failures = 1000000\n";

/// A freezable cgroup of `user`'s, or `None` with the reason printed.
fn user_freezer(w: &AdminWorld, user: &str) -> Option<Freezer> {
    let (uid, gid) = ids(w, user);
    match Freezer::create("pam_totp-test", uid, gid) {
        Ok(f) => Some(f),
        Err(why) => {
            eprintln!("skipped: no freezable cgroup can be made here: {why}");
            None
        }
    }
}

/// The setuid tool run by `user` from inside `cg`: the user's shell moves itself into
/// the cgroup and becomes the tool.
fn in_cgroup(w: &AdminWorld, cg: &Freezer, user: &str, args: &[&str]) -> Command {
    let join = "echo $$ > \"$0\" && exec \"$@\"";
    if cg.user_can_join() {
        let mut cmd = w.user_command(user, &[], "/bin/sh");
        cmd.args(["-c", join])
            .arg(cg.procs_file())
            .arg(&w.bin)
            .args(args);
        cmd
    } else {
        // cgroup v2: moving in needs the common ancestor, which the delegating manager
        // (here root) has; the user owns the cgroup and can freeze it.
        let mut cmd = w.sb.command("/bin/sh");
        cmd.args(["-c", join])
            .arg(cg.procs_file())
            .args([
                "setpriv",
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ])
            .arg(&w.bin)
            .args(args);
        cmd
    }
}

fn run_in_cgroup(w: &AdminWorld, cg: &Freezer, user: &str, args: &[&str], stdin: &str) -> Run {
    let out = feed(&mut in_cgroup(w, cg, user, args), stdin);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The user can freeze and thaw their cgroup themselves (the file is theirs): what the
/// test then does with the same file, it does only faster.
fn assert_user_can_freeze(w: &AdminWorld, cg: &Freezer, user: &str) {
    let (file, value) = cg.freeze_command();
    let thaw = if value == "FROZEN" { "THAWED" } else { "0" };
    let out = w
        .user_command(user, &[], "/bin/sh")
        .args([
            "-c",
            "echo \"$1\" > \"$0\" && echo \"$2\" > \"$0\"",
            file.to_str().unwrap(),
            value,
            thaw,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{user} cannot freeze their own cgroup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The store's files, whose locks every login needs (the WAL and shared-memory files
/// come and go: taken anew each time).
fn store_inodes(w: &AdminWorld) -> Vec<u64> {
    let store = w.sb.store_path();
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = store.clone().into_os_string();
            p.push(suffix);
            inode_of(Path::new(&p))
        })
        .collect()
}

/// bob freezes his own cgroup, with his read-only `totp-admin` runs inside, at many
/// moments (random ones, and as soon as the tool is seen holding a write lock on the
/// store): each time, alice's login must still complete promptly. (A read-only SQLite
/// connection that finds the WAL index to rebuild takes it exclusively: the tool refuses
/// to run from such a cgroup at all, before it opens the store.)
#[test]
fn a_frozen_read_command_never_holds_up_other_logins() {
    let w = world("bypass-freeze-read", FREEZE_CONFIG);
    w.sb.enroll("alice", SECRET);
    w.sb.enroll("bob", SECRET);
    let Some(cg) = user_freezer(&w, "bob") else {
        return;
    };
    assert_user_can_freeze(&w, &cg, "bob");
    // Sanity: alice's login works, and how long it takes unhindered.
    let t = Instant::now();
    let run = login(&w, "alice", &code(SECRET, 0));
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    let unhindered = t.elapsed();

    let commands: [&[&str]; 3] = [&["status"], &["--json", "status"], &["policy", "show"]];
    let mut jitter = Jitter::from_clock();
    let tries = 200;
    let mut caught = 0;
    for i in 0..tries {
        let args = commands[i % commands.len()];
        let mut tool = in_cgroup(&w, &cg, "bob", args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = tool.id();
        // The tool itself runs once the setuid binary is the process's image (before
        // that, the sandbox and setpriv are being set up).
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&exe).ok().as_deref() != Some(w.bin.as_path())
            && tool.try_wait().unwrap().is_none()
        {
            assert!(Instant::now() < deadline, "try {i}: the tool did not start");
            std::thread::sleep(Duration::from_micros(100));
        }
        // Every other try: a random moment in the tool's first 20 ms. The others: the
        // moment it is seen holding a write lock on the store (or at its end).
        let delay = if i % 2 == 0 {
            Duration::from_micros(jitter.below(20_000))
        } else {
            Duration::from_secs(10)
        };
        let started = Instant::now();
        loop {
            if !write_locks(pid, &store_inodes(&w)).is_empty()
                || started.elapsed() >= delay
                || tool.try_wait().unwrap().is_some()
            {
                break;
            }
        }
        let at = started.elapsed();
        cg.freeze();
        let frozen = cg.wait_frozen(Duration::from_secs(5));
        let held = write_locks(pid, &store_inodes(&w));
        if !held.is_empty() {
            caught += 1;
        }
        if frozen {
            let t = Instant::now();
            let run = login(&w, "alice", &code(SECRET, 0));
            let took = t.elapsed();
            let ok = took < Duration::from_secs(3)
                && (run.auth_is("PAM_SUCCESS") || run.auth_is("PAM_AUTH_ERR"));
            if !ok {
                cg.thaw();
                let _ = wait_bounded(&mut tool, Duration::from_secs(10));
                panic!(
                    "try {i}: with bob's `totp-admin {}` (pid {pid}) frozen {at:?} into its \
                     run, holding the store's write locks {held:?}, alice's login took \
                     {took:?} (unhindered: {unhindered:?}) and ended {}; logs: {:?}",
                    args.join(" "),
                    run.auth,
                    run.logs
                );
            }
        }
        cg.thaw();
        let status = wait_bounded(&mut tool, Duration::from_secs(10));
        assert!(status.is_some(), "try {i}: the thawed tool did not end");
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "try {i}: bob's `totp-admin {}` ran from a cgroup he can freeze",
            args.join(" ")
        );
    }
    eprintln!("{caught} of {tries} freezes landed while the tool held a write lock on the store");
}

/// A command run by a user from a cgroup they can freeze, reading or writing, is refused
/// before it does anything, naming the cgroup; outside it, the same command runs.
#[test]
fn user_commands_refuse_a_cgroup_the_caller_can_freeze() {
    let w = world("bypass-freeze-write", FREEZE_CONFIG);
    w.sb.add_user("carol", PASSWORD, None, &[]);
    w.sb.enroll("bob", SECRET);
    let Some(bob_cg) = user_freezer(&w, "bob") else {
        return;
    };
    let Some(carol_cg) = user_freezer(&w, "carol") else {
        return;
    };
    assert_user_can_freeze(&w, &bob_cg, "bob");
    let mut findings = Findings::default();
    let mut refused_naming = |run: &Run, who: &str, cg: &Freezer| {
        findings.check(
            run.code == 1 && run.stderr.contains(&cg.name()) && !run.stdout.contains("Key: "),
            || {
                format!(
                    "{who} from freezable cgroup {}: expected exit 1 naming the cgroup, got {run:?}",
                    cg.cgroup_path()
                )
            },
        );
    };

    // A first enrollment, with the right password.
    let run = run_in_cgroup(
        &w,
        &carol_cg,
        "carol",
        &["enroll", "--qr", "none"],
        &format!("{PASSWORD}\n"),
    );
    refused_naming(&run, "carol: enroll", &carol_cg);
    // A replacement, with a current code.
    wait_for_fresh_step(30, 10);
    let run = run_in_cgroup(
        &w,
        &bob_cg,
        "bob",
        &["enroll", "--qr", "none"],
        &format!("{}\n", code(SECRET, 0)),
    );
    refused_naming(&run, "bob: enroll", &bob_cg);
    // disable, with the next code.
    let run = run_in_cgroup(
        &w,
        &bob_cg,
        "bob",
        &["disable"],
        &format!("{}\n", code(SECRET, 30)),
    );
    refused_naming(&run, "bob: disable", &bob_cg);
    // Reading commands too: a read-only connection can hold the WAL index exclusively.
    for args in [&["status"][..], &["--json", "status"], &["policy", "show"]] {
        let run = run_in_cgroup(&w, &bob_cg, "bob", args, "");
        refused_naming(&run, &format!("bob: {}", args.join(" ")), &bob_cg);
    }
    findings.check(enrolled(&w, "bob"), || {
        "bob's factor was removed by `disable` run from his freezable cgroup".into()
    });

    // Outside the cgroup the same enrollment goes ahead (to the key; unconfirmed here).
    let run = w.as_user(
        "carol",
        &["enroll", "--qr", "none"],
        &format!("{PASSWORD}\n"),
    );
    findings.check(run.stdout.contains("Key: "), || {
        format!("carol's enroll outside any freezable cgroup did not run: {run:?}")
    });
    findings.assert_none();
}

/// `failmode = "open"` covers a store that cannot be used before the prompt; a wrong
/// code whose failure cannot be recorded afterwards is still refused.
#[test]
fn failmode_open_never_turns_a_checked_wrong_code_into_success() {
    let w = world("bypass-failmode-open", "[policy]\nfailmode = \"open\"\n");
    w.sb.service("login", STACK_AFTER_PASSWORD);
    w.sb.enroll("alice", SECRET);
    // Sanity: the stack lets alice in with the right code.
    wait_for_fresh_step(30, 12);
    assert!(login(&w, "alice", &code(SECRET, 0)).auth_is("PAM_SUCCESS"));

    let mut client =
        w.sb.pam_command("login", pam_client())
            .args(["login", "alice", "--rhost", "192.0.2.10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut answer = client.stdin.take().unwrap();
    let out = Watch::new(client.stdout.take().unwrap());
    let err = Watch::new(client.stderr.take().unwrap());
    assert!(
        out.wait_for("PROMPT_ECHO_OFF", Duration::from_secs(15)),
        "no code prompt: {} {}",
        out.text(),
        err.text()
    );
    // At the prompt: the store stops taking writes (another process holds its write
    // lock longer than the module waits for it).
    let mut holder =
        w.sb.command("sqlite3")
            .arg(w.sb.store_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut holder_in = holder.stdin.take().unwrap();
    let holder_out = Watch::new(holder.stdout.take().unwrap());
    holder_in
        .write_all(b".timeout 2000\nBEGIN IMMEDIATE;\nSELECT 'holding';\n")
        .unwrap();
    assert!(
        holder_out.wait_for("holding", Duration::from_secs(10)),
        "sqlite3 could not take the write lock"
    );
    answer
        .write_all(format!("{}\n", wrong_code(SECRET)).as_bytes())
        .unwrap();
    drop(answer);
    let status = wait_bounded(&mut client, Duration::from_secs(30)).expect("pam-client ended");
    let _ = holder_in.write_all(b"ROLLBACK;\n.quit\n");
    drop(holder_in);
    assert!(wait_bounded(&mut holder, Duration::from_secs(10)).is_some());
    holder_out.finish();
    let run = parse_run(&std::process::Output {
        status,
        stdout: out.finish().into_bytes(),
        stderr: err.finish().into_bytes(),
    });
    assert!(
        run.auth_is("PAM_AUTH_ERR") || run.auth_is("PAM_AUTHINFO_UNAVAIL"),
        "a wrong code, with the store unwritable after the prompt, under failmode = \"open\": \
         auth={} (must be PAM_AUTH_ERR or PAM_AUTHINFO_UNAVAIL); logs: {:?}",
        run.auth,
        run.logs
    );
}

// ---------------------------------------------------------------------------------
// A missing store.
// ---------------------------------------------------------------------------------

fn store_files(w: &AdminWorld) -> Vec<PathBuf> {
    let dir = w.sb.store_path().parent().unwrap().to_path_buf();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// With the store moved away, no command but `store init` brings back an (empty)
/// store: they say it is missing and how to restore it, and logins fail closed.
#[test]
fn a_missing_store_is_reported_not_recreated() {
    let w = world(
        "bypass-missing-store",
        "[policy]\nmandatory_groups = [\"admins\"]\ngrace_period = \"2s\"\n",
    );
    w.sb.service("login", STACK_AFTER_PASSWORD);
    w.sb.add_user("carol", PASSWORD, None, &["admins"]);
    w.sb.enroll("alice", SECRET);
    // carol, mandatory and unenrolled, uses up her grace period.
    let first = login(&w, "carol", "");
    assert!(
        first.auth_is("PAM_SUCCESS"),
        "in the grace period: {first:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = login(&w, "carol", "");
    assert!(
        !after.auth_is("PAM_SUCCESS"),
        "the grace period is over: {after:?}"
    );
    assert!(
        login(&w, "alice", &wrong_code(SECRET)).auth_is("PAM_AUTH_ERR"),
        "a wrong code is refused while the store is there"
    );

    // The store goes away (a bad restore, a full disk cleaned up by hand...).
    let backup = w.sb.dir.join("totp/backup");
    std::fs::create_dir_all(&backup).unwrap();
    for file in store_files(&w) {
        std::fs::rename(&file, backup.join(file.file_name().unwrap())).unwrap();
    }
    let mut findings = Findings::default();
    let runs = [
        ("bob: status", w.as_user("bob", &["status"], "")),
        (
            "root: status --user alice",
            w.as_root(&["status", "--user", "alice"], ""),
        ),
        ("root: list", w.as_root(&["list"], "")),
    ];
    for (what, run) in &runs {
        findings.check(
            run.code == 1
                && run.stderr.contains("missing")
                && run.stderr.contains("totp-admin store init"),
            || format!("{what}: expected exit 1 saying the store is missing and naming `totp-admin store init`, got {run:?}"),
        );
        let files = store_files(&w);
        findings.check(files.is_empty(), || format!("{what}: created {files:?}"));
    }
    let run = login(&w, "alice", &wrong_code(SECRET));
    findings.check(run.auth_is("PAM_AUTHINFO_UNAVAIL"), || {
        format!(
            "alice with a wrong code, store gone: auth={} (must be PAM_AUTHINFO_UNAVAIL); logs: {:?}",
            run.auth, run.logs
        )
    });
    let run = login(&w, "carol", "");
    findings.check(run.auth_is("PAM_AUTHINFO_UNAVAIL"), || {
        format!(
            "carol (mandatory, grace used up), store gone: auth={} (must be PAM_AUTHINFO_UNAVAIL, not a fresh grace period); logs: {:?}",
            run.auth, run.logs
        )
    });
    findings.assert_none();
}

// ---------------------------------------------------------------------------------
// What the tool shows and accepts.
// ---------------------------------------------------------------------------------

/// A source string with terminal escapes, recorded by a failed login, reaches root's
/// terminal only escaped.
#[test]
fn stored_sources_are_printed_escaped() {
    let w = world("bypass-escapes", "[throttle]\nmax_failures = 1\n");
    w.sb.enroll("alice", SECRET);
    let rhost = "\x1b]0;pwned\x07\x1b[31m";
    let run = w.sb.pam(
        "login",
        "alice",
        &["--rhost", rhost],
        &lines(&[&wrong_code(SECRET)]),
    );
    assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
    let mut findings = Findings::default();
    for args in [
        &["status", "--user", "alice"][..],
        &["--json", "status", "--user", "alice"],
        &["list"],
        &["--json", "list"],
    ] {
        let run = w.as_root(args, "");
        run.assert_ok();
        let raw = run.stdout.contains(['\x1b', '\x07']) || run.stderr.contains(['\x1b', '\x07']);
        findings.check(!raw, || {
            format!(
                "`totp-admin {}` printed raw ESC/BEL bytes: {:?}",
                args.join(" "),
                run.stdout
            )
        });
    }
    // The table does show the source (escaped): the check above is not vacuous.
    let table = w.as_root(&["status", "--user", "alice"], "");
    findings.check(table.stdout.contains("pwned"), || {
        format!("status does not show the locked source at all: {table:?}")
    });
    findings.assert_none();
}

/// A user sees their own policy, never the root-only lists behind it.
#[test]
fn policy_show_tells_a_user_only_their_own_policy() {
    let w = world(
        "bypass-policy-show",
        "[policy]\nexempt_groups = [\"svcaccts\"]\nexempt_networks = [\"10.0.0.0/8\"]\n\
         mandatory_groups = [\"admins\"]\n",
    );
    w.sb.add_group("svcaccts");
    let mut findings = Findings::default();
    for args in [
        &["policy", "show"][..],
        &["--json", "policy", "show"],
        &["policy", "show", "--user", "alice"],
        &["--json", "policy", "show", "--user", "alice"],
    ] {
        let run = w.as_user("alice", args, "");
        findings.check(run.code == 0, || {
            format!("alice: `totp-admin {}` failed: {run:?}", args.join(" "))
        });
        let shown: Vec<&str> = ["svcaccts", "10.0.0.0/8", "admins"]
            .into_iter()
            .filter(|s| run.stdout.contains(s))
            .collect();
        findings.check(shown.is_empty(), || {
            format!(
                "alice: `totp-admin {}` shows {shown:?}:\n{}",
                args.join(" "),
                run.stdout
            )
        });
        findings.check(run.stdout.contains("optional"), || {
            format!(
                "alice: `totp-admin {}` does not say her own policy (optional): {}",
                args.join(" "),
                run.stdout
            )
        });
    }
    // Root still sees everything.
    let root = w.as_root(&["policy", "show"], "");
    root.assert_ok();
    assert!(root.stdout.contains("svcaccts") && root.stdout.contains("10.0.0.0/8"));
    findings.assert_none();
}

/// Self-enrollment driven by expect: the password prompt is answered with
/// `$env(TA_PASSWORD)`; if a key is shown (the check was passed or skipped), the
/// enrollment is confirmed with its code. Prints the tool's exit status.
const ENROLL_WITH_PASSWORD: &str = r#"
set timeout 30
spawn setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll --qr none
set key ""
expect {
    "Password: " { send "$env(TA_PASSWORD)\r"; exp_continue }
    -re {Key: ([A-Z2-7 ]+)\r?\n} { set key [string map {" " ""} $expect_out(1,string)] }
    eof {}
    timeout { exit 10 }
}
if {$key ne ""} {
    expect {
        "Code: " {}
        timeout { exit 12 }
        eof { exit 13 }
    }
    send "[exec oathtool --totp -b $key]\r"
    expect {
        eof {}
        timeout { exit 14 }
    }
}
set result [wait]
puts "\nEXPECT-EXIT: [lindex $result 3]"
exit 0
"#;

fn enroll_with_password(w: &AdminWorld, user: &str, password: &str) -> (i32, String) {
    let run = w.expect(
        ENROLL_WITH_PASSWORD,
        &[
            ("TA_USER", user),
            ("TA_BIN", w.bin.to_str().unwrap()),
            ("TA_PASSWORD", password),
        ],
    );
    assert_eq!(run.code, 0, "expect failed: {run:?}");
    let text = strip_ansi(&run.stdout);
    let code = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-EXIT: "))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit status: {text}"));
    (code, text)
}

fn set_totp_admin_service(w: &AdminWorld, text: &str) {
    write_file(&w.sb.dir.join("etc/pam.d/totp-admin"), text, 0o644);
}

/// `auth sufficient pam_rootok.so` in /etc/pam.d/totp-admin (as many distributions'
/// su and chsh have) does not let a user past the password check: the tool is root
/// only by its setuid bit.
#[test]
fn pam_rootok_cannot_stand_in_for_the_password() {
    let w = world("bypass-rootok", "");
    let shipped = std::fs::read_to_string(workspace().join("config/pam.d/totp-admin")).unwrap();
    set_totp_admin_service(&w, &format!("auth sufficient pam_rootok.so\n{shipped}"));
    let (code, text) = enroll_with_password(&w, "bob", "not the password");
    let mut findings = Findings::default();
    findings.check(code == 1 && text.contains("password not accepted"), || {
        format!("bob with a wrong password under pam_rootok: exit {code}, expected 1 and \"password not accepted\": {text}")
    });
    findings.check(!text.contains("Key: "), || {
        "a key was shown without the password".into()
    });
    findings.check(!enrolled(&w, "bob"), || {
        "bob enrolled a factor with a wrong password".into()
    });
    findings.assert_none();
}

/// The password check goes through pam_faillock like any other: wrong passwords are
/// counted, and once locked even the right one is refused.
#[test]
fn the_password_check_counts_toward_pam_faillock() {
    let w = world("bypass-faillock", "");
    let tally = w.sb.dir.join("faillock");
    std::fs::create_dir_all(&tally).unwrap();
    let opts = format!("dir={} deny=3 unlock_time=600", tally.display());
    set_totp_admin_service(
        &w,
        &format!(
            "auth     required                 pam_faillock.so preauth {opts}\n\
             auth     [success=1 default=bad]  pam_unix.so\n\
             auth     [default=die]            pam_faillock.so authfail {opts}\n\
             auth     sufficient               pam_faillock.so authsucc {opts}\n\
             auth     required                 pam_deny.so\n\
             account  required                 pam_faillock.so dir={}\n\
             account  required                 pam_unix.so\n",
            tally.display()
        ),
    );
    let mut findings = Findings::default();
    for i in 0..3 {
        let run = w.as_user("bob", &["enroll", "--qr", "none"], "not the password\n");
        findings.check(run.code == 1 && !run.stdout.contains("Key: "), || {
            format!("wrong password {i}: {run:?}")
        });
    }
    let shown = w.sb.run(&[
        "faillock",
        "--dir",
        tally.to_str().unwrap(),
        "--user",
        "bob",
    ]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let counted = shown
        .lines()
        .filter(|l| l.trim_end().ends_with(" V"))
        .count();
    findings.check(counted == 3, || {
        format!("faillock shows {counted} valid failures for bob, expected 3:\n{shown}")
    });
    // Locked now: the right password is refused too, and no key is made.
    let run = w.as_user("bob", &["enroll", "--qr", "none"], &format!("{PASSWORD}\n"));
    findings.check(
        run.code == 1
            && run.stderr.contains("password not accepted")
            && !run.stdout.contains("Key: "),
        || format!("the right password after 3 failures (deny=3) was not refused: {run:?}"),
    );
    findings.assert_none();
}

// ---------------------------------------------------------------------------------
// Lost and doubled enrollments; unknown names.
// ---------------------------------------------------------------------------------

/// `enroll --secret-stdin` over an existing factor needs `--replace`.
#[test]
fn a_known_key_replaces_a_factor_only_with_replace() {
    let w = world("bypass-secret-stdin", "");
    w.sb.enroll("alice", SECRET);
    let mut findings = Findings::default();
    let run = w.as_root(
        &["enroll", "--user", "alice", "--secret-stdin"],
        &format!("{OTHER_SECRET}\n"),
    );
    findings.check(run.code == 1, || {
        format!("enroll --secret-stdin over alice's factor without --replace: {run:?}")
    });
    wait_for_fresh_step(30, 10);
    let old = login(&w, "alice", &code(SECRET, 0));
    findings.check(old.auth_is("PAM_SUCCESS"), || {
        format!(
            "alice's old key no longer works after a refused enroll: {}",
            old.auth
        )
    });

    let run = w.as_root(
        &["enroll", "--user", "alice", "--secret-stdin", "--replace"],
        &format!("{OTHER_SECRET}\n"),
    );
    findings.check(run.code == 0, || {
        format!("enroll --secret-stdin --replace: {run:?}")
    });
    if run.code == 0 {
        let new = login(&w, "alice", &code(OTHER_SECRET, 30));
        findings.check(new.auth_is("PAM_SUCCESS"), || {
            format!("the replacing key does not work: {}", new.auth)
        });
        let old = login(&w, "alice", &code(SECRET, 30));
        findings.check(old.auth_is("PAM_AUTH_ERR"), || {
            format!("the replaced key still works: {}", old.auth)
        });
    }
    findings.assert_none();
}

/// `import google-authenticator` over an existing factor needs `--replace`.
#[test]
fn an_import_replaces_a_factor_only_with_replace() {
    let w = world("bypass-import", "");
    w.sb.enroll("alice", SECRET);
    let file = w.sb.dir.join("alice.google_authenticator");
    write_file(
        &file,
        &format!("{OTHER_SECRET}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" TOTP_AUTH\n12345678\n"),
        0o600,
    );
    let file = file.to_str().unwrap();
    let mut findings = Findings::default();
    let run = w.as_root(
        &["import", "google-authenticator", "--user", "alice", file],
        "",
    );
    findings.check(run.code == 1, || {
        format!("import over alice's factor without --replace: {run:?}")
    });
    wait_for_fresh_step(30, 10);
    let old = login(&w, "alice", &code(SECRET, 0));
    findings.check(old.auth_is("PAM_SUCCESS"), || {
        format!(
            "alice's old key no longer works after a refused import: {}",
            old.auth
        )
    });
    let run = w.as_root(
        &[
            "import",
            "google-authenticator",
            "--user",
            "alice",
            "--replace",
            file,
        ],
        "",
    );
    findings.check(run.code == 0, || format!("import --replace: {run:?}"));
    if run.code == 0 {
        let new = login(&w, "alice", &code(OTHER_SECRET, 30));
        findings.check(new.auth_is("PAM_SUCCESS"), || {
            format!("the imported key does not work: {}", new.auth)
        });
    }
    findings.assert_none();
}

/// Two interactive enrollments of carol by root, both shown a key, both confirmed with
/// a code of their own key, one after the other.
const TWO_ENROLLMENTS: &str = r#"
set timeout 30
set bin $env(TA_BIN)
set cfg $env(TA_CONFIG)
proc start {bin cfg} {
    spawn $bin --config $cfg enroll --user carol --qr none
    set key ""
    expect {
        -re {Key: ([A-Z2-7 ]+)\r?\n} { set key [string map {" " ""} $expect_out(1,string)] }
        timeout { exit 10 }
        eof { exit 11 }
    }
    expect {
        "Code: " {}
        timeout { exit 12 }
        eof { exit 13 }
    }
    return [list $spawn_id $key]
}
proc finish {id key} {
    set spawn_id $id
    send "[exec oathtool --totp -b $key]\r"
    expect {
        eof {}
        timeout { exit 14 }
    }
    return [lindex [wait] 3]
}
lassign [start $bin $cfg] a keya
lassign [start $bin $cfg] b keyb
set ra [finish $a $keya]
set rb [finish $b $keyb]
puts "\nEXPECT-RESULT: $ra $keya $rb $keyb"
exit 0
"#;

/// Of two concurrent enrollments of one user exactly one succeeds; the other says a
/// factor was enrolled meanwhile, and the stored factor is the winner's.
#[test]
fn of_two_concurrent_enrollments_exactly_one_succeeds() {
    let w = world("bypass-two-enrollments", "");
    w.sb.add_user("carol", PASSWORD, None, &[]);
    wait_for_fresh_step(30, 15);
    let config = w.sb.config_path();
    let run = w.expect(
        TWO_ENROLLMENTS,
        &[
            ("TA_BIN", w.bin.to_str().unwrap()),
            ("TA_CONFIG", config.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 0, "expect failed: {run:?}");
    let text = strip_ansi(&run.stdout);
    let result: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-RESULT: "))
        .unwrap_or_else(|| panic!("no result line: {text}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (ra, keya, rb, keyb) = (&result[0], &result[1], &result[2], &result[3]);
    let winners: Vec<&String> = [(ra, keya), (rb, keyb)]
        .into_iter()
        .filter(|(r, _)| r.as_str() == "0")
        .map(|(_, k)| k)
        .collect();
    let mut findings = Findings::default();
    findings.check(winners.len() == 1, || {
        format!("exit statuses {ra} and {rb}: exactly one enrollment must succeed")
    });
    findings.check(text.contains("meanwhile"), || {
        format!("the losing enrollment does not say a factor was enrolled meanwhile: {text}")
    });
    if winners.len() == 2 {
        // Both were told they succeeded: the first one's phone shows codes that no
        // longer open anything.
        let run = login(&w, "carol", &code(keya, 30));
        findings.check(run.auth_is("PAM_SUCCESS"), || {
            format!(
                "the first enrollment was told it succeeded, but its key no longer logs in: {}",
                run.auth
            )
        });
    }
    if winners.len() == 1 {
        let winner = winners[0].clone();
        let loser = if &winner == keya { keyb } else { keya };
        let run = login(&w, "carol", &code(loser, 30));
        findings.check(run.auth_is("PAM_AUTH_ERR"), || {
            format!("the losing key logs in: {}", run.auth)
        });
        let run = login(&w, "carol", &code(&winner, 30));
        findings.check(run.auth_is("PAM_SUCCESS"), || {
            format!("the winning key does not log in: {}", run.auth)
        });
    }
    findings.assert_none();
}

/// `reset` and `unlock` of a name nobody has fail; a deleted account's leftover
/// records are removed by `reset`, which says so.
#[test]
fn reset_and_unlock_of_unknown_names_fail_and_deleted_accounts_are_cleaned() {
    let w = world("bypass-unknown-names", "");
    w.sb.add_user("dave", PASSWORD, None, &[]);
    w.sb.enroll("dave", SECRET);
    w.sb.enroll("alice", SECRET);
    let mut findings = Findings::default();
    for args in [
        &["reset", "--user", "nosuchuser"][..],
        &["unlock", "--user", "nosuchuser"],
    ] {
        let run = w.as_root(args, "");
        findings.check(
            run.code == 1 && run.stderr.contains("no such user: nosuchuser"),
            || {
                format!(
                    "`totp-admin {}`: expected exit 1 \"no such user: nosuchuser\", got {run:?}",
                    args.join(" ")
                )
            },
        );
    }
    w.sb.run(&["userdel", "dave"]);
    let run = w.as_root(&["reset", "--user", "dave"], "");
    findings.check(
        run.code == 0
            && run
                .stdout
                .contains("dave is not a user any more; removed its records"),
        || format!("reset of deleted account dave: {run:?}"),
    );
    let list = w.as_root(&["--json", "list"], "");
    findings.check(!list.stdout.contains("dave"), || {
        format!("dave is still listed: {}", list.stdout)
    });
    let status = w.as_root(&["--json", "status", "--user", "dave"], "");
    findings.check(!status.json_has("enrolled", "true"), || {
        format!("dave still shows as enrolled: {status:?}")
    });
    findings.check(enrolled(&w, "alice"), || {
        "alice's records were touched".into()
    });
    findings.assert_none();
}
