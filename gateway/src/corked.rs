//! A client socket that holds back the handshake's `101 Switching Protocols` until the
//! `welcome` frame is written, so both leave in one `writev` instead of two `send`s. Accepting
//! is the gateway's most frequent costly path (a drain moves every client at once); one send
//! per connection fewer is one syscall and one TCP segment (with its ACK) fewer.
//!
//! Only a `101` is held: a refused upgrade (`401`, `429`, `503`, …) has nothing following it
//! and goes out at once.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const SWITCHING_PROTOCOLS: &[u8] = b"HTTP/1.1 101 ";

pub struct Corked<S> {
    inner: S,
    held: Vec<u8>,
    corked: bool,
}

impl<S> Corked<S> {
    pub fn new(inner: S) -> Corked<S> {
        Corked {
            inner,
            held: Vec::new(),
            corked: true,
        }
    }

    /// Lets writes through from now on; what was held leaves with the next write or flush.
    pub fn release(&mut self) {
        self.corked = false;
    }
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Writes out what was held, before anything else.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        // Free the buffer: a connection lives for hours after its handshake.
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.corked {
            if this.held.is_empty() && !buf.starts_with(SWITCHING_PROTOCOLS) {
                this.corked = false;
            } else {
                this.held.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
        }
        // Held bytes and this write together, in one syscall when the socket takes them.
        while !this.held.is_empty() {
            let slices = [IoSlice::new(&this.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= this.held.len() {
                let of_buf = n - this.held.len();
                this.held = Vec::new();
                if of_buf > 0 {
                    return Poll::Ready(Ok(of_buf));
                }
            } else {
                this.held.drain(..n);
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_held(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.corked = false;
        ready!(this.poll_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn a_101_waits_for_the_next_write_and_leaves_with_it() {
        let (near, mut far) = duplex(1024);
        let mut corked = Corked::new(near);
        corked
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .unwrap();
        corked.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut buf));
        assert!(nothing.await.is_err(), "the 101 was held");
        corked.release();
        corked.write_all(b"welcome").await.unwrap();
        corked.flush().await.unwrap();
        let mut got = vec![0u8; 43];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 101 Switching Protocols\r\n\r\nwelcome");
    }

    #[tokio::test]
    async fn a_refusal_goes_out_at_once() {
        let (near, mut far) = duplex(1024);
        let mut corked = Corked::new(near);
        corked
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
            .await
            .unwrap();
        corked.flush().await.unwrap();
        let mut got = vec![0u8; 36];
        far.read_exact(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn held_bytes_are_written_by_a_flush_after_release_and_by_shutdown() {
        for by_shutdown in [false, true] {
            let (near, mut far) = duplex(1024);
            let mut corked = Corked::new(near);
            corked.write_all(b"HTTP/1.1 101 \r\n\r\n").await.unwrap();
            if by_shutdown {
                corked.shutdown().await.unwrap();
            } else {
                corked.release();
                corked.flush().await.unwrap();
            }
            let mut got = vec![0u8; 17];
            far.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"HTTP/1.1 101 \r\n\r\n");
        }
    }

    #[tokio::test]
    async fn a_full_socket_gets_everything_in_order() {
        // A pipe smaller than what is held forces partial writes.
        let (near, mut far) = duplex(8);
        let mut corked = Corked::new(near);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        corked.write_all(b"HTTP/1.1 101 Switching").await.unwrap();
        corked.release();
        corked.write_all(b"-then-a-welcome-frame").await.unwrap();
        corked.shutdown().await.unwrap();
        drop(corked);
        assert_eq!(
            reader.await.unwrap(),
            b"HTTP/1.1 101 Switching-then-a-welcome-frame"
        );
    }
}
