//! The `consentgate` command: serve, migrate, and manage tenants and tokens.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use consentgate::{
    app::{self, App},
    config::Settings,
    db, demo,
    tenants::{self, TenantSlug},
    tokens::{self, Role},
};
use secrecy::ExposeSecret;

/// mimalloc instead of glibc's malloc: allocation was ~15% of the gateway's CPU under ingest load
/// (docs/scaling.md). Built with `no_thp`: otherwise mimalloc asks the kernel for transparent huge
/// pages on its arenas, and every 2 MiB page it touched counted whole in the peak RSS (105 MB
/// against 79 in the benchmark's fourth round, docs/scaling.md#peak-rss-and-mimallocs-huge-pages).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Consent management and analytics forwarding gateway")]
struct Cli {
    /// Configuration file (TOML). Default: ./consentgate.toml when it exists.
    #[arg(long, global = true, env = "CONSENTGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve the API, the banner and the delivery workers.
    Serve {
        /// Create (idempotently) a `demo` tenant and print its admin token and URLs to try.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its first admin token (shown once).
    Create {
        /// 3-63 lowercase letters, digits and '-'.
        slug: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a tenant and print it (shown once).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        role: CliRole,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliRole {
    Admin,
    Auditor,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("consentgate: {e}");
            return ExitCode::from(2);
        }
    };
    consentgate::telemetry::init_logging(&settings.log);
    match run(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consentgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { demo } => serve(settings, demo).await,
        Command::Migrate => {
            let db = db::connect(&settings.database).await?;
            db::migrate(&db).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Tenant { command: TenantCommand::Create { slug, name } } => {
            let db = connect_migrated(&settings).await?;
            let slug = TenantSlug::parse(&slug)?;
            let tenant = tenants::create(&db, &slug, &name).await?;
            let (_, token) = tokens::create(&db, tenant.id, Role::Admin, "first admin").await?;
            // One JSON line on stdout, for scripts; the token is shown only here.
            println!("{}", serde_json::json!({"tenant": tenant.slug, "admin_token": token.expose_secret()}));
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { tenant, role, name } } => {
            let db = connect_migrated(&settings).await?;
            let tenant = tenants::find(&db, &tenant).await?.ok_or_else(|| anyhow::anyhow!("no tenant {tenant:?}"))?;
            let role = match role {
                CliRole::Admin => Role::Admin,
                CliRole::Auditor => Role::Auditor,
            };
            let (_, token) = tokens::create(&db, tenant.id, role, &name).await?;
            println!(
                "{}",
                serde_json::json!({"tenant": tenant.slug, "role": role.as_str(), "token": token.expose_secret()})
            );
            Ok(())
        }
    }
}

async fn connect_migrated(settings: &Settings) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = db::connect(&settings.database).await?;
    db::migrate(&db).await?;
    Ok(db)
}

async fn serve(settings: Settings, with_demo: bool) -> anyhow::Result<()> {
    let app = App::start(settings).await?;
    if with_demo {
        let demo = demo::seed(&app.state.db, &app.state.public_url).await?;
        let base = app.state.public_url.clone();
        let t = &demo.tenant.slug;
        println!(
            "\nconsentgate demo is running.\n\
             \n  demo page:      {base}/demo\
             \n  banner script:  {base}/v1/tenants/{t}/banner.js\
             \n  API document:   {base}/v1/openapi.json\
             \n  admin token:    {token}\
             \n\n  try:  curl -H 'Authorization: Bearer {token}' {base}/v1/tenants/{t}/tokens\n",
            token = demo.admin_token.expose_secret(),
        );
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        token.cancel();
    });
    app.wait().await
}
