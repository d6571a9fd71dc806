//! The relay: after startup, frames flow between caller and target as raw bytes.
//!
//! Two pumps run concurrently inside the session task, one per direction. Each reads what the
//! socket has, walks the complete frames by their 5-byte headers, and writes the whole run out
//! in one call, so a frame that needs no change is never copied or re-encoded. Only frames that
//! carry a new statement (`Query`, `Parse`) are decoded, to build the [`Command`] handed to the
//! decision point.
//!
//! A refused statement is not answered by the gateway directly (its answer would have to be
//! spliced into the server's response stream at the right place). Instead the statement is
//! replaced by one the server rejects with a syntax error naming a unique marker; the upstream
//! pump swaps that error for the gateway's own. The server thus aborts the transaction, skips
//! to the next Sync and reports its transaction status exactly as it would have for the real
//! statement, and the session stays usable.

use crate::capture::{self, ResultCapture};
use crate::error::sqlstate;
use crate::frame::{self, ErrorFields, FrameError, Reader};
use bytes::{BufMut, BytesMut};
use postern_core::event::{DecisionRecord, EventBody};
use postern_core::{
    Command, CommandSource, Decision, Identity, RecordingError, SessionPolicy, SessionRecording,
    Target,
};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read buffers start at this size and grow to hold the largest frame seen.
const READ_BUF: usize = 16 * 1024;

/// Why a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its connection.
    ClientClosed,
    /// The server closed its connection.
    ServerClosed,
    /// A frame from the client broke the protocol; the client is told before closing.
    ClientProtocol(FrameError),
    /// A frame from the server broke the protocol.
    ServerProtocol(FrameError),
    /// The gateway is shutting down.
    Shutdown,
    /// The recording could not be written; nothing more is forwarded (fail closed).
    Recording(RecordingError),
    /// A socket failed.
    Io(&'static str, std::io::Error),
}

/// Byte counts for the audit trail.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// Bytes received from the client.
    pub from_client: u64,
    /// Bytes sent to the client.
    pub to_client: u64,
}

/// What both pumps need to know about the session.
pub struct RelayContext<'a> {
    /// The caller.
    pub identity: &'a Identity,
    /// The target.
    pub target: &'a Target,
    /// Largest frame accepted from the client.
    pub max_client_frame: usize,
    /// Largest frame accepted from the server.
    pub max_server_frame: usize,
    /// A per-session random marker for refused statements.
    pub marker: String,
    /// The session's recording, when it is recorded. A plain mutex: each pump holds it only
    /// while appending, never across an `.await`.
    pub recording: Option<Mutex<Box<dyn SessionRecording>>>,
    /// Whether results are recorded (false: commands only), decided once at session start.
    record_results: bool,
    /// Refusals whose server-side syntax errors have not come back yet, oldest first:
    /// the marker sent in place of the statement, and the reason to report.
    refusals: Mutex<VecDeque<(String, String)>>,
    next_refusal: AtomicU64,
}

impl<'a> RelayContext<'a> {
    /// Builds the context for one session.
    pub fn new(
        identity: &'a Identity,
        target: &'a Target,
        max_client_frame: usize,
        max_server_frame: usize,
        recording: Option<Box<dyn SessionRecording>>,
    ) -> Self {
        RelayContext {
            record_results: recording.as_ref().is_some_and(|r| r.wants_results()),
            recording: recording.map(Mutex::new),
            identity,
            target,
            max_client_frame,
            max_server_frame,
            marker: format!("postern_refused_{:016x}", rand::random::<u64>()),
            refusals: Mutex::new(VecDeque::new()),
            next_refusal: AtomicU64::new(0),
        }
    }

    /// Appends `events` to the recording and, with `commit`, makes them durable.
    fn record(&self, events: &mut Vec<EventBody>, commit: bool) -> Result<(), RecordingError> {
        let Some(recording) = &self.recording else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        let mut recording = recording.lock().unwrap_or_else(|p| p.into_inner());
        for event in events.drain(..) {
            recording.append(event)?;
        }
        if commit { recording.commit() } else { Ok(()) }
    }

