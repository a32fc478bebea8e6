//! A WS server host: the real `presence_runtime::server::serve` over turmoil's network, with the
//! real Redis executor (`RedisRegistry` over turmoil TCP to the Redis host), the DynamoDB stand-in
//! and the host's skewed clock. Crashing the host drops every task; bouncing it runs this again
//! (a new process: new core, new boot id, new Redis connection).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use presence_runtime::auth::Auth;
use presence_runtime::clock::WallClock;
use presence_runtime::driver::{DriverConfig, Stores};
use presence_runtime::edge::EdgeLimits;
use presence_runtime::privacy::{PrivacyCache, PrivacyCacheConfig};
use presence_runtime::server::{serve, Listener, ServerConfig};
use presence_runtime::store::{AsyncStream, ConnectFuture, RedisConfig, RedisConnector, RedisRegistry};
use presence_runtime::ws::WsLimits;

use crate::world::{bounds, lock, World};

/// turmoil's listener as the runtime's [`Listener`].
pub struct SimListener(pub turmoil::net::TcpListener);

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (s, _) = self.0.accept().await?;
        Ok(s)
    }
}

/// Opens turmoil TCP streams to the Redis host.
pub struct SimRedisConnector;

impl RedisConnector for SimRedisConnector {
    fn connect(&self) -> ConnectFuture {
        Box::pin(async {
            let s = turmoil::net::TcpStream::connect(("redis", 6379)).await?;
            Ok(Box::new(s) as Box<dyn AsyncStream>)
        })
    }
}

/// The core's configuration in the sim: the product's, with the heartbeat and retry times scaled
/// down so that a run of a minute of virtual time holds many session lifetimes.
/// `plant`: a bug planted in the core ([`crate::Plant::in_core`]), `None` in real runs.
pub fn core_config(plant: Option<presence_core::config::PlantedBug>) -> presence_core::Config {
    presence_core::Config {
        ping_interval: Duration::from_millis(bounds::PING_INTERVAL_MS),
        heartbeat_timeout: Duration::from_millis(bounds::HEARTBEAT_TIMEOUT_MS),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(bounds::RETRY_MAX_MS),
        max_clock_skew: Duration::from_millis(bounds::MAX_SKEW_MS as u64),
        max_pending_writes: 1_000,
        lease_ttl: Duration::from_millis(bounds::LEASE_TTL_MS),
        lease_renew_interval: Duration::from_millis(bounds::LEASE_RENEW_MS),
        presence_grace: Duration::from_millis(bounds::OFFLINE_GRACE_MS),
        privacy_refresh: Duration::from_millis(bounds::PRIVACY_TTL_MS),
        planted_bug: plant,
        ..presence_core::Config::default()
    }
}

/// The server host's software.
pub async fn server_main(w: Arc<World>, i: usize) -> turmoil::Result {
    let name = World::server_name(i);
    let incarnation = {
        let mut s = lock(&w.servers);
        s[i].starts.push(w.now());
        s[i].up = true;
        s[i].starts.len() - 1
    };
    w.trace(format!("{name} start incarnation={incarnation}"));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 8080)).await?;
    let redis_config = RedisConfig {
        op_timeout: Duration::from_millis(bounds::REDIS_OP_TIMEOUT_MS),
        connect_timeout: Duration::from_millis(bounds::REDIS_OP_TIMEOUT_MS),
        reconnect_backoff_min: Duration::from_millis(50),
        reconnect_backoff_max: Duration::from_millis(1_000),
        health_check_interval: Duration::from_millis(bounds::REDIS_HEALTH_MS),
        ..RedisConfig::new(name.clone())
    };
    let registry = RedisRegistry::with_connector(
        Arc::new(SimRedisConnector),
        redis::RedisConnectionInfo::default(),
        redis_config,
    );
    let cache = PrivacyCacheConfig {
        ttl: Duration::from_millis(bounds::PRIVACY_TTL_MS),
        ..PrivacyCacheConfig::default()
    };
    let privacy = PrivacyCache::new(Arc::new(w.privacy.clone()), cache);
    let stores = Stores { registry: Arc::new(registry), durable: Arc::new(w.dynamo.clone()), privacy };
    let config = ServerConfig {
        server_id: name.clone(),
        core: core_config(w.params.plant.and_then(crate::Plant::in_core)),
        driver: DriverConfig {
            registry_concurrency: 64,
            durable_concurrency: 16,
            shutdown_timeout: Duration::from_secs(2),
            seed: w.subseed(0x5E4, (i * 1_000 + incarnation) as u64),
        },
        auth: Auth::clone(&w.auth),
        dev_tokens: false,
        allowed_origins: None,
        handshake_timeout: Duration::from_secs(3),
        max_connections: 1_000,
        ws: WsLimits::default(),
        edge: EdgeLimits::default(),
        // Every probe sees the core as it is now (the oracles compare /readyz with the stores).
        status_refresh: Duration::ZERO,
        max_contacts: presence_core::privacy::DEFAULT_MAX_CONTACTS,
    };
    let clock: Arc<dyn WallClock> = w.clocks[i].clone();
    let flushed = serve(SimListener(listener), config, stores, clock, std::future::pending()).await;
    w.trace(format!("{name} stopped flushed={flushed}"));
    Ok(())
}
