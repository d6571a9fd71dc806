//! The REST API end to end: the OpenAPI document served at /api/v1/openapi.json is a valid
//! OpenAPI 3.0 document, and every status of every operation it documents is produced by a
//! real request (200 for the right role, 401 without a token, 403 for the wrong role, ...),
//! with a body matching the documented schema. Approvals are decided through the API while a
//! statement is held in a live session: approved, it completes; denied, the client gets the
//! reason.

use crate::approval_flow::held;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// Roles and an approval rule: `ops` administers, `security` audits, `dba` approves agents'
/// writes.
pub const POLICY: &str = r#"
[roles]
admin = ["ops"]
auditor = ["security"]

[[rules]]
name = "agent-writes-need-approval"
when = { kind = "agent", statements = ["write"] }
action = "approve"
approvers = ["dba"]
timeout = "5m"

[[masks]]
name = "customer-pii"
when = { kind = "agent" }
columns = ["customers.email"]
"#;

/// Tokens of one identity per role.
pub struct People {
    /// `agent-7`, an agent whose writes are held.
    pub agent: String,
    /// `dana`, in `dba`: approves.
    pub dba: String,
    /// `olga`, in `ops`: admin.
    pub admin: String,
    /// `sam`, in `security`: auditor.
    pub auditor: String,
    /// `bob`, in no group: sees his own sessions only.
    pub plain: String,
}

impl People {
    pub fn issue(gw: &Gateway) -> People {
        let t = |subject: &str, kind: &str, group: &str| {
            gw.issue(&[
                "--subject",
                subject,
                "--kind",
                kind,
                "--group",
                group,
                "--ttl",
                "1h",
            ])
        };
        People {
            agent: t("agent-7", "agent", "agents"),
            dba: t("dana", "human", "dba"),
            admin: t("olga", "human", "ops"),
            auditor: t("sam", "human", "security"),
            plain: gw.issue(&["--subject", "bob", "--kind", "human", "--ttl", "1h"]),
        }
    }
}

/// A fixture with [`POLICY`] and its people.
pub fn fixture() -> (Fixture, People) {
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(POLICY));
    let people = People::issue(&fx.gw);
    (fx, people)
}