    /// Takes the recording back for sealing.
    pub fn into_recording(self) -> Option<Box<dyn SessionRecording>> {
        self.recording
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, String)>> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Client → server: decide on each statement, forward runs of frames as they are.
pub async fn client_to_server<R, W>(
    ctx: &RelayContext<'_>,
    policy: &mut dyn SessionPolicy,
    client: &mut R,
    server: &mut W,
    mut buf: BytesMut,
    traffic: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let recording = ctx.recording.is_some();
    let mut events = Vec::new();
    loop {
        let mut pos = 0;
        let mut terminate = false;
        loop {
            let (tag, total) = match frame::peek_header(&buf[pos..], ctx.max_client_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return RelayEnd::ClientProtocol(e),
            };
            if !frame::is_frontend_tag(tag) {
                return RelayEnd::ClientProtocol(FrameError::UnknownTag(tag as char));
            }
            if buf.len() - pos < total {
                break;
            }
            if recording {
                match capture::client_event(&buf[pos..pos + total]) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => {}
                    Err(e) => return RelayEnd::ClientProtocol(e),
                }
            }
            let refusal = match tag {
                b'Q' | b'P' => match inspect(ctx, policy, &buf[pos..pos + total]) {
                    Ok((decision, refusal)) => {
                        if recording {
                            events.push(EventBody::Decision(DecisionRecord::from(&decision)));
                        }
                        refusal
                    }
                    Err(e) => return RelayEnd::ClientProtocol(e),
                },
                b'X' => {
                    terminate = true;
                    None
                }
                _ => None,
            };
            if let Some(replacement) = refusal {
                // Forward what came before the refused frame, then its replacement.
                if let Err(e) = ctx.record(&mut events, true) {
                    return RelayEnd::Recording(e);
                }
                let before = buf.split_to(pos);
                let _ = buf.split_to(total);
                if let Err(e) = write_two(server, &before, &replacement).await {
                    return RelayEnd::Io("server write", e);
                }
                pos = 0;
                continue;
            }
            pos += total;
            if terminate {
                break;
            }
        }
        if pos > 0 {
            // Write-ahead: the commands in this run are durable before the server sees them.
            if let Err(e) = ctx.record(&mut events, true) {
                return RelayEnd::Recording(e);
            }
            let run = buf.split_to(pos);
            if let Err(e) = write_all(server, &run).await {
                return RelayEnd::Io("server write", e);
            }
        }
        if terminate {
            return RelayEnd::ClientTerminated;
        }
        reserve(&mut buf, ctx.max_client_frame);
        match client.read_buf(&mut buf).await {
            Ok(0) => return RelayEnd::ClientClosed,
            Ok(n) => *traffic += n as u64,
            Err(e) => return RelayEnd::Io("client read", e),
        }
    }
}

/// Decodes a `Query` or `Parse` frame, asks the policy, and returns the replacement frame when
/// the statement is refused.
fn inspect(
    ctx: &RelayContext<'_>,
    policy: &mut dyn SessionPolicy,
    frame_bytes: &[u8],
) -> Result<(Decision, Option<BytesMut>), FrameError> {
    let tag = frame_bytes[0];
    let mut r = Reader::new(
        frame::body(frame_bytes),
        if tag == b'Q' { "Query" } else { "Parse" },
    );
    let (statement, text) = if tag == b'Q' {
        (None, r.cstr()?)
    } else {
        (Some(r.cstr()?), r.cstr()?)
    };
    let command = Command {
        source: if tag == b'Q' {
            CommandSource::SimpleQuery
        } else {
            CommandSource::Prepare
        },
        text,
        statement,
    };
    let decision = policy.decide(&command);
    let reason = match &decision {
        Decision::Allow => return Ok((decision, None)),
        Decision::Block { rule, reason } => format!("blocked by rule \"{rule}\": {reason}"),
        Decision::Approve { rule } => {
            format!("rule \"{rule}\" requires approval, which this gateway cannot grant yet")
        }
    };
    tracing::info!(
        subject = %ctx.identity.subject,
        target = %ctx.target.name,
        verb = %command.leading_keyword(),
        decision = decision.as_str(),
        "statement refused"
    );
    let marker = {
        let mut refusals = ctx.refusals();
        let n = ctx.next_refusal.fetch_add(1, Ordering::Relaxed);
        let marker = format!("{}_{n}", ctx.marker);
        refusals.push_back((marker.clone(), reason));
        marker
    };
    let mut replacement = BytesMut::with_capacity(64);
    let at = frame::begin(&mut replacement, tag);
    if let Some(name) = statement {
        frame::put_cstr(&mut replacement, name);
    }
    frame::put_cstr(&mut replacement, &marker);
    if tag == b'P' {
        replacement.put_i16(0);
    }
    frame::finish(&mut replacement, at);
    Ok((decision, Some(replacement)))
}

