//! The Redis registry executor against a real redis-server.
//!
//! The tests that need a server are `#[ignore]`d so a plain `cargo test` stays green without
//! services; `scripts/test` starts redis-server and runs them with `--include-ignored`. By hand:
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no --daemonize yes
//! PRESENCE_TEST_REDIS_URL=redis://127.0.0.1:6390 \
//!     cargo test -p presence-runtime --test redis_store -- --include-ignored
//! ```
//!
//! The URL must be TCP (`redis://host:port`): the reconnect test kills our own connection by its
//! client address. Tests never flush the server; each uses its own user ids. They run one at a
//! time (`SERIAL`) because some kill connections or pause clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence_core::store::{
    LeaseToken, LeaseView, ReapBatch, RegistryEntry, RegistryOp, StoreError, StoreOutput,
};
use presence_core::time::UnixMillis;
use presence_core::user::{SessionId, UserId};
use presence_runtime::store::redis::{
    last_seen_key, lease_index_key, lease_name, pending_key, read_view_key, ws_key, ws_lease_key, LEASES_KEY,
};
use presence_runtime::store::{
    AsyncStream, ConnectFuture, Notice, ReadFrom, RedisConfig, RedisConnector, RedisRegistry, RegistryStore,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, IntoConnectionInfo};

const NEEDS: &str = "PRESENCE_TEST_REDIS_URL is not set: this test needs a real redis-server, \
                     e.g. PRESENCE_TEST_REDIS_URL=redis://127.0.0.1:6379 (run it via scripts/test)";

/// One test at a time: some tests kill connections or pause all clients.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("PRESENCE_TEST_REDIS_URL").unwrap_or_else(|_| panic!("{NEEDS}"))
}

/// A user id no other test run uses.
fn fresh_user(tag: &str) -> UserId {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    UserId::new(&format!("t-{tag}-{}-{nanos}", std::process::id())).unwrap()
}

fn config() -> RedisConfig {
    let mut c = RedisConfig::new("srv-test");
    c.op_timeout = Duration::from_millis(800);
    c.connect_timeout = Duration::from_millis(800);
    c
}

