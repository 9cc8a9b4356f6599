//! Many Server-Sent Events clients on one event's stream, for `bench/streams.sh`: each reads its
//! stream over a plain TCP connection and records, for every message, the delay from the
//! change's `occurred_at` to its receipt. Prints one JSON object with the percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// host:port of the instance
    #[arg(long)]
    addr: String,
    #[arg(long)]
    event: String,
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// How long to read after every client is connected.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Created once every client is connected.
    #[arg(long)]
    ready_file: Option<String>,
}

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    failed: AtomicU64,
    messages: AtomicU64,
    resets: AtomicU64,
}

async fn client(args: Arc<Args>, counts: Arc<Counts>, stop: Arc<AtomicBool>) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let Ok(mut stream) = TcpStream::connect(&args.addr).await else {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return histogram;
    };
    let request = format!(
        "GET /v1/events/{}/stream HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        args.event, args.addr
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return histogram;
    }
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut ready = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        buffer.extend_from_slice(&chunk[..n]);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            if text.contains("event: ready") && !ready {
                ready = true;
                counts.connected.fetch_add(1, Ordering::Relaxed);
            }
            if text.contains("event: reset") {
                counts.resets.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(at) = text.find("\"occurred_at\":\"") {
                let rest = &text[at + 15..];
                if let Some(end) = rest.find('"')
                    && let Ok(occurred) = chrono::DateTime::parse_from_rfc3339(&rest[..end])
                {
                    let delay = chrono::Utc::now().signed_duration_since(occurred);
                    let micros = delay.num_microseconds().unwrap_or(0).max(1) as u64;
                    let _ = histogram.record(micros);
                    counts.messages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    histogram
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    // Connect in waves, then read for `seconds` once all are in.
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        tasks.push(tokio::spawn(client(args.clone(), counts.clone(), stop.clone())));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let began = Instant::now();
    while counts.connected.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed) < args.clients as u64
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = began.elapsed().as_secs_f64();
    if let Some(path) = &args.ready_file {
        std::fs::write(path, "ready").expect("write the ready file");
    }
    eprintln!("stream_clients: {} connected in {connect_secs:.1} s", counts.connected.load(Ordering::Relaxed));
    // Read for `seconds` from now (not from the connect deadline).
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        if let Ok(h) = task.await {
            all.add(h).ok();
        }
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "clients": args.clients,
            "connected": counts.connected.load(Ordering::Relaxed),
            "failed": counts.failed.load(Ordering::Relaxed),
            "connect_seconds": connect_secs,
            "messages": counts.messages.load(Ordering::Relaxed),
            "resets": counts.resets.load(Ordering::Relaxed),
            "delay_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": all.max() as f64 / 1000.0 },
        })
    );
}
