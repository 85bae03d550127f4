//! The write side of a client socket. Channel messages are already complete WebSocket frames
//! ([`crate::frame::Frame`], shared by every subscriber); they are queued here and leave in
//! vectored writes, without being copied into a per-connection buffer. Whatever tungstenite
//! writes itself (acks, pings, pongs, the close frame) goes through [`Wire`]'s `AsyncWrite`
//! after the queued frames, so the byte stream stays in order even when a write is cut short.
//! The handshake's `101 Switching Protocols` is queued the same way and leaves with the
//! `welcome` frame in one `writev`.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most chunks handed to one `writev` (Linux takes up to 1024; a batch is rarely this long).
const MAX_SLICES: usize = 64;

pub struct Wire<S> {
    inner: S,
    /// Bytes accepted but not yet written, oldest first.
    queue: VecDeque<Bytes>,
}

impl<S> Wire<S> {
    pub fn new(inner: S) -> Wire<S> {
        Wire {
            inner,
            queue: VecDeque::new(),
        }
    }

    /// Queues bytes to be written, in order, by the next flush (or before the next write).
    pub fn queue(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue.push_back(bytes);
        }
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Writes out everything queued, as many chunks per syscall as the socket takes.
    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            ready!(self.poll_write_queued(cx, &[]))?;
        }
        Poll::Ready(Ok(()))
    }

    /// One vectored write of the queued chunks followed by `tail`. `tail` goes only in a
    /// write that holds every queued chunk, so it never overtakes one. Drops what was written
    /// from the queue and returns how many bytes of `tail` went out.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>, tail: &[u8]) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let chunks = self.queue.len().min(MAX_SLICES - 1);
        let mut queued = 0;
        for (slice, chunk) in slices.iter_mut().zip(self.queue.iter().take(chunks)) {
            *slice = IoSlice::new(chunk);
            queued += chunk.len();
        }
        let count = if chunks == self.queue.len() {
            slices[chunks] = IoSlice::new(tail);
            chunks + 1
        } else {
            chunks
        };
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.consume(written.min(queued));
        if self.queue.is_empty() {
            // Free the queue: most connections sit idle for hours between messages.
            self.queue = VecDeque::new();
        }
        Poll::Ready(Ok(written.saturating_sub(queued)))
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The queue first, with this write in the same syscall when the socket takes both.
        while !this.queue.is_empty() {
            let sent = ready!(this.poll_write_queued(cx, buf))?;
            if sent > 0 {
                return Poll::Ready(Ok(sent));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_queue(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_queue(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn queued_bytes_leave_with_the_next_write_in_one_writev() {
        let (near, mut far) = duplex(1024);
        let mut wire = Wire::new(near);
        wire.queue(Bytes::from_static(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ));
        let mut buf = [0u8; 64];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut buf));
        assert!(
            nothing.await.is_err(),
            "queued bytes wait for a write or flush"
        );
        wire.write_all(b"welcome").await.unwrap();
        let mut got = vec![0u8; 43];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 101 Switching Protocols\r\n\r\nwelcome");
    }

    #[tokio::test]
    async fn queued_bytes_are_written_by_a_flush_and_by_shutdown() {
        for by_shutdown in [false, true] {
            let (near, mut far) = duplex(1024);
            let mut wire = Wire::new(near);
            wire.queue(Bytes::from_static(b"frame"));
            if by_shutdown {
                wire.shutdown().await.unwrap();
            } else {
                wire.flush().await.unwrap();
            }
            let mut got = vec![0u8; 5];
            far.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"frame");
        }
    }

    /// A pipe of 7 bytes forces partial writes inside chunks and across them.
    #[tokio::test]
    async fn a_full_socket_gets_everything_in_order() {
        let (near, mut far) = duplex(7);
        let mut wire = Wire::new(near);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        wire.queue(Bytes::from_static(b"HTTP/1.1 101 Switching"));
        wire.write_all(b"-welcome").await.unwrap();
        for chunk in ["-one", "-two-longer-than-the-pipe", "", "-three"] {
            wire.queue(Bytes::from(chunk));
        }
        wire.flush().await.unwrap();
        wire.queue(Bytes::from_static(b"-queued"));
        wire.write_all(b"-written-after").await.unwrap();
        wire.shutdown().await.unwrap();
        drop(wire);
        assert_eq!(
            reader.await.unwrap(),
            b"HTTP/1.1 101 Switching-welcome-one-two-longer-than-the-pipe-three-queued-written-after"
        );
    }

    /// A flush cut short (its future dropped) leaves the rest queued, ahead of later writes.
    #[tokio::test]
    async fn an_abandoned_flush_keeps_its_place() {
        let (near, mut far) = duplex(4);
        let mut wire = Wire::new(near);
        wire.queue(Bytes::from_static(b"frame-one"));
        let cut = tokio::time::timeout(std::time::Duration::from_millis(20), wire.flush());
        assert!(cut.await.is_err(), "the pipe is full");
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        wire.write_all(b"close").await.unwrap();
        wire.shutdown().await.unwrap();
        drop(wire);
        assert_eq!(reader.await.unwrap(), b"frame-oneclose");
    }
}