async fn admin() -> MultiplexedConnection {
    redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn connected(config: RedisConfig) -> RedisRegistry {
    let r = RedisRegistry::from_url(&redis_url(), config).unwrap();
    assert!(r.wait_connected(Duration::from_secs(5)).await, "could not connect to {}", redis_url());
    r
}

async fn ok(reg: &dyn RegistryStore, op: RegistryOp) {
    assert_eq!(reg.execute(op).await, Ok(StoreOutput::Done));
}

async fn read(reg: &dyn RegistryStore, users: &[UserId]) -> Vec<RegistryEntry> {
    match reg.execute(RegistryOp::Read { users: users.to_vec() }).await {
        Ok(StoreOutput::Registry(v)) => v,
        other => panic!("unexpected {other:?}"),
    }
}

async fn read1(reg: &dyn RegistryStore, user: &UserId) -> Vec<RegistryEntry> {
    read(reg, std::slice::from_ref(user)).await
}

/// The lease these tests register under (no renewal needed: the executor does not check it).
const TOKEN: LeaseToken = LeaseToken(5);

fn register(user: &UserId, session: &str) -> RegistryOp {
    RegistryOp::Register { user: user.clone(), session: SessionId::new(session), token: TOKEN }
}

fn end(user: &UserId, session: &str, ms: i64) -> RegistryOp {
    RegistryOp::EndSession {
        user: user.clone(),
        session: SessionId::new(session),
        last_seen: UnixMillis(ms),
        token: Some(TOKEN),
    }
}

fn set(user: &UserId, ms: i64) -> RegistryOp {
    RegistryOp::SetLastSeen { user: user.clone(), last_seen: UnixMillis(ms) }
}

/// An entry with `sessions` sessions under [`TOKEN`].
fn entry(sessions: usize, ms: Option<i64>) -> RegistryEntry {
    RegistryEntry { leases: vec![TOKEN; sessions], last_seen: ms.map(UnixMillis), pending: None }
}

const T0: i64 = 1_705_311_720_000; // 2024-01-15T09:42:00.000Z

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn end_session_removes_only_its_field_and_sets_last_seen() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let bob = fresh_user("end");

    ok(&reg, register(&bob, "s1")).await;
    ok(&reg, register(&bob, "s2")).await;
    let hash: BTreeMap<String, String> = admin.hgetall(ws_key(&bob)).await.unwrap();
    assert_eq!(
        hash,
        BTreeMap::from([("s1".to_owned(), "srv-test".to_owned()), ("s2".to_owned(), "srv-test".to_owned())])
    );
    assert_eq!(read1(&reg, &bob).await, vec![entry(2, None)]);

    // No cached value (a new user): the end goes to the pending key, never creating the cache
    // (which may only hold durable values).
    ok(&reg, end(&bob, "s1", T0)).await;
    let hash: BTreeMap<String, String> = admin.hgetall(ws_key(&bob)).await.unwrap();
    assert_eq!(hash, BTreeMap::from([("s2".to_owned(), "srv-test".to_owned())]));
    let stored: Option<String> = admin.get(last_seen_key(&bob)).await.unwrap();
    assert_eq!(stored, None);
    let pending: Option<String> = admin.get(pending_key(&bob)).await.unwrap();
    assert_eq!(pending.as_deref(), Some("2024-01-15T09:42:00.000Z"));
    let want = RegistryEntry { leases: vec![TOKEN], last_seen: None, pending: Some(UnixMillis(T0)) };
    assert_eq!(read1(&reg, &bob).await, vec![want]);

    // The durable value fills the cache and retires the pending value it covers.
    ok(&reg, set(&bob, T0)).await;
    let pending: Option<String> = admin.get(pending_key(&bob)).await.unwrap();
    assert_eq!(pending, None);
    assert_eq!(read1(&reg, &bob).await, vec![entry(1, Some(T0))]);

    // Idempotent, and an older end of the last session removes it without lowering last_seen.
    ok(&reg, end(&bob, "s1", T0)).await;
    ok(&reg, end(&bob, "s2", T0 - 60_000)).await;
    let exists: bool = admin.exists(ws_key(&bob)).await.unwrap();
    assert!(!exists, "the empty hash is gone");
    let stored: Option<String> = admin.get(last_seen_key(&bob)).await.unwrap();
    assert_eq!(stored.as_deref(), Some("2024-01-15T09:42:00.000Z"));
    assert_eq!(read1(&reg, &bob).await, vec![entry(0, Some(T0))]);

    let _: () = admin.del(&[ws_key(&bob), last_seen_key(&bob)]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn set_last_seen_is_a_max_register() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let bob = fresh_user("max");
    let key = last_seen_key(&bob);

    ok(&reg, set(&bob, T0)).await;
    ok(&reg, set(&bob, T0 - 1)).await; // older: refused
    let stored: String = admin.get(&key).await.unwrap();
    assert_eq!(stored, "2024-01-15T09:42:00.000Z");
    ok(&reg, set(&bob, T0 + 1)).await;
    let stored: String = admin.get(&key).await.unwrap();
    assert_eq!(stored, "2024-01-15T09:42:00.001Z");
    // Across a digit-count boundary of the seconds field: string order is still time order.
    ok(&reg, set(&bob, T0 + 9_999)).await;
    ok(&reg, set(&bob, T0 + 10_000)).await;
    ok(&reg, set(&bob, T0 + 9_998)).await;
    assert_eq!(read1(&reg, &bob).await, vec![entry(0, Some(T0 + 10_000))]);

    // A value that is not a fixed-width timestamp reads as absent and is overwritten by the
    // next write, even an old one (it would otherwise block the register forever). Written by
    // hand, so the view is deleted with it, as docs/OPERATIONS.md says to: reads take the keys.
    let _: () = admin.set(&key, "zzz not a time").await.unwrap();
    let _: () = admin.del(read_view_key(&bob)).await.unwrap();
    assert_eq!(read1(&reg, &bob).await, vec![entry(0, None)]);
    ok(&reg, set(&bob, 5)).await;
    let stored: String = admin.get(&key).await.unwrap();
    assert_eq!(stored, "1970-01-01T00:00:00.005Z");
    assert_eq!(read1(&reg, &bob).await, vec![entry(0, Some(5))]);

    let _: () = admin.del(&[key, read_view_key(&bob)]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn record_last_seen_goes_where_a_session_end_goes() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let bob = fresh_user("record");
    let record = |ms: i64| RegistryOp::RecordLastSeen { user: bob.clone(), last_seen: UnixMillis(ms) };
    let get = |key: String| {
        let mut admin = admin.clone();
        async move { admin.get::<_, Option<String>>(key).await.unwrap() }
    };

    // No cache (Redis lost its data): into the pending key, a max-register; the cache stays absent.
    ok(&reg, record(T0)).await;
    ok(&reg, record(T0 - 1)).await;
    assert_eq!(get(pending_key(&bob)).await.as_deref(), Some("2024-01-15T09:42:00.000Z"));
    assert_eq!(get(last_seen_key(&bob)).await, None);
    let want = RegistryEntry { leases: Vec::new(), last_seen: None, pending: Some(UnixMillis(T0)) };
    assert_eq!(read1(&reg, &bob).await, vec![want]);

    // A cache (a reader's backfill of an older durable value) is raised instead, and the pending
    // value stays until a durable value covers it.
    ok(&reg, set(&bob, T0 - 5_000)).await;
    ok(&reg, record(T0 + 1)).await;
    assert_eq!(get(last_seen_key(&bob)).await.as_deref(), Some("2024-01-15T09:42:00.001Z"));
    assert_eq!(get(pending_key(&bob)).await.as_deref(), Some("2024-01-15T09:42:00.000Z"));
    ok(&reg, record(T0 - 60_000)).await; // older: refused
    assert_eq!(read1(&reg, &bob).await[0].last_seen, Some(UnixMillis(T0 + 1)));

    let _: () = admin.del(&[last_seen_key(&bob), pending_key(&bob)]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn batch_read_answers_in_request_order() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let online = fresh_user("ord-on");
    let offline = fresh_user("ord-off");
    let never = fresh_user("ord-never");
    ok(&reg, register(&online, "a")).await;
    ok(&reg, set(&online, T0)).await;
    ok(&reg, set(&offline, T0)).await;
    ok(&reg, end(&offline, "x", T0 + 5)).await;

    assert_eq!(
        read(&reg, &[never.clone(), offline.clone(), online.clone(), offline.clone()]).await,
        vec![entry(0, None), entry(0, Some(T0 + 5)), entry(1, Some(T0)), entry(0, Some(T0 + 5)),]
    );
    assert_eq!(read(&reg, &[]).await, vec![]);

    // A large batch in one pipeline.
    let many: Vec<UserId> =
        (0..300).map(|i| UserId::new(&format!("{}-{i}", never.as_str())).unwrap()).collect();
    for (i, u) in many.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        ok(&reg, set(u, T0 + i as i64)).await;
    }
    let got = read(&reg, &many).await;
    let want: Vec<_> = (0..300).map(|i| entry(0, (i % 3 == 0).then_some(T0 + i as i64))).collect();
    assert_eq!(got, want);

    let mut keys = vec![ws_key(&online), last_seen_key(&online), last_seen_key(&offline)];
    keys.extend(many.iter().map(last_seen_key));
    let _: () = admin.del(keys).await.unwrap();
}

/// After every kind of write, a read from the view equals a read from the keys and the expected
/// entry, and `read_view:{u}` holds the documented string (docs/STORES.md, "Read view").
#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn the_read_view_follows_every_write() {
    let _serial = SERIAL.lock().await;
    let views = connected(config()).await;
    let keys = connected(RedisConfig { read_from: ReadFrom::Keys, ..config() }).await;
    let mut admin = admin().await;
    let u = fresh_user("view");
    let ts = |ms: i64| UnixMillis(ms).to_rfc3339();
    let (a, b) = (SessionId::new("a"), SessionId::new("b"));
    let reap = |session: SessionId| RegistryOp::Reap {
        lease: lease_name("srv-test", TOKEN),
        token: TOKEN,
        sessions: vec![(u.clone(), session, true)],
    };
    let steps: Vec<(RegistryOp, RegistryEntry, Option<String>)> = vec![
        (register(&u, "a"), entry(1, None), Some("5||".into())),
        (register(&u, "b"), entry(2, None), Some("5 5||".into())),
        (
            RegistryOp::RecordLastSeen { user: u.clone(), last_seen: UnixMillis(T0) },
            RegistryEntry { pending: Some(UnixMillis(T0)), ..entry(2, None) },
            Some(format!("5 5||{}", ts(T0))),
        ),
        (set(&u, T0 + 1), entry(2, Some(T0 + 1)), Some(format!("5 5|{}|", ts(T0 + 1)))),
        (end(&u, "a", T0 + 2), entry(1, Some(T0 + 2)), Some(format!("5|{}|", ts(T0 + 2)))),
        (
            RegistryOp::MarkReaped {
                token: TOKEN,
                last_seen: UnixMillis(T0 + 3),
                sessions: vec![(u.clone(), b.clone())],
            },
            entry(1, Some(T0 + 3)),
            Some(format!("5|{}|", ts(T0 + 3))),
        ),
        (reap(b), entry(0, Some(T0 + 3)), Some(format!("|{}|", ts(T0 + 3)))),
        // A session no longer held (it ended) is left alone, and so is the view.
        (reap(a), entry(0, Some(T0 + 3)), Some(format!("|{}|", ts(T0 + 3)))),
    ];
    for (i, (op, want, view)) in steps.into_iter().enumerate() {
        ok(&views, op).await;
        assert_eq!(read1(&views, &u).await, vec![want.clone()], "step {i}: read from the view");
        assert_eq!(read1(&keys, &u).await, vec![want], "step {i}: read from the keys");
        let got: Option<String> = admin.get(read_view_key(&u)).await.unwrap();
        assert_eq!(got, view, "step {i}: read_view");
    }
    let gone: Vec<String> =
        vec![ws_key(&u), ws_lease_key(&u), last_seen_key(&u), pending_key(&u), read_view_key(&u)];
    let _: () = admin.del(gone).await.unwrap();
}

/// A user whose keys were written without a view (by a server of an earlier version) is read from
/// the keys: an absent view never hides a value. Reading does not create the view.
#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn a_user_without_a_read_view_is_read_from_its_keys() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let (old, fresh) = (fresh_user("noview"), fresh_user("noview-fresh"));
    let _: () = admin.hset(ws_lease_key(&old), "s1", TOKEN.0).await.unwrap();
    let _: () = admin.set(last_seen_key(&old), UnixMillis(T0).to_rfc3339()).await.unwrap();
    ok(&reg, set(&fresh, T0 + 9)).await;
    assert_eq!(
        read(&reg, &[old.clone(), fresh.clone()]).await,
        vec![entry(1, Some(T0)), entry(0, Some(T0 + 9))]
    );
    let view: Option<String> = admin.get(read_view_key(&old)).await.unwrap();
    assert_eq!(view, None);
    let gone = vec![ws_lease_key(&old), last_seen_key(&old), last_seen_key(&fresh), read_view_key(&fresh)];
    let _: () = admin.del(gone).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn scripts_survive_script_flush() {
    let _serial = SERIAL.lock().await;
    let reg = connected(config()).await;
    let mut admin = admin().await;
    let bob = fresh_user("noscript");
    ok(&reg, register(&bob, "s1")).await;
    ok(&reg, set(&bob, T0)).await; // loads the scripts

    // What a Redis restart does to the script cache: the next EVALSHA gets NOSCRIPT.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut admin).await.unwrap();
    ok(&reg, end(&bob, "s1", T0 + 1)).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut admin).await.unwrap();
    ok(&reg, set(&bob, T0 + 2)).await;
    assert_eq!(read1(&reg, &bob).await, vec![entry(0, Some(T0 + 2))]);

    let _: () = admin.del(last_seen_key(&bob)).await.unwrap();
}

