//! Wire framing: splitting byte streams into PostgreSQL messages, and building the few
//! messages the gateway authors itself.
//!
//! Frames are kept as raw bytes: the relay only looks at a frame's tag and length, and decodes
//! a body only when a decision needs it (a query's text, an error's fields). Every decoder here
//! treats its input as hostile and returns [`FrameError`] instead of panicking.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of a tagged frame header: one tag byte and a big-endian `i32` length that counts
/// itself but not the tag.
pub const HEADER_LEN: usize = 5;

/// Protocol codes carried in untagged startup-phase packets.
pub mod codes {
    /// StartupMessage for protocol 3.0 (major 3 in the high 16 bits).
    pub const PROTOCOL_3: i32 = 3 << 16;
    /// CancelRequest.
    pub const CANCEL_REQUEST: i32 = 80877102;
    /// SSLRequest.
    pub const SSL_REQUEST: i32 = 80877103;
    /// GSSENCRequest.
    pub const GSSENC_REQUEST: i32 = 80877104;
}

/// The largest startup packet PostgreSQL itself accepts.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A frame that could not be accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below the minimum of 4.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// The length field exceeds the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The tag is not a message this side of the protocol may send.
    #[error("unexpected message type {0:?}")]
    UnknownTag(char),
    /// The body does not match the message's layout.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Checks a tagged frame header at the start of `buf`.
///
/// Returns `Ok(None)` while fewer than [`HEADER_LEN`] bytes are buffered, otherwise the tag and
/// the total frame length (header included).
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    Ok(Some((buf[0], len + 1)))
}

/// Tags a client may send after startup.
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'H'
            | b'S'
            | b'X'
            | b'd'
            | b'c'
            | b'f'
            | b'F'
            | b'p'
    )
}

/// A cursor over a message body that fails cleanly on short or malformed input.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn malformed(&self) -> FrameError {
        FrameError::Malformed(self.what)
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, FrameError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed())?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| self.malformed())?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, FrameError> {
        if self.buf.len() < 4 {
            return Err(self.malformed());
        }
        let v = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        self.buf = &self.buf[4..];
        Ok(v)
    }

    /// A big-endian `i16`.
    pub fn i16(&mut self) -> Result<i16, FrameError> {
        if self.buf.len() < 2 {
            return Err(self.malformed());
        }
        let v = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        self.buf = &self.buf[2..];
        Ok(v)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.malformed())?;
        self.buf = rest;
        Ok(b)
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Whatever is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The body of a tagged frame (everything after the header).
pub fn body(frame: &[u8]) -> &[u8] {
    &frame[HEADER_LEN..]
}

/// Starts a tagged message in `out`, returning the offset of its length field for [`finish`].
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Writes the final length of the message started at `at`.
pub fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// `AuthenticationOk`, `AuthenticationCleartextPassword` and friends: `R` with a code.
pub fn auth_request(out: &mut BytesMut, code: i32) {
    out.put_u8(b'R');
    out.put_i32(8);
    out.put_i32(code);
}

/// `BackendKeyData` with the gateway's own key.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    out.put_u8(b'K');
    out.put_i32(12);
    out.put_i32(pid);
    out.put_i32(secret);
}

/// `NegotiateProtocolVersion`: the newest minor version supported and the options not understood.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unknown: &[&str]) {
    let at = begin(out, b'v');
    out.put_i32(minor);
    out.put_i32(unknown.len() as i32);
    for option in unknown {
        put_cstr(out, option);
    }
    finish(out, at);
}

/// An untagged startup-phase packet: `i32` length then body.
pub fn startup_packet(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A complete CancelRequest packet for the backend key `(pid, secret)`.
pub fn cancel_packet(pid: i32, secret: i32) -> BytesMut {
    let mut out = BytesMut::with_capacity(16);
    startup_packet(&mut out, |b| {
        b.put_i32(codes::CANCEL_REQUEST);
        b.put_i32(pid);
        b.put_i32(secret);
    });
    out
}

/// Fields of an `ErrorResponse` or `NoticeResponse` that the gateway looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S` / `V`: ERROR, FATAL, NOTICE, ...
    pub severity: String,
    /// `C`: the SQLSTATE.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
    /// `D`: detail, if any.
    pub detail: Option<String>,
    /// `H`: hint, if any.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// Decodes the fields of an `E`/`N` body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(body, "ErrorResponse");
        let mut out = ErrorFields::default();
        loop {
            let field = r.u8()?;
            if field == 0 {
                return Ok(out);
            }
            let value = r.cstr()?;
            match field {
                b'V' => out.severity = value.to_owned(),
                b'S' if out.severity.is_empty() => out.severity = value.to_owned(),
                b'C' => out.code = value.to_owned(),
                b'M' => out.message = value.to_owned(),
                b'D' => out.detail = Some(value.to_owned()),
                b'H' => out.hint = Some(value.to_owned()),
                _ => {}
            }
        }
    }
}

