use std::process::ExitCode;

// mimalloc instead of glibc malloc: under a burst of concurrent requests, glibc's arena locks
// showed up in the profile (malloc/free about 15% of holdfast's samples, with lock waits).
// Built with `no_thp`: mimalloc would otherwise madvise its arenas for transparent huge pages,
// and every page it reuses after a purge then faults in (and zeroes) 2 MiB at a time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holdfast::auth::JwtKeys;
use holdfast::config::{Config, DatabaseUrl, LogFormat, Secret};
use holdfast::startup::{Application, migrate, shutdown_signal};
use holdfast::telemetry;

/// holdfast: hold and book contested inventory, never selling anything twice.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve HTTP until SIGINT/SIGTERM.
    Serve(Box<Config>),
    /// Apply pending migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: DatabaseUrl,
    },
    /// Mint a bearer token for local development.
    Token {
        #[arg(long)]
        sub: String,
        /// Grant the admin role.
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value_t = 86_400)]
        ttl_seconds: u64,
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: Secret,
    },
    /// Print the OpenAPI 3.1 document (the one served at /openapi.json) and exit.
    Openapi,
    /// Exit 0 if the local instance answers `GET /health` with 200 (for container HEALTHCHECKs,
    /// so the image needs no curl).
    Healthcheck {
        #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
        listen_addr: std::net::SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            telemetry::init_tracing(config.server.log_format);
            tracing::info!(config = ?config, "starting");
            let app = match Application::build(*config).await {
                Ok(app) => app,
                Err(err) => {
                    tracing::error!(error = %err, "start-up failed");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(err) = app.run_until(shutdown_signal()).await {
                tracing::error!(error = %err, "server failed");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Migrate { database_url } => {
            telemetry::init_tracing(LogFormat::Pretty);
            let result = async {
                let pool = sqlx::PgPool::connect(&database_url.0).await?;
                migrate(&pool).await?;
                Ok::<_, Box<dyn std::error::Error>>(())
            }
            .await;
            match result {
                Ok(()) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("migration failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Openapi => match serde_json::to_string_pretty(&holdfast::api::openapi_document()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("could not render the OpenAPI document: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Healthcheck { listen_addr } => match healthcheck(listen_addr).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("unhealthy: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Token { sub, admin, ttl_seconds, jwt_secret } => {
            match JwtKeys::new(jwt_secret.expose()).mint(&sub, admin, Duration::from_secs(ttl_seconds)) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("could not mint a token: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `GET /health` over plain HTTP/1.1 on the loopback side of `listen_addr`, within 2 s.
async fn healthcheck(listen_addr: std::net::SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.map_err(|e| e.to_string())?;
        if &head[9..12] == b"200" { Ok(()) } else { Err(String::from_utf8_lossy(&head).into_owned()) }
    };
    tokio::time::timeout(Duration::from_secs(2), check).await.map_err(|_| "timed out".to_owned())?
}
