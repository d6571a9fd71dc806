//! What calling a function, or changing a setting, does.
//!
//! Stance on functions: a function body can do anything (write, change the schema, run dynamic
//! SQL as its owner), and the gateway cannot see inside it. So:
//!
//! 1. functions the config declares (`[functions]`) have the class it gives them;
//! 2. built-in functions with effects beyond reading are classified by name, whatever schema
//!    qualifies them (`pg_read_file` → admin, `nextval` → write, `set_config('role', …)` →
//!    privilege, `query_to_xml('…')` → unknown because it runs SQL given as text, …);
//! 3. the other built-in functions (schema `pg_catalog` or `information_schema`, or unqualified)
//!    only compute and add nothing;
//! 4. any other function — user-defined or from an extension — is `unknown`: it may do anything.
//!    Declare the ones you trust in config.

use crate::class::StatementClass;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The effect of one function call or setting change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Effect {
    pub class: StatementClass,
    pub detail: String,
    /// The change alters how the server reads statement text (`standard_conforming_strings`).
    pub lexing: bool,
}

impl Effect {
    fn new(class: StatementClass, detail: String) -> Self {
        Effect {
            class,
            detail,
            lexing: false,
        }
    }
}

/// Functions whose class the operator declares in config, by `name` (any schema) or
/// `schema.name`.
#[derive(Debug, Clone, Default)]
pub struct FunctionCatalog {
    declared: HashMap<String, StatementClass>,
}

impl FunctionCatalog {
    /// An empty catalog: only the built-in knowledge applies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that calling `name` (`fn` or `schema.fn`, as PostgreSQL folds it: lowercase
    /// unless quoted) has `class` (`read` = no effect beyond computing).
    pub fn declare(&mut self, name: &str, class: StatementClass) {
        self.declared.insert(name.to_owned(), class);
    }

    /// Classifies a call of the function named `parts` with the given literal arguments.
    /// `None` means it only computes.
    pub(crate) fn classify(&self, parts: &[String], args: &[Option<String>]) -> Option<Effect> {
        let name = parts.last().map(String::as_str).unwrap_or("");
        let schema = parts.len().checked_sub(2).map(|i| parts[i].as_str());
        let display = parts.join(".");

        let declared = schema
            .and_then(|s| self.declared.get(&format!("{s}.{name}")))
            .or_else(|| self.declared.get(name));
        if let Some(&class) = declared {
            return (class != StatementClass::Read).then(|| {
                Effect::new(
                    class,
                    format!("calls {display}() (declared {class} in config)"),
                )
            });
        }
        if let Some(effect) = builtin_effect(name, &display, args) {
            return Some(effect);
        }
        let builtin = match schema {
            None | Some("pg_catalog") => builtins().contains(name),
            Some("information_schema") => true,
            Some(_) => false,
        };
        (!builtin).then(|| {
            Effect::new(
                StatementClass::Unknown,
                format!("calls {display}(), which is not a built-in function (it may do anything)"),
            )
        })
    }
}

fn builtins() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        include_str!("data/builtin_functions.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

const ADMIN: &[&str] = &[
    "lo_import",
    "lo_export",
    "pg_read_file",
    "pg_read_file_old",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_current_logfile",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_rotate_logfile_old",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_sync_replication_slots",
    "pg_logical_emit_message",
    "pg_log_backend_memory_contexts",
    "pg_nextoid",
    "pg_stop_making_pinned_objects",
    "pg_import_system_collations",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_show_all_file_settings",
    "pg_extension_config_dump",
    "pg_logdir_ls",
    "pg_restore_relation_stats",
    "pg_clear_relation_stats",
    "pg_restore_attribute_stats",
    "pg_clear_attribute_stats",
];

const ADMIN_PREFIXES: &[&str] = &[
    "pg_ls_",
    "pg_stat_reset",
    "binary_upgrade_",
    "dblink",
    "pg_replication_origin_",
    "pg_file_",
    "pg_logical_slot_",
];

const WRITE: &[&str] = &[
    "nextval",
    "setval",
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_put",
    "lo_truncate",
    "lo_truncate64",
    "lo_unlink",
    "lowrite",
];

const MAINTENANCE: &[&str] = &[
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
];

const SESSION: &[&str] = &["pg_notify", "setseed", "pg_stat_clear_snapshot"];

/// Functions that run SQL passed to them as text: the analysis cannot see that SQL.
const DYNAMIC_SQL: &[&str] = &[
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "ts_stat",
];

fn builtin_effect(name: &str, display: &str, args: &[Option<String>]) -> Option<Effect> {
    use StatementClass::*;
    let class = if name == "set_config" {
        return Some(set_config_effect(display, args));
    } else if ADMIN.contains(&name) || ADMIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Admin
    } else if WRITE.contains(&name) {
        Write
    } else if MAINTENANCE.contains(&name) {
        Maintenance
    } else if SESSION.contains(&name) || name.starts_with("pg_advisory_unlock") {
        Session
    } else if name.starts_with("pg_advisory_") || name.starts_with("pg_try_advisory_") {
        Lock
    } else if DYNAMIC_SQL.contains(&name) || (name == "ts_rewrite" && args.len() == 2) {
        return Some(Effect::new(
            Unknown,
            format!("calls {display}(), which runs SQL given as text"),
        ));
    } else {
        return None;
    };
    Some(Effect::new(class, format!("calls {display}()")))
}

fn set_config_effect(display: &str, args: &[Option<String>]) -> Effect {
    match args.first() {
        Some(Some(setting)) => {
            let value = args.get(1).and_then(|v| v.as_deref());
            let mut effect = setting_effect(setting, value);
            effect.detail = format!("{display}('{setting}', …)");
            effect
        }
        _ => Effect::new(
            StatementClass::Unknown,
            format!("{display}() of a setting named by an expression"),
        ),
    }
}

