//! Freezing a user's own processes, as any user can whose cgroup they own: a cgroup v1
//! freezer directory (or a cgroup v2 directory with `cgroup.freeze`) given to a user,
//! and the POSIX locks a process holds (`/proc/locks`), to see what a frozen process
//! keeps from everyone else.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const V1_ROOT: &str = "/sys/fs/cgroup/freezer";
const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The v1 freezer controller: `freezer.state`.
    V1,
    /// cgroup v2: `cgroup.freeze`, `cgroup.events`.
    V2,
}

/// A freezable cgroup owned by one user, removed (thawed first) on drop.
pub struct Freezer {
    pub dir: PathBuf,
    kind: Kind,
}

fn v2_root() -> Option<&'static str> {
    V2_ROOTS
        .into_iter()
        .find(|r| Path::new(r).join("cgroup.controllers").exists())
}

impl Freezer {
    /// A new cgroup whose control files belong to `uid`:`gid`, as a delegated cgroup
    /// does. `Err` says why none can be made here (the test then stops with that reason).
    pub fn create(prefix: &str, uid: u32, gid: u32) -> Result<Freezer, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{prefix}-{}-{nanos}", std::process::id());
        let (dir, kind) = if Path::new(V1_ROOT).join("freezer.state").exists()
            || Path::new(V1_ROOT).join("cgroup.procs").exists()
        {
            (Path::new(V1_ROOT).join(&name), Kind::V1)
        } else if let Some(root) = v2_root() {
            (Path::new(root).join(&name), Kind::V2)
        } else {
            return Err(format!(
                "neither a cgroup v1 freezer ({V1_ROOT}) nor cgroup v2 (cgroup.freeze) here"
            ));
        };
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let freezer = Freezer { dir, kind };
        if freezer.kind == Kind::V2 && !freezer.dir.join("cgroup.freeze").exists() {
            return Err("this cgroup v2 has no cgroup.freeze".into());
        }
        // The directory and every control file in it are the user's, as systemd
        // delegates a user's own cgroup (and as root hands out a v1 freezer directory).
        let chown = |p: &Path| {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", p.display()))
        };
        chown(&freezer.dir)?;
        for entry in std::fs::read_dir(&freezer.dir).map_err(|e| e.to_string())? {
            chown(&entry.map_err(|e| e.to_string())?.path())?;
        }
        Ok(freezer)
    }

    fn state_file(&self) -> PathBuf {
        match self.kind {
            Kind::V1 => self.dir.join("freezer.state"),
            Kind::V2 => self.dir.join("cgroup.freeze"),
        }
    }

    /// The file a process writes its pid to, to move into this cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Whether the cgroup's user can move their own process in: v1 lets the owner of
    /// `cgroup.procs` move processes of their uid; v2 also wants write access to the
    /// common ancestor, which a delegated subtree has but this bare directory has not.
    pub fn user_can_join(&self) -> bool {
        self.kind == Kind::V1
    }

    /// What a user writes to freeze the cgroup, and the file it goes to.
    pub fn freeze_command(&self) -> (PathBuf, &'static str) {
        match self.kind {
            Kind::V1 => (self.state_file(), "FROZEN"),
            Kind::V2 => (self.state_file(), "1"),
        }
    }

    /// The cgroup's path as `/proc/PID/cgroup` shows it (`/name`).
    pub fn cgroup_path(&self) -> String {
        format!("/{}", self.dir.file_name().unwrap().to_string_lossy())
    }

    pub fn name(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Asks the kernel to freeze every process in the cgroup (returns at once).
    pub fn freeze(&self) {
        let (file, value) = self.freeze_command();
        std::fs::write(file, value).unwrap();
    }

    pub fn thaw(&self) {
        let value = match self.kind {
            Kind::V1 => "THAWED",
            Kind::V2 => "0",
        };
        std::fs::write(self.state_file(), value).unwrap();
    }

    /// Whether every process in the cgroup is frozen now.
    pub fn is_frozen(&self) -> bool {
        match self.kind {
            Kind::V1 => std::fs::read_to_string(self.state_file())
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
            Kind::V2 => std::fs::read_to_string(self.dir.join("cgroup.events"))
                .map(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false),
        }
    }

    /// Waits (at most `limit`) until the freeze has taken hold.
    pub fn wait_frozen(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.is_frozen() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.state_file(),
            if self.kind == Kind::V1 { "THAWED" } else { "0" },
        );
        // The processes in it are the test's own tool runs: once thawed they finish.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.procs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A file's (device, inode), to find its locks in `/proc/locks`.
pub fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The write (exclusive) POSIX or OFD locks `pid` holds on any of `inodes`, as
/// `/proc/locks` lines.
pub fn write_locks(pid: u32, inodes: &[u64]) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let pid = pid.to_string();
    text.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: POSIX  ADVISORY  WRITE 9832 fe:00:382078 120 120"; a lock another
            // process waits for is listed again behind "->".
            if fields.get(1) == Some(&"->") || fields.len() < 8 {
                return false;
            }
            let inode = fields[5]
                .rsplit(':')
                .next()
                .and_then(|i| i.parse::<u64>().ok());
            fields[3] == "WRITE" && fields[4] == pid && inode.is_some_and(|i| inodes.contains(&i))
        })
        .map(str::to_string)
        .collect()
}

/// A small deterministic generator for test timings, seeded from the clock (the seed
/// is printed so that a run can be repeated).
pub struct Jitter(u64);

impl Jitter {
    pub fn from_clock() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("jitter seed {seed}");
        Jitter(seed)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}
