//! `presence-server`: the server binary, and its client subcommands (`token`, `query`, `watch`).
//!
//! `cargo run --release` starts a working server with nothing else installed (in-process registry,
//! embedded last_seen store in `./presence-data`, dev-mode tokens on loopback). Point it at Redis and
//! DynamoDB with `--redis-url` and `--dynamodb-table` (README, "Running against Redis and DynamoDB").

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use presence_core::user::UserId;
use presence_runtime::auth::{self, Auth};
use presence_runtime::client::{self, Client, ClientError, TokenSource, WatchEvent};
use presence_runtime::clock::{SystemClock, WallClock};
use presence_runtime::config::{Cli, ClientArgs, Command, LogFormat, ServeArgs, TokenArgs};
use presence_runtime::driver::{DriverConfig, Stores};
use presence_runtime::edge::EdgeLimits;
use presence_runtime::privacy::{PrivacyBackend, PrivacyCache, PrivacyCacheConfig};
use presence_runtime::server::{serve_with_admin, ServerConfig};
use presence_runtime::store::{
    open_redis, DurableStore, DynamoConfig, DynamoDurable, MemoryRegistry, RedbDurable, RedisConfig,
    RegistryStore,
};
use presence_runtime::ws::WsLimits;
use tracing::{error, info, warn};

