//! Result masking on the wire: which result columns to rewrite, and rewriting them.
//!
//! The policy gives each statement a [`ResultPlan`] (the lineage of its output columns); the
//! server describes each result set (RowDescription: every column's origin table OID, column
//! number and type). Combining the two per result set gives a [`Shape`]: how each column is
//! masked. DataRows, COPY data, errors, notices and notifications are then rewritten before
//! they reach the client (and the recording).
//!
//! Responses are matched to requests the way the server produces them: the client pump notes
//! what each request will be answered with ([`Expect`]), in order; the server pump consumes
//! those notes as answers arrive. Prepared statements and portals are snapshots (`Arc`s)
//! taken when the client sends a message, so pipelined re-use of a name cannot mix them up.
//! Anything unknown is masked as opaque: fail closed.

use crate::frame::{self, FieldDescription, FrameError, Reader};
use bytes::{BufMut, BytesMut};
use postern_core::mask::{
    ColumnMask, CopyFormat, MaskCatalog, Masker, OutputItem, Outputs, ResultPlan, StatementPlan,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How each column of one result set is masked.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Per column: its mask.
    columns: Vec<ColumnMask>,
    /// Per column: run content detectors over it (text-like types only).
    scan: Vec<bool>,
    /// The statement reads masked data: quoted values in its errors are redacted.
    touches_masked: bool,
    /// The columns are not known at all: every value is masked.
    blind: bool,
}

impl Shape {
    fn masks_anything(&self) -> bool {
        self.blind || self.columns.iter().any(|c| c.is_masked())
    }
}

/// A prepared statement as the client parsed it.
#[derive(Debug, Default)]
pub struct Statement {
    plan: Option<StatementPlan>,
    /// Set when the server answers a Describe of it.
    shape: Mutex<Option<Arc<Shape>>>,
}

/// A portal as the client bound it.
#[derive(Debug, Default)]
pub struct Portal {
    statement: Arc<Statement>,
    /// Set when the server answers a Describe of it.
    shape: Mutex<Option<Arc<Shape>>>,
}

/// What the server will answer, in order.
#[derive(Debug)]
enum Expect {
    /// A simple query: one result per statement, up to ReadyForQuery.
    Query {
        plan: Option<Arc<ResultPlan>>,
        index: usize,
    },
    /// Describe of a prepared statement.
    DescribeStatement(Arc<Statement>),
    /// Describe of a portal.
    DescribePortal(Arc<Portal>),
    /// Execute of a portal: rows up to CommandComplete / PortalSuspended.
    Execute(Arc<Portal>),
    /// Sync: ReadyForQuery.
    Sync,
}

/// The largest masked-value buffer kept between rows.
const KEEP_SCRATCH: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's masking state, shared by both pumps.
pub struct ResultMasking {
    masker: Arc<dyn Masker>,
    catalog: Arc<MaskCatalog>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    expect: VecDeque<Expect>,
    statements: HashMap<String, Arc<Statement>>,
    portals: HashMap<String, Arc<Portal>>,
    /// The result set being streamed, and its copy layout when it is COPY data.
    current: Option<Arc<Shape>>,
    copy: Option<(CopyFormat, Option<StatementPlan>)>,
    /// One masked value at a time, reused row after row.
    scratch: Vec<u8>,
}

impl State {
    /// The plan of the statement whose results are arriving now, if any.
    fn front_plan(&self) -> Option<StatementPlan> {
        match self.expect.front()? {
            // A statement beyond the plan's (the readings of the text differed): opaque.
            Expect::Query { plan, index } => {
                let plan = plan.as_ref()?;
                Some(
                    plan.statements
                        .get(*index)
                        .cloned()
                        .unwrap_or_else(StatementPlan::opaque),
                )
            }
            Expect::Execute(p) => p.statement.plan.clone(),
            Expect::DescribeStatement(s) => s.plan.clone(),
            Expect::DescribePortal(p) => p.statement.plan.clone(),
            Expect::Sync => None,
        }
    }
}

