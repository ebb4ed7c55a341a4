//! Questions to the person at the terminal: prompts on standard output (standard
//! error with `--json`, so that standard output is the JSON alone), answers read from
//! standard input one byte at a time (no buffer keeps a copy of what was typed), with
//! echo off for secrets.

use crate::error::{Error, Result};
use crate::output::emit;
use pam_totp::secret::Answer;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Turns terminal echo off until dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (checked at start); saved is a valid out-pointer.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None; // not a terminal: nothing to hide
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        // SAFETY: quiet is a valid termios derived from the current settings.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) } != 0 {
            return None;
        }
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in new().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// One line of text for the person at the terminal.
pub fn say(text: &str) -> Result<()> {
    show(&format!("{text}\n"))
}
