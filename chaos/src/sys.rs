//! The crate's one unsafe module: close(2) of a file with its error, and
//! the process's umask.
//!
//! Owns: [`close`], [`clear_umask`]. std drops a `File` (and an `OwnedFd`) ignoring
//! close(2)'s result, but on a FUSE mount close(2) is where the flush of
//! what was written behind reports its failure — an outcome the workload
//! must log.
//!
//! Must not: touch an fd it was not given ownership of.
#![allow(unsafe_code)]

use std::os::fd::IntoRawFd;

/// Closes `f`, returning close(2)'s error.
pub fn close(f: std::fs::File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up the File's ownership of `fd`: nothing
    // else closes it, and it is not used after this call.
    let r = unsafe { libc::close(fd) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Sets the process's umask to 0 (files and directories get exactly the
/// modes the workload asks for).
pub fn clear_umask() {
    // SAFETY: umask(2) only swaps the process's mask; it cannot fail and
    // touches no memory.
    unsafe {
        libc::umask(0);
    }
}