impl ResultMasking {
    /// Masking with `masker` over `catalog`.
    pub fn new(masker: Arc<dyn Masker>, catalog: Arc<MaskCatalog>) -> Self {
        ResultMasking {
            masker,
            catalog,
            state: Mutex::new(State::default()),
        }
    }

    // ---- client side: note what the server will answer ----

    /// A simple query is on its way, with `plan` for its statements.
    pub fn on_query(&self, plan: Option<Arc<ResultPlan>>) {
        lock(&self.state)
            .expect
            .push_back(Expect::Query { plan, index: 0 });
    }

    /// A `FunctionCall` is on its way (answered like a query without rows).
    pub fn on_function_call(&self) {
        self.on_query(None);
    }

    /// `Parse` of `name` with the plan of its statement.
    pub fn on_parse(&self, name: &str, plan: Option<Arc<ResultPlan>>) {
        let plan = plan.and_then(|p| p.statements.first().cloned());
        let statement = Arc::new(Statement {
            plan: Some(plan.unwrap_or_default()),
            shape: Mutex::new(None),
        });
        lock(&self.state)
            .statements
            .insert(name.to_owned(), statement);
    }

    /// The other client messages that matter: Bind, Describe, Execute, Sync, Close.
    pub fn on_client_frame(&self, frame_bytes: &[u8]) -> Result<(), FrameError> {
        let tag = frame_bytes[0];
        let mut r = Reader::new(frame::body(frame_bytes), "message");
        let mut state = lock(&self.state);
        match tag {
            b'B' => {
                let portal = r.cstr()?;
                let statement = r.cstr()?;
                let statement = state.statements.get(statement).cloned().unwrap_or_default();
                state.portals.insert(
                    portal.to_owned(),
                    Arc::new(Portal {
                        statement: unknown_if_missing(statement),
                        shape: Mutex::new(None),
                    }),
                );
            }
            b'D' => {
                let kind = r.u8()?;
                let name = r.cstr()?;
                let expect = if kind == b'S' {
                    let s = state.statements.get(name).cloned().unwrap_or_default();
                    Expect::DescribeStatement(unknown_if_missing(s))
                } else {
                    Expect::DescribePortal(state.portals.get(name).cloned().unwrap_or_default())
                };
                state.expect.push_back(expect);
            }
            b'E' => {
                let name = r.cstr()?;
                let portal = state.portals.get(name).cloned().unwrap_or_default();
                state.expect.push_back(Expect::Execute(portal));
            }
            b'S' => state.expect.push_back(Expect::Sync),
            b'C' => {
                let kind = r.u8()?;
                let name = r.cstr()?;
                if kind == b'S' {
                    state.statements.remove(name);
                } else {
                    state.portals.remove(name);
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---- server side: rewrite what needs it ----

    /// Writes the replacement for one server frame into `out` and returns true, or returns
    /// false (writing nothing) to forward it unchanged. Rows, the bulk of the traffic, are
    /// rewritten without allocating.
    pub fn on_server_frame(
        &self,
        frame_bytes: &[u8],
        out: &mut BytesMut,
    ) -> Result<bool, FrameError> {
        let tag = frame_bytes[0];
        let body = frame::body(frame_bytes);
        let mut state = lock(&self.state);
        if tag == b'D' {
            let State {
                current, scratch, ..
            } = &mut *state;
            if let Some(shape) = current {
                let rewritten = self.data_row(shape, body, out, scratch);
                if scratch.capacity() > KEEP_SCRATCH {
                    // One huge value grew it; do not keep that memory for the session's life.
                    *scratch = Vec::new();
                }
                return rewritten;
            }
            return match blind_shape(&state) {
                Some(shape) => self.data_row(&shape, body, out, &mut Vec::new()),
                None => self.scan_row(body, out),
            };
        }
        let replacement = self.other_frame(&mut state, tag, body)?;
        Ok(replacement.is_some_and(|r| {
            out.extend_from_slice(&r);
            true
        }))
    }

    /// The replacement for a server frame other than a row, or `None` to forward it unchanged.
    fn other_frame(
        &self,
        state: &mut State,
        tag: u8,
        body: &[u8],
    ) -> Result<Option<BytesMut>, FrameError> {
        match tag {
            b'T' => self.row_description(state, body),
            b'n' => {
                if matches!(
                    state.expect.front(),
                    Some(Expect::DescribeStatement(_) | Expect::DescribePortal(_))
                ) {
                    state.expect.pop_front();
                }
                Ok(None)
            }
            b'C' | b'I' | b's' => {
                state.current = None;
                state.copy = None;
                match state.expect.front_mut() {
                    Some(Expect::Query { index, .. }) => *index += 1,
                    Some(Expect::Execute(_)) => {
                        state.expect.pop_front();
                    }
                    _ => {}
                }
                Ok(None)
            }
            b'H' => {
                let plan = state.front_plan();
                let format = plan
                    .as_ref()
                    .and_then(|p| p.copy)
                    .unwrap_or(CopyFormat::Text { delimiter: b'\t' });
                state.copy = Some((format, plan));
                Ok(None)
            }
            b'd' => match &state.copy {
                Some((format, plan)) => Ok(self.copy_data(*format, plan.as_ref(), body)),
                None => Ok(None),
            },
            b'E' | b'N' => {
                let touches = state.current.as_ref().is_some_and(|s| s.touches_masked)
                    || state.front_plan().is_some_and(|p| p.touches_masked);
                let out = self.notice(tag, body, touches)?;
                if tag == b'E' {
                    on_error(state);
                }
                Ok(out)
            }
            b'A' => self.notification(body),
            b'Z' => {
                state.current = None;
                state.copy = None;
                while let Some(e) = state.expect.pop_front() {
                    if matches!(e, Expect::Query { .. } | Expect::Sync) {
                        break;
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn row_description(
        &self,
        state: &mut State,
        body: &[u8],
    ) -> Result<Option<BytesMut>, FrameError> {
        let fields = frame::row_description(body)?;
        let plan = state.front_plan();
        let shape = Arc::new(self.shape(&fields, plan.as_ref()));
        match state.expect.front() {
            Some(Expect::DescribeStatement(s)) => {
                *lock(&s.shape) = Some(Arc::clone(&shape));
                state.expect.pop_front();
            }
            Some(Expect::DescribePortal(p)) => {
                *lock(&p.shape) = Some(Arc::clone(&shape));
                state.expect.pop_front();
            }
            _ => state.current = Some(Arc::clone(&shape)),
        }
        if !shape.masks_anything() {
            return Ok(None);
        }
        // Masked columns become text: whatever their type, the client gets the mask's text.
        let mut out = BytesMut::with_capacity(body.len() + 8);
        let at = frame::begin(&mut out, b'T');
        out.put_i16(fields.len() as i16);
        for (f, mask) in fields.iter().zip(&shape.columns) {
            out.put_slice(f.name.as_bytes());
            out.put_u8(0);
            out.put_u32(f.table_oid);
            out.put_i16(f.attnum);
            if mask.is_masked() {
                out.put_u32(TEXT_OID);
                out.put_i16(-1);
                out.put_i32(-1);
            } else {
                out.put_u32(f.type_oid);
                out.put_i16(f.type_len);
                out.put_i32(f.type_mod);
            }
            out.put_i16(f.format);
        }
        frame::finish(&mut out, at);
        Ok(Some(out))
    }

    /// How each described column is masked: its origin in the catalog, joined with the
    /// statement's lineage for its position.
    fn shape(&self, fields: &[FieldDescription<'_>], plan: Option<&StatementPlan>) -> Shape {
        let by_plan = plan.map_or_else(
            || vec![ColumnMask::Clean; fields.len()],
            |p| positions(&p.outputs, fields.len(), |i| fields[i].table_oid != 0),
        );
        let columns = fields
            .iter()
            .zip(by_plan)
            .map(|(f, planned)| self.catalog.origin(f.table_oid, f.attnum).join(planned))
            .collect();
        let scan = fields.iter().map(|f| is_text_like(f.type_oid)).collect();
        Shape {
            columns,
            scan,
            touches_masked: plan.is_some_and(|p| p.touches_masked),
            blind: false,
        }
    }

    /// Writes the masked row into `out` and returns true, or returns false when no value
    /// changes. Values before the first change are copied as they are; `scratch` holds one
    /// masked value at a time.
    fn data_row(
        &self,
        shape: &Shape,
        body: &[u8],
        out: &mut BytesMut,
        scratch: &mut Vec<u8>,
    ) -> Result<bool, FrameError> {
        let scanning = self.masker.has_detectors();
        if !shape.masks_anything() && !scanning {
            return Ok(false);
        }
        let mut r = Reader::new(body, "DataRow");
        let n = r.i16()?.max(0);
        let mut frame_at = None;
        for i in 0..n as usize {
            let value_at = body.len() - r.rest().len();
            let len = r.i32()?;
            let value = if len < 0 {
                None
            } else {
                Some(r.bytes(len as usize)?)
            };
            let changed = value.is_some_and(|v| self.mask_into(shape, i, v, scanning, scratch));
            if changed && frame_at.is_none() {
                frame_at = Some(frame::begin(out, b'D'));
                out.put_i16(n);
                out.put_slice(&body[2..value_at]);
            }
            if frame_at.is_some() {
                put_value(out, if changed { Some(scratch) } else { value });
            }
        }
        if let Some(at) = frame_at {
            frame::finish(out, at);
        }
        Ok(frame_at.is_some())
    }

    /// Puts the masked form of value `i` of a row in `scratch`; false when it stays as it is.
    fn mask_into(
        &self,
        shape: &Shape,
        i: usize,
        value: &[u8],
        scanning: bool,
        scratch: &mut Vec<u8>,
    ) -> bool {
        let mask = shape.columns.get(i).copied().unwrap_or(ColumnMask::Derived);
        if mask.is_masked() {
            scratch.clear();
            self.masker.mask_value(mask, value, scratch);
            return true;
        }
        if scanning
            && shape.scan.get(i).copied().unwrap_or(true)
            && let Some(clean) = self.masker.scrub(value)
        {
            *scratch = clean;
            return true;
        }
        false
    }

    /// A row whose description the gateway never saw and whose statement needs no lineage
    /// masking: content detectors only.
    fn scan_row(&self, body: &[u8], out: &mut BytesMut) -> Result<bool, FrameError> {
        if !self.masker.has_detectors() {
            return Ok(false);
        }
        let n = frame::data_row(body)?.len();
        let shape = Shape {
            columns: vec![ColumnMask::Clean; n],
            scan: vec![true; n],
            touches_masked: false,
            blind: false,
        };
        self.data_row(&shape, body, out, &mut Vec::new())
    }

    fn copy_data(
        &self,
        format: CopyFormat,
        plan: Option<&StatementPlan>,
        body: &[u8],
    ) -> Option<BytesMut> {
        let masked = match format {
            CopyFormat::Binary => None,
            CopyFormat::Text { delimiter } => {
                copy_text_row(body, delimiter, plan, self.masker.as_ref())
            }
            CopyFormat::Csv {
                delimiter, quote, ..
            } => copy_csv_row(body, delimiter, quote, plan, self.masker.as_ref()),
        };
        let scrubbed = if format != CopyFormat::Binary && self.masker.has_detectors() {
            self.masker
                .scrub(masked.as_deref().unwrap_or(body))
                .or(masked)
        } else {
            masked
        }?;
        let mut out = BytesMut::with_capacity(scrubbed.len() + 5);
        let at = frame::begin(&mut out, b'd');
        out.put_slice(&scrubbed);
        frame::finish(&mut out, at);
        Some(out)
    }

    /// ErrorResponse / NoticeResponse: detectors over the text fields, and for statements
    /// that read masked data, every quoted value and key value redacted.
    fn notice(
        &self,
        tag: u8,
        body: &[u8],
        touches_masked: bool,
    ) -> Result<Option<BytesMut>, FrameError> {
        if !touches_masked && !self.masker.has_detectors() {
            return Ok(None);
        }
        let mut changed = false;
        let mut out = BytesMut::with_capacity(body.len() + 16);
        let at = frame::begin(&mut out, tag);
        let mut rest = body;
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or(FrameError::Malformed("ErrorResponse"))?;
            let value = &tail[..end];
            rest = &tail[end + 1..];
            let mut text = value.to_vec();
            if touches_masked
                && matches!(code, b'M' | b'D' | b'H' | b'W' | b'q' | b'P')
                && let Some(redacted) = redact_quoted(&text)
            {
                text = redacted;
            }
            if matches!(code, b'M' | b'D' | b'H' | b'W' | b'q')
                && let Some(clean) = self.masker.scrub(&text)
            {
                text = clean;
            }
            changed |= text != value;
            out.put_u8(code);
            out.put_slice(&text);
            out.put_u8(0);
        }
        out.put_u8(0);
        frame::finish(&mut out, at);
        Ok(changed.then_some(out))
    }

    fn notification(&self, body: &[u8]) -> Result<Option<BytesMut>, FrameError> {
        if !self.masker.has_detectors() {
            return Ok(None);
        }
        let mut r = Reader::new(body, "NotificationResponse");
        let pid = r.i32()?;
        let channel = r.cstr()?;
        let payload = r.cstr()?;
        let c = self.masker.scrub(channel.as_bytes());
        let p = self.masker.scrub(payload.as_bytes());
        if c.is_none() && p.is_none() {
            return Ok(None);
        }
        let mut out = BytesMut::with_capacity(body.len() + 16);
        let at = frame::begin(&mut out, b'A');
        out.put_i32(pid);
        out.put_slice(c.as_deref().unwrap_or(channel.as_bytes()));
        out.put_u8(0);
        out.put_slice(p.as_deref().unwrap_or(payload.as_bytes()));
        out.put_u8(0);
        frame::finish(&mut out, at);
        Ok(Some(out))
    }
}

/// Appends one DataRow value (`None` = NULL).
fn put_value(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        None => out.put_i32(-1),
    }
}

fn unknown_if_missing(s: Arc<Statement>) -> Arc<Statement> {
    if s.plan.is_some() {
        return s;
    }
    // Never parsed through this relay (e.g. an unknown name): its results are opaque.
    Arc::new(Statement {
        plan: Some(StatementPlan::opaque()),
        shape: Mutex::new(None),
    })
}

/// The shape for rows that arrive without a RowDescription in this exchange: an Execute's
/// portal (or its statement) was described earlier, or never — then the plan alone decides,
/// and columns it cannot place are masked.
fn blind_shape(state: &State) -> Option<Arc<Shape>> {
    let Some(Expect::Execute(portal)) = state.expect.front() else {
        return None;
    };
    if let Some(shape) = lock(&portal.shape).clone() {
        return Some(shape);
    }
    if let Some(shape) = lock(&portal.statement.shape).clone() {
        return Some(shape);
    }
    let plan = portal.statement.plan.as_ref()?;
    if plan.outputs == Outputs::Clean {
        return None;
    }
    Some(Arc::new(Shape {
        columns: Vec::new(),
        scan: Vec::new(),
        touches_masked: true,
        blind: true,
    }))
}

/// After an ErrorResponse: a simple query ends at ReadyForQuery; in the extended protocol
/// the server skips everything up to the next Sync.
fn on_error(state: &mut State) {
    state.current = None;
    state.copy = None;
    if matches!(state.expect.front(), Some(Expect::Query { .. })) {
        return;
    }
    while let Some(front) = state.expect.front() {
        if matches!(front, Expect::Sync | Expect::Query { .. }) {
            break;
        }
        state.expect.pop_front();
    }
}

/// Per column position, the plan's mask. `has_origin(i)`: column `i` names its table.
/// Stars of unknown width are placed when there is exactly one; otherwise every column
/// without an origin is treated as derived.
fn positions(outputs: &Outputs, n: usize, has_origin: impl Fn(usize) -> bool) -> Vec<ColumnMask> {
    let items = match outputs {
        Outputs::Clean => return vec![ColumnMask::Clean; n],
        // The origin of an opaque statement's columns proves nothing (e.g. a statistics
        // view): every column is masked.
        Outputs::Opaque => return vec![ColumnMask::Derived; n],
        Outputs::Known(items) => items,
    };
    let fallback = || -> Vec<ColumnMask> {
        (0..n)
            .map(|i| {
                if has_origin(i) {
                    ColumnMask::Clean
                } else {
                    ColumnMask::Derived
                }
            })
            .collect()
    };
    let known: usize = items
        .iter()
        .map(|i| match i {
            OutputItem::Column(_) => 1,
            OutputItem::Star(Some(w)) => w.len(),
            OutputItem::Star(None) => 0,
        })
        .sum();
    let unknown = items
        .iter()
        .filter(|i| matches!(i, OutputItem::Star(None)))
        .count();
    let fits = (unknown == 0 && known == n) || (unknown == 1 && known <= n);
    if !fits {
        return fallback();
    }
    let mut out = Vec::with_capacity(n);
    for item in items {
        match item {
            OutputItem::Column(m) => out.push(*m),
            OutputItem::Star(Some(w)) => out.extend_from_slice(w),
            OutputItem::Star(None) => out.extend(std::iter::repeat_n(ColumnMask::Clean, n - known)),
        }
    }
    out
}

const TEXT_OID: u32 = 25;

/// Types whose values are text a detector can read (in either format).
fn is_text_like(oid: u32) -> bool {
    matches!(
        oid,
        18 | 19 | 25 | 114 | 142 | 199 | 705 | 1009 | 1014 | 1015 | 1042 | 1043 | 3802 | 3807
    ) || oid >= 16384
}

/// The plan's masks for a COPY row of `n` fields.
fn copy_masks(plan: Option<&StatementPlan>, n: usize) -> Option<Vec<ColumnMask>> {
    let plan = plan?;
    if plan.outputs == Outputs::Clean {
        return None;
    }
    Some(positions(&plan.outputs, n, |_| false))
}

/// Masks fields of one COPY text-format row (`a\tb\tc\n`; `\N` is NULL).
fn copy_text_row(
    row: &[u8],
    delimiter: u8,
    plan: Option<&StatementPlan>,
    masker: &dyn Masker,
) -> Option<Vec<u8>> {
    let line = row.strip_suffix(b"\n").unwrap_or(row);
    let fields: Vec<&[u8]> = line.split(|&b| b == delimiter).collect();
    let masks = copy_masks(plan, fields.len())?;
    let mut out = Vec::with_capacity(row.len() + 16);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        let mask = masks.get(i).copied().unwrap_or(ColumnMask::Derived);
        if mask.is_masked() && *field != b"\\N" {
            let mut value = Vec::new();
            masker.mask_value(mask, &unescape_copy_text(field), &mut value);
            escape_copy_text(&value, delimiter, &mut out);
        } else {
            out.extend_from_slice(field);
        }
    }
    if line.len() < row.len() {
        out.push(b'\n');
    }
    Some(out)
}

fn unescape_copy_text(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 1 < field.len() {
            out.push(match field[i + 1] {
                b't' => b'\t',
                b'n' => b'\n',
                b'r' => b'\r',
                other => other,
            });
            i += 2;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

fn escape_copy_text(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            other => out.push(other),
        }
    }
}

/// Masks fields of one COPY CSV row (quoted fields may hold delimiters and newlines).
fn copy_csv_row(
    row: &[u8],
    delimiter: u8,
    quote: u8,
    plan: Option<&StatementPlan>,
    masker: &dyn Masker,
) -> Option<Vec<u8>> {
    let line = row.strip_suffix(b"\n").unwrap_or(row);
    let fields = split_csv(line, delimiter, quote);
    let masks = copy_masks(plan, fields.len())?;
    let mut out = Vec::with_capacity(row.len() + 16);
    for (i, (start, end)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        let field = &line[*start..*end];
        let mask = masks.get(i).copied().unwrap_or(ColumnMask::Derived);
        if mask.is_masked() && !field.is_empty() {
            let mut value = Vec::new();
            masker.mask_value(mask, field, &mut value);
            out.push(quote);
            for &b in &value {
                if b == quote {
                    out.push(quote);
                }
                out.push(b);
            }
            out.push(quote);
        } else {
            out.extend_from_slice(field);
        }
    }
    if line.len() < row.len() {
        out.push(b'\n');
    }
    Some(out)
}

/// Field boundaries of a CSV line (quotes kept in the fields).
fn split_csv(line: &[u8], delimiter: u8, quote: u8) -> Vec<(usize, usize)> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, &b) in line.iter().enumerate() {
        if b == quote {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            fields.push((start, i));
            start = i + 1;
        }
    }
    fields.push((start, line.len()));
    fields
}

/// Redacts the contents of double-quoted segments and of `=(…)` key values in an error text.
fn redact_quoted(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'"') && !text.windows(2).any(|w| w == b"=(") {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'"' {
            match text[i + 1..].iter().position(|&c| c == b'"') {
                Some(len) => {
                    out.extend_from_slice(b"\"[masked]\"");
                    i += len + 2;
                }
                None => {
                    out.extend_from_slice(b"\"[masked]");
                    i = text.len();
                }
            }
        } else if b == b'=' && text.get(i + 1) == Some(&b'(') {
            let close = text[i + 2..].iter().rposition(|&c| c == b')');
            out.extend_from_slice(b"=([masked])");
            i = match close {
                Some(len) => i + 2 + len + 1,
                None => text.len(),
            };
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Redact;
    impl Masker for Redact {
        fn mask_value(&self, mask: ColumnMask, value: &[u8], out: &mut Vec<u8>) {
            match mask {
                ColumnMask::Clean => out.extend_from_slice(value),
                _ => out.extend_from_slice(b"[masked]"),
            }
        }
        fn has_detectors(&self) -> bool {
            false
        }
        fn scrub(&self, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }

    fn plan(items: Vec<OutputItem>) -> StatementPlan {
        StatementPlan {
            outputs: Outputs::Known(items),
            touches_masked: true,
            copy: None,
        }
    }

    #[test]
    fn positions_place_one_unknown_star() {
        use ColumnMask::*;
        let outputs = Outputs::Known(vec![OutputItem::Star(None), OutputItem::Column(Direct(0))]);
        assert_eq!(positions(&outputs, 3, |_| true), [Clean, Clean, Direct(0)]);
        let two = Outputs::Known(vec![
            OutputItem::Star(None),
            OutputItem::Column(Direct(0)),
            OutputItem::Star(None),
        ]);
        assert_eq!(
            positions(&two, 3, |i| i == 0),
            [Clean, Derived, Derived],
            "ambiguous: every column without an origin is masked"
        );
    }

    #[test]
    fn copy_rows_are_masked_by_position() {
        use ColumnMask::*;
        let p = plan(vec![
            OutputItem::Column(Clean),
            OutputItem::Column(Direct(0)),
        ]);
        let out = copy_text_row(b"1\talice@example.com\n", b'\t', Some(&p), &Redact).unwrap();
        assert_eq!(out, b"1\t[masked]\n");
        let out = copy_text_row(b"2\t\\N\n", b'\t', Some(&p), &Redact).unwrap();
        assert_eq!(out, b"2\t\\N\n");
        let out = copy_csv_row(b"3,\"a,b@example.com\"\n", b',', b'"', Some(&p), &Redact).unwrap();
        assert_eq!(out, b"3,\"[masked]\"\n");
    }

    #[test]
    fn quoted_values_in_errors_are_redacted() {
        let out =
            redact_quoted(b"invalid input syntax for type integer: \"4111111111111111\"").unwrap();
        assert_eq!(out, b"invalid input syntax for type integer: \"[masked]\"");
        let out = redact_quoted(b"Key (email)=(a@b.example) already exists.").unwrap();
        assert_eq!(out, b"Key (email)=([masked]) already exists.");
        assert!(redact_quoted(b"division by zero").is_none());
    }

    #[test]
    fn rows_of_a_described_statement_are_masked_when_executed_later() {
        use ColumnMask::*;
        let m = ResultMasking::new(Arc::new(Redact), Arc::new(MaskCatalog::default()));
        let statement_plan = ResultPlan {
            statements: vec![plan(vec![
                OutputItem::Column(Clean),
                OutputItem::Column(Derived),
            ])],
        };
        m.on_parse("s1", Some(Arc::new(statement_plan)));
        let mut msg = BytesMut::new();
        let at = frame::begin(&mut msg, b'D');
        msg.put_u8(b'S');
        frame::put_cstr(&mut msg, "s1");
        frame::finish(&mut msg, at);
        m.on_client_frame(&msg).unwrap();
        // RowDescription for the Describe.
        let mut t = BytesMut::new();
        let at = frame::begin(&mut t, b'T');
        t.put_i16(2);
        for name in ["id", "e"] {
            frame::put_cstr(&mut t, name);
            t.put_u32(0);
            t.put_i16(0);
            t.put_u32(23);
            t.put_i16(4);
            t.put_i32(-1);
            t.put_i16(1);
        }
        frame::finish(&mut t, at);
        let rewritten = rewrite(&m, &t).expect("masked column retyped");
        let fields = frame::row_description(frame::body(&rewritten)).unwrap();
        assert_eq!((fields[0].type_oid, fields[1].type_oid), (23, TEXT_OID));
        // Bind + Execute later, rows without a RowDescription.
        for (tag, body) in [(b'B', vec!["", "s1"]), (b'E', vec![""])] {
            let mut f = BytesMut::new();
            let at = frame::begin(&mut f, tag);
            for s in body {
                frame::put_cstr(&mut f, s);
            }
            f.put_i32(0);
            frame::finish(&mut f, at);
            m.on_client_frame(&f).unwrap();
        }
        let mut d = BytesMut::new();
        let at = frame::begin(&mut d, b'D');
        d.put_i16(2);
        d.put_i32(4);
        d.put_i32(7);
        d.put_i32(4);
        d.put_slice(b"\0\0\0\x09");
        frame::finish(&mut d, at);
        let row = rewrite(&m, &d).expect("masked row");
        let values = frame::data_row(frame::body(&row)).unwrap();
        assert_eq!(values[0], Some(&[0u8, 0, 0, 7][..]));
        assert_eq!(values[1], Some(&b"[masked]"[..]));
    }

    fn rewrite(m: &ResultMasking, frame_bytes: &[u8]) -> Option<BytesMut> {
        let mut out = BytesMut::new();
        let changed = m.on_server_frame(frame_bytes, &mut out).unwrap();
        assert_eq!(changed, !out.is_empty());
        changed.then_some(out)
    }

    #[test]
    fn a_row_is_rewritten_around_its_masked_value_and_kept_whole_otherwise() {
        use ColumnMask::*;
        let m = ResultMasking::new(Arc::new(Redact), Arc::new(MaskCatalog::default()));
        m.on_query(Some(Arc::new(ResultPlan {
            statements: vec![plan(vec![
                OutputItem::Column(Clean),
                OutputItem::Column(Clean),
                OutputItem::Column(Derived),
                OutputItem::Column(Clean),
            ])],
        })));
        let mut t = BytesMut::new();
        let at = frame::begin(&mut t, b'T');
        t.put_i16(4);
        for name in ["a", "b", "secret", "c"] {
            frame::put_cstr(&mut t, name);
            t.put_u32(0);
            t.put_i16(0);
            t.put_u32(TEXT_OID);
            t.put_i16(-1);
            t.put_i32(-1);
            t.put_i16(0);
        }
        frame::finish(&mut t, at);
        rewrite(&m, &t);
        let row = |values: [Option<&[u8]>; 4]| {
            let mut d = BytesMut::new();
            let at = frame::begin(&mut d, b'D');
            d.put_i16(4);
            for v in values {
                put_value(&mut d, v);
            }
            frame::finish(&mut d, at);
            d
        };
        let sent = row([None, Some(b"x"), Some(b"s3cret"), Some(b"")]);
        let masked = rewrite(&m, &sent).expect("masked row");
        assert_eq!(
            masked,
            row([None, Some(b"x"), Some(b"[masked]"), Some(b"")])
        );
        // A NULL in the masked column changes nothing: the row goes as it came.
        assert!(rewrite(&m, &row([None, Some(b"x"), None, Some(b"y")])).is_none());
    }
}
