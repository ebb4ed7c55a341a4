//! A safe view of one libpam handle for the duration of one `pam_sm_*` call: the
//! items, the user, the conversation, `pam_syslog`, and data kept between the auth and
//! account phases. Every unsafe call the module makes into libpam is in this file.

use super::ffi::*;
use crate::secret::Answer;
use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// The PAM items that say where a login comes from.
pub struct Items {
    pub service: String,
    pub rhost: Option<String>,
    pub tty: Option<String>,
}

/// A message for the user, or a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A prompt whose answer is not echoed (codes).
    Hidden,
    /// A prompt whose answer is echoed ("Press Enter").
    Visible,
    Error,
    Info,
}

impl Style {
    fn code(self) -> c_int {
        match self {
            Style::Hidden => PAM_PROMPT_ECHO_OFF,
            Style::Visible => PAM_PROMPT_ECHO_ON,
            Style::Error => PAM_ERROR_MSG,
            Style::Info => PAM_TEXT_INFO,
        }
    }
}

/// The conversation failed: no conversation function, an error from it, or no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvError;

/// A borrowed, non-null PAM handle for the duration of one call.
pub struct Handle {
    pamh: *mut pam_handle_t,
    /// `PAM_SILENT`: informational messages are not shown.
    pub silent: bool,
    /// Module argument `debug`.
    pub debug: bool,
}

impl Handle {
    /// # Safety
    /// `pamh` is a non-null handle that libpam passed to the running `pam_sm_*` call;
    /// the `Handle` does not outlive that call.
    pub unsafe fn new(pamh: *mut pam_handle_t, silent: bool) -> Handle {
        Handle {
            pamh,
            silent,
            debug: false,
        }
    }

    fn item(&self, item_type: c_int) -> Option<String> {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: pamh is valid for this call (Handle::new); ptr is a valid out-pointer.
        let rc = unsafe { pam_get_item(self.pamh, item_type, &mut ptr) };
        if rc != PAM_SUCCESS || ptr.is_null() {
            return None;
        }
        // SAFETY: string items are NUL-terminated C strings owned by libpam.
        let text = unsafe { CStr::from_ptr(ptr.cast()) };
        Some(text.to_string_lossy().into_owned())
    }

    pub fn items(&self) -> Items {
        Items {
            service: self.item(PAM_SERVICE).unwrap_or_default(),
            rhost: self.item(PAM_RHOST),
            tty: self.item(PAM_TTY),
        }
    }

