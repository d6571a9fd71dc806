//! Statement verbs (`DROP TABLE`, `EXPLAIN ANALYZE UPDATE`, …) and object names, in SQL words,
//! for findings and the reasons callers read.

use crate::walk::Facts;
use pg_query::NodeEnum;
use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};

/// The statement's verb, in SQL words.
pub(crate) fn verb(node: &NodeEnum, facts: &Facts) -> String {
    let fixed = match node {
        NodeEnum::SelectStmt(s) if s.into_clause.is_some() => "SELECT INTO",
        NodeEnum::SelectStmt(_) => "SELECT",
        NodeEnum::InsertStmt(_) => "INSERT",
        NodeEnum::UpdateStmt(_) => "UPDATE",
        NodeEnum::DeleteStmt(_) => "DELETE",
        NodeEnum::MergeStmt(_) => "MERGE",
        NodeEnum::CreateStmt(_) => "CREATE TABLE",
        NodeEnum::IndexStmt(_) => "CREATE INDEX",
        NodeEnum::ViewStmt(_) => "CREATE VIEW",
        NodeEnum::CreateFunctionStmt(f) if f.is_procedure => "CREATE PROCEDURE",
        NodeEnum::CreateFunctionStmt(_) => "CREATE FUNCTION",
        NodeEnum::CreateSchemaStmt(_) => "CREATE SCHEMA",
        NodeEnum::CreateSeqStmt(_) => "CREATE SEQUENCE",
        NodeEnum::AlterSeqStmt(_) => "ALTER SEQUENCE",
        NodeEnum::CreateTrigStmt(_) => "CREATE TRIGGER",
        NodeEnum::RuleStmt(_) => "CREATE RULE",
        NodeEnum::RenameStmt(_) => "ALTER … RENAME",
        NodeEnum::CommentStmt(_) => "COMMENT",
        NodeEnum::GrantStmt(g) if g.is_grant => "GRANT",
        NodeEnum::GrantStmt(_) => "REVOKE",
        NodeEnum::AlterDefaultPrivilegesStmt(_) => "ALTER DEFAULT PRIVILEGES",
        NodeEnum::GrantRoleStmt(g) if g.is_grant => "GRANT role",
        NodeEnum::GrantRoleStmt(_) => "REVOKE role",
        NodeEnum::CreateRoleStmt(_) => "CREATE ROLE",
        NodeEnum::AlterRoleStmt(_) => "ALTER ROLE",
        NodeEnum::AlterRoleSetStmt(_) => "ALTER ROLE … SET",
        NodeEnum::DropRoleStmt(_) => "DROP ROLE",
        NodeEnum::CreatedbStmt(_) => "CREATE DATABASE",
        NodeEnum::DropdbStmt(_) => "DROP DATABASE",
        NodeEnum::AlterDatabaseStmt(_) | NodeEnum::AlterDatabaseSetStmt(_) => "ALTER DATABASE",
        NodeEnum::CreateExtensionStmt(_) => "CREATE EXTENSION",
        NodeEnum::AlterSystemStmt(_) => "ALTER SYSTEM",
        NodeEnum::LoadStmt(_) => "LOAD",
        NodeEnum::CheckPointStmt(_) => "CHECKPOINT",
        NodeEnum::VacuumStmt(v) if v.is_vacuumcmd => "VACUUM",
        NodeEnum::VacuumStmt(_) => "ANALYZE",
        NodeEnum::ClusterStmt(_) => "CLUSTER",
        NodeEnum::ReindexStmt(_) => "REINDEX",
        NodeEnum::RefreshMatViewStmt(_) => "REFRESH MATERIALIZED VIEW",
        NodeEnum::TruncateStmt(_) => "TRUNCATE",
        NodeEnum::LockStmt(_) => "LOCK TABLE",
        NodeEnum::DoStmt(_) => "DO",
        NodeEnum::CallStmt(_) => "CALL",
        NodeEnum::VariableSetStmt(v) => match VariableSetKind::try_from(v.kind) {
            Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
            _ => "SET",
        },
        NodeEnum::VariableShowStmt(_) => "SHOW",
        NodeEnum::DiscardStmt(_) => "DISCARD",
        NodeEnum::DeallocateStmt(_) => "DEALLOCATE",
        NodeEnum::ListenStmt(_) => "LISTEN",
        NodeEnum::UnlistenStmt(_) => "UNLISTEN",
        NodeEnum::NotifyStmt(_) => "NOTIFY",
        NodeEnum::FetchStmt(f) if f.ismove => "MOVE",
        NodeEnum::FetchStmt(_) => "FETCH",
        NodeEnum::ClosePortalStmt(_) => "CLOSE",
        NodeEnum::DeclareCursorStmt(_) => "DECLARE CURSOR",
        NodeEnum::ConstraintsSetStmt(_) => "SET CONSTRAINTS",
        NodeEnum::CopyStmt(_) => "COPY",
        NodeEnum::ExplainStmt(_) => "EXPLAIN",
        NodeEnum::PrepareStmt(_) => "PREPARE",
        NodeEnum::ExecuteStmt(_) => "EXECUTE",
        NodeEnum::CreatePolicyStmt(_) => "CREATE POLICY",
        NodeEnum::AlterPolicyStmt(_) => "ALTER POLICY",
        NodeEnum::AlterOwnerStmt(_) => "ALTER … OWNER TO",
        NodeEnum::ReassignOwnedStmt(_) => "REASSIGN OWNED",
        NodeEnum::DropOwnedStmt(_) => "DROP OWNED",
        NodeEnum::CreatePlangStmt(_) => "CREATE LANGUAGE",
        NodeEnum::CreateForeignServerStmt(_) => "CREATE SERVER",
        NodeEnum::CreateFdwStmt(_) => "CREATE FOREIGN DATA WRAPPER",
        NodeEnum::CreateEventTrigStmt(_) => "CREATE EVENT TRIGGER",
        NodeEnum::CreateTableSpaceStmt(_) => "CREATE TABLESPACE",
        NodeEnum::TransactionStmt(t) => match TransactionStmtKind::try_from(t.kind) {
            Ok(TransactionStmtKind::TransStmtBegin) => "BEGIN",
            Ok(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommit) => "COMMIT",
            Ok(TransactionStmtKind::TransStmtRollback) => "ROLLBACK",
            Ok(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
            Ok(TransactionStmtKind::TransStmtRelease) => "RELEASE",
            Ok(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK TO",
            Ok(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
            Ok(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
            _ => "TRANSACTION",
        },
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_owned();
    }
    match node {
        NodeEnum::DropStmt(d) => format!("DROP {}", object_type(d.remove_type)),
        NodeEnum::AlterTableStmt(a) => format!("ALTER {}", object_type(a.objtype)),
        NodeEnum::CreateTableAsStmt(c) if c.is_select_into => "SELECT INTO".to_owned(),
        NodeEnum::CreateTableAsStmt(c) => format!("CREATE {} AS", object_type(c.objtype)),
        _ => camel_to_words(facts.root),
    }
}

/// The dotted name of a DROP/COMMENT object (`List` of strings, `ObjectWithArgs`, `TypeName`).
pub(crate) fn object_name(n: &pg_query::protobuf::Node) -> Option<String> {
    let strings = |items: &[pg_query::protobuf::Node]| -> String {
        items
            .iter()
            .filter_map(|i| match i.node.as_ref() {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    match n.node.as_ref()? {
        NodeEnum::List(l) => Some(strings(&l.items)),
        NodeEnum::String(s) => Some(s.sval.clone()),
        NodeEnum::ObjectWithArgs(o) => Some(strings(&o.objname)),
        NodeEnum::TypeName(t) => Some(strings(&t.names)),
        _ => None,
    }
}

pub(crate) fn object_type(t: i32) -> String {
    ObjectType::try_from(t)
        .map(|o| match o {
            ObjectType::ObjectMatview => "MATERIALIZED VIEW".to_owned(),
            _ => o
                .as_str_name()
                .trim_start_matches("OBJECT_")
                .replace('_', " "),
        })
        .unwrap_or_else(|_| "OBJECT".to_owned())
}

/// `AlterCollationStmt` → `ALTER COLLATION`.
fn camel_to_words(name: &str) -> String {
    let name = name.strip_suffix("Stmt").unwrap_or(name);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
