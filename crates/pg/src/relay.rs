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
use crate::mask::ResultMasking;
use bytes::{BufMut, BytesMut};
use postern_core::event::Intent;
use postern_core::event::{DecisionKind, DecisionRecord, EventBody};
use postern_core::{
    ApprovalOutcome, ApprovalRequest, Approvals, Command, CommandSource, Decision, Identity,
    RecordingError, SessionPolicy, SessionRecording, StatementLineage, Target,
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
    /// An administrator ended the session.
    Terminated(crate::live::Termination),
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
    /// The session's id, for approval requests.
    pub session_id: &'a str,
    /// Where held statements wait for a decision.
    pub approvals: &'a dyn Approvals,
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
    /// Result masking, when masks apply to the session.
    masking: Option<ResultMasking>,
    /// Statement latency (the `postern_statement_duration_seconds` histogram).
    latency: crate::metrics::Latency,
    /// `postern_statements_total{decision="allow"}`, looked up once (most statements).
    allowed: metrics::Counter,
}

impl<'a> RelayContext<'a> {
    /// Builds the context for one session.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        identity: &'a Identity,
        target: &'a Target,
        session_id: &'a str,
        approvals: &'a dyn Approvals,
        max_client_frame: usize,
        max_server_frame: usize,
        recording: Option<Box<dyn SessionRecording>>,
    ) -> Self {
        RelayContext {
            session_id,
            approvals,
            record_results: recording.as_ref().is_some_and(|r| r.wants_results()),
            recording: recording.map(Mutex::new),
            identity,
            target,
            max_client_frame,
            max_server_frame,
            marker: format!("postern_refused_{:016x}", rand::random::<u64>()),
            refusals: Mutex::new(VecDeque::new()),
            next_refusal: AtomicU64::new(0),
            masking: None,
            latency: crate::metrics::Latency::new(&target.name),
            allowed: metrics::counter!(crate::metrics::STATEMENTS, "decision" => Decision::Allow.as_str()),
        }
    }

    /// Masks results with `masking` (set before the relay starts).
    pub fn with_masking(mut self, masking: Option<ResultMasking>) -> Self {
        self.masking = masking;
        self
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
                    Ok(Some(mut event)) => {
                        if let EventBody::Command(command) = &mut event
                            && let Some(text) = &command.text
                            && let Some((lineage, _)) = StatementLineage::split(text)
                        {
                            command.causal_id = Some(lineage.causal_id.clone());
                            events.push(EventBody::Intent(Intent {
                                causal_id: lineage.causal_id,
                                text: lineage.json,
                            }));
                        }
                        events.push(event)
                    }
                    Ok(None) => {}
                    Err(e) => return RelayEnd::ClientProtocol(e),
                }
            }
            let verdict = match tag {
                b'Q' | b'P' => match inspect(ctx, policy, &buf[pos..pos + total]) {
                    Ok((decision, verdict)) => {
                        if recording {
                            events.push(EventBody::Decision(DecisionRecord::from(&decision)));
                        }
                        verdict
                    }
                    Err(e) => return RelayEnd::ClientProtocol(e),
                },
                b'X' => {
                    terminate = true;
                    Verdict::Forward
                }
                _ => {
                    if let Some(masking) = &ctx.masking {
                        let frame_bytes = &buf[pos..pos + total];
                        let noted = if tag == b'F' {
                            masking.on_function_call();
                            Ok(())
                        } else {
                            masking.on_client_frame(frame_bytes)
                        };
                        if let Err(e) = noted {
                            return RelayEnd::ClientProtocol(e);
                        }
                    }
                    Verdict::Forward
                }
            };
            let verdict = match verdict {
                Verdict::Hold(held) => {
                    // Everything before the held statement goes now, and the hold is on
                    // record before anyone can decide it.
                    if let Err(e) = ctx.record(&mut events, true) {
                        return RelayEnd::Recording(e);
                    }
                    let before = buf.split_to(pos);
                    if let Err(e) = write_all(server, &before).await {
                        return RelayEnd::Io("server write", e);
                    }
                    pos = 0;
                    // Keep reading while the statement is held, so a client that gives up
                    // ends the session (and withdraws its request) at once.
                    let verdict = {
                        let held = hold(ctx, held, &mut events);
                        tokio::pin!(held);
                        loop {
                            tokio::select! {
                                verdict = &mut held => break verdict,
                                read = client.read_buf(&mut buf) => match read {
                                    Ok(0) => return RelayEnd::ClientClosed,
                                    Ok(n) => *traffic += n as u64,
                                    Err(e) => return RelayEnd::Io("client read", e),
                                },
                            }
                        }
                    };
                    if let Err(e) = ctx.record(&mut events, true) {
                        return RelayEnd::Recording(e);
                    }
                    verdict
                }
                other => other,
            };
            ctx.latency.sent(tag);
            let refusal = match verdict {
                Verdict::Refuse(reason) => match replacement(ctx, &buf[pos..pos + total], reason) {
                    Ok(frame) => Some(frame),
                    Err(e) => return RelayEnd::ClientProtocol(e),
                },
                _ => None,
            };
            if let Some(replacement) = refusal {
                // Forward what came before the refused frame, then its replacement.
                if let Err(e) = ctx.record(&mut events, true) {
                    return RelayEnd::Recording(e);
                }
                if let Err(e) = splice(server, &mut buf, pos, total, &replacement).await {
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

/// What happens to a statement after the decision point.
enum Verdict {
    /// Send it on.
    Forward,
    /// Replace it; the client gets this reason as a 42501 error.
    Refuse(String),
    /// Wait for a human to approve it.
    Hold(Held),
}

/// A statement that needs approval.
struct Held {
    /// The approve rule.
    rule: String,
    /// The statement, for the approver (without a lineage comment).
    text: String,
    /// The caller's lineage comment, if it sent one.
    lineage: Option<StatementLineage>,
}

/// Decodes a `Query` or `Parse` frame and asks the policy about it.
fn inspect(
    ctx: &RelayContext<'_>,
    policy: &mut dyn SessionPolicy,
    frame_bytes: &[u8],
) -> Result<(Decision, Verdict), FrameError> {
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
    let (decision, plan) = policy.decide_and_plan(&command, ctx.masking.is_some());
    if let Some(masking) = &ctx.masking {
        match statement {
            Some(name) => masking.on_parse(name, plan),
            None => masking.on_query(plan),
        }
    }
    let verdict = match &decision {
        Decision::Allow => {
            ctx.allowed.increment(1);
            return Ok((decision, Verdict::Forward));
        }
        Decision::Block { rule, reason } => {
            Verdict::Refuse(format!("blocked by rule \"{rule}\": {reason}"))
        }
        Decision::Approve { rule } => {
            let (lineage, text) = match StatementLineage::split(text) {
                Some((lineage, rest)) => (Some(lineage), rest.trim_start()),
                None => (None, text),
            };
            Verdict::Hold(Held {
                rule: rule.clone(),
                text: text.to_owned(),
                lineage,
            })
        }
    };
    metrics::counter!(crate::metrics::STATEMENTS, "decision" => decision.as_str()).increment(1);
    tracing::info!(
        subject = %ctx.identity.subject,
        target = %ctx.target.name,
        verb = %command.leading_keyword(),
        decision = decision.as_str(),
        "statement not allowed as is"
    );
    Ok((decision, verdict))
}

/// Holds a statement until it is approved, denied or expires, recording the outcome.
async fn hold(ctx: &RelayContext<'_>, held: Held, events: &mut Vec<EventBody>) -> Verdict {
    let Held {
        rule,
        text,
        lineage,
    } = held;
    let request = ApprovalRequest {
        session_id: ctx.session_id.to_owned(),
        requester: ctx.identity.clone(),
        target: ctx.target.name.clone(),
        rule: rule.clone(),
        statement: text,
        wait: lineage.as_ref().is_none_or(|l| l.wait),
        resubmission: lineage.and_then(|l| l.approval),
    };
    let outcome = ctx.approvals.request(request).await;
    let mut record = DecisionRecord {
        rule: Some(rule.clone()),
        ..DecisionRecord::new(DecisionKind::Approved)
    };
    let verdict = match outcome {
        ApprovalOutcome::Approved { id, by, window } => {
            record.approval_id = Some(id);
            record.reason = Some(if window {
                format!("within the approval window granted by {by}")
            } else {
                format!("approved by {by}")
            });
            Verdict::Forward
        }
        ApprovalOutcome::Denied { id, by, reason } => {
            record.decision = DecisionKind::Denied;
            record.approval_id = Some(id.clone());
            record.reason = Some(reason.clone());
            Verdict::Refuse(format!(
                "rule \"{rule}\": approval {id} was denied by {by}: {reason}"
            ))
        }
        ApprovalOutcome::Pending { id } => {
            record.decision = DecisionKind::Pending;
            record.approval_id = Some(id.clone());
            Verdict::Refuse(format!(
                "rule \"{rule}\": approval {id} is pending; re-submit the statement with \
                 that approval id once it is approved"
            ))
        }
        ApprovalOutcome::Expired { id } => {
            record.decision = DecisionKind::Expired;
            record.approval_id = Some(id.clone());
            Verdict::Refuse(format!(
                "rule \"{rule}\": approval {id} expired without a decision"
            ))
        }
        ApprovalOutcome::Unavailable(why) => {
            record.decision = DecisionKind::Denied;
            record.reason = Some(why.clone());
            Verdict::Refuse(format!(
                "rule \"{rule}\" requires approval, which could not be requested: {why}"
            ))
        }
    };
    tracing::info!(subject = %ctx.identity.subject, target = %ctx.target.name, rule, outcome = ?record.decision, "held statement decided");
    metrics::counter!(crate::metrics::STATEMENTS, "decision" => format!("{:?}", record.decision).to_lowercase()).increment(1);
    if ctx.recording.is_some() {
        events.push(EventBody::Decision(record));
    }
    verdict
}

/// The frame sent upstream in place of a refused `Query` or `Parse`: a statement the server
/// rejects with a syntax error naming a fresh marker, which the other pump swaps for `reason`.
fn replacement(
    ctx: &RelayContext<'_>,
    frame_bytes: &[u8],
    reason: String,
) -> Result<BytesMut, FrameError> {
    let tag = frame_bytes[0];
    let statement = if tag == b'P' {
        Some(Reader::new(frame::body(frame_bytes), "Parse").cstr()?)
    } else {
        None
    };
    let marker = {
        let mut refusals = ctx.refusals();
        let n = ctx.next_refusal.fetch_add(1, Ordering::Relaxed);
        let marker = format!("{}_{n}", ctx.marker);
        refusals.push_back((marker.clone(), reason));
        marker
    };
    let mut out = BytesMut::with_capacity(64);
    let at = frame::begin(&mut out, tag);
    if let Some(name) = statement {
        frame::put_cstr(&mut out, name);
    }
    frame::put_cstr(&mut out, &marker);
    if tag == b'P' {
        out.put_i16(0);
    }
    frame::finish(&mut out, at);
    Ok(out)
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
    // The rewritten form of the current frame, reused frame after frame.
    let mut replacement = BytesMut::new();
    loop {
        let mut pos = 0;
        // Frames rewritten in this run (refusals, masked results) and the run around them;
        // `None` while every frame is forwarded as it came (no copy).
        let mut rewritten: Option<BytesMut> = None;
        let mut copied_to = 0;
        loop {
            let (tag, total) = match frame::peek_header(&buf[pos..], ctx.max_server_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return RelayEnd::ServerProtocol(e),
            };
            if buf.len() - pos < total {
                break;
            }
            let frame_bytes = &buf[pos..pos + total];
            replacement.clear();
            let mut replaced = match &ctx.masking {
                Some(masking) => match masking.on_server_frame(frame_bytes, &mut replacement) {
                    Ok(r) => r,
                    Err(e) => return RelayEnd::ServerProtocol(e),
                },
                None => false,
            };
            ctx.latency.received(tag);
            if tag == b'E'
                && let Some(ours) = refused_error(ctx, frame_bytes)
            {
                replacement.clear();
                replacement.extend_from_slice(&ours);
                replaced = true;
            }
            let sent: &[u8] = if replaced { &replacement } else { frame_bytes };
            if recording
                && (ctx.record_results || !is_result_data(tag))
                && let Err(e) = capture.on_frame(sent, |e| events.push(e))
            {
                return RelayEnd::ServerProtocol(e);
            }
            if replaced {
                let out = rewritten.get_or_insert_with(|| BytesMut::with_capacity(buf.len() + 64));
                out.extend_from_slice(&buf[copied_to..pos]);
                out.extend_from_slice(&replacement);
                copied_to = pos + total;
            }
            pos += total;
        }
        if pos > 0 {
            let run = buf.split_to(pos);
            let out = match rewritten {
                Some(mut out) => {
                    out.extend_from_slice(&run[copied_to..]);
                    out
                }
                None => run,
            };
            *traffic += out.len() as u64;
            if let Err(e) = write_all(client, &out).await {
                return RelayEnd::Io("client write", e);
            }
        }
        if replacement.capacity() > READ_BUF * 64 {
            // A huge rewritten frame grew it; do not keep that memory for the session's life.
            replacement = BytesMut::new();
        }
        // Results are recorded once the client has them: they are not write-ahead (the next
        // command's commit makes them durable), so encoding them need not delay the client.
        if recording {
            capture.finish(|e| events.push(e));
            if let Err(e) = ctx.record(&mut events, false) {
                return RelayEnd::Recording(e);
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

/// Writes the frames before `pos`, then `replacement` in place of the `total`-byte frame at
/// `pos`, consuming both from `buf`; returns the bytes written.
async fn splice<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &mut BytesMut,
    pos: usize,
    total: usize,
    replacement: &[u8],
) -> std::io::Result<usize> {
    let before = buf.split_to(pos);
    let _ = buf.split_to(total);
    w.write_all(&before).await?;
    w.write_all(replacement).await?;
    w.flush().await?;
    Ok(before.len() + replacement.len())
}
