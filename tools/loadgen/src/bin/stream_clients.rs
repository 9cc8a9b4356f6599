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

/// What one client saw: every message's delay (µs), and per second of receipt (from `epoch`) how
/// many messages came and how many of them were later than a second. Plain vectors, merged into
/// one histogram at the end: ten thousand histograms growing as the first messages arrive cost
/// enough page faults and copies to delay those messages themselves.
struct Seen {
    delays: Vec<u32>,
    per_second: Vec<[u32; 2]>,
}

async fn client(args: Arc<Args>, counts: Arc<Counts>, stop: Arc<AtomicBool>, epoch: Instant) -> Seen {
    let mut seen = Seen { delays: Vec::with_capacity(1024), per_second: vec![[0, 0]; args.seconds as usize + 130] };
    let Ok(mut stream) = TcpStream::connect(&args.addr).await else {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    };
    let request = format!(
        "GET /v1/events/{}/stream HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        args.event, args.addr
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    }
    // Parsed in place, as bytes: this tool shares the machine with the instance it measures, so
    // what it spends per message is taken from the instance (no copies, no UTF-8 conversion of
    // whole messages, the clock read once per read, counters added up at the end).
    let message_end = memchr::memmem::Finder::new(b"\n\n");
    let occurred_at = memchr::memmem::Finder::new(b"\"occurred_at\":\"");
    let ready_event = memchr::memmem::Finder::new(b"event: ready\n");
    let reset_event = memchr::memmem::Finder::new(b"event: reset\n");
    let mut buffer = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    let mut ready = false;
    while !stop.load(Ordering::Relaxed) {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let n = match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer[filled..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        let now = chrono::Utc::now();
        let second = epoch.elapsed().as_secs() as usize;
        if seen.per_second.len() <= second {
            seen.per_second.resize(second + 1, [0, 0]);
        }
        // A message may end in the byte before the new ones (its first "\n" read earlier).
        let mut scan = filled.saturating_sub(1);
        filled += n;
        let mut start = 0;
        while let Some(at) = message_end.find(&buffer[scan..filled]) {
            let end = scan + at + 2;
            let block = &buffer[start..end];
            // ("event: ...\n" cannot occur inside a data line: the data is one line of JSON.)
            if ready_event.find(block).is_some() {
                if !ready {
                    ready = true;
                    counts.connected.fetch_add(1, Ordering::Relaxed);
                }
            } else if reset_event.find(block).is_some() {
                counts.resets.fetch_add(1, Ordering::Relaxed);
            } else if let Some(at) = occurred_at.find(block) {
                let rest = &block[at + 15..];
                if let Some(close) = memchr::memchr(b'"', rest)
                    && let Ok(text) = std::str::from_utf8(&rest[..close])
                    && let Ok(occurred) = chrono::DateTime::parse_from_rfc3339(text)
                {
                    let micros =
                        now.signed_duration_since(occurred).num_microseconds().unwrap_or(0).clamp(1, u32::MAX.into());
                    seen.delays.push(micros as u32);
                    seen.per_second[second][0] += 1;
                    seen.per_second[second][1] += u32::from(micros > 1_000_000);
                }
            }
            start = end;
            scan = end;
        }
        // Keep the unfinished message at the front.
        buffer.copy_within(start..filled, 0);
        filled -= start;
    }
    counts.messages.fetch_add(seen.delays.len() as u64, Ordering::Relaxed);
    seen
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    // Connect in waves, then read for `seconds` once all are in.
    let mut tasks = Vec::with_capacity(args.clients);
    let epoch = Instant::now();
    for i in 0..args.clients {
        tasks.push(tokio::spawn(client(args.clone(), counts.clone(), stop.clone(), epoch)));
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
    let mut per_second: Vec<[u64; 2]> = Vec::new();
    for task in tasks {
        if let Ok(seen) = task.await {
            for delay in seen.delays {
                let _ = all.record(delay.into());
            }
            if per_second.len() < seen.per_second.len() {
                per_second.resize(seen.per_second.len(), [0, 0]);
            }
            for (total, [messages, late]) in per_second.iter_mut().zip(seen.per_second) {
                total[0] += u64::from(messages);
                total[1] += u64::from(late);
            }
        }
    }
    while per_second.last() == Some(&[0, 0]) {
        per_second.pop();
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
            // Per second since the first connection: [messages, of which later than 1 s].
            "per_second": per_second,
        })
    );
}
