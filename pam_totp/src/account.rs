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

/// Errors getpwnam_r/getgrnam_r use for "no such entry" rather than a failure.
fn means_not_found(err: i32) -> bool {
    matches!(err, libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM)
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
        if result.is_null() {
            return if rc == 0 || means_not_found(rc) {
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

/// Looks a user up by uid; `Ok(None)` when NSS has no such user.
pub fn lookup_uid(uid: libc::uid_t) -> Result<Option<Account>, LookupError> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call and buf is buf.len() bytes.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

/// The gid of a group name; `Ok(None)` when NSS has no such group.
pub fn group_gid(name: &str) -> Result<Option<libc::gid_t>, LookupError> {
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
            return if rc == 0 || means_not_found(rc) {
                Ok(None)
            } else {
                Err(LookupError(format!(
                    "group lookup failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                )))
            };
        }
        return Ok(Some(grp.gr_gid));
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

/// Answers "is the user in group G?" for the policy, looking the user and their
/// groups up once, and only when a configured group is asked about.
pub struct Membership<'a> {
    user: &'a str,
    gids: Option<Vec<libc::gid_t>>,
}

impl<'a> Membership<'a> {
    pub fn new(user: &'a str) -> Self {
        Membership { user, gids: None }
    }

    pub fn is_member(&mut self, group: &str) -> Result<bool, LookupError> {
        if self.gids.is_none() {
            self.gids = Some(match lookup_user(self.user)? {
                Some(account) => group_list(&account)?,
                None => Vec::new(),
            });
        }
        let Some(gid) = group_gid(group)? else {
            return Ok(false);
        };
        Ok(self.gids.as_deref().unwrap_or_default().contains(&gid))
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
        let mut m = Membership::new("root");
        assert!(m.is_member("root").unwrap());
        assert!(!m.is_member("no-such-group-pam-totp").unwrap());
    }

    #[test]
    fn unknown_user_is_in_no_group() {
        assert!(lookup_user("no-such-user-pam-totp").unwrap().is_none());
        let mut m = Membership::new("no-such-user-pam-totp");
        assert!(!m.is_member("root").unwrap());
    }

    #[test]
    fn nul_in_name_is_an_error() {
        assert!(lookup_user("a\0b").is_err());
    }
}