/// A TCP connector that records the local address of each stream, so the test can kill exactly
/// our connection with `CLIENT KILL ADDR`.
struct RecordingConnector {
    addr: SocketAddr,
    locals: Arc<Mutex<Vec<SocketAddr>>>,
}

impl RedisConnector for RecordingConnector {
    fn connect(&self) -> ConnectFuture {
        let addr = self.addr;
        let locals = Arc::clone(&self.locals);
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            locals.lock().unwrap().push(s.local_addr()?);
            Ok(Box::new(s) as Box<dyn AsyncStream>)
        })
    }
}

async fn recording_registry(config: RedisConfig) -> (RedisRegistry, Arc<Mutex<Vec<SocketAddr>>>) {
    let info = redis_url().into_connection_info().unwrap();
    let addr = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => {
            tokio::net::lookup_host((host.as_str(), *port)).await.unwrap().next().unwrap()
        }
        other => panic!("this test needs a TCP redis url, got {other}"),
    };
    let locals = Arc::new(Mutex::new(Vec::new()));
    let reg = RedisRegistry::with_connector(
        Arc::new(RecordingConnector { addr, locals: Arc::clone(&locals) }),
        info.redis_settings().clone(),
        config,
    );
    assert!(reg.wait_connected(Duration::from_secs(5)).await);
    (reg, locals)
}

