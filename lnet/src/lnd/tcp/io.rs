//! Frame I/O for the tcp LND: headers and payloads moved with vectored
//! syscalls straight between the socket and MD pages.
//!
//! Each MD lock is held only around one non-blocking `readv`/`writev`, never
//! across an `.await`. Nothing here knows about peers or the core.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::md::MdSlice;
use crate::wire::HDR_SIZE;

/// Linux's IOV_MAX: the most slices one `readv`/`writev` takes.
const IOV_MAX: usize = 1024;

/// A socket (or half of one) we can read from without blocking.
pub(crate) trait ReadSock {
    async fn ready(&self) -> io::Result<()>;
    fn try_read_buf(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn try_readv(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize>;
}

/// tokio's stream and its read half have the same inherent methods.
macro_rules! read_sock {
    ($t:ty) => {
        impl ReadSock for $t {
            async fn ready(&self) -> io::Result<()> {
                self.readable().await
            }
            fn try_read_buf(&self, buf: &mut [u8]) -> io::Result<usize> {
                self.try_read(buf)
            }
            fn try_readv(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
                self.try_read_vectored(bufs)
            }
        }
    };
}
read_sock!(TcpStream);
read_sock!(OwnedReadHalf);

/// A socket (or half of one) we can write to without blocking.
pub(crate) trait WriteSock {
    async fn ready(&self) -> io::Result<()>;
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// tokio's stream and its write half have the same inherent methods.
macro_rules! write_sock {
    ($t:ty) => {
        impl WriteSock for $t {
            async fn ready(&self) -> io::Result<()> {
                self.writable().await
            }
            fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.try_write_vectored(bufs)
            }
        }
    };
}
write_sock!(TcpStream);
write_sock!(OwnedWriteHalf);

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-message")
}

/// Fills `buf`. `Ok(false)` is a clean end of stream before the first byte.
pub(crate) async fn read_exact(s: &impl ReadSock, buf: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match s.try_read_buf(&mut buf[done..]) {
            Ok(0) if done == 0 => return Ok(false),
            Ok(0) => return Err(eof()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads `sink.len` bytes straight into the sink's MD pages.
pub(crate) async fn read_into(s: &impl ReadSock, sink: &MdSlice) -> io::Result<()> {
    let mut done = 0;
    while done < sink.len {
        let r = {
            let mut buf = sink.md.lock();
            let mut iov = buf.io_slices_mut(sink.offset + done, sink.len - done);
            if iov.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "sink outside its MD"));
            }
            let n = iov.len().min(IOV_MAX);
            s.try_readv(&mut iov[..n])
        };
        match r {
            Ok(0) => return Err(eof()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and throws away `n` bytes (payload nobody matched).
pub(crate) async fn discard(s: &impl ReadSock, mut n: usize) -> io::Result<()> {
    let mut scratch = [0u8; 8192];
    while n > 0 {
        let want = n.min(scratch.len());
        match s.try_read_buf(&mut scratch[..want]) {
            Ok(0) => return Err(eof()),
            Ok(k) => n -= k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One non-blocking `writev` of the frame from byte `done` on, straight
/// from MD pages; returns the bytes it took.
fn writev_once(s: &impl WriteSock, hdr: &[u8; HDR_SIZE], payload: Option<&MdSlice>, done: usize) -> io::Result<usize> {
    let plen = payload.map_or(0, |p| p.len);
    let guard = payload.map(|p| p.md.lock());
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(2 + plen / 4096);
    if done < HDR_SIZE {
        iov.push(IoSlice::new(&hdr[done..]));
    }
    if let (Some(p), Some(g)) = (payload, guard.as_ref()) {
        let skip = done.saturating_sub(HDR_SIZE);
        iov.extend(g.io_slices(p.offset + skip, plen - skip));
    }
    let n = iov.len().min(IOV_MAX);
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "payload outside its MD"));
    }
    match s.try_writev(&iov[..n]) {
        Ok(0) => Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
        r => r,
    }
}

/// Bytes of a frame on the wire.
pub(crate) fn frame_len(payload: Option<&MdSlice>) -> usize {
    HDR_SIZE + payload.map_or(0, |p| p.len)
}

/// Writes as much of the frame (from byte `done`) as the socket takes
/// without blocking; returns the new `done`.
pub(crate) fn try_write_frame(
    s: &impl WriteSock,
    hdr: &[u8; HDR_SIZE],
    payload: Option<&MdSlice>,
    mut done: usize,
) -> io::Result<usize> {
    let total = frame_len(payload);
    while done < total {
        match writev_once(s, hdr, payload, done) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes the rest of a frame (from byte `done`), waiting for the socket.
pub(crate) async fn write_frame_from(
    s: &impl WriteSock,
    hdr: &[u8; HDR_SIZE],
    payload: Option<&MdSlice>,
    mut done: usize,
) -> io::Result<()> {
    let total = frame_len(payload);
    while done < total {
        match writev_once(s, hdr, payload, done) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes a header and its payload with `writev`, straight from MD pages.
pub(crate) async fn write_frame(s: &impl WriteSock, hdr: &[u8; HDR_SIZE], payload: Option<&MdSlice>) -> io::Result<()> {
    write_frame_from(s, hdr, payload, 0).await
}
