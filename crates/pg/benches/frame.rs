//! Micro-benchmarks of the relay's hot path: walking frames by their 5-byte headers, splitting
//! them off a read buffer, and decoding the few bodies the gateway looks at.
//!
//! The input is a realistic backend response: RowDescription (3 columns) + 100 DataRows +
//! CommandComplete + ReadyForQuery, as PostgreSQL sends it for
//! `SELECT id, name, email FROM customers LIMIT 100`.
//!
//! Run: `cargo bench -p postern-pg --bench frame` (add `-- --quick` for a fast pass).

use bytes::{BufMut, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use postern_pg::frame::{self, ErrorFields, Reader};
use std::hint::black_box;

/// PostgreSQL's own limit for a server message, as the relay uses it.
const MAX_SERVER_FRAME: usize = 1 << 30;
/// The relay's read size: socket reads arrive in chunks of about this many bytes.
const READ_BUF: usize = 16 * 1024;

fn row_description(out: &mut BytesMut) {
    let at = frame::begin(out, b'T');
    let columns: [(&str, i16, u32, i16); 3] =
        [("id", 1, 23, 4), ("name", 2, 25, -1), ("email", 3, 25, -1)];
    out.put_i16(columns.len() as i16);
    for (name, attnum, type_oid, typlen) in columns {
        frame::put_cstr(out, name);
        out.put_u32(16_384); // table OID
        out.put_i16(attnum);
        out.put_u32(type_oid);
        out.put_i16(typlen);
        out.put_i32(-1); // type modifier
        out.put_i16(0); // text format
    }
    frame::finish(out, at);
}

fn data_row(out: &mut BytesMut, i: usize) {
    let id = i.to_string();
    let name = format!("Customer number {i}");
    let email = format!("customer{i}@example.com");
    let at = frame::begin(out, b'D');
    out.put_i16(3);
    for value in [id.as_bytes(), name.as_bytes(), email.as_bytes()] {
        out.put_i32(value.len() as i32);
        out.put_slice(value);
    }
    frame::finish(out, at);
}

/// RowDescription + `rows` DataRows + CommandComplete + ReadyForQuery.
fn backend_response(rows: usize) -> BytesMut {
    let mut out = BytesMut::new();
    row_description(&mut out);
    for i in 0..rows {
        data_row(&mut out, i + 1);
    }
    let at = frame::begin(&mut out, b'C');
    frame::put_cstr(&mut out, &format!("SELECT {rows}"));
    frame::finish(&mut out, at);
    out.put_u8(b'Z');
    out.put_i32(5);
    out.put_u8(b'I');
    out
}

/// A server ErrorResponse with every field PostgreSQL usually fills in.
fn server_error() -> BytesMut {
    let mut out = BytesMut::new();
    let at = frame::begin(&mut out, b'E');
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "42601"),
        (
            b'M',
            "syntax error at or near \"postern_refused_0123456789abcdef_0\"",
        ),
        (b'P', "1"),
        (b'F', "scan.l"),
        (b'L', "1188"),
        (b'R', "scanner_yyerror"),
    ] {
        out.put_u8(field);
        frame::put_cstr(&mut out, value);
    }
    out.put_u8(0);
    frame::finish(&mut out, at);
    out
}

/// The relay's inner loop over one buffer: walk complete frames by header, noting error frames,
/// and return the length of the run of complete frames (what would be written in one call).
fn scan_run(buf: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    let mut errors = 0;
    while let Ok(Some((tag, total))) = frame::peek_header(&buf[pos..], MAX_SERVER_FRAME) {
        if buf.len() - pos < total {
            break;
        }
        if tag == b'E' {
            errors += 1;
        }
        pos += total;
    }
    (pos, errors)
}

