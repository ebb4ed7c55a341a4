//! Whether the caller could freeze this process through a cgroup.
//!
//! `kill -STOP` no longer reaches the tool once its ids are root ([`crate::caller`]),
//! but a cgroup freezer stops every process of a cgroup whoever owns them: cgroup v1's
//! `freezer.state` and cgroup v2's `cgroup.freeze`. A user who can write one of those
//! for the tool's cgroup or an ancestor (a delegated systemd user manager, a container
//! runtime) could freeze the tool in the middle of a write. So a command that writes
//! refuses to start from such a cgroup; a login session (ssh, console) is root's.
//!
//! In cgroup v2 a process can also be moved by anyone who may write `cgroup.procs` of
//! the common ancestor of its cgroup and the destination, whatever its uid: a writable
//! `cgroup.procs` of the tool's cgroup or an ancestor lets the caller move it into a
//! cgroup of their own and freeze that. It counts as freezable too. (cgroup v1 lets
//! only root or the process's own uid move it, and every uid of the tool is root.)
//!
//! The decision is [`freezable`], a pure function over the cgroup paths
//! ([`control_files`], from `/proc/self/cgroup` and `/proc/self/mountinfo`) and the
//! files' owner and mode; [`check`] feeds it from the running system.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A file that, written, stops the processes of a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    /// The cgroup as /proc/self/cgroup names it: `freezer:/a/b` (v1) or `/a/b` (v2).
    pub cgroup: String,
    /// The file's name: `freezer.state`, `cgroup.freeze` or `cgroup.procs`.
    pub name: &'static str,
    /// Where the file is in this mount namespace.
    pub path: PathBuf,
}

/// Owner and mode of a control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub mode: u32,
}

/// The caller's ids, as the kernel checks a write permission.
#[derive(Debug, Clone)]
pub struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

/// Why the check could not be made: the cgroup is named so the admin can look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    pub cgroup: String,
    pub why: String,
}

/// Whether the caller may write the file, or could make it writable: its owner can
/// always chmod it, whatever the mode says; else the group or other write bit.
pub fn writable_by(meta: &FileMeta, ids: &Ids) -> bool {
    if meta.uid == ids.uid {
        return true;
    }
    let in_group = meta.gid == ids.gid || ids.groups.contains(&meta.gid);
    (in_group && meta.mode & 0o020 != 0) || meta.mode & 0o002 != 0
}

/// The first control file (the process's own cgroup first, then its ancestors) that
/// the caller can write. `None` for a file means it does not exist (the root cgroup
/// has no freezer file).
pub fn freezable<'a>(
    files: &'a [(ControlFile, Option<FileMeta>)],
    ids: &Ids,
) -> Option<&'a ControlFile> {
    files
        .iter()
        .find(|(_, meta)| meta.as_ref().is_some_and(|m| writable_by(m, ids)))
        .map(|(file, _)| file)
}

/// One cgroup mount: the hierarchy's directory that is mounted (`root`) and where.
struct Mount {
    root: String,
    point: PathBuf,
}

