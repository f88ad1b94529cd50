//! The load generator of `scripts/bench.sh`: `CONNS` keep-alive HTTP/1.1 connections, each
//! posting one event after the other (closed loop: the next request when the previous answer is
//! in) for `SECS` seconds, then one JSON line on stdout: requests, 2xx, errors, events/s, p50,
//! p99 and the largest latency. Plain tokio sockets rather than an HTTP client library: a few
//! hundred lines less to build, and little CPU taken from the server on a 2-core machine (it
//! runs on one thread).
//!
//! `bench_load URL KEY [CONNS] [SECS] [TAG]` — URL `http://127.0.0.1:PORT/path`, KEY a secret
//! ingest key (sent as a bearer token), TAG makes the idempotency keys unique across runs. URL
//! may be several, comma-separated (instances of one gateway on one database): the connections
//! are spread over them in turn, and the line sums them all.
//!
//! Each event is a realistic page view of ~450 bytes: its own idempotency key, one of 100
//! visitors (the script records consent for them), one of 500 pages with UTM parameters, a
//! browser user agent and an IP, as a site's server forwards them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

struct Target {
    addr: String,
    host: String,
    path: String,
    key: String,
    tag: String,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    /// Latencies of answered requests, in microseconds.
    latencies: Vec<u32>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench_load URL KEY [CONNS=64] [SECS=10] [TAG]");
        std::process::exit(2);
    }
    let conns: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(64);
    let secs: u64 = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(10);
    let tag = args.get(5).cloned().unwrap_or_else(|| format!("{}", std::process::id()));
    let targets: Vec<Arc<Target>> = args[1]
        .split(',')
        .map(|url| {
            let url = url.strip_prefix("http://").expect("an http:// URL");
            let (host, path) = url.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((url, "/".into()));
            Arc::new(Target {
                addr: host.to_string(),
                host: host.to_string(),
                path,
                key: args[2].clone(),
                tag: tag.clone(),
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let tasks: Vec<_> =
            (0..conns).map(|c| tokio::spawn(connection(targets[c % targets.len()].clone(), c, until))).collect();
        let mut all = Tally::default();
        for t in tasks {
            let t = t.await.unwrap();
            all.ok += t.ok;
            all.errors += t.errors;
            all.latencies.extend(t.latencies);
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if all.latencies.is_empty() {
                return 0.0;
            }
            let i = ((all.latencies.len() as f64 * p).ceil() as usize).clamp(1, all.latencies.len()) - 1;
            f64::from(all.latencies[i]) / 1000.0
        };
        println!(
            "{{\"requests\": {}, \"ok\": {}, \"errors\": {}, \"events_per_sec\": {:.1}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}",
            all.ok + all.errors,
            all.ok,
            all.errors,
            all.ok as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            pct(1.0),
        );
    });
}

/// One connection's closed loop; reconnects after an error or a `Connection: close`.
async fn connection(target: Arc<Target>, conn: usize, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut n = 0u64;
    while Instant::now() < until {
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(&target.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream.insert(s)
                }
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        n += 1;
        let request = request(&target, conn, n);
        let sent = Instant::now();
        match exchange(s, &request, &mut buf).await {
            Ok((status, keep_alive)) => {
                tally.latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.errors += 1;
                }
                if !keep_alive {
                    stream = None;
                }
            }
            Err(_) => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    tally
}

fn request(t: &Target, conn: usize, n: u64) -> Vec<u8> {
    let visitor = (conn as u64 * 7919 + n) % 100;
    let page = (conn as u64 * 31 + n) % 500;
    let body = format!(
        concat!(
            r#"{{"event_name":"pageview","page_url":"https://shop.example.com/products/item-{page}?utm_source=newsletter&utm_medium=email&utm_campaign=bf","#,
            r#""referrer":"https://www.google.com/","title":"Item {page} - Example Shop","language":"sv-SE","screen":"1920x1080","#,
            r#""visitor_id":"visitor-{visitor}","anonymous_id":"visitor-{visitor}","session_id":"s-{conn}-{visitor}","#,
            r#""user_agent":"{ua}","ip":"203.0.113.{octet}","idempotency_key":"bench-{tag}-{conn}-{n}"}}"#
        ),
        page = page,
        visitor = visitor,
        conn = conn,
        ua = UA,
        octet = visitor + 1,
        tag = t.tag,
        n = n,
    );
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        t.path,
        t.host,
        t.key,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Writes one request and reads its answer: `(status, keep-alive)`. Bodies must carry a
/// `Content-Length` (the gateway's and the ceiling's do); anything else is an error.
async fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    s.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("response head too large"));
        }
        let mut chunk = [0u8; 4096];
        let read = s.read(&mut chunk).await?;
        if read == 0 {
            return Err(bad("connection closed"));
        }
        buf.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or_else(|| bad("status"))?;
    let (mut length, mut keep_alive) = (None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    let length = length.ok_or_else(|| bad("no content-length"))?;
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 4096];
        let read = s.read(&mut chunk).await?;
        if read == 0 {
            return Err(bad("connection closed mid-body"));
        }
        have += read;
    }
    Ok((status, keep_alive))
}
