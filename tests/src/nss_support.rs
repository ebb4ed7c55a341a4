//! An NSS module of the tests' own, `libnss_casefold.so.2` (source in
//! `tests/nss/casefold.c`), installed into one sandbox only: it stands for a directory
//! service that matches user names without regard to case, and for one whose server
//! cannot be reached.
//!
//! - `passwd`, `shadow`: a name with upper-case letters (`ALICE`) resolves to the
//!   entry of its lower-case spelling (`alice`), which keeps its own name.
//! - `group`: a name starting with `unreachable` fails with `NSS_STATUS_UNAVAIL`
//!   (errno ENOENT, as sssd's client does when its daemon is down), one starting with
//!   `tryagain` with `NSS_STATUS_TRYAGAIN` (errno EAGAIN); upper-case names fold.
//!
//! [`NssModule::install`] builds the module with `cc`, lists its directory in the
//! sandbox's `/etc/ld.so.conf.d` and rebuilds the sandbox's `/etc/ld.so.cache` with
//! `ldconfig -X` run inside the sandbox (so setuid programs, which ignore
//! `LD_LIBRARY_PATH`, find it too; no links are written anywhere), and names it last in
//! the sandbox's `/etc/nsswitch.conf` for the databases asked for (after `files`; last,
//! so that its errors are the lookup's result: a source after it that answers "not
//! found" would hide them). The host's /etc is never touched.

use crate::Sandbox;
use std::path::PathBuf;
use std::process::Command;

/// A database of nsswitch.conf the module can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Passwd,
    Shadow,
    Group,
}

impl Database {
    fn name(self) -> &'static str {
        match self {
            Database::Passwd => "passwd",
            Database::Shadow => "shadow",
            Database::Group => "group",
        }
    }
}

/// The module's service name in nsswitch.conf.
pub const SERVICE: &str = "casefold";

/// The module, installed in one sandbox.
pub struct NssModule {
    /// The built library, inside the sandbox directory.
    pub library: PathBuf,
}

impl NssModule {
    /// Builds the module and makes the sandbox's NSS use it, last, for `databases`.
    pub fn install(sb: &Sandbox, databases: &[Database]) -> NssModule {
        let dir = sb.dir.join("nsslib");
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("libnss_casefold.so.2");
        let source = crate::workspace().join("tests/nss/casefold.c");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"])
            .arg("-Wl,-soname,libnss_casefold.so.2")
            .arg("-o")
            .arg(&library)
            .arg(&source)
            .output()
            .expect("cc is installed");
        assert!(
            out.status.success(),
            "building {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        crate::write_file(
            &sb.dir.join("etc/ld.so.conf.d/zz-pam-totp-tests-nss.conf"),
            &format!("{}\n", dir.display()),
            0o644,
        );
        // -X: no links are made or changed in any library directory (the host's
        // among them); only the sandbox's /etc/ld.so.cache is written.
        sb.run(&["ldconfig", "-X"]);

        let path = sb.dir.join("etc/nsswitch.conf");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = Vec::new();
        let mut done = Vec::new();
        for line in text.lines() {
            let db = databases.iter().find(|d| {
                line.split_once(':')
                    .is_some_and(|(key, _)| key.trim() == d.name())
                    && !line.trim_start().starts_with('#')
            });
            match db {
                Some(db) => {
                    done.push(*db);
                    let sources = line.split_once(':').unwrap().1;
                    // Last: a source after it would turn its errors into "not found".
                    lines.push(format!("{}: {} {SERVICE}", db.name(), sources.trim()));
                }
                None => lines.push(line.to_string()),
            }
        }
        for db in databases {
            if !done.contains(db) {
                lines.push(format!("{}: files {SERVICE}", db.name()));
            }
        }
        crate::write_file(&path, &(lines.join("\n") + "\n"), 0o644);
        NssModule { library }
    }
}
