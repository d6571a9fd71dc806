//! `postern demo`: a throwaway PostgreSQL with the sample shop, a gateway in front of it, a
//! token, and the exact command to connect. Ctrl-C or SIGTERM stops everything it started.

use crate::config::RawConfig;
use crate::serve;
use anyhow::{Context, Result};
use postern_auth::{GatewayKey, TokenIssuer, TokenRequest};
use postern_core::IdentityKind;
use postern_testkit::TempPostgres;
use std::path::Path;
use std::time::Duration;

/// `postern demo`
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Port for the gateway's PostgreSQL listener (default: 15432, or a free one if taken).
    #[arg(long)]
    port: Option<u16>,
}

/// Runs the demo until a signal arrives.
pub async fn run(args: DemoArgs) -> Result<()> {
    eprintln!("Starting a throwaway PostgreSQL with the sample shop database...");
    let upstream = tokio::task::spawn_blocking(|| -> Result<TempPostgres> {
        let pg = TempPostgres::start().context("starting PostgreSQL (is it installed?)")?;
        pg.create_database("shop")?;
        pg.load_sample("shop")?;
        Ok(pg)
    })
    .await??;

    let data_dir = tempfile::Builder::new().prefix("postern-demo-").tempdir()?;
    let port = args
        .port
        .unwrap_or_else(|| if port_free(15432) { 15432 } else { 0 });
    let config_text = format!(
        r#"data_dir = "{data}"

[listen]
postgres = "127.0.0.1:{port}"

[[targets]]
name = "shop"
kind = "postgres"
url = "{url}"

# The policy example of docs/policy.md: agents cannot change the schema or write without a
# WHERE, their other writes wait for a dba, and customers' personal data is masked for them.
[[rules]]
name = "agents-no-ddl"
when = {{ kind = "agent", targets = ["shop"], statements = ["ddl", "privilege", "admin", "unknown"] }}
action = "block"

[[rules]]
name = "no-unbounded-writes"
when = {{ kind = "agent", statements = ["unbounded_write"] }}
action = "block"

[[rules]]
name = "agent-writes-need-approval"
when = {{ kind = "agent", statements = ["write"] }}
action = "approve"
approvers = ["dba"]
timeout = "5m"

[[masks]]
name = "customer-pii"
when = {{ kind = "agent", targets = ["shop"] }}
columns = ["customers.ssn", "customers.email", "customers.card"]
detectors = ["email", "credit_card", "us_ssn", "iban", "phone"]
strategy = "redact"
"#,
        data = data_dir.path().display(),
        url = upstream.url("shop"),
    );
    let config = RawConfig::parse(&config_text, Path::new("(demo)"))?;
    let config_path = data_dir.path().join("postern.toml");
    std::fs::write(&config_path, &config_text)?;
    let running = serve::start(&config).await?;

    let key = GatewayKey::load_or_create(&config.data_dir)?;
    let token = TokenIssuer::new(&key).issue(&TokenRequest {
        subject: "demo-agent".into(),
        groups: vec!["agents".into()],
        kind: IdentityKind::Agent,
        ttl: Duration::from_secs(8 * 3600),
    })?;
    let addr = running.postgres_addr;
    println!(
        "\nPostern demo is running: a gateway on {addr} in front of a throwaway PostgreSQL.\n\
         \n\
         Connect as the agent \"demo-agent\" (token valid 8h):\n\
         \n\
         PGPASSWORD='{token}' psql \"host={host} port={port} dbname=shop user=demo-agent sslmode=require\"\n\
         \n\
         Then try (the policy of docs/policy.md applies to this agent):\n  \
           SELECT id, name, email, phone FROM customers ORDER BY id LIMIT 5;   -- masked\n  \
           SELECT count(*) FROM orders;\n  \
           DROP TABLE orders;                                  -- refused (agents-no-ddl)\n  \
           UPDATE orders SET status = 'paid' WHERE id = 1000;  -- held for a dba\n  \
           \\d customers\n\
         \n\
         Decide held statements as a dba: postern --config {config} approvals list / approve ID\n\
         (with POSTERN_TOKEN from the token command below, --group dba).\n\
         \n\
         More tokens: postern --config {config} token issue --subject alice --group dba --kind human\n\
         Press Ctrl-C to stop the demo (the database and the gateway go away with it).",
        host = addr.ip(),
        port = addr.port(),
        config = config_path.display(),
    );
    serve::wait_for_signal().await;
    eprintln!("Stopping the demo...");
    running.shutdown.cancel();
    let _ = running.done.await;
    drop(upstream);
    drop(data_dir);
    Ok(())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