/// The connections `locals` recorded that belong to the registry itself, in order: every one the
/// connector made less the change feed's (always connected, in pub/sub mode: `flags=P` in
/// `CLIENT LIST`). Waits up to 5 s for the feed's connection to show up.
async fn registry_conns(
    admin: &mut MultiplexedConnection,
    locals: &Mutex<Vec<SocketAddr>>,
) -> Vec<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(admin).await.unwrap();
        let pubsub: Vec<String> = list
            .lines()
            .filter(|l| l.split(' ').any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('P'))))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")).map(str::to_owned))
            .collect();
        let all = locals.lock().unwrap().clone();
        if all.iter().any(|a| pubsub.contains(&a.to_string())) {
            return all.into_iter().filter(|a| !pubsub.contains(&a.to_string())).collect();
        }
        assert!(Instant::now() < deadline, "the change feed's connection never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `op` until it succeeds (the first op after a kill may still see the old connection).
async fn eventually_ok(reg: &dyn RegistryStore, op: RegistryOp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match reg.execute(op.clone()).await {
            Ok(StoreOutput::Done) => return,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still failing after 5 s: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn restart_generation_bumps_when_our_connection_is_killed() {
    let _serial = SERIAL.lock().await;
    let (reg, locals) = recording_registry(config()).await;
    let mut admin = admin().await;
    let mut restarts = reg.restarts();
    assert_eq!(*restarts.borrow_and_update(), 0);
    let bob = fresh_user("kill");
    ok(&reg, register(&bob, "s1")).await;

    for round in 1..=2u64 {
        let local = *registry_conns(&mut admin, &locals).await.last().unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ADDR")
            .arg(local.to_string())
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(killed, 1, "our connection {local} was not found");

        // Like a restart without persistence: the data is gone too.
        let _: () = admin.del(ws_key(&bob)).await.unwrap();

        tokio::time::timeout(Duration::from_secs(5), restarts.changed())
            .await
            .expect("no restart signalled within 5 s")
            .unwrap();
        assert_eq!(*restarts.borrow_and_update(), round);
        assert!(reg.is_connected());
        assert_eq!(registry_conns(&mut admin, &locals).await.len() as u64, round + 1);

        // What the driver does on the signal: re-register; it works on the new connection.
        eventually_ok(&reg, register(&bob, "s1")).await;
        assert_eq!(read1(&reg, &bob).await, vec![entry(1, None)]);
    }
    // No spurious bumps afterwards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!restarts.has_changed().unwrap());

    let _: () = admin.del(ws_key(&bob)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn a_hung_server_times_out_and_the_connection_is_replaced() {
    let _serial = SERIAL.lock().await;
    let mut cfg = config();
    cfg.op_timeout = Duration::from_millis(300);
    cfg.connect_timeout = Duration::from_millis(300);
    let (reg, locals) = recording_registry(cfg).await;
    let mut admin = admin().await;
    let mut restarts = reg.restarts();
    restarts.borrow_and_update();
    let bob = fresh_user("pause");

    // Every client's commands stall, as in a network partition that does not reset TCP.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query_async(&mut admin).await.unwrap();
    let started = Instant::now();
    assert_eq!(reg.execute(register(&bob, "s1")).await, Err(StoreError::Timeout));
    assert!(started.elapsed() < Duration::from_millis(1000));
    // While the replacement connection cannot be made, ops fail fast instead of hanging.
    let started = Instant::now();
    let r = reg.execute(set(&bob, T0)).await;
    assert!(r.is_err(), "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1000));

    // After the pause, the connection is replaced and the generation bumped.
    tokio::time::timeout(Duration::from_secs(6), restarts.changed())
        .await
        .expect("no restart signalled after the hang")
        .unwrap();
    assert!(registry_conns(&mut admin, &locals).await.len() >= 2);
    eventually_ok(&reg, register(&bob, "s1")).await;
    assert_eq!(read1(&reg, &bob).await, vec![entry(1, None)]);

    let _: () = admin.del(ws_key(&bob)).await.unwrap();
}

/// Needs no server: nothing listens on the port, and ops must fail fast rather than hang.
#[tokio::test]
async fn ops_fail_fast_while_redis_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config();
    cfg.op_timeout = Duration::from_millis(200);
    let reg = RedisRegistry::from_url(&format!("redis://127.0.0.1:{port}"), cfg).unwrap();
    assert!(!reg.wait_connected(Duration::from_millis(300)).await);
    let bob = UserId::new("bob").unwrap();
    let started = Instant::now();
    for op in [register(&bob, "s1"), end(&bob, "s1", T0), RegistryOp::Read { users: vec![bob] }] {
        assert!(matches!(reg.execute(op).await, Err(StoreError::Unavailable(_))));
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(*reg.restarts().borrow(), 0);
    assert_eq!(reg.kind(), "redis");
}

/// Needs no server: a peer that accepts but never answers must not make anything hang.
#[tokio::test]
async fn a_silent_peer_never_makes_ops_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&sockets);
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s); // hold it open, never reply
        }
    });
    let mut cfg = config();
    cfg.connect_timeout = Duration::from_millis(100);
    let reg = RedisRegistry::from_url(&format!("redis://127.0.0.1:{port}"), cfg).unwrap();
    // The handshake times out (connect_timeout) and is retried with a fresh stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockets.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the handshake was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!reg.is_connected());
    assert!(matches!(
        reg.execute(set(&UserId::new("bob").unwrap(), T0)).await,
        Err(StoreError::Unavailable(_))
    ));
    accept.abort();
}