/// One column of a `RowDescription`, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    /// The column name as the server sent it.
    pub name: &'a str,
    /// The table the column comes from (0: computed).
    pub table_oid: u32,
    /// Its column number in that table (0: computed).
    pub attnum: i16,
    /// The type's OID.
    pub type_oid: u32,
    /// The type's size (negative: variable).
    pub type_len: i16,
    /// The type modifier.
    pub type_mod: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// Decodes the columns of a `RowDescription` (`T`) body.
pub fn row_description(body: &[u8]) -> Result<Vec<FieldDescription<'_>>, FrameError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.i16()?.max(0) as usize;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        fields.push(FieldDescription {
            name: r.cstr()?,
            table_oid: r.i32()? as u32,
            attnum: r.i16()?,
            type_oid: r.i32()? as u32,
            type_len: r.i16()?,
            type_mod: r.i32()?,
            format: r.i16()?,
        });
    }
    Ok(fields)
}

/// Decodes the values of a `DataRow` (`D`) body, borrowed from the frame (`None` = NULL).
pub fn data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, FrameError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.i16()?.max(0) as usize;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        values.push(if len < 0 {
            None
        } else {
            Some(r.bytes(len as usize)?)
        });
    }
    Ok(values)
}

/// Appends an `ErrorResponse` (`E`) with severity, SQLSTATE, message and optional detail/hint.
pub fn error_response(
    out: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let at = begin(out, b'E');
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        out.put_u8(field);
        put_cstr(out, value);
    }
    if let Some(detail) = detail {
        out.put_u8(b'D');
        put_cstr(out, detail);
    }
    if let Some(hint) = hint {
        out.put_u8(b'H');
        put_cstr(out, hint);
    }
    out.put_u8(0);
    finish(out, at);
}

/// Splits the first complete tagged frame off `buf`, if one is buffered.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, FrameError> {
    match peek_header(buf, max_len)? {
        Some((_, total)) if buf.len() >= total => Ok(Some(buf.split_to(total).freeze())),
        _ => Ok(None),
    }
}

/// Reads a big-endian `i32` at `at` (caller guarantees the bounds).
pub fn i32_at(buf: &[u8], at: usize) -> i32 {
    (&buf[at..at + 4]).get_i32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes_and_sane_length() {
        assert_eq!(peek_header(b"Q\0\0", 100), Ok(None));
        assert_eq!(peek_header(b"Q\0\0\0\x05x", 100), Ok(Some((b'Q', 6))));
        assert_eq!(
            peek_header(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength(3))
        );
        assert_eq!(
            peek_header(b"Q\x7f\xff\xff\xff", 100),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(
            peek_header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength(-1))
        );
    }

    #[test]
    fn error_response_round_trips() {
        let mut out = BytesMut::new();
        error_response(&mut out, "FATAL", "28P01", "bad token", Some("d"), None);
        let (tag, total) = peek_header(&out, 1 << 20).unwrap().unwrap();
        assert_eq!((tag, total), (b'E', out.len()));
        let fields = ErrorFields::decode(body(&out)).unwrap();
        assert_eq!(fields.code, "28P01");
        assert_eq!(fields.message, "bad token");
        assert_eq!(fields.severity, "FATAL");
    }

    #[test]
    fn reader_rejects_truncated_input() {
        assert!(Reader::new(b"abc", "x").cstr().is_err());
        assert!(Reader::new(b"\0\0", "x").i32().is_err());
        assert!(ErrorFields::decode(b"Cabc").is_err());
    }
}
