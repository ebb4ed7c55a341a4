//! Questions to the person at the terminal: prompts on standard output (standard
//! error with `--json`, so that standard output is the JSON alone), answers read from
//! standard input one byte at a time (no buffer keeps a copy of what was typed), with
//! echo off for secrets.

use crate::error::{Error, Result};
use crate::output::emit;
use pam_totp::secret::Answer;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use zeroize::Zeroizing;

static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends prompts and messages to standard error from now on (`--json`).
pub fn prompts_to_stderr() {
    TO_STDERR.store(true, Ordering::Relaxed);
}

fn show(text: &str) -> Result<()> {
    if !TO_STDERR.load(Ordering::Relaxed) {
        return emit(text);
    }
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())
        .and_then(|()| err.flush())
        .map_err(|e| Error::failed(format!("cannot write to standard error: {e}")))
}

/// Longest answer read; the rest of a longer line is read and dropped.
const MAX_ANSWER: usize = 1024;

/// Asks `prompt` and reads one line. With `echo` false and a terminal on standard
/// input, what is typed is not shown.
pub fn ask(prompt: &str, echo: bool) -> Result<Answer> {
    // Echo goes off before the prompt is shown: whatever is typed once the prompt is
    // visible is neither echoed nor thrown away.
    let guard = if echo { None } else { EchoOff::new() };
    show(prompt)?;
    let line = read_line();
    if guard.is_some() {
        // The Enter the user typed was not echoed either.
        drop(guard);
        show("\n")?;
    }
    line?.ok_or_else(|| Error::failed("no answer: standard input is closed"))
}

/// One line from standard input without its newline; `None` at end of input.
fn read_line() -> Result<Option<Answer>> {
    let mut line = Zeroizing::new(Vec::with_capacity(64));
    let mut got_any = false;
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::failed(format!("cannot read standard input: {err}")));
        }
        if n == 0 {
            return Ok(got_any.then(|| Answer::new(std::mem::take(&mut *line))));
        }
        got_any = true;
        match byte {
            b'\n' => break,
            b'\r' => {}
            _ if line.len() < MAX_ANSWER => line.push(byte),
            _ => {}
        }
    }
    Ok(Some(Answer::new(std::mem::take(&mut *line))))
}

/// The terminal settings to put back if a signal ends the program while echo is off.
static SAVED: OnceLock<libc::termios> = OnceLock::new();
/// Echo is off right now: the signal handler must put [`SAVED`] back.
static ECHO_IS_OFF: AtomicBool = AtomicBool::new(false);

/// Signals from the keyboard or elsewhere that end the program at a hidden prompt.
const FATAL: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];

/// Puts the terminal back, then lets the signal end the program as it would have.
extern "C" fn restore_and_die(sig: libc::c_int) {
    if ECHO_IS_OFF.load(Ordering::Acquire) {
        if let Some(saved) = SAVED.get() {
            // SAFETY: tcsetattr and write are async-signal-safe; saved is a valid
            // termios that was stored before ECHO_IS_OFF was set.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
                libc::write(2, b"\n".as_ptr().cast(), 1);
            }
        }
    }
    // SAFETY: SA_RESETHAND put the default action back on entry; the signal is
    // delivered with it once this handler returns.
    unsafe { libc::raise(sig) };
}

/// Turns terminal echo off until dropped. Ctrl-C and other fatal signals put the
/// terminal back before the program ends; Ctrl-Z is ignored while echo is off.
struct EchoOff {
    saved: libc::termios,
    handlers: Vec<(libc::c_int, libc::sigaction)>,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (checked at start); saved is a valid out-pointer.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None; // not a terminal: nothing to hide
        }
        // The first settings seen are the ones to put back: later prompts find the same.
        SAVED.get_or_init(|| saved);
        let mut guard = EchoOff {
            saved,
            handlers: Vec::new(),
        };
        ECHO_IS_OFF.store(true, Ordering::Release);
        for sig in FATAL {
            guard.handle(
                sig,
                restore_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        guard.handle(libc::SIGTSTP, libc::SIG_IGN);
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        // SAFETY: quiet is a valid termios derived from the current settings.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) } != 0 {
            return None;
        }
        Some(guard)
    }

    /// Installs `action` for `sig`, remembering the previous one for drop.
    fn handle(&mut self, sig: libc::c_int, action: libc::sighandler_t) {
        // SAFETY: all-zero sigaction values are valid to fill in; sigaction gets
        // valid pointers and a handler that only calls async-signal-safe functions.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = action;
            new.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &new, &mut old) == 0 {
                self.handlers.push((sig, old));
            }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in new().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
        ECHO_IS_OFF.store(false, Ordering::Release);
        for (sig, old) in self.handlers.drain(..) {
            // SAFETY: puts back the action sigaction returned for this signal.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
    }
}

/// One line of text for the person at the terminal.
pub fn say(text: &str) -> Result<()> {
    show(&format!("{text}\n"))
}

/// The size (columns, rows) of the terminal on standard output, when standard output is
/// a terminal that takes colour escapes (`TERM` set and not `dumb`); else `None`, and
/// nothing printed may hold an escape sequence. A terminal that reports no size gives
/// `(0, 0)`.
pub fn colour_terminal_size() -> Option<(usize, usize)> {
    let term = std::env::var("TERM").ok()?;
    if term.is_empty() || term == "dumb" {
        return None;
    }
    // SAFETY: winsize is plain old data; all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which points to ours;
    // it fails (ENOTTY) when standard output is not a terminal.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } != 0 {
        return None;
    }
    Some((usize::from(size.ws_col), usize::from(size.ws_row)))
}