/// A plain HTTP client for the gateway's listener.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(gw: &Gateway) -> Http {
        Http {
            base: format!("http://127.0.0.1:{}", gw.http_port),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Sends a request; returns the status and the body (JSON when it parses, else a string).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, body, _) = self.send_full(method, path, token, body, &[]).await;
        (status, body)
    }

    /// Like [`Http::send`], with extra request headers; also returns the response headers.
    pub async fn send_full(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut request = self.client.request(method.parse().expect("a method"), &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let text = response.text().await.expect("a body");
                    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    return (status, value, headers);
                }
                // The listener binds right after the PostgreSQL one the fixture waits for.
                Err(e) if e.is_connect() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{method} {url}: {e}"),
            }
        }
    }

    /// GET `path` as `token`, expecting 200; the JSON body.
    pub async fn get_ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.send("GET", path, Some(token), None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls the pending approvals `token` sees until one appears.
    pub async fn pending(&self, token: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.get_ok("/api/v1/approvals?state=pending", token).await;
            if let Some(first) = list["approvals"].as_array().and_then(|a| a.first()) {
                return first.clone();
            }
            assert!(Instant::now() < deadline, "no pending approval appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document as a contract

/// The served document, with what each request is checked against.
pub struct Contract {
    pub doc: Value,
    pub http: Http,
    /// (operationId, status) pairs the walk produced.
    pub seen: BTreeSet<(String, u16)>,
}

/// The answers only a gateway with `[console.oidc]` gives (the `oidc` test produces them).
pub fn needs_oidc((id, status): &(String, u16)) -> bool {
    id.starts_with("oidc") && id != "oidcInfo" && *status != 404
}

impl Contract {
    /// GET as `token`, checked against the document.
    async fn get(&mut self, template: &str, path: &str, token: &str, expect: u16) -> Value {
        self.call("GET", template, path, Some(token), None, expect)
            .await
    }

    /// POST as `token`, checked against the document.
    async fn post(
        &mut self,
        template: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        self.call("POST", template, path, Some(token), body, expect)
            .await
    }

    /// The operation documented at `template` for `method`.
    fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        op
    }

    /// Sends the request and checks the status and the body against the document.
    pub async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        self.call_with(method, template, path, token, body, &[], expect)
            .await
            .0
    }

    /// [`Contract::call`] with extra request headers; also returns the response headers.
    #[allow(clippy::too_many_arguments)]
    pub async fn call_with(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
        expect: u16,
    ) -> (Value, reqwest::header::HeaderMap) {
        let op = self.operation(method, template).clone();
        let id = op["operationId"].as_str().unwrap().to_owned();
        let (status, got, response_headers) = self
            .http
            .send_full(method, path, token, body.as_ref(), headers)
            .await;
        assert_eq!(status, expect, "{method} {path} ({id}): {got}");
        let mut response = op["responses"][expect.to_string()].clone();
        assert!(
            response.is_object(),
            "{id} answered {status}, which the document does not list"
        );
        if let Some(r) = response["$ref"].as_str() {
            response = resolve(&self.doc, r).clone();
        }
        let schema = response["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .map(|media| media["schema"].clone());
        if let Some(schema) = schema
            && let Err(e) = check(&self.doc, &schema, &got, "$")
        {
            panic!(
                "{method} {path} ({id}) {status}: the body does not match the document: {e}\n{got:#}"
            );
        }
        self.seen.insert((id, status));
        (got, response_headers)
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("external $ref {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("$ref {reference} does not resolve"))
}

/// Checks `value` against `schema` (the OpenAPI 3.0 subset the document uses: $ref, allOf,
/// type, nullable, enum, properties, required, items, additionalProperties, minimum/maximum).
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        return check(doc, resolve(doc, r), value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        // The parts are objects: check against their properties and requirements together.
        let mut merged = json!({ "type": "object", "properties": {}, "required": [] });
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(r) => resolve(doc, r),
                None => part,
            };
            for (k, v) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][k] = v.clone();
            }
            for r in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(r.clone());
            }
        }
        return check(doc, &merged, value, at);
    }
    if value.is_null() {
        return if schema["nullable"] == json!(true) || schema.get("type").is_none() {
            Ok(())
        } else {
            Err(format!("{at}: null, but not nullable"))
        };
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        Some(other) => return Err(format!("{at}: unknown type {other}")),
    };
    if !ok {
        return Err(format!("{at}: expected {}, got {value}", schema["type"]));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_i64() {
        if schema["minimum"].as_i64().is_some_and(|m| n < m) {
            return Err(format!("{at}: {n} is below the minimum"));
        }
        if schema["maximum"].as_i64().is_some_and(|m| n > m) {
            return Err(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: missing required property {name}"));
            }
        }
        for (name, v) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check(doc, property, v, &format!("{at}.{name}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: unexpected property {name}"));
                }
                None if properties.is_some() && schema.get("additionalProperties").is_none() => {
                    return Err(format!("{at}: undocumented property {name}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Every documented (operationId, status) pair, and the operations that need a credential.
/// (operationId, method, path template) of an operation.
type Operation = (String, String, String);

pub fn documented(doc: &Value) -> (BTreeSet<(String, u16)>, Vec<Operation>) {
    let mut pairs = BTreeSet::new();
    let mut ops = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {template} has no operationId"))
                .to_owned();
            for status in op["responses"].as_object().unwrap().keys() {
                pairs.insert((id.clone(), status.parse().unwrap()));
            }
            ops.push((id, method.to_ascii_uppercase(), template.clone()));
        }
    }
    (pairs, ops)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_answer_is_given_as_documented() {
    let (fx, p) = fixture();
    let http = Http::new(&fx.gw);

    // The document: served, valid OpenAPI 3.0, every $ref resolving.
    let (status, doc) = http.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let parsed: openapiv3::OpenAPI =
        serde_json::from_value(doc.clone()).expect("a valid OpenAPI 3.0 document");
    assert!(parsed.openapi.starts_with("3.0"), "{}", parsed.openapi);
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let reference = &reference[..reference.find('"').unwrap()];
        resolve(&doc, reference);
    }
    let (wanted, ops) = documented(&doc);
    let mut c = Contract {
        doc: doc.clone(),
        http,
        seen: BTreeSet::new(),
    };

    // Sessions to look at: a closed one of the agent's, one of bob's, and the agent's live
    // session holding a write.
    let agent = fx.gw.conn_with(SHOP, "agent-7", &p.agent, fx.pg.bin_dir());
    assert_success(
        &agent.psql(&["-X", "-c", "SELECT count(*) FROM customers"], None),
        "the agent's read",
    );
    let bob = fx.gw.conn_with(SHOP, "bob", &p.plain, fx.pg.bin_dir());
    assert_success(&bob.psql(&["-X", "-c", "SELECT 1"], None), "bob's read");
    let first_held = held(&agent, "UPDATE orders SET quantity = 71 WHERE id = 1000").await;
    let approval = c.http.pending(&p.dba).await;
    let apr = approval["id"].as_str().unwrap().to_owned();
    let live_session = approval["session_id"].as_str().unwrap().to_owned();
    assert_eq!(approval["can_decide"], json!(true));

    // Health, metrics and the document need no credential.
    let metrics = c.call("GET", "/metrics", "/metrics", None, None, 200).await;
    assert!(
        metrics.as_str().unwrap().contains("postern_sessions_total"),
        "{metrics}"
    );
    for (template, id) in [("/healthz", "healthz"), ("/readyz", "readyz")] {
        let body = c.call("GET", template, template, None, None, 200).await;
        assert_eq!(body, json!("ok\n"), "{id}");
    }
    c.call(
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        None,
        200,
    )
    .await;

    // Every operation that needs a credential refuses none, and a forged one.
    for (id, method, template) in &ops {
        let op = c.operation(method, template).clone();
        if op["security"].as_array().is_some_and(|s| s.is_empty()) {
            continue;
        }
        let path = template.replace(
            "{id}",
            if id.contains("Approval") {
                &apr
            } else {
                &live_session
            },
        );
        let body = (method == "POST").then(|| json!({}));
        c.call(method, template, &path, None, body.clone(), 401)
            .await;
        c.call(method, template, &path, Some("not.a.token"), body, 401)
            .await;
    }

    // Without [console.oidc] there is no provider login.
    let info = c
        .call("GET", "/api/v1/oidc", "/api/v1/oidc", None, None, 200)
        .await;
    assert_eq!(info["enabled"], json!(false));
    let t = "/api/v1/oidc/login";
    c.call("GET", t, t, None, None, 404).await;
    let t = "/api/v1/oidc/callback";
    c.call(
        "GET",
        t,
        "/api/v1/oidc/callback?code=c&state=s",
        None,
        None,
        404,
    )
    .await;

    // Login / logout / me.
    let login = "/api/v1/login";
    for (token, expect) in [("", 400), ("x.y.z", 401), (p.plain.as_str(), 200)] {
        let body = Some(json!({ "token": token }));
        let me = c.call("POST", login, login, None, body, expect).await;
        if expect == 200 {
            assert_eq!(me["subject"], "bob");
        }
    }
    c.call("POST", "/api/v1/logout", "/api/v1/logout", None, None, 200)
        .await;
    let me = c.get("/api/v1/me", "/api/v1/me", &p.admin, 200).await;
    assert_eq!(me["roles"], json!(["admin"]));
    let me = c.get("/api/v1/me", "/api/v1/me", &p.dba, 200).await;
    assert_eq!(me["roles"], json!(["approver"]));
    assert_eq!(me["approver_of"], json!(["dba"]));

    // Targets: everyone sees what they may open; readers also see the access rules.
    let t = c
        .get("/api/v1/targets", "/api/v1/targets", &p.plain, 200)
        .await;
    assert_eq!(t["targets"][0]["name"], SHOP);
    assert!(t["targets"][0].get("allow").is_none());
    let t = c
        .get("/api/v1/targets", "/api/v1/targets", &p.auditor, 200)
        .await;
    assert!(t["targets"][0]["allow"].is_object());

    // Audit log: admins and auditors only.
    c.get("/api/v1/audit", "/api/v1/audit", &p.plain, 403).await;
    c.get("/api/v1/audit", "/api/v1/audit?limit=0", &p.auditor, 400)
        .await;
    let audit = c
        .get(
            "/api/v1/audit",
            "/api/v1/audit?kind=approval_requested",
            &p.auditor,
            200,
        )
        .await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert!(events[0]["detail"].as_str().unwrap().contains(&apr));

    // Sessions: readers see all, bob only his own, the approver the held one.
    let all = c
        .get("/api/v1/sessions", "/api/v1/sessions", &p.auditor, 200)
        .await;
    let all = all["sessions"].as_array().unwrap().clone();
    assert_eq!(all.len(), 3, "{all:#?}");
    let subjects: BTreeSet<&str> = all.iter().map(|s| s["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, BTreeSet::from(["agent-7", "bob"]));
    let closed_agent = all
        .iter()
        .find(|s| s["subject"] == "agent-7" && s["open"] == json!(false))
        .expect("the agent's closed session")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let live = all.iter().find(|s| s["id"] == json!(live_session)).unwrap();
    assert_eq!(live["live"], json!(true));
    assert_eq!(live["decisions"]["approve"], json!(1));
    let mine = c
        .get("/api/v1/sessions", "/api/v1/sessions", &p.plain, 200)
        .await;
    let mine = mine["sessions"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["subject"], "bob");
    let dbas = c.get_filtered("/api/v1/sessions", &p.dba).await;
    assert_eq!(dbas, vec![live_session.clone()]);
    let filtered = c
        .get(
            "/api/v1/sessions",
            "/api/v1/sessions?kind=agent&decision=approve&live=true",
            &p.admin,
            200,
        )
        .await;
    assert_eq!(
        filtered["sessions"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    let none = c
        .http
        .get_ok("/api/v1/sessions?identity=agent-7&decision=block", &p.admin)
        .await;
    assert!(none["sessions"].as_array().unwrap().is_empty(), "{none}");
    c.get(
        "/api/v1/sessions",
        "/api/v1/sessions?decision=maybe",
        &p.admin,
        400,
    )
    .await;

    // One session, verified as `postern verify` would.
    let one = format!("/api/v1/sessions/{closed_agent}");
    let detail = c.get("/api/v1/sessions/{id}", &one, &p.auditor, 200).await;
    assert_eq!(detail["verification"]["status"], "verified", "{detail:#}");
    assert!(
        detail["verification"]["message"]
            .as_str()
            .unwrap()
            .starts_with("intact")
    );
    c.get("/api/v1/sessions/{id}", &one, &p.agent, 200).await;
    c.get("/api/v1/sessions/{id}", &one, &p.plain, 403).await;
    c.get("/api/v1/sessions/{id}", &one, &p.dba, 403).await;
    c.get(
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/0000-none",
        &p.admin,
        404,
    )
    .await;
    let held_detail = c
        .get(
            "/api/v1/sessions/{id}",
            &format!("/api/v1/sessions/{live_session}"),
            &p.dba,
            200,
        )
        .await;
    assert_eq!(held_detail["verification"]["status"], "open");
    assert_eq!(held_detail["approvals"], json!([apr]));

    // Its timeline, page by page.
    let events_of = |id: &str, q: &str| format!("/api/v1/sessions/{id}/events{q}");
    let page = c
        .get(
            "/api/v1/sessions/{id}/events",
            &events_of(&closed_agent, "?limit=2"),
            &p.agent,
            200,
        )
        .await;
    assert_eq!(page["events"][0]["type"], "session_start");
    assert_eq!(page["more"], json!(true));
    let after = page["next_after"].as_u64().unwrap();
    let rest = c
        .get(
            "/api/v1/sessions/{id}/events",
            &events_of(&closed_agent, &format!("?after={after}&limit=5000")),
            &p.auditor,
            200,
        )
        .await;
    let rest = rest["events"].as_array().unwrap();
    assert_eq!(rest[0]["seq"].as_u64(), Some(after + 1));
    let first = page["events"].as_array().unwrap();
    assert!(
        first.iter().chain(rest).any(|e| e["type"] == "command"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("count(*) FROM customers"))),
        "{rest:#?}"
    );
    assert_eq!(rest.last().unwrap()["type"], "session_end");
    c.get(
        "/api/v1/sessions/{id}/events",
        &events_of(&closed_agent, ""),
        &p.plain,
        403,
    )
    .await;
    c.get(
        "/api/v1/sessions/{id}/events",
        &events_of(&closed_agent, "?after=-1"),
        &p.agent,
        400,
    )
    .await;
    c.get(
        "/api/v1/sessions/{id}/events",
        &events_of("0000-none", ""),
        &p.admin,
        404,
    )
    .await;

    // Approvals: who sees what.
    let list = c
        .get("/api/v1/approvals", "/api/v1/approvals", &p.plain, 200)
        .await;
    assert!(list["approvals"].as_array().unwrap().is_empty(), "{list}");
    c.get(
        "/api/v1/approvals",
        "/api/v1/approvals?state=held",
        &p.dba,
        400,
    )
    .await;
    let apr_path = format!("/api/v1/approvals/{apr}");
    let own = c
        .get("/api/v1/approvals/{id}", &apr_path, &p.agent, 200)
        .await;
    assert_eq!(own["can_decide"], json!(false));
    c.get("/api/v1/approvals/{id}", &apr_path, &p.plain, 404)
        .await;

    // Approve: refused for a non-approver, the requester and a bad window; then done.
    let approve = format!("{apr_path}/approve");
    let t = "/api/v1/approvals/{id}/approve";
    let refused = c.post(t, &approve, &p.plain, None, 403).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("only members of dba"),
        "{refused}"
    );
    c.post(t, &approve, &p.agent, None, 403).await;
    c.post(t, &approve, &p.admin, None, 403).await;
    c.post(t, &approve, &p.dba, Some(json!({ "window": "soon" })), 400)
        .await;
    c.post(t, "/api/v1/approvals/APR-NONE/approve", &p.dba, None, 404)
        .await;
    assert_ne!(
        fx.direct(SHOP)
            .query("SELECT quantity FROM orders WHERE id = 1000"),
        "71"
    );
    let decided = c.post(t, &approve, &p.dba, None, 200).await;
    assert_eq!(decided["state"], "approved");
    assert_eq!(decided["decided_by"], "dana");
    let rows = tokio::time::timeout(Duration::from_secs(30), first_held)
        .await
        .expect("the held statement completes once approved")
        .unwrap()
        .expect("the approved statement succeeds");
    assert_eq!(rows, 1);
    assert_eq!(
        fx.direct(SHOP)
            .query("SELECT quantity FROM orders WHERE id = 1000"),
        "71"
    );
    c.post(t, &approve, &p.dba, None, 409).await;

    // Deny: the client gets the reason.
    let second_held = held(&agent, "DELETE FROM orders WHERE id = 1001").await;
    let second = c.http.pending(&p.dba).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deny = format!("/api/v1/approvals/{second}/deny");
    let t = "/api/v1/approvals/{id}/deny";
    c.post(t, &deny, &p.auditor, Some(json!({ "reason": "no" })), 403)
        .await;
    c.post(t, &deny, &p.dba, Some(json!({ "reason": 5 })), 400)
        .await;
    c.post(t, "/api/v1/approvals/APR-NONE/deny", &p.dba, None, 404)
        .await;
    let denied = c
        .post(
            t,
            &deny,
            &p.dba,
            Some(json!({ "reason": "not during the sale" })),
            200,
        )
        .await;
    assert_eq!(denied["state"], "denied");
    let err = tokio::time::timeout(Duration::from_secs(30), second_held)
        .await
        .unwrap()
        .unwrap()
        .expect_err("a denied statement fails");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(
        db.message().contains("not during the sale"),
        "{}",
        db.message()
    );
    assert!(db.message().contains(&second), "{}", db.message());
    c.post(t, &deny, &p.dba, None, 409).await;

    // Approve for a window: the next matching statement passes without a new request.
    let third_held = held(&agent, "UPDATE orders SET quantity = 72 WHERE id = 1000").await;
    let third = c.http.pending(&p.dba).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let windowed = c
        .post(
            "/api/v1/approvals/{id}/approve",
            &format!("/api/v1/approvals/{third}/approve"),
            &p.dba,
            Some(json!({ "window": "30m" })),
            200,
        )
        .await;
    assert!(windowed["window_until"].is_string(), "{windowed}");
    tokio::time::timeout(Duration::from_secs(30), third_held)
        .await
        .unwrap()
        .unwrap()
        .expect("the approved statement succeeds");
    let (client, _m) = agent.client().await;
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        client.execute("UPDATE orders SET quantity = 73 WHERE id = 1000", &[]),
    )
    .await
    .expect("a statement inside the window is not held")
    .unwrap();
    assert_eq!(n, 1);

    // Terminate: admins only, live sessions only.
    let (victim, _messages) = bob.client().await;
    let bobs = c
        .http
        .get_ok("/api/v1/sessions?live=true&identity=bob", &p.admin)
        .await;
    let victim_id = bobs["sessions"][0]["id"].as_str().unwrap().to_owned();
    let kill = format!("/api/v1/sessions/{victim_id}/terminate");
    let t = "/api/v1/sessions/{id}/terminate";
    c.post(t, &kill, &p.auditor, None, 403).await;
    c.post(t, &kill, &p.plain, None, 403).await;
    c.post(
        t,
        "/api/v1/sessions/0000-none/terminate",
        &p.admin,
        None,
        404,
    )
    .await;
    let done = c
        .post(
            t,
            &kill,
            &p.admin,
            Some(json!({ "reason": "maintenance" })),
            200,
        )
        .await;
    assert_eq!(done["by"], "olga");
    let err = tokio::time::timeout(Duration::from_secs(10), victim.simple_query("SELECT 1"))
        .await
        .expect("the terminated client is answered")
        .expect_err("the terminated session is over");
    if let Some(db) = err.as_db_error() {
        assert_eq!(db.code(), &SqlState::ADMIN_SHUTDOWN);
    }
    let closed = eventually(Duration::from_secs(10), || {
        let rows = sqlite_rows(
            &fx.gw.store_path(),
            &format!("SELECT close_reason FROM sessions WHERE id = '{victim_id}' AND ended_at_ms IS NOT NULL"),
        );
        rows.first().map(|r| r["close_reason"].as_str().unwrap_or_default().to_owned())
    })
    .expect("the terminated session is closed in the index");
    assert_eq!(closed, "terminated by olga: maintenance");
    c.post(t, &kill, &p.admin, None, 409).await;

    let missing: Vec<_> = wanted
        .difference(&c.seen)
        .filter(|pair| !needs_oidc(pair))
        .collect();
    assert!(
        missing.is_empty(),
        "documented answers the walk never produced: {missing:?}"
    );
    let undocumented: Vec<_> = c.seen.difference(&wanted).collect();
    assert!(undocumented.is_empty(), "{undocumented:?}");
}

impl Contract {
    /// The ids of the sessions `token` sees.
    async fn get_filtered(&mut self, path: &str, token: &str) -> Vec<String> {
        let body = self.get("/api/v1/sessions", path, token, 200).await;
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}
