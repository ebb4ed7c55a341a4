//! Users and groups through NSS (`getpwnam_r`, `getgrouplist`, `getgrnam_r`), so that
//! accounts from LDAP or SSSD count exactly like those in /etc/passwd and /etc/group.

use crate::policy::LookupError;
use std::ffi::{CStr, CString};

/// A user as NSS knows it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: String,
}

const MAX_BUFFER: usize = 1 << 20;

fn c_name(name: &str) -> Result<CString, LookupError> {
    CString::new(name).map_err(|_| LookupError(format!("name {name:?} contains a NUL byte")))
}

/// Runs a `getpw*_r` call with a buffer that grows on ERANGE, and turns the entry into
/// an [`Account`]; `Ok(None)` when NSS has no such user.
fn passwd_entry(
    mut call: impl FnMut(&mut libc::passwd, &mut [u8], &mut *mut libc::passwd) -> libc::c_int,
) -> Result<Option<Account>, LookupError> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value for getpw*_r to overwrite.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        // glibc reports "no such entry" as 0 with no result; any error number means a
        // source could not answer (a directory down), which must not read as "none".
        if result.is_null() {
            return if rc == 0 {
                Ok(None)
            } else {
                Err(LookupError(format!(
                    "user lookup failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                )))
            };
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: the call succeeded, so non-null string fields point to
                // NUL-terminated strings inside buf, which is still alive.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        return Ok(Some(Account {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: text(pwd.pw_dir),
        }));
    }
}

/// Looks a user up by name; `Ok(None)` when NSS has no such user.
pub fn lookup_user(name: &str) -> Result<Option<Account>, LookupError> {
    let cname = c_name(name)?;
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call and buf is buf.len() bytes.
        unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                result,
            )
        }
    })
}

/// The account a typed login name reaches, as NSS resolves it: the name is looked up,
/// then the account is named by its uid. Every spelling NSS maps to one account
/// (`ALICE` in a case-insensitive directory, a second name with alice's uid) thus
/// comes out as the same canonical account. `Ok(None)` when NSS has no such user.
pub fn canonical_account(typed: &str) -> Result<Option<Account>, LookupError> {
    let Some(entry) = lookup_user(typed)? else {
        return Ok(None);
    };
    // The first entry for the uid is the account's own name; a uid that no longer
    // maps back (a directory answering one query but not the other) keeps the entry.
    match lookup_uid(entry.uid)? {
        Some(owner) if owner.uid == entry.uid && !owner.name.is_empty() => Ok(Some(owner)),
        _ => Ok(Some(entry)),
    }
}

/// Looks a user up by uid; `Ok(None)` when NSS has no such user.
pub fn lookup_uid(uid: libc::uid_t) -> Result<Option<Account>, LookupError> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call and buf is buf.len() bytes.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

/// A group as NSS knows it: its gid and the members it lists.
#[derive(Debug, Clone)]
pub struct Group {
    pub gid: libc::gid_t,
    pub members: Vec<String>,
}

/// The gid of a group name; `Ok(None)` when NSS has no such group.
pub fn group_gid(name: &str) -> Result<Option<libc::gid_t>, LookupError> {
    Ok(lookup_group(name)?.map(|g| g.gid))
}

/// Looks a group up by name; `Ok(None)` when NSS has no such group, an error when a
/// source could not answer.
pub fn lookup_group(name: &str) -> Result<Option<Group>, LookupError> {
    let cname = c_name(name)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: an all-zero group is a valid value for getgrnam_r to overwrite.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if result.is_null() {
            return if rc == 0 {
                Ok(None)
            } else {
                Err(LookupError(format!(
                    "group {name}: lookup failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                )))
            };
        }
        let mut members = Vec::new();
        let mut p = grp.gr_mem;
        // SAFETY: on success gr_mem is a NULL-terminated array of NUL-terminated
        // strings inside buf, which is still alive; the walk is bounded by the buffer.
        unsafe {
            while !p.is_null() && !(*p).is_null() && members.len() < MAX_BUFFER {
                members.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
                p = p.add(1);
            }
        }
        return Ok(Some(Group {
            gid: grp.gr_gid,
            members,
        }));
    }
}

/// Every group the account belongs to: its primary group and its supplementary groups.
pub fn group_list(account: &Account) -> Result<Vec<libc::gid_t>, LookupError> {
    let cname = c_name(&account.name)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..16 {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and
        // stores the number it needs in n.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), account.gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return Ok(groups);
        }
        let want = (n.max(0) as usize).max(groups.len() * 2);
        if want > 1 << 16 {
            break;
        }
        groups.resize(want, 0);
    }
    Err(LookupError(format!("too many groups for {}", account.name)))
}

/// Answers "is the account in group G?" for the policy, looking its groups up once,
/// and only when a configured group is asked about. A group is looked up by name, so
/// that a source that cannot answer is an error (the caller fails closed) rather than
/// "not a member"; membership is the primary group, the group's member list, or the
/// account's group list (`getgrouplist`, which silently skips sources that fail).
pub struct Membership<'a> {
    account: &'a Account,
    gids: Option<Vec<libc::gid_t>>,
}

impl<'a> Membership<'a> {
    pub fn new(account: &'a Account) -> Self {
        Membership {
            account,
            gids: None,
        }
    }

    pub fn is_member(&mut self, group: &str) -> Result<bool, LookupError> {
        let Some(found) = lookup_group(group)? else {
            return Ok(false);
        };
        if found.gid == self.account.gid || found.members.contains(&self.account.name) {
            return Ok(true);
        }
        if self.gids.is_none() {
            self.gids = Some(group_list(self.account)?);
        }
        Ok(self
            .gids
            .as_deref()
            .unwrap_or_default()
            .contains(&found.gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_is_in_group_root() {
        let root = lookup_user("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(lookup_uid(0).unwrap().unwrap().name, "root");
        let mut m = Membership::new(&root);
        assert!(m.is_member("root").unwrap());
        assert!(!m.is_member("no-such-group-pam-totp").unwrap());
        assert_eq!(canonical_account("root").unwrap().unwrap().name, "root");
    }

    #[test]
    fn unknown_user_is_none() {
        assert!(lookup_user("no-such-user-pam-totp").unwrap().is_none());
        assert!(canonical_account("no-such-user-pam-totp")
            .unwrap()
            .is_none());
    }

    #[test]
    fn nul_in_name_is_an_error() {
        assert!(lookup_user("a\0b").is_err());
    }
}