/// Server → client: forward runs of frames, swapping the syntax errors of refused statements
/// for the gateway's own errors.
pub async fn server_to_client<R, W>(
    ctx: &RelayContext<'_>,
    server: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    traffic: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let recording = ctx.recording.is_some();
    let mut capture = ResultCapture::default();
    let mut events = Vec::new();
    loop {
        let mut pos = 0;
        loop {
            let (tag, total) = match frame::peek_header(&buf[pos..], ctx.max_server_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return RelayEnd::ServerProtocol(e),
            };
            if buf.len() - pos < total {
                break;
            }
            if tag == b'E'
                && let Some(ours) = refused_error(ctx, &buf[pos..pos + total])
            {
                if recording {
                    let _ = capture.on_frame(&ours, |e| events.push(e));
                    if let Err(e) = ctx.record(&mut events, false) {
                        return RelayEnd::Recording(e);
                    }
                }
                let before = buf.split_to(pos);
                let _ = buf.split_to(total);
                *traffic += (before.len() + ours.len()) as u64;
                if let Err(e) = write_two(client, &before, &ours).await {
                    return RelayEnd::Io("client write", e);
                }
                pos = 0;
                continue;
            }
            if recording && (ctx.record_results || !is_result_data(tag)) {
                let frame_bytes = &buf[pos..pos + total];
                if let Err(e) = capture.on_frame(frame_bytes, |e| events.push(e)) {
                    return RelayEnd::ServerProtocol(e);
                }
            }
            pos += total;
        }
        if recording {
            capture.finish(|e| events.push(e));
            if let Err(e) = ctx.record(&mut events, false) {
                return RelayEnd::Recording(e);
            }
        }
        if pos > 0 {
            let run = buf.split_to(pos);
            *traffic += run.len() as u64;
            if let Err(e) = write_all(client, &run).await {
                return RelayEnd::Io("client write", e);
            }
        }
        reserve(&mut buf, ctx.max_server_frame);
        match server.read_buf(&mut buf).await {
            Ok(0) => return RelayEnd::ServerClosed,
            Ok(_) => {}
            Err(e) => return RelayEnd::Io("server read", e),
        }
    }
}

/// Rows and COPY data: left out of commands-only recordings.
fn is_result_data(tag: u8) -> bool {
    matches!(tag, b'D' | b'd')
}

/// If `frame_bytes` is the server's syntax error for a refused statement, the gateway's error.
fn refused_error(ctx: &RelayContext<'_>, frame_bytes: &[u8]) -> Option<BytesMut> {
    let fields = ErrorFields::decode(frame::body(frame_bytes)).ok()?;
    if fields.code != "42601" || !fields.message.contains(&ctx.marker) {
        return None;
    }
    let reason = {
        let mut refusals = ctx.refusals();
        // Earlier refusals whose errors never came (the server skipped them, e.g. inside an
        // aborted transaction) are dropped with the one that matched.
        let at = refusals
            .iter()
            .position(|(m, _)| fields.message.contains(&format!("\"{m}\"")))?;
        refusals.drain(..=at).next_back()?.1
    };
    let mut out = BytesMut::with_capacity(reason.len() + 64);
    frame::error_response(
        &mut out,
        "ERROR",
        sqlstate::INSUFFICIENT_PRIVILEGE,
        &reason,
        None,
        None,
    );
    Some(out)
}

/// Makes room for the next read: at least [`READ_BUF`] free, and enough for the frame at the
/// front of the buffer once its header is known.
fn reserve(buf: &mut BytesMut, max: usize) {
    let want = match frame::peek_header(buf, max) {
        Ok(Some((_, total))) if total > buf.len() => total - buf.len(),
        _ => 0,
    };
    buf.reserve(want.max(READ_BUF));
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

async fn write_two<W: AsyncWrite + Unpin>(w: &mut W, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    w.write_all(a).await?;
    w.write_all(b).await?;
    w.flush().await
}
