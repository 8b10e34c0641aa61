//! HTTP/1.1 message syntax shared by airgate's own server side (`proxy::http1`) and its
//! upstream client (`upstream::h1`): header fields kept as slices of the head they were
//! read in, `Content-Length` values, chunk-size lines and `Connection` tokens.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncRead;

/// Header fields per message, as hyper's default: parsed into a stack array.
pub const MAX_HEADERS: usize = 100;

/// Where each header field of a parsed head lies in the buffer it was parsed from:
/// recorded while httparse's fields borrow the buffer, used once they no longer do.
pub struct HeadSpans {
    spans: [(u32, u32, u32, u32); MAX_HEADERS],
    count: usize,
}

impl HeadSpans {
    pub fn record(buf: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let base = buf.as_ptr() as usize;
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        for (span, field) in spans.iter_mut().zip(fields) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            );
        }
        HeadSpans {
            spans,
            count: fields.len().min(MAX_HEADERS),
        }
    }

    /// Split the head (its first `len` bytes) off `buf` and build its header map. The
    /// values are slices of the head's own bytes, not copies. `Err(head)`: a field name
    /// or value is not valid.
    pub fn split(&self, buf: &mut BytesMut, len: usize) -> Result<(Bytes, HeaderMap), Bytes> {
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(self.count);
        for &(ns, ne, vs, ve) in &self.spans[..self.count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize]);
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize));
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => return Err(head),
            }
        }
        Ok((head, headers))
    }
}

/// Read more into `buf`, first making room for about `room` bytes when less than a
/// quarter of that is free (so a buffer is not grown for every read).
pub fn poll_read_more<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < room / 4 {
        buf.reserve(room);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// `name: value\r\n`.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: one decimal number, or a list of the same number repeated
/// (RFC 9110 8.6). Anything else is `None`.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            return None;
        }
        let mut n: u64 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// `n` in hexadecimal, for a chunk-size line.
pub fn hex_size(mut n: usize, buf: &mut [u8; 18]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Whether a comma-separated field value (`Connection`) names `token`, in any case.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b"42, 42"), Some(42));
        assert_eq!(content_length(b"42, 43"), None);
        assert_eq!(content_length(b"+42"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999999"), None);
    }

    #[test]
    fn hex_sizes_and_tokens() {
        let mut buf = [0u8; 18];
        assert_eq!(hex_size(0, &mut buf), b"0");
        assert_eq!(hex_size(0x1f40, &mut buf), b"1f40");
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
    }

    #[test]
    fn split_keeps_what_follows_the_head() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX-Two: b c\r\n\r\nrest"[..]);
        let mut fields = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut fields);
        let len = match request.parse(&buf).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => unreachable!("complete head"),
        };
        let spans = HeadSpans::record(&buf, request.headers);
        let (head, headers) = spans.split(&mut buf, len).unwrap();
        assert_eq!(head.len(), len);
        assert_eq!(&buf[..], b"rest");
        assert_eq!(headers["host"], "a");
        assert_eq!(headers["x-two"], "b c");
    }
}
