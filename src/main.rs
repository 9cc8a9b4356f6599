use std::process::ExitCode;

// mimalloc instead of glibc malloc: under a burst of concurrent requests, glibc's arena locks
// showed up in the profile (malloc/free about 15% of holdfast's samples, with lock waits).
// Built with `no_thp`: mimalloc would otherwise madvise its arenas for transparent huge pages,
// and every page it reuses after a purge then faults in (and zeroes) 2 MiB at a time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holdfast::api::auth::JwtKeys;
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            telemetry::init_tracing(config.log_format);
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
        Command::Openapi => match holdfast::api::openapi_document().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("could not render the OpenAPI document: {err}");
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
