//! `cargo run --release -p tuikuan-reconciliation --example bench -- [end-to-end|parse-match] ROWS [DIR]`

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("end-to-end");
    let rows: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = match args.get(3) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let report = match mode {
        "parse-match" => tuikuan_reconciliation::bench::run_parse_match(rows, &dir).await?,
        _ => tuikuan_reconciliation::bench::run(rows, &dir).await?,
    };
    println!("{report}");
    Ok(())
}
