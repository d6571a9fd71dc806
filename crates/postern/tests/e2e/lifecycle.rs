//! The gateway process itself: it stops cleanly on SIGTERM (ending its sessions), and a config
//! it cannot use is reported at start instead of at the first connection.

use std::process::{Command, Stdio};
use std::time::Duration;

use postern_testkit::free_port;

use crate::util::*;

#[tokio::test]
async fn sigterm_stops_the_gateway_and_its_sessions() {
    let mut fx = Fixture::start();
    let (client, _) = fx.gateway(SHOP).client().await;
    assert_eq!(
        client
            .query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    let status = Command::new("kill")
        .args(["-TERM", &fx.gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
    let exit = fx
        .gw
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway did not exit within 30 s of SIGTERM");
    assert!(
        exit.success(),
        "the gateway exited with {exit} after SIGTERM"
    );

    // The open session is over: its next query fails instead of hanging.
    let next = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await;
    assert!(
        matches!(next, Ok(Err(_))),
        "a session outlived the gateway: {next:?}"
    );
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", fx.gw.port)).is_err());
}

#[test]
fn an_unusable_config_is_reported_at_start() {
    let pg = upstream();
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        GatewayConfig::shop(&pg).render(&dir.path().join("data"), free_port(), free_port());
    config.push_str("\n[[targets]]\nname = \"broken\"\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/x\"\ntls = \"sometimes\"\n");
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(postern_bin());
    cmd.args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null());
    let out = run_with_timeout(cmd, None, Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "postern serve started with tls = \"sometimes\""
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("sometimes"),
        "the error does not show the bad value:\n{text}"
    );
    assert!(
        text.contains("broken") || text.contains("tls"),
        "the error does not say where the bad value is:\n{text}"
    );
}
