//! Server-to-client WebSocket text frames encoded once and shared. A server's frames are not
//! masked (RFC 6455 §5.1), so one message fanned out to thousands of subscribers is the same
//! bytes on every socket: the delivery path encodes it once here, every outbox holds a
//! reference, and the connection writes those bytes straight to its socket
//! ([`crate::wire::Wire`]) instead of copying them into a per-connection buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Opcode bytes of a final (unfragmented) text frame and of a close frame.
const FIN_TEXT: u8 = 0x81;
const FIN_CLOSE: u8 = 0x88;
/// Longest close reason: a control frame's payload is at most 125 bytes, 2 of them the code.
const MAX_CLOSE_REASON: usize = 123;
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

    /// A close frame with `code` and `reason` (cut to 123 bytes at a character boundary).
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason.as_bytes()[..end];
        let mut frame = BytesMut::with_capacity(4 + reason.len());
        frame.put_u8(FIN_CLOSE);
        frame.put_u8(2 + reason.len() as u8);
        frame.put_u16(code);
        frame.put_slice(reason);
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
    fn close_frames_carry_code_and_a_reason_cut_to_fit() {
        let Message::Close(Some(close)) = read_as_client(Frame::close(1013, "full").into_bytes())
        else {
            panic!("expected a close frame");
        };
        assert_eq!(u16::from(close.code), 1013);
        assert_eq!(close.reason.as_str(), "full");
        let long = "é".repeat(100);
        let Message::Close(Some(close)) = read_as_client(Frame::close(1013, &long).into_bytes())
        else {
            panic!("expected a close frame");
        };
        assert_eq!(
            close.reason.len(),
            122,
            "61 two-byte characters fit in 123 bytes"
        );
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