async fn renew(reg: &dyn RegistryStore, token: Option<LeaseToken>, ttl: Duration, wall: i64) -> LeaseView {
    match reg.execute(RegistryOp::RenewLease { token, ttl, wall: UnixMillis(wall) }).await {
        Ok(StoreOutput::Lease(v)) => v,
        other => panic!("unexpected {other:?}"),
    }
}

async fn claim(reg: &dyn RegistryStore, lease: &str) -> Option<ReapBatch> {
    let op = RegistryOp::ClaimReap {
        lease: lease.to_owned(),
        ttl: Duration::from_secs(5),
        batch: 10,
        ceiling: UnixMillis(T0 + 60_000),
    };
    match reg.execute(op).await {
        Ok(StoreOutput::Reap(b)) => b,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn leases_expire_and_the_reaper_removes_only_fenced_entries() {
    let _serial = SERIAL.lock().await;
    let mut admin = admin().await;
    let (bob, carol) = (fresh_user("lease-b"), fresh_user("lease-c"));
    let tag = fresh_user("srv");
    let with_id = |id: String| RedisConfig { server_id: id, ..config() };
    let dead = connected(with_id(format!("{tag}-dead"))).await;
    let live = connected(with_id(format!("{tag}-live"))).await;
    let other = connected(with_id(format!("{tag}-other"))).await;
    let short = Duration::from_millis(300);

    // A lease, renewed under the same token while live.
    let v = renew(&dead, None, short, T0).await;
    let td = v.token;
    assert!(v.live.contains(&td));
    assert_eq!(renew(&dead, Some(td), short, T0 + 100).await.token, td);
    let name = lease_name(&format!("{tag}-dead"), td);

    // The doomed server registers bob twice and carol once; carol's session is then registered
    // again by a newer lease (say its owner came back with a new token).
    let reg = |u: &UserId, s: &str, token| RegistryOp::Register {
        user: u.clone(),
        session: SessionId::new(s),
        token,
    };
    ok(&dead, reg(&bob, "b1", td)).await;
    ok(&dead, reg(&bob, "b2", td)).await;
    ok(&dead, reg(&carol, "c1", td)).await;
    let tl = renew(&live, None, Duration::from_secs(10), T0).await.token;
    assert!(tl > td, "tokens increase: {tl:?} after {td:?}");
    ok(&live, reg(&carol, "c1", tl)).await;
    let _: () = admin.set(last_seen_key(&bob), "2024-01-15T09:41:00.000Z").await.unwrap();
    let entries = read(&live, &[bob.clone(), carol.clone()]).await;
    assert_eq!(entries[0].leases, vec![td, td]);
    assert_eq!(entries[1].leases, vec![tl]);

    // The lease runs out by the Redis clock: the next renewal lists it as expired.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let v = renew(&live, Some(tl), Duration::from_secs(10), T0 + 1_000).await;
    assert_eq!(v.token, tl);
    assert!(!v.live.contains(&td) && v.live.contains(&tl));
    assert!(v.expired.contains(&name), "{name} not in {:?}", v.expired);

    // One claimer at a time.
    let batch = claim(&live, &name).await.expect("claimed");
    assert_eq!(claim(&other, &name).await, None);
    assert_eq!(batch.token, td);
    assert_eq!(batch.last_seen, UnixMillis(T0 + 100), "the dead lease's last renewal");
    let want = vec![
        (bob.clone(), SessionId::new("b1"), true),
        (bob.clone(), SessionId::new("b2"), true),
        (carol.clone(), SessionId::new("c1"), false),
    ];
    assert_eq!(batch.sessions, want);

    // The value is recorded like a session end, for the sessions still under the dead lease
    // (bob's cache is present and raised; carol, registered again, is left alone).
    let held = vec![(bob.clone(), SessionId::new("b1")), (bob.clone(), SessionId::new("b2"))];
    ok(&live, RegistryOp::MarkReaped { token: td, last_seen: batch.last_seen, sessions: held }).await;
    let stored: Option<String> = admin.get(last_seen_key(&bob)).await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("2024-01-15T09:42:00.100Z"),
        "raised to the dead lease's last renewal"
    );
    let carol_cached: Option<String> = admin.get(last_seen_key(&carol)).await.unwrap();
    let carol_pending: Option<String> = admin.get(pending_key(&carol)).await.unwrap();
    assert_eq!((carol_cached, carol_pending), (None, None));

    let reap = RegistryOp::Reap { lease: name.clone(), token: td, sessions: want };
    ok(&live, reap.clone()).await;
    ok(&live, reap).await; // idempotent
    let bob_ws: BTreeMap<String, String> = admin.hgetall(ws_key(&bob)).await.unwrap();
    assert!(bob_ws.is_empty());
    let carol_ws: BTreeMap<String, String> = admin.hgetall(ws_key(&carol)).await.unwrap();
    assert_eq!(carol_ws, BTreeMap::from([("c1".to_owned(), format!("{tag}-live"))]));

    // The index is empty now: the next claim drops the lease.
    assert_eq!(claim(&live, &name).await, None);
    let score: Option<f64> = admin.zscore(LEASES_KEY, &name).await.unwrap();
    assert_eq!(score, None);
    let index: bool = admin.exists(lease_index_key(&name)).await.unwrap();
    assert!(!index);

    let keys = [
        ws_key(&carol),
        ws_lease_key(&carol),
        last_seen_key(&bob),
        lease_index_key(&lease_name(&format!("{tag}-live"), tl)),
    ];
    let _: () = admin.del(&keys).await.unwrap();
    let _: () = admin.zrem(LEASES_KEY, lease_name(&format!("{tag}-live"), tl)).await.unwrap();
}

/// The next notice within `limit`, if any.
async fn next_notice(
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>,
    limit: Duration,
) -> Option<Notice> {
    tokio::time::timeout(limit, notices.recv()).await.ok().flatten()
}

/// The change feed's health check is a `PING` on a connection in subscriber mode, where Redis
/// answers `["pong", ""]` instead of `+PONG`. Taking that answer for a failure made the feed
/// reconnect (and every server re-read all it watched, and drop its privacy cache) once per
/// health-check interval with nothing wrong.
#[tokio::test]
#[ignore = "needs redis: run via scripts/test"]
async fn the_change_feed_stays_subscribed_across_health_checks() {
    let _serial = SERIAL.lock().await;
    let mut c = config();
    c.health_check_interval = Duration::from_millis(50);
    let reg = connected(c).await;
    let mut notices = reg.notices().expect("the first call gets the notices");
    assert_eq!(next_notice(&mut notices, Duration::from_secs(5)).await, Some(Notice::Resync));

    let bob = fresh_user("feed");
    reg.watch(&bob);
    assert_eq!(next_notice(&mut notices, Duration::from_secs(5)).await, Some(Notice::Changed(bob.clone())));

    // Twenty health checks with nothing published: nothing to tell.
    assert_eq!(next_notice(&mut notices, Duration::from_millis(1_000)).await, None);

    // And the subscription still works: a session change reaches us as one notice.
    ok(&reg, register(&bob, "s1")).await;
    assert_eq!(next_notice(&mut notices, Duration::from_secs(5)).await, Some(Notice::Changed(bob.clone())));
    ok(&reg, end(&bob, "s1", T0)).await;
    assert_eq!(next_notice(&mut notices, Duration::from_secs(5)).await, Some(Notice::Changed(bob.clone())));
    assert_eq!(next_notice(&mut notices, Duration::from_millis(300)).await, None);

    let mut admin = admin().await;
    let _: () = admin.del(last_seen_key(&bob)).await.unwrap();
}