/// Settings that let a session escape the gateway's view or the server's safety checks.
const SENSITIVE_SETTINGS: &[&str] = &[
    "session_replication_role",
    "local_preload_libraries",
    "session_preload_libraries",
    "shared_preload_libraries",
    "dynamic_library_path",
    "allow_system_table_mods",
    "allow_in_place_tablespaces",
    "ignore_system_indexes",
    "ignore_checksum_failure",
    "ignore_invalid_pages",
    "zero_damaged_pages",
    "jit_provider",
    "lo_compat_privileges",
    "restrict_nonsystem_relation_kind",
    "password_encryption",
    "temp_file_limit",
    "max_stack_depth",
    "exit_on_error",
    "commit_delay",
];

const SENSITIVE_PREFIXES: &[&str] = &["log_", "debug_", "trace_", "track_", "wal_", "ssl"];

/// Settings that change how the server splits statement text into tokens: after such a change
/// the gateway's parse could differ from the server's.
const LEXING_SETTINGS: &[&str] = &["standard_conforming_strings", "backslash_quote"];

/// Client encodings under which the server reads statement bytes as the gateway (UTF-8) does.
const SAFE_ENCODINGS: &[&str] = &["utf8", "utf-8", "unicode"];

/// The effect of setting `name` (`SET`, `RESET`, `set_config`) to `value` (`None` = the default).
pub(crate) fn setting_effect(name: &str, value: Option<&str>) -> Effect {
    use StatementClass::*;
    let name = name.to_ascii_lowercase();
    let detail = format!("SET {name}");
    match name.as_str() {
        "role" | "session_authorization" => Effect::new(Privilege, detail),
        "client_encoding" | "names" => match value {
            Some(v) if !SAFE_ENCODINGS.contains(&v.to_ascii_lowercase().as_str()) => Effect::new(
                Admin,
                format!("SET client_encoding to {v} (the gateway reads statements as UTF-8 only)"),
            ),
            _ => Effect::new(Session, detail),
        },
        n if LEXING_SETTINGS.contains(&n) => Effect {
            class: Admin,
            detail: format!("{detail} (changes how statement text is read)"),
            lexing: true,
        },
        n if SENSITIVE_SETTINGS.contains(&n)
            || SENSITIVE_PREFIXES.iter().any(|p| n.starts_with(p)) =>
        {
            Effect::new(Admin, detail)
        }
        _ => Effect::new(Session, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(name: &str, args: &[Option<&str>]) -> Option<StatementClass> {
        let parts: Vec<String> = name.split('.').map(str::to_owned).collect();
        let args: Vec<Option<String>> = args.iter().map(|a| a.map(str::to_owned)).collect();
        FunctionCatalog::new()
            .classify(&parts, &args)
            .map(|e| e.class)
    }

    #[test]
    fn builtins_are_reads_and_dangerous_ones_are_classified() {
        use StatementClass::*;
        assert_eq!(class_of("now", &[]), None);
        assert_eq!(class_of("pg_catalog.format_type", &[None, None]), None);
        assert_eq!(
            class_of("pg_read_file", &[Some("/etc/passwd")]),
            Some(Admin)
        );
        assert_eq!(class_of("pg_catalog.lo_import", &[Some("/x")]), Some(Admin));
        assert_eq!(class_of("public.dblink_exec", &[]), Some(Admin));
        assert_eq!(class_of("pg_ls_dir", &[Some(".")]), Some(Admin));
        assert_eq!(class_of("nextval", &[Some("s")]), Some(Write));
        assert_eq!(class_of("pg_advisory_lock", &[None]), Some(Lock));
        assert_eq!(
            class_of("query_to_xml", &[Some("delete from t")]),
            Some(Unknown)
        );
        assert_eq!(class_of("my_func", &[]), Some(Unknown));
        assert_eq!(class_of("public.now", &[]), Some(Unknown));
        assert_eq!(
            class_of("information_schema._pg_expandarray", &[None]),
            None
        );
    }

    #[test]
    fn set_config_is_judged_by_the_setting() {
        use StatementClass::*;
        let role = [Some("role"), Some("postgres"), Some("false")];
        assert_eq!(class_of("set_config", &role), Some(Privilege));
        let upper = [Some("ROLE"), Some("postgres"), None];
        assert_eq!(class_of("set_config", &upper), Some(Privilege));
        let path = [Some("search_path"), Some("public"), None];
        assert_eq!(class_of("set_config", &path), Some(Session));
        let repl = [Some("session_replication_role"), Some("replica"), None];
        assert_eq!(class_of("set_config", &repl), Some(Admin));
        assert_eq!(class_of("set_config", &[None, None, None]), Some(Unknown));
    }

    #[test]
    fn declared_functions_override() {
        let mut catalog = FunctionCatalog::new();
        catalog.declare("order_total", StatementClass::Read);
        catalog.declare("shop.archive", StatementClass::Write);
        assert_eq!(catalog.classify(&["order_total".into()], &[]), None);
        let e = catalog
            .classify(&["shop".into(), "archive".into()], &[])
            .unwrap();
        assert_eq!(e.class, StatementClass::Write);
    }

    #[test]
    fn encodings_other_than_utf8_are_admin() {
        assert_eq!(
            setting_effect("client_encoding", Some("SJIS")).class,
            StatementClass::Admin
        );
        assert_eq!(
            setting_effect("client_encoding", Some("UTF8")).class,
            StatementClass::Session
        );
        assert!(setting_effect("standard_conforming_strings", Some("off")).lexing);
    }
}
