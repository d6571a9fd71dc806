fn main() {
    let sql = std::env::args().nth(1).unwrap();
    let parsed = pg_query::parse(&sql, pg_query::ParserOptions::default()).unwrap();
    println!(
        "{}",
        serde_json::to_string(&parsed.protobuf.stmts[0]).unwrap()
    );
}
