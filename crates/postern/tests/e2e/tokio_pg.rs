//! tokio-postgres through the gateway: it speaks only the extended protocol with binary
//! results, pipelines requests on one connection, uses named statements and portals, cancels
//! with the BackendKeyData it was given, and surfaces notices and notifications. Values are
//! compared byte for byte (the binary wire encoding) with a direct connection.

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client, NoTls, Row};

use crate::util::*;

/// Any value, as the raw bytes of its binary wire encoding (None for NULL).
#[derive(Debug, PartialEq, Eq, Clone)]
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column names and type OIDs, then every value's wire bytes.
type RawResult = (Vec<(String, u32)>, Vec<Vec<Raw>>);

fn raw(rows: &[Row]) -> RawResult {
    let columns = rows
        .first()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_().oid()))
                .collect()
        })
        .unwrap_or_default();
    let values = rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Raw>(i)).collect())
        .collect();
    (columns, values)
}

async fn clients(fx: &Fixture) -> (Client, Client) {
    let (direct, _) = fx.direct(SHOP).client().await;
    let (gateway, _) = fx.gateway(SHOP).client().await;
    (direct, gateway)
}

#[tokio::test]
async fn prepared_statements_and_binary_values_match_direct() {
    let fx = Fixture::start();
    let (direct, gateway) = clients(&fx).await;

    let mut results = Vec::new();
    for client in [&direct, &gateway] {
        let mut out = Vec::new();
        let all = client
            .prepare("SELECT * FROM e2e_types WHERE id = ANY($1) ORDER BY id")
            .await
            .expect("prepare");
        assert_eq!(all.params(), &[Type::INT4_ARRAY]);
        let by_id = client
            .prepare_typed(
                "SELECT name, email, created_at FROM customers WHERE id = $1",
                &[Type::INT8],
            )
            .await
            .expect("prepare_typed");
        out.push(raw(&client
            .query(&all, &[&vec![1i32, 2, 3, 4]])
            .await
            .unwrap()));
        for id in 1..=20i64 {
            out.push(raw(&client.query(&by_id, &[&id]).await.unwrap()));
            out.push(raw(&client
                .query(&all, &[&vec![(id % 4 + 1) as i32]])
                .await
                .unwrap()));
        }
        out.push(raw(&client
            .query("SELECT * FROM products ORDER BY id", &[])
            .await
            .unwrap()));
        out.push(raw(&client
            .query("SELECT * FROM customer_totals ORDER BY customer_id", &[])
            .await
            .unwrap()));
        // Statements are closed when dropped; preparing the same text again must still work.
        drop(all);
        drop(by_id);
        let again = client
            .prepare("SELECT * FROM e2e_types WHERE id = ANY($1) ORDER BY id")
            .await
            .unwrap();
        out.push(raw(&client.query(&again, &[&vec![4i32]]).await.unwrap()));
        results.push(out);
    }
    assert_eq!(results[0].len(), results[1].len());
    for (i, (d, g)) in results[0].iter().zip(&results[1]).enumerate() {
        assert_eq!(d, g, "result #{i} differs between direct and the gateway");
    }

    // Typed parameters in, typed values out.
    let row = gateway
        .query_one(
            "SELECT $1::int8 + 1, $2::text || '!', $3::bytea, $4::float8 * 2, NOT $5::bool, $6::int4[], $7::text IS NULL",
            &[&41i64, &"Zoë 🦀", &vec![0u8, 1, 255], &1.25f64, &true, &vec![Some(1i32), None, Some(3)], &None::<String>],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "Zoë 🦀!");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
    assert_eq!(row.get::<_, f64>(3), 2.5);
    assert!(!row.get::<_, bool>(4));
    assert_eq!(
        row.get::<_, Vec<Option<i32>>>(5),
        vec![Some(1), None, Some(3)]
    );
    assert!(row.get::<_, bool>(6));
}