/// mimalloc instead of glibc's allocator: the read path allocates per user (store commands,
/// replies, entries), and glibc's malloc/free was about 40% of the server's CPU under batch
/// queries (BENCHMARKS.md, "What limits the read path").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(t)) => token(&t),
        Some(Command::Query(q)) => run_client(&q.client, &q.users, query),
        Some(Command::Watch(w)) => run_client(&w.client, &w.users, watch),
        None => {
            init_logging(cli.serve.log_format);
            if let Err(e) = cli.serve.validate() {
                error!("{e}");
                eprintln!("presence-server: {e}");
                return ExitCode::from(2);
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("presence-server: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cli.serve)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    error!("exiting with last_seen writes still pending");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    error!("{e}");
                    eprintln!("presence-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn token(t: &TokenArgs) -> ExitCode {
    let user = match UserId::new(&t.user) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("presence-server: invalid --user {:?}: {e}", t.user);
            return ExitCode::from(2);
        }
    };
    let auth = match t.jwt.auth() {
        Ok(Some(auth)) => auth,
        Ok(None) => {
            eprintln!("presence-server: token needs --jwt-secret or --jwt-secret-file");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("presence-server: {e}");
            return ExitCode::from(2);
        }
    };
    let token = auth.issue_with_scope(&user, t.ttl, t.scope.as_deref());
    if t.json {
        let expires = SystemClock.wall().saturating_add(t.ttl);
        let v =
            serde_json::json!({ "user": user.as_str(), "token": token, "expires_at": expires.to_rfc3339() });
        println!("{v}");
    } else {
        println!("{token}");
    }
    ExitCode::SUCCESS
}

/// Runs a client subcommand on a small single-threaded runtime; errors go to stderr (as JSON with
/// `--json`) with the exit code of [`ClientError::exit_code`].
fn run_client<F, Fut>(args: &ClientArgs, names: &[String], command: F) -> ExitCode
where
    F: FnOnce(Client, Vec<UserId>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    // A secret the servers cannot have (too short, unreadable) is a usage error, like on the server.
    let signer = if args.token.is_some() { Ok(None) } else { args.jwt.auth() };
    let signer = match signer {
        Ok(signer) => signer,
        Err(e) => {
            if args.json {
                eprintln!("{}", serde_json::json!({ "error": e.to_string(), "exit_code": 2 }));
            } else {
                eprintln!("presence-server: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let result = (|| {
        let users = client::user_ids(names)?;
        let source = match (&args.token, signer) {
            (Some(t), _) => TokenSource::Given(t.clone()),
            (None, signer) => {
                let user = client::user_ids(std::slice::from_ref(&args.as_user))?.remove(0);
                match signer {
                    Some(auth) => TokenSource::Sign { auth: Box::new(auth), user },
                    None => TokenSource::Dev(user),
                }
            }
        };
        let c = Client::new(&args.url, source, args.timeout)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(command(c, users, args.json))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if args.json {
                eprintln!("{}", serde_json::json!({ "error": e.to_string(), "exit_code": e.exit_code() }));
            } else {
                eprintln!("presence-server: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn query(c: Client, users: Vec<UserId>, json: bool) -> Result<(), ClientError> {
    let entries = c.query(&users).await?;
    let width = entries.iter().map(|e| e.user.as_str().len()).max().unwrap_or(0);
    let now = SystemClock.wall();
    for e in &entries {
        if json {
            println!("{}", client::entry_json(e, None));
        } else {
            println!("{}", client::format_entry(e, width, now));
        }
    }
    Ok(())
}

async fn watch(c: Client, users: Vec<UserId>, json: bool) -> Result<(), ClientError> {
    let width = users.iter().map(|u| u.as_str().len()).max().unwrap_or(0);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    c.watch(&users, stop, |event| {
        let now = SystemClock.wall();
        match event {
            WatchEvent::Snapshot(entries) => {
                for e in &entries {
                    if json {
                        println!("{}", client::entry_json(e, Some("snapshot")));
                    } else {
                        println!("{}", client::format_entry(e, width, now));
                    }
                }
                if !json {
                    println!("-- watching {} user(s); changes follow (Ctrl-C to stop)", entries.len());
                }
            }
            WatchEvent::Change(e) if json => println!("{}", client::entry_json(&e, Some("change"))),
            WatchEvent::Change(e) => {
                println!("{}  {}", client::human_time(now), client::format_entry(&e, width, now))
            }
        }
    })
    .await
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: ServeArgs) -> Result<bool, String> {
    let server_id = args.server_id.clone().unwrap_or_else(|| format!("ws-{:08x}", rand::random::<u32>()));
    // Checked by `validate` already; read again here because the file may be gone by now.
    let configured = args.jwt.auth().map_err(|e| e.to_string())?;
    let dev = configured.is_none();
    let auth = match configured {
        Some(auth) => auth,
        None => Auth::with_rules(
            auth::generate_secret().as_bytes(),
            args.jwt.claim_rules().map_err(|e| e.to_string())?,
        ),
    };
    if dev {
        warn!(
            "DEV MODE: no --jwt-secret given; generated a random secret and enabled POST /v1/dev/token. \
             Anyone who can reach {} can act as any user (only with Host localhost, 127.0.0.1 or \
             [::1]). Never run like this in production.",
            args.listen
        );
    }
    let stores = open_stores(&args, &server_id).await?;
    let listener = bind(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    info!(
        %addr, server_id, registry = stores.registry.kind(), durable = stores.durable.kind(),
        "presence-server listening"
    );
    let admin = match args.admin_listen {
        Some(a) => Some(bind(a).map_err(|e| format!("cannot listen on --admin-listen {a}: {e}"))?),
        None => None,
    };
    println!("presence-server listening on http://{addr}  (WebSocket: ws://{addr}/v1/ws)");
    if let Some(admin) = &admin {
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        info!(%admin_addr, "admin listener: /readyz and /metrics are served there only");
        println!("presence-server admin listening on http://{admin_addr}  (/readyz, /metrics, /healthz)");
    }
    if dev {
        println!("demo page: http://{addr}/  (open it in two tabs, sign in as two users)");
    }
    let config = ServerConfig {
        server_id,
        core: args.core_config(),
        driver: DriverConfig {
            registry_concurrency: 512,
            durable_concurrency: 64,
            shutdown_timeout: args.shutdown_timeout,
            seed: rand::random(),
        },
        auth: auth.with_leeway(args.jwt_leeway),
        dev_tokens: dev,
        allowed_origins: args.allowed_origins.clone(),
        handshake_timeout: args.handshake_timeout,
        max_connections: args.max_connections,
        ws: WsLimits {
            max_message_size: args.max_message_size,
            frame_rate: args.frame_rate,
            frame_burst: args.frame_burst,
            ..WsLimits::default()
        },
        edge: EdgeLimits {
            max_handshakes: args.edge.max_handshakes,
            max_sessions_per_user: args.edge.max_sessions_per_user,
            max_connections_per_ip: args.edge.max_connections_per_ip,
        },
        status_refresh: Duration::from_secs(1),
        max_contacts: args.privacy.max_contacts,
    };
    let flushed =
        serve_with_admin(listener, admin, config, stores, Arc::new(SystemClock), shutdown_signal()).await;
    Ok(flushed)
}

async fn open_stores(args: &ServeArgs, server_id: &str) -> Result<Stores, String> {
    let registry: Arc<dyn RegistryStore> = match &args.redis_url {
        Some(url) => {
            let config = RedisConfig {
                op_timeout: args.store_timeout,
                read_from: args.redis_read,
                ..RedisConfig::new(server_id)
            };
            open_redis(url, config).map_err(|e| format!("--redis-url: {e}"))?
        }
        None => {
            warn!("no --redis-url: in-process registry; presence is visible to this server's clients only");
            Arc::new(MemoryRegistry::new(server_id))
        }
    };
    let (durable, backend): (Arc<dyn DurableStore>, Arc<dyn PrivacyBackend>) = match &args.dynamodb_table {
        Some(table) => {
            let config = DynamoConfig {
                table: table.clone(),
                endpoint: args.dynamodb_endpoint.clone(),
                op_timeout: args.store_timeout,
                contacts_table: args.privacy.dynamodb_contacts_table.clone(),
                ..DynamoConfig::default()
            };
            let store = DynamoDurable::connect(config).await;
            if args.create_table {
                match store.create_table_if_missing(Duration::from_secs(60)).await {
                    Ok(true) => info!(table, "created DynamoDB table"),
                    Ok(false) => {}
                    Err(e) => return Err(format!("--create-table {table}: {e}")),
                }
            }
            let privacy = Arc::new(store.privacy());
            (Arc::new(store), privacy)
        }
        None => {
            let store = RedbDurable::open(&args.data_dir)
                .map_err(|e| format!("embedded store in {}: {e}", args.data_dir.display()))?;
            info!(dir = %args.data_dir.display(), "embedded durable store");
            let store = store.with_op_timeout(args.store_timeout);
            // Settings and contacts in the same file (redb opens a file once per process).
            let privacy = Arc::new(store.privacy());
            (Arc::new(store), privacy)
        }
    };
    let privacy = PrivacyCache::new(backend, privacy_cache_config(args));
    Ok(Stores { registry, durable, privacy })
}

fn privacy_cache_config(args: &ServeArgs) -> PrivacyCacheConfig {
    PrivacyCacheConfig {
        default_last_seen: args.privacy.default_privacy.audience(),
        ttl: args.privacy.privacy_cache_ttl,
        op_timeout: args.store_timeout,
        ..PrivacyCacheConfig::default()
    }
}

/// Binds the listener with a deep accept backlog: tokio's default (1,024) overflows when thousands
/// of clients reconnect at once (BENCHMARKS.md saw SYN retries costing clients a second each).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(8192)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    info!("shutdown signal received");
}