fn bench_frames(c: &mut Criterion) {
    let response = backend_response(100);
    let frames = 100 + 3;

    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(response.len() as u64));

    // Header scan over a buffer that holds the whole response (one socket read).
    group.bench_function("peek_header scan, 100-row response", |b| {
        b.iter(|| {
            let (run, errors) = scan_run(black_box(&response));
            assert_eq!(run, response.len());
            black_box(errors)
        })
    });

    // split_frame, one frame at a time (what a frame-by-frame relay would do).
    group.bench_function("split_frame each, 100-row response", |b| {
        b.iter_batched(
            || BytesMut::from(&response[..]),
            |mut buf| {
                let mut n = 0;
                while let Some(f) = frame::split_frame(&mut buf, MAX_SERVER_FRAME).unwrap() {
                    black_box(&f);
                    n += 1;
                }
                assert_eq!(n, frames);
            },
            BatchSize::SmallInput,
        )
    });

    // The relay's forwarding loop without the sockets: reads arrive in READ_BUF chunks, whole
    // frames are walked by header and split off as one run, a partial frame stays buffered.
    group.bench_function("forward in 16 KiB reads, 100-row response", |b| {
        let mut buf = BytesMut::with_capacity(READ_BUF * 2);
        b.iter(|| {
            let mut forwarded = 0;
            for chunk in black_box(&response[..]).chunks(READ_BUF) {
                buf.extend_from_slice(chunk);
                let (run, _) = scan_run(&buf);
                if run > 0 {
                    let out = buf.split_to(run);
                    forwarded += out.len();
                    black_box(&out);
                }
                buf.reserve(READ_BUF);
            }
            assert_eq!(forwarded, response.len());
            assert!(buf.is_empty());
        })
    });
    group.finish();

    // Forwarding a large result: 10,000 rows (~430 KB), the steady state of a big SELECT.
    let big = backend_response(10_000);
    let mut group = c.benchmark_group("frame large");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("forward in 16 KiB reads, 10k-row response", |b| {
        let mut buf = BytesMut::with_capacity(READ_BUF * 2);
        b.iter(|| {
            let mut forwarded = 0;
            for chunk in black_box(&big[..]).chunks(READ_BUF) {
                buf.extend_from_slice(chunk);
                let (run, _) = scan_run(&buf);
                if run > 0 {
                    forwarded += buf.split_to(run).len();
                }
                buf.reserve(READ_BUF);
            }
            assert_eq!(forwarded, big.len());
        })
    });
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let error = server_error();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ErrorFields::decode, server syntax error", |b| {
        b.iter(|| {
            let fields = ErrorFields::decode(black_box(frame::body(&error))).unwrap();
            assert_eq!(fields.code, "42601");
            fields
        })
    });

    // The client side: the decode the relay does on every Query and Parse to build a Command.
    let text = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let mut query = BytesMut::new();
    let at = frame::begin(&mut query, b'Q');
    frame::put_cstr(&mut query, text);
    frame::finish(&mut query, at);
    let mut parse = BytesMut::new();
    let at = frame::begin(&mut parse, b'P');
    frame::put_cstr(&mut parse, "P0_1");
    frame::put_cstr(&mut parse, text);
    parse.put_i16(1);
    parse.put_u32(23);
    frame::finish(&mut parse, at);

    group.bench_function("Query header + text", |b| {
        b.iter(|| {
            let buf = black_box(&query[..]);
            let (tag, total) = frame::peek_header(buf, 64 << 20).unwrap().unwrap();
            let mut r = Reader::new(frame::body(&buf[..total]), "Query");
            (tag, r.cstr().unwrap().len())
        })
    });
    group.bench_function("Parse header + name + text", |b| {
        b.iter(|| {
            let buf = black_box(&parse[..]);
            let (tag, total) = frame::peek_header(buf, 64 << 20).unwrap().unwrap();
            let mut r = Reader::new(frame::body(&buf[..total]), "Parse");
            let name = r.cstr().unwrap();
            let text = r.cstr().unwrap();
            (tag, name.len(), text.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_frames, bench_decode);
criterion_main!(benches);
