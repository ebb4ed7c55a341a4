//! A pipe from forked children back to the parent, for the test drivers that measure
//! several processes at once (`pam-bench`, `pam-stress`).

use std::ffi::c_int;

/// A new pipe: (read end, write end).
pub fn pipe() -> (c_int, c_int) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// Writes all of `bytes`, stopping quietly if the reader went away.
pub fn write_all(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a valid buffer of bytes.len() bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Reads until end of file, then closes `fd`.
pub fn read_all(fd: c_int) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: buf is a valid writable buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing our own descriptor, not used afterwards.
    unsafe { libc::close(fd) };
    String::from_utf8_lossy(&out).into_owned()
}