    /// `PAM_USER` as typed (asking the application for it if it is not set yet).
    pub fn user(&self) -> Result<String, c_int> {
        let mut ptr: *const c_char = std::ptr::null();
        // SAFETY: pamh is valid; a null prompt asks libpam to use its default.
        let rc = unsafe { pam_get_user(self.pamh, &mut ptr, std::ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        if ptr.is_null() {
            return Err(PAM_USER_UNKNOWN);
        }
        // SAFETY: on success the user is a NUL-terminated string owned by libpam.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        match std::str::from_utf8(bytes) {
            Ok(u) if !u.is_empty() && u.len() <= 256 => Ok(u.to_string()),
            _ => Err(PAM_USER_UNKNOWN),
        }
    }

    /// A variable of the PAM environment (`pam_getenv`), which the application and
    /// the modules above this one may have set.
    pub fn getenv(&self, name: &CStr) -> Option<String> {
        // SAFETY: pamh is valid; name is a NUL-terminated string.
        let value = unsafe { pam_getenv(self.pamh, name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: a non-null result points into libpam's environment, a NUL-terminated
        // string that lives until the environment changes; it is copied at once.
        let text = unsafe { CStr::from_ptr(value) };
        Some(text.to_string_lossy().into_owned())
    }

    /// Hands `password` to the modules below as `PAM_AUTHTOK` (for `use_first_pass`).
    /// libpam keeps its own copy; ours is wiped when it is dropped.
    pub fn set_authtok(&self, password: &[u8]) -> Result<(), c_int> {
        if password.contains(&0) {
            return Err(PAM_AUTH_ERR);
        }
        let mut owned = zeroize::Zeroizing::new(Vec::with_capacity(password.len() + 1));
        owned.extend_from_slice(password);
        owned.push(0);
        // SAFETY: pamh is valid; owned is a NUL-terminated string (no NUL inside,
        // checked above) that lives across the call; libpam copies it.
        let rc = unsafe { pam_set_item(self.pamh, PAM_AUTHTOK, owned.as_ptr().cast()) };
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(rc)
        }
    }

    /// Logs through `pam_syslog` (authpriv), never `openlog`: the host owns its log
    /// identity. The text is passed as an argument to a constant `%s` format.
    pub fn log(&self, priority: c_int, text: &str) {
        let Ok(line) = CString::new(text.replace('\0', "?")) else {
            return;
        };
        // SAFETY: pamh is valid; the format is a constant "%s" and its one argument a
        // NUL-terminated string that lives across the call.
        unsafe { pam_syslog(self.pamh, priority, c"%s".as_ptr(), line.as_ptr()) };
    }

    /// One message through the application's conversation function. Returns the
    /// answer for a prompt, `None` for a message that expects none.
    pub fn converse(&self, style: Style, text: &str) -> Result<Option<Answer>, ConvError> {
        let mut conv_ptr: *const c_void = std::ptr::null();
        // SAFETY: pamh is valid; conv_ptr is a valid out-pointer.
        let rc = unsafe { pam_get_item(self.pamh, PAM_CONV, &mut conv_ptr) };
        if rc != PAM_SUCCESS || conv_ptr.is_null() {
            return Err(ConvError);
        }
        // SAFETY: the PAM_CONV item is a `struct pam_conv` owned by libpam.
        let conv = unsafe { &*(conv_ptr as *const PamConv) };
        let Some(conv_fn) = conv.conv else {
            return Err(ConvError);
        };
        let text = CString::new(text.replace('\0', "")).map_err(|_| ConvError)?;
        let message = PamMessage {
            msg_style: style.code(),
            msg: text.as_ptr(),
        };
        let mut message_ptr: *const PamMessage = &message;
        let mut response: *mut PamResponse = std::ptr::null_mut();
        // SAFETY: one message, a pointer to it and an out-pointer for the response,
        // all alive across the call, as the conversation contract requires.
        let rc = unsafe { conv_fn(1, &mut message_ptr, &mut response, conv.appdata_ptr) };
        // SAFETY: the application allocated the response (if any) with malloc and
        // hands its ownership to us; take_response wipes and frees it.
        let answer = unsafe { take_response(response) };
        if rc != PAM_SUCCESS {
            return Err(ConvError);
        }
        match style {
            Style::Hidden | Style::Visible => answer.map(Some).ok_or(ConvError),
            Style::Error | Style::Info => Ok(None),
        }
    }

    /// A prompt whose answer is not echoed.
    pub fn prompt_hidden(&self, text: &str) -> Result<Answer, ConvError> {
        self.converse(Style::Hidden, text)?.ok_or(ConvError)
    }

    /// Informational lines that must reach the user (enrollment), even with PAM_SILENT.
    pub fn tell(&self, text: &str) -> Result<(), ConvError> {
        self.converse(Style::Info, text).map(|_| ())
    }

    /// A message the user may be spared with PAM_SILENT.
    pub fn show(&self, style: Style, text: &str) {
        if !self.silent {
            let _ = self.converse(style, text);
        }
    }

    /// Keeps `value` with the handle under `name` until `pam_end` (or replacement),
    /// when libpam hands it back to `cleanup`.
    pub fn set_data<T>(
        &self,
        name: &CStr,
        value: Box<T>,
        cleanup: CleanupFn,
    ) -> Result<(), Box<T>> {
        let raw = Box::into_raw(value);
        // SAFETY: pamh is valid; raw is a leaked Box that libpam hands back to
        // `cleanup` exactly once (on replacement or at pam_end).
        let rc = unsafe { pam_set_data(self.pamh, name.as_ptr(), raw.cast(), Some(cleanup)) };
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            // SAFETY: libpam did not take ownership, so the Box is still ours.
            Err(unsafe { Box::from_raw(raw) })
        }
    }

    /// The value kept under `name` by [`Handle::set_data`] in this transaction.
    ///
    /// # Safety
    /// Whatever is kept under `name` was set by `set_data::<T>` with this same `T`.
    pub unsafe fn get_data<T>(&self, name: &CStr) -> Option<&T> {
        let mut data: *const c_void = std::ptr::null();
        // SAFETY: pamh is valid; data is a valid out-pointer.
        let rc = unsafe { pam_get_data(self.pamh, name.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: the data is a live T (caller's contract), owned by libpam until
        // pam_end, which cannot run while this call is in progress.
        Some(unsafe { &*data.cast::<T>() })
    }
}

/// Copies the answer out of a conversation response, wipes the application's copy
/// and frees it.
///
/// # Safety
/// `response` is null or a malloc'd `pam_response` whose `resp` is null or a malloc'd
/// NUL-terminated string, as the PAM conversation contract requires.
unsafe fn take_response(response: *mut PamResponse) -> Option<Answer> {
    if response.is_null() {
        return None;
    }
    // SAFETY: response is non-null and points to one pam_response (caller's contract).
    let resp = unsafe { (*response).resp };
    let answer = if resp.is_null() {
        None
    } else {
        // SAFETY: resp is a NUL-terminated string (caller's contract).
        let len = unsafe { libc::strlen(resp) };
        // SAFETY: resp points to len readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(resp.cast::<u8>(), len) }.to_vec();
        // SAFETY: resp points to len writable bytes, wiped before they are freed.
        unsafe { libc::explicit_bzero(resp.cast(), len) };
        // SAFETY: resp was allocated with malloc and is not used again.
        unsafe { libc::free(resp.cast()) };
        Some(Answer::new(bytes))
    };
    // SAFETY: response was allocated with malloc and is not used again.
    unsafe { libc::free(response.cast()) };
    answer
}

/// The module arguments as strings; a non-UTF-8 argument is kept lossily so that the
/// parser refuses it by name.
///
/// # Safety
/// `argv` is null or points to `argc` NUL-terminated strings, as libpam passes them.
pub unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .filter_map(|i| {
            // SAFETY: i < argc, so argv[i] is within the array (caller's contract).
            let p = unsafe { *argv.add(i) };
            // SAFETY: a non-null argv[i] is a NUL-terminated string.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}