#[tokio::test]
async fn named_portals_can_be_interleaved() {
    let fx = Fixture::start();
    let (mut direct, mut gateway) = clients(&fx).await;
    let mut results = Vec::new();
    for client in [&mut direct, &mut gateway] {
        let tx = client.transaction().await.unwrap();
        let big = tx
            .prepare("SELECT g, md5(g::text) FROM generate_series(1, 1000) AS g")
            .await
            .unwrap();
        let small = tx
            .prepare("SELECT g FROM generate_series(1, $1) AS g")
            .await
            .unwrap();
        let a = tx.bind(&big, &[]).await.unwrap();
        let b = tx.bind(&small, &[&250i32]).await.unwrap();
        let (mut got_a, mut got_b, mut batches) = (Vec::new(), Vec::new(), 0);
        loop {
            let ra = tx.query_portal(&a, 100).await.unwrap();
            let rb = tx.query_portal(&b, 30).await.unwrap();
            if ra.is_empty() && rb.is_empty() {
                break;
            }
            batches += 1;
            assert!(
                ra.len() <= 100 && rb.len() <= 30,
                "a portal returned more rows than asked"
            );
            got_a.extend(
                ra.iter()
                    .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1))),
            );
            got_b.extend(rb.iter().map(|r| r.get::<_, i32>(0)));
        }
        tx.commit().await.unwrap();
        assert_eq!(got_a.len(), 1000);
        assert_eq!(got_b, (1..=250).collect::<Vec<_>>());
        assert!(
            got_a
                .iter()
                .enumerate()
                .all(|(i, (g, _))| *g == i as i32 + 1),
            "rows out of order"
        );
        results.push((got_a, got_b, batches));
    }
    assert_eq!(results[0], results[1]);
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let fx = Fixture::start();
    let (gateway, _) = fx.gateway(SHOP).client().await;
    let (observer, _) = fx.direct(SHOP).client().await;
    let cancel = gateway.cancel_token();
    let gateway = std::sync::Arc::new(gateway);
    let running = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            (
                gateway.simple_query("SELECT pg_sleep(30)").await,
                start.elapsed(),
            )
        })
    };
    // Wait until the upstream is really running it.
    let start = Instant::now();
    loop {
        let n: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the query never started upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel
        .cancel_query(NoTls)
        .await
        .expect("sending the cancel request to the gateway");
    let (result, elapsed) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the query was not cancelled within 10 s")
        .unwrap();
    let err = result.expect_err("pg_sleep(30) finished instead of being cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    assert!(elapsed < Duration::from_secs(10), "cancel took {elapsed:?}");
    // The session survives its cancelled query.
    let row = gateway
        .query_one("SELECT 'alive'::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alive");
}

#[tokio::test]
async fn cancel_request_with_an_unknown_key_is_harmless() {
    let mut fx = Fixture::start();
    let (gateway, _) = fx.gateway(SHOP).client().await;
    // A cancel request with made-up keys: the gateway must not crash or cancel anything.
    let mut s = raw_connect(fx.gw.port);
    let mut msg = 16u32.to_be_bytes().to_vec();
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&12345u32.to_be_bytes());
    msg.extend_from_slice(&67890u32.to_be_bytes());
    std::io::Write::write_all(&mut s, &msg).unwrap();
    expect_closed(&mut s, "cancel request with an unknown key");
    let row = gateway
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    fx.assert_still_serving();
}

#[tokio::test]
async fn notices_and_notifications_arrive() {
    let fx = Fixture::start();
    let (client, mut messages) = fx.gateway(SHOP).client().await;
    let (peer, _) = fx.gateway(SHOP).client().await;

    client
        .batch_execute(
            "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful: %', 'ü'; END $$",
        )
        .await
        .unwrap();
    let mut notices = Vec::new();
    while notices.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), messages.recv()).await {
            Ok(Some(AsyncMessage::Notice(n))) => notices.push((
                n.severity().to_owned(),
                n.code().code().to_owned(),
                n.message().to_owned(),
            )),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        notices,
        [
            (
                "NOTICE".to_owned(),
                "00000".to_owned(),
                "hello 42".to_owned()
            ),
            (
                "WARNING".to_owned(),
                "01000".to_owned(),
                "careful: ü".to_owned()
            )
        ]
    );

    client.batch_execute("LISTEN e2e_events").await.unwrap();
    peer.batch_execute("NOTIFY e2e_events, 'payload 1'")
        .await
        .unwrap();
    peer.execute("SELECT pg_notify('e2e_events', $1)", &[&"payload 2 ü"])
        .await
        .unwrap();
    // An idle listening session must get notifications without sending anything itself.
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), messages.recv()).await {
            Ok(Some(AsyncMessage::Notification(n))) => {
                got.push((n.channel().to_owned(), n.payload().to_owned()))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        got,
        [
            ("e2e_events".to_owned(), "payload 1".to_owned()),
            ("e2e_events".to_owned(), "payload 2 ü".to_owned())
        ]
    );
}

