//! Turning wire frames into recording events.
//!
//! Only this module knows how a PostgreSQL message maps to the core's protocol-neutral event
//! model: a `Query` or `Parse` becomes a command, `DataRow`s become batches of rows, and so on.
//! It decodes frames lazily and only when a session is being recorded.

use crate::frame::{self, ErrorFields, FrameError, Reader};
use postern_core::event::{
    Column, Command, CommandComplete, CopyData, Diagnostic, Direction, EventBody, Notification,
    PackedRows, RowDescription, Value,
};

/// The event for a client frame, or `None` for frames that carry no command of their own
/// (Sync, Flush, Describe, Close, Terminate).
pub fn client_event(frame_bytes: &[u8]) -> Result<Option<EventBody>, FrameError> {
    let body = frame::body(frame_bytes);
    let event = match frame_bytes[0] {
        b'Q' => Command::query(Reader::new(body, "Query").cstr()?),
        b'P' => {
            let mut r = Reader::new(body, "Parse");
            let name = r.cstr()?;
            Command::parse(name, r.cstr()?)
        }
        b'B' => bind(body)?,
        b'E' => {
            let mut r = Reader::new(body, "Execute");
            let mut command = Command::execute(r.cstr()?);
            let max_rows = r.i32()?;
            if max_rows != 0 {
                command
                    .attributes
                    .insert("max_rows".into(), max_rows.to_string());
            }
            command
        }
        b'F' => {
            let mut r = Reader::new(body, "FunctionCall");
            let mut command = Command::new("function_call");
            command
                .attributes
                .insert("function_oid".into(), (r.i32()? as u32).to_string());
            command
        }
        b'd' => {
            return Ok(Some(EventBody::CopyData(CopyData::new(
                Direction::ToServer,
                body,
            ))));
        }
        b'c' => Command::new("copy_done"),
        b'f' => Command {
            text: Some(Reader::new(body, "CopyFail").cstr()?.to_owned()),
            ..Command::new("copy_fail")
        },
        _ => return Ok(None),
    };
    Ok(Some(EventBody::Command(event)))
}

fn bind(body: &[u8]) -> Result<Command, FrameError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let formats: Vec<i16> = (0..r.i16()?).map(|_| r.i16()).collect::<Result<_, _>>()?;
    let count = r.i16()?;
    let mut params = Vec::with_capacity(count.max(0) as usize);
    for i in 0..count as usize {
        let len = r.i32()?;
        if len < 0 {
            params.push(Value::Null);
            continue;
        }
        let bytes = r.bytes(len as usize)?;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i).copied().unwrap_or(0) == 1,
        };
        params.push(if binary {
            Value::Binary(bytes.to_vec())
        } else {
            Value::from_bytes(bytes)
        });
    }
    Ok(Command::bind(portal, statement, params))
}

/// Buffers reused across batches are dropped once a huge message grew them beyond this, so a
/// session's memory goes back down after it.
const KEEP_BYTES: usize = 1 << 20;

/// Collects what the server sends into events, batching consecutive rows into one event and
/// consecutive COPY data into one event (a COPY sends a message per row). Rows are copied as
/// they are into one buffer ([`PackedRows`]): a `DataRow` body is already in its layout.
#[derive(Default)]
pub struct ResultCapture {
    rows: PackedRows,
    copy: Vec<u8>,
}

impl ResultCapture {
    /// Decodes one server frame; returns the events it completes, in order (`emit` is called for
    /// each). Rows are held back until a non-row frame or [`ResultCapture::finish`].
    pub fn on_frame(
        &mut self,
        frame_bytes: &[u8],
        mut emit: impl FnMut(EventBody),
    ) -> Result<(), FrameError> {
        let body = frame::body(frame_bytes);
        let tag = frame_bytes[0];
        match tag {
            b'D' => {
                self.finish_copy(&mut emit);
                return self
                    .rows
                    .push_encoded(body)
                    .map_err(|_| FrameError::Malformed("DataRow"));
            }
            b'd' => {
                self.finish_rows(&mut emit);
                self.copy.extend_from_slice(body);
                return Ok(());
            }
            _ => {}
        }
        self.finish(&mut emit);
        let event = match tag {
            b'T' => EventBody::RowDescription(row_description(body)?),
            b'C' => EventBody::CommandComplete(CommandComplete {
                tag: Reader::new(body, "CommandComplete").cstr()?.to_owned(),
            }),
            b'E' => EventBody::Error(diagnostic(body)?),
            b'N' => EventBody::Notice(diagnostic(body)?),
            b'A' => {
                let mut r = Reader::new(body, "NotificationResponse");
                let pid = r.i32()?;
                EventBody::Notification(Notification {
                    process_id: Some(pid as u32),
                    channel: r.cstr()?.to_owned(),
                    payload: r.cstr()?.to_owned(),
                })
            }
            _ => return Ok(()),
        };
        emit(event);
        Ok(())
    }