/// The cgroup mounts in `mountinfo`: v1 hierarchies carrying the freezer, and v2.
fn cgroup_mounts(mountinfo: &str) -> (Vec<Mount>, Vec<Mount>) {
    let (mut freezer, mut unified) = (Vec::new(), Vec::new());
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let mount = Mount {
            root: unescape(root),
            point: PathBuf::from(unescape(point)),
        };
        match *fstype {
            "cgroup2" => unified.push(mount),
            "cgroup"
                if tail
                    .get(2)
                    .is_some_and(|opts| opts.split(',').any(|o| o == "freezer")) =>
            {
                freezer.push(mount)
            }
            _ => {}
        }
    }
    (freezer, unified)
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            let value = digits
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
                .then(|| digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0')));
            if let Some(b) = value.and_then(|v| u8::try_from(v).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The control files to look at, the process's own cgroup first, then each ancestor
/// up to the top of what is mounted. A freezer or v2 hierarchy that the process is in
/// but that is not mounted here cannot be checked: an error naming the cgroup.
pub fn control_files(proc_cgroup: &str, mountinfo: &str) -> Result<Vec<ControlFile>, Unchecked> {
    let (freezer_mounts, unified_mounts) = cgroup_mounts(mountinfo);
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        // ID:CONTROLLERS:PATH (the path may contain ':')
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mounts, names, prefix): (&[Mount], &[&'static str], &str) =
            if id == "0" && controllers.is_empty() {
                (&unified_mounts, &["cgroup.freeze", "cgroup.procs"], "")
            } else if controllers.split(',').any(|c| c == "freezer") {
                (&freezer_mounts, &["freezer.state"], "freezer:")
            } else {
                continue;
            };
        let Some((mount, below)) = mounts
            .iter()
            .find_map(|m| below_root(path, &m.root).map(|below| (m, below)))
        else {
            return Err(Unchecked {
                cgroup: format!("{prefix}{path}"),
                why: "its hierarchy is not mounted here".into(),
            });
        };
        // From the process's cgroup up to the mounted top.
        let parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
        for depth in (0..=parts.len()).rev() {
            let dir = parts[..depth]
                .iter()
                .fold(mount.point.clone(), |d, p| d.join(p));
            let cgroup = format!("{prefix}{}", join_cgroup(&mount.root, &parts[..depth]));
            for name in names {
                files.push(ControlFile {
                    cgroup: cgroup.clone(),
                    name,
                    path: dir.join(name),
                });
            }
        }
    }
    Ok(files)
}

/// `path` relative to the mount's `root`, when it lies within it.
fn below_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn join_cgroup(root: &str, parts: &[&str]) -> String {
    let mut out = root.trim_end_matches('/').to_string();
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// What [`check`] found: the cgroup and file the caller could freeze the tool with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Safe,
    Freezable(ControlFile),
    Unchecked(Unchecked),
}

/// Looks at this process's cgroups as they are now.
pub fn check(ids: &Ids) -> Verdict {
    let read = |p: &str| std::fs::read_to_string(p);
    let (proc_cgroup, mountinfo) = match (read("/proc/self/cgroup"), read("/proc/self/mountinfo")) {
        (Ok(c), Ok(m)) => (c, m),
        (Err(e), _) | (_, Err(e)) => {
            return Verdict::Unchecked(Unchecked {
                cgroup: "?".into(),
                why: format!("cannot read /proc/self: {e}"),
            })
        }
    };
    let files = match control_files(&proc_cgroup, &mountinfo) {
        Ok(files) => files,
        Err(u) => return Verdict::Unchecked(u),
    };
    let mut with_meta = Vec::with_capacity(files.len());
    for file in files {
        let meta = match std::fs::symlink_metadata(&file.path) {
            Ok(m) => Some(FileMeta {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Verdict::Unchecked(Unchecked {
                    why: format!("{}: {e}", file.path.display()),
                    cgroup: file.cgroup,
                })
            }
        };
        with_meta.push((file, meta));
    }
    match freezable(&with_meta, ids) {
        Some(file) => Verdict::Freezable(file.clone()),
        None => Verdict::Safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2_MOUNTS: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn alice() -> Ids {
        Ids {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
        }
    }

    fn meta(uid: u32, gid: u32, mode: u32) -> Option<FileMeta> {
        Some(FileMeta { uid, gid, mode })
    }

    fn paths(files: &[ControlFile]) -> Vec<String> {
        files.iter().map(|f| f.path.display().to_string()).collect()
    }

    #[test]
    fn owner_group_and_other_write() {
        let ids = alice();
        assert!(!writable_by(&meta(0, 0, 0o644).unwrap(), &ids));
        assert!(!writable_by(&meta(0, 0, 0o444).unwrap(), &ids));
        // The owner can chmod: writable whatever the mode.
        assert!(writable_by(&meta(1000, 0, 0o444).unwrap(), &ids));
        assert!(writable_by(&meta(0, 1000, 0o664).unwrap(), &ids));
        assert!(writable_by(&meta(0, 27, 0o660).unwrap(), &ids));
        assert!(!writable_by(&meta(0, 28, 0o660).unwrap(), &ids));
        assert!(writable_by(&meta(0, 0, 0o646).unwrap(), &ids));
        assert!(!writable_by(&meta(1001, 1001, 0o644).unwrap(), &ids));
    }

    #[test]
    fn v2_session_and_ancestors_in_order() {
        let files = control_files(
            "0::/user.slice/user-1000.slice/session-4.scope\n",
            V2_MOUNTS,
        )
        .unwrap();
        assert_eq!(
            paths(&files),
            [
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-4.scope/cgroup.freeze",
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-4.scope/cgroup.procs",
                "/sys/fs/cgroup/user.slice/user-1000.slice/cgroup.freeze",
                "/sys/fs/cgroup/user.slice/user-1000.slice/cgroup.procs",
                "/sys/fs/cgroup/user.slice/cgroup.freeze",
                "/sys/fs/cgroup/user.slice/cgroup.procs",
                "/sys/fs/cgroup/cgroup.freeze",
                "/sys/fs/cgroup/cgroup.procs",
            ]
        );
        assert_eq!(
            files[0].cgroup,
            "/user.slice/user-1000.slice/session-4.scope"
        );
        assert_eq!(files[6].cgroup, "/");
    }

    #[test]
    fn a_login_session_is_safe() {
        let files = control_files(
            "0::/user.slice/user-1000.slice/session-4.scope\n",
            V2_MOUNTS,
        )
        .unwrap();
        let with_meta: Vec<_> = files
            .into_iter()
            .map(|f| {
                let m = if f.cgroup == "/" {
                    None
                } else {
                    meta(0, 0, 0o644)
                };
                (f, m)
            })
            .collect();
        assert_eq!(freezable(&with_meta, &alice()), None);
    }

    #[test]
    fn a_delegated_user_manager_is_freezable() {
        // systemd --user owns what it creates below user@1000.service.
        let files = control_files(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope\n",
            V2_MOUNTS,
        )
        .unwrap();
        let with_meta: Vec<_> = files
            .into_iter()
            .map(|f| {
                let mine = f.cgroup.contains("app.slice");
                let m = if mine {
                    meta(1000, 1000, 0o644)
                } else {
                    meta(0, 0, 0o644)
                };
                (f, m)
            })
            .collect();
        let hit = freezable(&with_meta, &alice()).unwrap();
        assert_eq!(
            hit.cgroup,
            "/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope"
        );
        assert_eq!(hit.name, "cgroup.freeze");
    }

    #[test]
    fn a_writable_cgroup_procs_of_an_ancestor_is_freezable() {
        // The delegated root: cgroup.freeze root's, cgroup.procs the user's.
        let files = control_files(
            "0::/user.slice/user-1000.slice/user@1000.service\n",
            V2_MOUNTS,
        )
        .unwrap();
        let with_meta: Vec<_> = files
            .into_iter()
            .map(|f| {
                let m = if f.cgroup.ends_with("user@1000.service") && f.name == "cgroup.procs" {
                    meta(1000, 1000, 0o644)
                } else {
                    meta(0, 0, 0o644)
                };
                (f, m)
            })
            .collect();
        assert_eq!(
            freezable(&with_meta, &alice()).map(|f| f.name),
            Some("cgroup.procs")
        );
    }

    #[test]
    fn v1_freezer_of_an_ancestor_writable_by_group() {
        let proc_cgroup = "6:freezer:/jobs/alice/run\n4:memory:/x\n0::/\n";
        let files = control_files(proc_cgroup, HYBRID_MOUNTS).unwrap();
        let v1: Vec<_> = files.iter().filter(|f| f.name == "freezer.state").collect();
        assert_eq!(
            v1.iter().map(|f| f.cgroup.as_str()).collect::<Vec<_>>(),
            [
                "freezer:/jobs/alice/run",
                "freezer:/jobs/alice",
                "freezer:/jobs",
                "freezer:/"
            ]
        );
        assert_eq!(
            v1[1].path,
            PathBuf::from("/sys/fs/cgroup/freezer/jobs/alice/freezer.state")
        );
        let with_meta: Vec<_> = files
            .into_iter()
            .map(|f| {
                let m = match f.cgroup.as_str() {
                    "freezer:/jobs/alice" => meta(0, 27, 0o664),
                    "freezer:/" | "/" => None,
                    _ => meta(0, 0, 0o644),
                };
                (f, m)
            })
            .collect();
        assert_eq!(
            freezable(&with_meta, &alice()).map(|f| f.cgroup.as_str()),
            Some("freezer:/jobs/alice")
        );
    }

    #[test]
    fn the_root_cgroups_have_nothing_to_freeze() {
        let files = control_files("6:freezer:/\n0::/\n", HYBRID_MOUNTS).unwrap();
        assert_eq!(
            paths(&files),
            [
                "/sys/fs/cgroup/freezer/freezer.state",
                "/sys/fs/cgroup/unified/cgroup.freeze",
                "/sys/fs/cgroup/unified/cgroup.procs",
            ]
        );
    }

    #[test]
    fn a_mount_of_a_subtree_and_escaped_mount_points() {
        let mounts = "50 1 0:40 /ct/one /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        let files = control_files("0::/ct/one/app\n", mounts).unwrap();
        assert_eq!(
            paths(&files)[..3],
            [
                "/mnt/my cgroups/app/cgroup.freeze",
                "/mnt/my cgroups/app/cgroup.procs",
                "/mnt/my cgroups/cgroup.freeze",
            ]
        );
        assert_eq!(files[0].cgroup, "/ct/one/app");
        assert_eq!(files[2].cgroup, "/ct/one");
        assert_eq!(files.len(), 4, "nothing above the mounted top");
        // A cgroup outside the mounted subtree cannot be checked.
        assert!(control_files("0::/ct/other\n", mounts).is_err());
        assert!(control_files("0::/ct/onex\n", mounts).is_err());
    }

    #[test]
    fn an_unmounted_hierarchy_cannot_be_checked() {
        let err = control_files("6:freezer:/a\n", V2_MOUNTS).unwrap_err();
        assert_eq!(err.cgroup, "freezer:/a");
        let err = control_files("0::/a\n", "").unwrap_err();
        assert_eq!(err.cgroup, "/a");
        // Hierarchies without a freezer do not matter.
        assert_eq!(control_files("4:memory:/x\n", "").unwrap(), vec![]);
    }
}
