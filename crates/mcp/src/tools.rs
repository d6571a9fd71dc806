//! The MCP server: the tools, generated for the caller from the targets it may open, and what
//! each call does.

use crate::McpState;
use crate::gateway::{self, ConnectError, Outcome};
use crate::refusal::Refusal;
use postern_core::mask::MaskedColumnSpec;
use postern_core::{ApprovalRow, ApprovalState, Identity, Policy, StatementLineage, Target};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most columns `describe_target` lists.
const MAX_DESCRIBED_COLUMNS: usize = 10_000;

/// Longest string kept from a request's `_meta` or a stated intent in the lineage comment.
const MAX_LINEAGE_STRING: usize = 8 * 1024;

/// `_meta` members of a tool call recorded beside its statements.
const RECORDED_META: [&str; 4] = ["prompt", "traceparent", "tracestate", "baggage"];

const INSTRUCTIONS: &str = "Postern is an identity-aware gateway: these tools reach databases \
     as you, under the gateway's policy. Every call is recorded with its arguments and your \
     stated intent, so say why in `intent`. Start with list_targets and describe_target. \
     Results may be masked; some statements are refused (the error names the rule) and some \
     need a human's approval: the error then gives an approval id to re-submit with once a \
     human has approved it.";

/// One MCP request's server (the endpoint is stateless: one per request).
pub struct Handler {
    state: Arc<McpState>,
}

impl Handler {
    pub fn new(state: Arc<McpState>) -> Self {
        Handler { state }
    }
}

