//! What the benchmark's servers share: a listener on 127.0.0.1 (`BENCH_PORT`, else a free port)
//! whose port is printed on stdout as `{"port": N}`, for `scripts/bench.sh` to read.

use std::io::Write;

pub async fn listen() -> std::io::Result<tokio::net::TcpListener> {
    let port: u16 = std::env::var("BENCH_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{{\"port\": {}}}", listener.local_addr()?.port())?;
    out.flush()?;
    Ok(listener)
}