#[tokio::test]
async fn copy_in_and_copy_out() {
    let fx = Fixture::start();
    let (direct, gateway) = clients(&fx).await;
    gateway
        .batch_execute("CREATE TABLE copied (id int PRIMARY KEY, label text, amount numeric)")
        .await
        .unwrap();
    let sink = gateway.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    for chunk in 0..10 {
        let mut data = String::new();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            data.push_str(&format!("{i}\tlabel {i} ✓\t{i}.5\n"));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 100_000, "rows reported by COPY FROM STDIN");
    let check: String = direct
        .query_one(
            "SELECT count(*)::text || '|' || sum(id)::text || '|' || bool_and(label = 'label ' || id || ' ✓')::text FROM copied",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(check, "100000|4999950000|true");

    for statement in [
        "COPY (SELECT * FROM copied ORDER BY id) TO STDOUT",
        "COPY (SELECT * FROM e2e_types ORDER BY id) TO STDOUT (FORMAT binary)",
        "COPY (SELECT * FROM customers ORDER BY id) TO STDOUT (FORMAT csv, HEADER)",
    ] {
        let mut outputs = Vec::new();
        for client in [&direct, &gateway] {
            let stream = client.copy_out(statement).await.unwrap();
            let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
            outputs.push(chunks.concat());
        }
        assert!(!outputs[0].is_empty());
        assert!(
            outputs[0] == outputs[1],
            "{statement}: COPY output differs ({} vs {} bytes)",
            outputs[0].len(),
            outputs[1].len()
        );
    }

    // A COPY FROM STDIN that fails half-way is reported and the session goes on.
    let sink = gateway.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tduplicate key\t1\n"))
        .await
        .unwrap();
    let err = sink
        .finish()
        .await
        .expect_err("a duplicate key must fail the COPY");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err:?}");
    let n: i64 = gateway
        .query_one("SELECT count(*) FROM copied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000);
}

#[tokio::test]
async fn pipelined_queries_and_errors_on_one_connection() {
    let fx = Fixture::start();
    let (gateway, _) = fx.gateway(SHOP).client().await;
    let stmt = gateway
        .prepare("SELECT $1::int * 2, repeat('x', $1::int)")
        .await
        .unwrap();
    // tokio-postgres sends all these before reading any answer.
    let futures = (0..200i32).map(|i| {
        let gateway = &gateway;
        let stmt = &stmt;
        async move {
            if i == 100 {
                gateway.query("SELECT 1/0", &[]).await.map(|_| (0, 0))
            } else {
                gateway
                    .query_one(stmt, &[&i])
                    .await
                    .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1).len()))
            }
        }
    });
    let results = futures::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        let i = i as i32;
        match r {
            Ok(v) => assert_eq!(
                v,
                (i * 2, i as usize),
                "answer #{i} belongs to another query"
            ),
            Err(e) => {
                assert_eq!(i, 100, "query #{i} failed: {e:?}");
                assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
            }
        }
    }
}

#[tokio::test]
async fn error_fields_match_direct() {
    let fx = Fixture::start();
    let (direct, gateway) = clients(&fx).await;
    for sql in [
        "INSERT INTO orders (customer_id, product_id, quantity, total, ordered_at) VALUES (9999, 1, 1, 1, now())",
        "INSERT INTO customers (id, name, email, created_at) VALUES (1, 'dup', 'x@example.com', now())",
        "SELECT * FROM customers WHERE nope = 1",
        "SELEC 1",
        "UPDATE products SET price = -1 WHERE id = 1",
    ] {
        let mut fields = Vec::new();
        for client in [&direct, &gateway] {
            let err = client
                .execute(sql, &[])
                .await
                .expect_err("statement must fail");
            let db = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: no server error: {err:?}"));
            fields.push(format!(
                "{} {} | {} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?}",
                db.severity(),
                db.code().code(),
                db.message(),
                db.detail(),
                db.hint(),
                db.position(),
                db.table(),
                db.column(),
                db.constraint()
            ));
        }
        assert_eq!(
            fields[0], fields[1],
            "{sql}: error fields differ (direct, then gateway)"
        );
    }
}

/// Big values are ordinary traffic, not attacks: a 32 MiB parameter in a Bind message and a
/// 100 MB value in a DataRow pass through unchanged.
#[tokio::test]
async fn large_values_pass_both_ways() {
    let fx = Fixture::start();
    let (gateway, _) = fx.gateway(SHOP).client().await;
    let blob: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    gateway
        .batch_execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea)")
        .await
        .unwrap();
    let n = gateway
        .execute("INSERT INTO blobs VALUES (1, $1)", &[&blob])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let back: Vec<u8> = gateway
        .query_one("SELECT data FROM blobs WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        back == blob,
        "the 32 MiB value came back different ({} bytes)",
        back.len()
    );

    let row = gateway
        .query_one(
            "SELECT repeat('x', 100000000) AS big, 'after' AS marker",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0).len(), 100_000_000);
    assert_eq!(row.get::<_, String>(1), "after");
}

/// Many sessions at once, each with its own upstream connection, all served correctly; when
/// they end, their upstream connections end too.
#[tokio::test]
async fn many_concurrent_sessions() {
    let fx = Fixture::start();
    let conn = fx.gateway(SHOP);
    let (observer, _) = fx.direct(SHOP).client().await;
    let tasks: Vec<_> = (0..40i32)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (client, _) = conn.client().await;
                for j in 0..20i32 {
                    let row = client
                        .query_one("SELECT $1::int * 1000 + $2::int", &[&i, &j])
                        .await
                        .unwrap();
                    assert_eq!(
                        row.get::<_, i32>(0),
                        i * 1000 + j,
                        "session {i} got another session's answer"
                    );
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("a session task failed"));
    }
    let count = || async {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(
        count().await,
        40,
        "upstream connections while 40 sessions are open"
    );
    drop(clients);
    let start = Instant::now();
    while count().await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "upstream connections left after the sessions ended: {}",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