/// The caller, put in the request's extensions by the bearer check.
fn caller(context: &RequestContext<RoleServer>) -> Result<Identity, McpError> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Identity>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request carries no verified identity", None))
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("postern", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let identity = caller(&context)?;
        let targets: Vec<&str> = self
            .state
            .targets_for(&identity)
            .into_iter()
            .map(|t| t.name.as_str())
            .collect();
        Ok(ListToolsResult::with_all_items(tools(&targets)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let identity = caller(&context)?;
        let call = Call::new(&self.state, identity, &request, &context);
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let result = match request.name.as_ref() {
            "list_targets" => Ok(call.list_targets()),
            "describe_target" => match parse::<DescribeArgs>(arguments) {
                Ok(args) => call.describe_target(args).await,
                Err(e) => Err(e),
            },
            "query" => match parse::<QueryArgs>(arguments) {
                Ok(args) => call.query(args).await,
                Err(e) => Err(e),
            },
            "get_approval" => match parse::<ApprovalArgs>(arguments) {
                Ok(args) => call.get_approval(args).await,
                Err(e) => Err(e),
            },
            other => {
                return Err(McpError::invalid_params(
                    format!("there is no tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(result.unwrap_or_else(|e| e).into())
    }
}

/// The tools, for a caller who may open `targets`.
fn tools(targets: &[&str]) -> Vec<Tool> {
    let target = json!({
        "type": "string",
        "enum": targets,
        "description": "The target (database) to use; list_targets describes them.",
    });
    let intent = json!({
        "type": "string",
        "description": "Why you are doing this (the task or user request it serves); recorded \
                        beside the statement.",
    });
    let read_only = ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        Tool::new(
            "list_targets",
            "The targets (databases) you may use through this gateway, and who you are to it.",
            schema(json!({}), &[]),
        )
        .with_title("List targets")
        .with_annotations(read_only.clone()),
        Tool::new(
            "describe_target",
            "The tables and columns of a target (from information_schema, through the \
             gateway). Columns the gateway masks for you are marked `masked`.",
            schema(
                json!({
                    "target": target,
                    "schema": {"type": "string", "description": "Only this schema."},
                    "table": {"type": "string", "description": "Only this table."},
                    "intent": intent,
                }),
                &["target"],
            ),
        )
        .with_title("Describe a target")
        .with_annotations(read_only.clone()),
        Tool::new(
            "query",
            "Runs SQL on a target through the gateway, as you: the gateway's policy applies \
             (a refused statement returns an error naming the rule), masked values come back \
             masked, and a statement that needs a human's approval returns an approval id: \
             once approved, call again with the same sql and that approval_id. Values are \
             returned as text, NULL as null; at most a configured number of rows.",
            schema(
                json!({
                    "target": target,
                    "sql": {"type": "string", "description": "One or more SQL statements."},
                    "intent": intent,
                    "approval_id": {
                        "type": "string",
                        "description": "Re-submit a statement under this approval (APR-…), once \
                                        a human has approved it.",
                    },
                }),
                &["target", "sql"],
            ),
        )
        .with_title("Run SQL")
        .with_annotations(ToolAnnotations::new().destructive(true).open_world(false)),
        Tool::new(
            "get_approval",
            "Where an approval request of yours stands: pending, approved, denied or expired, \
             who decided and why, and whether its statement has run.",
            schema(
                json!({"id": {"type": "string", "description": "The approval id (APR-…)."}}),
                &["id"],
            ),
        )
        .with_title("Get an approval")
        .with_annotations(read_only),
    ]
}

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let value = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    match value {
        Value::Object(object) => Arc::new(object),
        _ => unreachable!("a JSON object"),
    }
}

#[derive(Debug, Deserialize)]
struct DescribeArgs {
    target: String,
    schema: Option<String>,
    table: Option<String>,
    intent: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryArgs {
    target: String,
    sql: String,
    intent: Option<String>,
    approval_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApprovalArgs {
    id: String,
}

fn parse<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, CallToolResult> {
    serde_json::from_value(arguments).map_err(|e| {
        CallToolResult::structured_error(json!({
            "error": "invalid_arguments",
            "message": format!("invalid arguments: {e}"),
        }))
    })
}

/// One tool call: the caller, a fresh causal id, and what the request says about itself.
struct Call<'a> {
    state: &'a McpState,
    identity: Identity,
    tool: String,
    causal_id: String,
    meta: serde_json::Map<String, Value>,
    mcp_session: Option<String>,
}

impl<'a> Call<'a> {
    fn new(
        state: &'a McpState,
        identity: Identity,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Self {
        let mut meta = serde_json::Map::new();
        let sources = request
            .meta
            .iter()
            .map(|m| &(m.0).0)
            .chain(std::iter::once(&(context.meta.0).0));
        for source in sources {
            for key in RECORDED_META {
                if let Some(value) = source.get(key) {
                    meta.insert(key.to_owned(), bounded(value));
                }
            }
        }
        let mcp_session = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Call {
            state,
            identity,
            tool: request.name.to_string(),
            causal_id: uuid::Uuid::now_v7().to_string(),
            meta,
            mcp_session,
        }
    }

    /// The target named `name`, if the caller may open it.
    fn target(&self, name: &str) -> Result<&'a Target, CallToolResult> {
        self.state
            .targets_for(&self.identity)
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                CallToolResult::structured_error(json!({
                    "error": "unknown_target",
                    "message": format!(
                        "there is no target {name:?} you may use; list_targets names yours"
                    ),
                }))
            })
    }

    /// The lineage comment for a statement of this call (`arguments` as sent, without the SQL
    /// itself, which is the statement).
    fn lineage(&self, arguments: Value, intent: Option<&str>, approval: Option<&str>) -> String {
        let mut members = json!({
            "causal_id": self.causal_id,
            "tool": self.tool,
            "arguments": arguments,
            "wait": false,
        });
        let object = members.as_object_mut().expect("an object");
        if let Some(intent) = intent {
            object.insert("intent".into(), bounded(&Value::String(intent.to_owned())));
        }
        if !self.meta.is_empty() {
            object.insert("meta".into(), Value::Object(self.meta.clone()));
        }
        if let Some(session) = &self.mcp_session {
            object.insert("mcp_session".into(), Value::String(session.clone()));
        }
        if let Some(id) = approval {
            object.insert("approval".into(), Value::String(id.to_owned()));
        }
        StatementLineage::comment(&members)
    }

    /// Runs `sql` on `target` as the caller, in a session of its own.
    async fn run(
        &self,
        target: &str,
        sql: &str,
        lineage: String,
        max_rows: usize,
    ) -> Result<Outcome, CallToolResult> {
        let connection = self
            .state
            .loopback
            .connect(&self.identity, target)
            .await
            .map_err(|e| match e {
                ConnectError::Login(error) => self.refusal(&error, &[]),
                other => CallToolResult::structured_error(json!({
                    "error": "unavailable",
                    "message": other.to_string(),
                    "next_step": "The gateway could not open a session for this call; try \
                                  again later.",
                })),
            })?;
        let text = format!("{lineage}{sql}");
        let outcome = gateway::run(connection.client(), &text, max_rows).await;
        connection.close().await;
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                let refusal = Refusal::from_error(&error);
                let approvers = match &refusal.approval_id {
                    Some(id) => self
                        .approval(id)
                        .await
                        .map(|r| r.approvers)
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                Err(self.refusal(&error, &approvers))
            }
        }
    }

    fn refusal(&self, error: &tokio_postgres::Error, approvers: &[String]) -> CallToolResult {
        let refusal = Refusal::from_error(error);
        let mut value = refusal.to_json(approvers);
        value["causal_id"] = Value::String(self.causal_id.clone());
        tracing::info!(subject = %self.identity.subject, tool = %self.tool, causal_id = %self.causal_id, error = ?refusal.why, "MCP tool call refused");
        CallToolResult::structured_error(value)
    }

    /// Approval `id`, if the caller requested it or may decide it.
    async fn approval(&self, id: &str) -> Option<ApprovalRow> {
        let row = self.state.store.get_approval(id).await.ok()??;
        let visible = row.subject == self.identity.subject
            || row.approvers.iter().any(|g| self.identity.in_group(g));
        visible.then_some(row)
    }

    fn list_targets(&self) -> CallToolResult {
        let targets: Vec<Value> = self
            .state
            .targets_for(&self.identity)
            .into_iter()
            .map(|t| json!({"name": t.name, "kind": t.kind.as_str()}))
            .collect();
        CallToolResult::structured(json!({
            "targets": targets,
            "you": {
                "subject": self.identity.subject,
                "kind": self.identity.kind.as_str(),
                "groups": self.identity.groups,
            },
        }))
    }

    async fn describe_target(&self, args: DescribeArgs) -> Result<CallToolResult, CallToolResult> {
        let target = self.target(&args.target)?;
        let mut sql = String::from(
            "SELECT c.table_schema, c.table_name, t.table_type, c.column_name, c.data_type, \
             c.is_nullable \
             FROM information_schema.columns c \
             JOIN information_schema.tables t \
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')",
        );
        if let Some(schema) = &args.schema {
            sql.push_str(&format!(" AND c.table_schema = {}", literal(schema)));
        }
        if let Some(table) = &args.table {
            sql.push_str(&format!(" AND c.table_name = {}", literal(table)));
        }
        sql.push_str(" ORDER BY c.table_schema, c.table_name, c.ordinal_position");
        let arguments = json!({"target": args.target, "schema": args.schema, "table": args.table});
        let lineage = self.lineage(arguments, args.intent.as_deref(), None);
        let outcome = self
            .run(&target.name, &sql, lineage, MAX_DESCRIBED_COLUMNS)
            .await?;
        let masked = masked_columns(self.state.policy.as_ref(), &self.identity, target);
        let mut tables: Vec<Value> = Vec::new();
        let mut last: Option<(String, String)> = None;
        for row in outcome.results.iter().flat_map(|r| &r.rows) {
            let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let (schema, table, column) = (cell(0), cell(1), cell(3));
            if last.as_ref() != Some(&(schema.clone(), table.clone())) {
                tables.push(json!({
                    "schema": schema, "name": table, "type": cell(2), "columns": [],
                }));
                last = Some((schema.clone(), table.clone()));
            }
            let mut entry = json!({
                "name": column, "type": cell(4), "nullable": cell(5) == "YES",
            });
            if is_masked(&masked, &schema, &table, &column) {
                entry["masked"] = Value::Bool(true);
            }
            if let Some(columns) = tables.last_mut().and_then(|t| t["columns"].as_array_mut()) {
                columns.push(entry);
            }
        }
        let mut value = json!({
            "target": target.name,
            "causal_id": self.causal_id,
            "tables": tables,
        });
        if outcome.truncated {
            value["note"] = Value::String(format!(
                "only the first {MAX_DESCRIBED_COLUMNS} columns are listed: name a schema or a \
                 table to see the rest"
            ));
        }
        Ok(CallToolResult::structured(value))
    }

    async fn query(&self, args: QueryArgs) -> Result<CallToolResult, CallToolResult> {
        let target = self.target(&args.target)?;
        if args.sql.trim().is_empty() {
            return Err(CallToolResult::structured_error(json!({
                "error": "invalid_arguments",
                "message": "sql is empty",
            })));
        }
        let arguments = json!({"target": args.target, "approval_id": args.approval_id});
        let lineage = self.lineage(
            arguments,
            args.intent.as_deref(),
            args.approval_id.as_deref(),
        );
        let max_rows = self.state.max_rows;
        let outcome = self.run(&target.name, &args.sql, lineage, max_rows).await?;
        let results: Vec<Value> = outcome
            .results
            .iter()
            .map(|set| {
                if set.returns_rows {
                    json!({
                        "columns": set.columns,
                        "rows": set.rows,
                        "row_count": set.rows.len(),
                    })
                } else {
                    json!({"rows_affected": set.count})
                }
            })
            .collect();
        let mut value = json!({
            "target": target.name,
            "causal_id": self.causal_id,
            "results": results,
            "truncated": outcome.truncated,
        });
        if outcome.truncated {
            value["note"] = Value::String(format!(
                "only the first {max_rows} rows are shown (the gateway's row cap for MCP); add \
                 a LIMIT or a narrower WHERE, or aggregate, to see the rest"
            ));
        }
        Ok(CallToolResult::structured(value))
    }

    async fn get_approval(&self, args: ApprovalArgs) -> Result<CallToolResult, CallToolResult> {
        let Some(row) = self.approval(args.id.trim()).await else {
            return Err(CallToolResult::structured_error(json!({
                "error": "unknown_approval",
                "message": format!(
                    "there is no approval {} that you requested or may decide",
                    args.id.trim()
                ),
            })));
        };
        let now = postern_core::now_ms();
        let next_step = match (row.effective_state(now), row.used_at_ms) {
            (ApprovalState::Pending, _) => format!(
                "Waiting for a member of {} to decide; ask again later.",
                row.approvers.join(" or ")
            ),
            (ApprovalState::Approved, None) => format!(
                "Approved: call `query` with target {:?}, the same sql and approval_id {:?}; \
                 it runs once.",
                row.target, row.id
            ),
            (ApprovalState::Approved, Some(_)) => {
                "Approved and already run; an approval runs its statement once.".to_owned()
            }
            (ApprovalState::Denied, _) => "Denied: do not re-submit it.".to_owned(),
            (ApprovalState::Expired, _) => "Expired: call `query` without approval_id to \
                                            request a new approval if it is still needed."
                .to_owned(),
        };
        Ok(CallToolResult::structured(json!({
            "id": row.id,
            "state": row.effective_state(now).as_str(),
            "target": row.target,
            "rule": row.rule,
            "statement": row.statement,
            "requested_by": row.subject,
            "approvers": row.approvers,
            "requested_at": rfc3339(row.requested_at_ms),
            "expires_at": rfc3339(row.expires_at_ms),
            "decided_by": row.decided_by,
            "decided_at": row.decided_at_ms.map(rfc3339),
            "reason": row.reason,
            "used_at": row.used_at_ms.map(rfc3339),
            "next_step": next_step,
        })))
    }
}

/// The columns masked for `identity` on `target`, as the policy names them (none while the
/// policy masks nothing for it).
fn masked_columns(
    policy: &dyn Policy,
    identity: &Identity,
    target: &Target,
) -> Vec<MaskedColumnSpec> {
    policy
        .open_session(identity, target)
        .masking()
        .map(|m| m.columns)
        .unwrap_or_default()
}

/// Whether `schema.table.column` is covered by one of `masked`.
fn is_masked(masked: &[MaskedColumnSpec], schema: &str, table: &str, column: &str) -> bool {
    masked.iter().any(|m| {
        m.schema.as_deref().is_none_or(|s| s == schema)
            && m.table == table
            && (m.column == "*" || m.column == column)
    })
}

/// A SQL string literal for `value`, right whatever `standard_conforming_strings` says.
fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `value`, with a string longer than [`MAX_LINEAGE_STRING`] cut (on a char boundary).
fn bounded(value: &Value) -> Value {
    match value {
        Value::String(s) if s.len() > MAX_LINEAGE_STRING => {
            let mut cut = MAX_LINEAGE_STRING;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Value::String(format!("{}… ({} more bytes)", &s[..cut], s.len() - cut))
        }
        Value::String(_) => value.clone(),
        other => {
            let text = other.to_string();
            if text.len() > MAX_LINEAGE_STRING {
                bounded(&Value::String(text))
            } else {
                other.clone()
            }
        }
    }
}

/// RFC 3339 (UTC) for Unix milliseconds.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted_safely() {
        assert_eq!(literal("orders"), "'orders'");
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\' OR 1=1 --"), "E'a\\\\'' OR 1=1 --'");
    }

    #[test]
    fn masked_columns_are_matched_by_schema_table_and_column() {
        let spec = |schema: Option<&str>, table: &str, column: &str| MaskedColumnSpec {
            schema: schema.map(str::to_owned),
            table: table.into(),
            column: column.into(),
            mask: 0,
        };
        let masked = [
            spec(None, "customers", "email"),
            spec(Some("hr"), "salaries", "*"),
        ];
        assert!(is_masked(&masked, "public", "customers", "email"));
        assert!(!is_masked(&masked, "public", "customers", "name"));
        assert!(is_masked(&masked, "hr", "salaries", "amount"));
        assert!(!is_masked(&masked, "public", "salaries", "amount"));
    }

    #[test]
    fn masked_columns_come_from_the_callers_session_policy() {
        use postern_core::mask::ColumnMask;
        use postern_core::{
            Command, Decision, IdentityKind, Masker, SessionMasking, SessionPolicy, TargetKind,
        };

        struct Redact;
        impl Masker for Redact {
            fn mask_value(&self, _: ColumnMask, _: &[u8], out: &mut Vec<u8>) {
                out.extend_from_slice(b"****");
            }
            fn has_detectors(&self) -> bool {
                false
            }
            fn scrub(&self, _: &[u8]) -> Option<Vec<u8>> {
                None
            }
        }
        /// Masks customers.email for agents only.
        struct AgentsMasked;
        struct Session(bool);
        impl Policy for AgentsMasked {
            fn open_session(&self, identity: &Identity, _: &Target) -> Box<dyn SessionPolicy> {
                Box::new(Session(identity.kind == IdentityKind::Agent))
            }
        }
        impl SessionPolicy for Session {
            fn decide(&mut self, _: &Command<'_>) -> Decision {
                Decision::Allow
            }
            fn masking(&self) -> Option<SessionMasking> {
                self.0.then(|| SessionMasking {
                    columns: vec![MaskedColumnSpec {
                        schema: None,
                        table: "customers".into(),
                        column: "email".into(),
                        mask: 0,
                    }],
                    masker: Arc::new(Redact),
                })
            }
        }
        let target = Target {
            name: "shop".into(),
            kind: TargetKind::Postgres,
            access: Default::default(),
        };
        let who = |kind| Identity {
            subject: "x".into(),
            groups: vec![],
            kind,
            issuer: "postern".into(),
            expires_at: i64::MAX,
        };
        let agent = masked_columns(&AgentsMasked, &who(IdentityKind::Agent), &target);
        assert!(is_masked(&agent, "public", "customers", "email"));
        let human = masked_columns(&AgentsMasked, &who(IdentityKind::Human), &target);
        assert!(human.is_empty());
        assert!(
            masked_columns(&postern_core::AllowAll, &who(IdentityKind::Agent), &target).is_empty()
        );
    }

    #[test]
    fn lineage_strings_are_bounded() {
        let long = "é".repeat(MAX_LINEAGE_STRING);
        let Value::String(cut) = bounded(&Value::String(long)) else {
            panic!()
        };
        assert!(cut.len() < MAX_LINEAGE_STRING + 40);
        assert!(cut.ends_with("more bytes)"));
        assert_eq!(bounded(&json!("short")), json!("short"));
    }

    #[test]
    fn every_tool_names_only_the_callers_targets() {
        let tools = tools(&["shop"]);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            ["list_targets", "describe_target", "query", "get_approval"]
        );
        let query = &tools[2];
        assert_eq!(
            query.input_schema["properties"]["target"]["enum"],
            json!(["shop"])
        );
        assert_eq!(query.input_schema["required"], json!(["target", "sql"]));
    }
}
