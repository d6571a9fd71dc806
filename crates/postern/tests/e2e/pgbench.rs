//! pgbench through the gateway in all three query modes. `-M prepared` is the one that breaks
//! poolers that mishandle named prepared statements; `-M extended` uses unnamed statements and
//! portals; `-M simple` plain Query messages. Four clients run at once, so sessions overlap.

use std::time::Duration;

use crate::util::*;

#[test]
fn pgbench_runs_clean_in_every_query_mode() {
    let fx = Fixture::with(|pg| {
        pg.create_database("bench")
            .expect("creating the bench database");
        GatewayConfig::shop(pg).target(Target::new("bench", pg.url("bench")))
    });
    fx.direct("bench").pgbench_init();

    for mode in ["simple", "extended", "prepared"] {
        let mut cmd = fx.gateway("bench").command("pgbench");
        cmd.args(["-n", "-t", "200", "-c", "4", "-j", "2", "-M", mode]);
        let out = run_with_timeout(cmd, None, Duration::from_secs(180));
        let what = format!("pgbench -M {mode} through the gateway");
        assert_success(&out, &what);
        let text = stdout(&out);
        assert!(
            text.contains("number of transactions actually processed: 800/800"),
            "{what}: not all transactions ran:\n{text}\n{}",
            stderr(&out)
        );
        assert!(
            text.contains("number of failed transactions: 0 "),
            "{what}: some transactions failed:\n{text}\n{}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("error"),
            "{what}: pgbench reported errors:\n{}",
            stderr(&out)
        );
    }
    // 3 modes x 4 clients x 200 transactions, each adding one history row.
    assert_eq!(
        fx.direct("bench")
            .query("select count(*) from pgbench_history"),
        "2400"
    );
}
