//! Server-to-client WebSocket text frames encoded once and shared. A server's frames are not
//! masked (RFC 6455 §5.1), so one message fanned out to thousands of subscribers is the same
//! bytes on every socket: the delivery path encodes it once here, every outbox holds a
//! reference, and the connection writes those bytes straight to its socket
//! ([`crate::wire::Wire`]) instead of copying them into a per-connection buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Opcode byte of a final (unfragmented) text frame.
const FIN_TEXT: u8 = 0x81;
/// Largest payload whose length fits in the first length byte.
const SHORT_LEN_MAX: usize = 125;
/// Marker lengths saying a 16-bit or 64-bit length follows.
const LEN_16: u8 = 126;
const LEN_64: u8 = 127;

/// A complete WebSocket text frame (header and payload), cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Frames `text` as one final, unmasked text frame.
    pub fn text(text: impl AsRef<str>) -> Frame {
        let payload = text.as_ref().as_bytes();
        let len = payload.len();
        let mut frame = BytesMut::with_capacity(len + 10);
        frame.put_u8(FIN_TEXT);
        if len <= SHORT_LEN_MAX {
            frame.put_u8(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            frame.put_u8(LEN_16);
            frame.put_u16(len);
        } else {
            frame.put_u8(LEN_64);
            frame.put_u64(len as u64);
        }
        frame.put_slice(payload);
        Frame(frame.freeze())
    }

    /// The frame's bytes as they go on the wire.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The frame's text (for tests and logs).
    pub fn payload(&self) -> &str {
        let header = match self.0.get(1) {
            Some(&LEN_16) => 4,
            Some(&LEN_64) => 10,
            _ => 2,
        };
        std::str::from_utf8(self.0.get(header..).unwrap_or_default()).unwrap_or_default()
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Frame {
        Frame::text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    /// Decodes `bytes` with tungstenite as a client would.
    fn read_as_client(bytes: Bytes) -> Message {
        let stream = std::io::Cursor::new(bytes.to_vec());
        let mut socket = WebSocket::from_raw_socket(stream, Role::Client, None);
        socket.read().expect("a valid frame")
    }

    #[test]
    fn every_length_encoding_reads_back_as_the_same_text() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let text = "x".repeat(len);
            let frame = Frame::text(&text);
            assert_eq!(frame.payload(), text);
            assert_eq!(
                read_as_client(frame.into_bytes()),
                Message::Text(Utf8Bytes::from(text)),
                "length {len}"
            );
        }
    }

    #[test]
    fn headers_are_the_shortest_form() {
        assert_eq!(Frame::text("hi").into_bytes()[..2], [0x81, 2]);
        assert_eq!(
            Frame::text("x".repeat(126)).into_bytes()[..4],
            [0x81, 126, 0, 126]
        );
        let big = Frame::text("x".repeat(65_536)).into_bytes();
        assert_eq!(big[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