    /// Emits the rows or COPY data collected so far as one event.
    pub fn finish(&mut self, mut emit: impl FnMut(EventBody)) {
        self.finish_rows(&mut emit);
        self.finish_copy(&mut emit);
    }

    fn finish_rows(&mut self, mut emit: impl FnMut(EventBody)) {
        if !self.rows.is_empty() {
            emit(EventBody::PackedRows(std::mem::take(&mut self.rows)));
        }
    }

    fn finish_copy(&mut self, mut emit: impl FnMut(EventBody)) {
        if !self.copy.is_empty() {
            emit(EventBody::CopyData(CopyData::new(
                Direction::ToClient,
                &self.copy,
            )));
            self.copy.clear();
            if self.copy.capacity() > KEEP_BYTES {
                self.copy = Vec::new();
            }
        }
    }
}

fn row_description(body: &[u8]) -> Result<RowDescription, FrameError> {
    let columns = frame::row_description(body)?
        .into_iter()
        .map(|f| Column {
            type_id: Some(f.type_oid),
            ..Column::named(f.name.to_owned())
        })
        .collect();
    Ok(RowDescription { columns })
}

fn diagnostic(body: &[u8]) -> Result<Diagnostic, FrameError> {
    let fields = ErrorFields::decode(body)?;
    Ok(Diagnostic {
        severity: Some(fields.severity),
        code: Some(fields.code),
        message: fields.message,
        detail: fields.detail,
        hint: fields.hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn msg(tag: u8, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut out = BytesMut::new();
        let at = frame::begin(&mut out, tag);
        body(&mut out);
        frame::finish(&mut out, at);
        out
    }

    #[test]
    fn bind_params_keep_nulls_text_and_binary() {
        let bind = msg(b'B', |b| {
            frame::put_cstr(b, "p1");
            frame::put_cstr(b, "s1");
            b.put_i16(2);
            b.put_i16(0);
            b.put_i16(1);
            b.put_i16(3);
            b.put_i32(2);
            b.put_slice(b"42");
            b.put_i32(2);
            b.put_slice(&[0xff, 0x00]);
            b.put_i32(-1);
        });
        let Some(EventBody::Command(c)) = client_event(&bind).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.portal.as_deref(), c.statement.as_deref()),
            (Some("p1"), Some("s1"))
        );
        assert_eq!(
            c.params,
            vec![Value::from("42"), Value::Binary(vec![0xff, 0]), Value::Null]
        );
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let bind = msg(b'B', |b| {
            frame::put_cstr(b, "");
            frame::put_cstr(b, "");
            b.put_i16(0);
            b.put_i16(1);
            b.put_i32(100);
        });
        assert!(client_event(&bind).is_err());
        let mut capture = ResultCapture::default();
        let row = msg(b'D', |b| {
            b.put_i16(1);
            b.put_i32(5);
        });
        assert!(capture.on_frame(&row, |_| {}).is_err());
    }

    #[test]
    fn rows_are_batched_until_the_command_completes() {
        let mut capture = ResultCapture::default();
        let mut events = Vec::new();
        for v in ["a", "b"] {
            let row = msg(b'D', |b| {
                b.put_i16(1);
                b.put_i32(1);
                b.put_slice(v.as_bytes());
            });
            capture.on_frame(&row, |e| events.push(e)).unwrap();
        }
        let done = msg(b'C', |b| frame::put_cstr(b, "SELECT 2"));
        capture.on_frame(&done, |e| events.push(e)).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], EventBody::PackedRows(r) if r.len() == 2));
        assert!(matches!(&events[1], EventBody::CommandComplete(c) if c.tag == "SELECT 2"));
    }

    #[test]
    fn copy_data_is_batched_like_rows() {
        let mut capture = ResultCapture::default();
        let mut events = Vec::new();
        for line in ["1\tx\n", "2\ty\n"] {
            let data = msg(b'd', |b| b.put_slice(line.as_bytes()));
            capture.on_frame(&data, |e| events.push(e)).unwrap();
        }
        let done = msg(b'c', |_| {});
        capture.on_frame(&done, |e| events.push(e)).unwrap();
        capture.finish(|e| events.push(e));
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], EventBody::CopyData(c)
            if c.direction == Direction::ToClient && c.data == Value::from("1\tx\n2\ty\n")));
    }
}
