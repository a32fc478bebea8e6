//! The embedded registry (`presence_runtime::store::MemoryRegistry`, the native copy of the
//! registry's meaning that `cargo run` uses without Redis) against the production Redis executor
//! (`RedisRegistry`, the Lua scripts) on a real redis-server.
//!
//! Seeded random sequences of the registry operations the embedded registry implements
//! (`Register`, `EndSession`, `SetLastSeen`, `RecordLastSeen`, `Read`) over a few users and
//! sessions, with timestamps close together so the max-register ties and goes both ways: each op
//! runs on both, the outputs must be equal (lease tokens compared as a set: `HVALS` fixes no
//! order), and after each sequence every user's keys on the server (`ws:{u}`, `ws_lease:{u}`,
//! `last_seen:{u}`, `last_seen_pending:{u}`) must hold what the embedded registry holds. The
//! lease operations are left out on purpose: the embedded registry is one server whose lease is
//! always live and never reaped, so it answers them with constants (docs in `embedded.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use presence_core::store::{LeaseToken, RegistryEntry, RegistryOp, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::{SessionId, UserId};
use presence_runtime::store::redis::{last_seen_key, pending_key, ws_key, ws_lease_key};
use presence_runtime::store::{MemoryRegistry, RedisConfig, RedisRegistry, RegistryStore};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

const USERS: u8 = 3;
const SESSIONS: u8 = 3;

/// Close together (ties, both directions), plus both ends of the wire range.
const TIMES: &[i64] =
    &[1_705_311_720_000, 1_705_311_720_001, 1_705_311_719_999, 1_705_311_700_000, 0, 253_402_300_799_999];

/// One generated op, by index into the small spaces above.
#[derive(Clone, Debug)]
enum Step {
    Register { u: u8, s: u8, token: u8 },
    EndSession { u: u8, s: u8, t: u8, token: Option<u8> },
    SetLastSeen { u: u8, t: u8 },
    RecordLastSeen { u: u8, t: u8 },
    Read { users: Vec<u8> },
}

fn step() -> BoxedStrategy<Step> {
    let u = 0..USERS;
    let s = 0..SESSIONS;
    let t = 0..TIMES.len() as u8;
    prop_oneof![
        3 => (u.clone(), s.clone(), 1u8..4).prop_map(|(u, s, token)| Step::Register { u, s, token }),
        3 => (u.clone(), s, t.clone(), prop::option::of(1u8..4))
            .prop_map(|(u, s, t, token)| Step::EndSession { u, s, t, token }),
        2 => (u.clone(), t.clone()).prop_map(|(u, t)| Step::SetLastSeen { u, t }),
        2 => (u.clone(), t).prop_map(|(u, t)| Step::RecordLastSeen { u, t }),
        2 => prop::collection::vec(u, 0..5).prop_map(|users| Step::Read { users }),
    ]
    .boxed()
}

struct Names {
    run: String,
}

impl Names {
    fn user(&self, u: u8) -> UserId {
        UserId::new(&format!("{}-e{u}", self.run)).expect("a valid user id")
    }

    fn server(&self) -> String {
        format!("{}-srv", self.run)
    }

    fn op(&self, step: &Step) -> RegistryOp {
        let session = |s: u8| SessionId::new(format!("sess{s}"));
        match *step {
            Step::Register { u, s, token } => RegistryOp::Register {
                user: self.user(u),
                session: session(s),
                token: LeaseToken(token.into()),
            },
            Step::EndSession { u, s, t, token } => RegistryOp::EndSession {
                user: self.user(u),
                session: session(s),
                last_seen: UnixMillis(TIMES[t as usize]),
                token: token.map(|t| LeaseToken(t.into())),
            },
            Step::SetLastSeen { u, t } => {
                RegistryOp::SetLastSeen { user: self.user(u), last_seen: UnixMillis(TIMES[t as usize]) }
            }
            Step::RecordLastSeen { u, t } => {
                RegistryOp::RecordLastSeen { user: self.user(u), last_seen: UnixMillis(TIMES[t as usize]) }
            }
            Step::Read { ref users } => {
                RegistryOp::Read { users: users.iter().map(|&u| self.user(u)).collect() }
            }
        }
    }
}

/// Lease tokens as a set (`HVALS` order is not fixed).
fn normalized(out: StoreOutput) -> StoreOutput {
    match out {
        StoreOutput::Registry(entries) => StoreOutput::Registry(
            entries
                .into_iter()
                .map(|mut e: RegistryEntry| {
                    e.leases.sort();
                    e
                })
                .collect(),
        ),
        other => other,
    }
}

/// One user's keys as the embedded registry holds them: (`ws` hash, `ws_lease` hash, last_seen,
/// pending), each hash as field -> value.
type UserKeys = (BTreeMap<String, String>, BTreeMap<String, String>, Option<String>, Option<String>);

fn real_keys(con: &mut redis::Connection, user: &UserId) -> UserKeys {
    let hash = |con: &mut redis::Connection, key: String| -> BTreeMap<String, String> {
        redis::cmd("HGETALL").arg(key).query(con).expect("HGETALL")
    };
    let get = |con: &mut redis::Connection, key: String| -> Option<String> {
        redis::cmd("GET").arg(key).query(con).expect("GET")
    };
    (
        hash(con, ws_key(user)),
        hash(con, ws_lease_key(user)),
        get(con, last_seen_key(user)),
        get(con, pending_key(user)),
    )
}

fn embedded_keys(rt: &tokio::runtime::Runtime, reg: &MemoryRegistry, user: &UserId) -> UserKeys {
    let ws: BTreeMap<String, String> = reg.sessions(user).into_iter().collect();
    let read = rt.block_on(reg.execute(RegistryOp::Read { users: vec![user.clone()] })).expect("memory read");
    let StoreOutput::Registry(entries) = read else { panic!("a read answers entries: {read:?}") };
    let entry = &entries[0];
    // The embedded registry reports lease tokens per session in session order (its `BTreeMap`),
    // the same order as `ws`'s fields.
    let leases = ws.keys().cloned().zip(entry.leases.iter().map(|t| t.0.to_string())).collect();
    (ws, leases, entry.last_seen.map(UnixMillis::to_rfc3339), entry.pending.map(UnixMillis::to_rfc3339))
}

fn wipe(con: &mut redis::Connection, run: &str) {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{run}*")).query(con).expect("KEYS");
    for key in keys {
        let _: i64 = redis::cmd("DEL").arg(key).query(con).expect("DEL");
    }
}

fn run_sequence(
    rt: &tokio::runtime::Runtime,
    con: &mut redis::Connection,
    real: &RedisRegistry,
    names: &Names,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    wipe(con, &names.run);
    let embedded = MemoryRegistry::new(names.server());
    let mut transcript = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let op = names.op(step);
        let want = rt.block_on(real.execute(op.clone())).map(normalized);
        let got = rt.block_on(embedded.execute(op.clone())).map(normalized);
        transcript.push(format!("#{} {op:?} -> {want:?}", i + 1));
        if want != got {
            return Err(TestCaseError::fail(format!(
                "divergence at #{}:\n  redis:    {want:?}\n  embedded: {got:?}\ntranscript:\n  {}",
                i + 1,
                transcript.join("\n  ")
            )));
        }
    }
    for u in 0..USERS {
        let user = names.user(u);
        let (want, got) = (real_keys(con, &user), embedded_keys(rt, &embedded, &user));
        if want != got {
            return Err(TestCaseError::fail(format!(
                "the keys of {user} differ after the sequence:\n  redis:    {want:?}\n  embedded: {got:?}\n\
                 transcript:\n  {}",
                transcript.join("\n  ")
            )));
        }
    }
    wipe(con, &names.run);
    Ok(())
}

#[test]
#[ignore = "needs redis-server: run via scripts/test"]
fn embedded_registry_matches_real_redis() {
    let _turn = super::REAL_REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let url = std::env::var("PRESENCE_TEST_REDIS_URL").unwrap_or_else(|_| panic!("{}", super::NEEDS));
    let cases = super::env_num("PRESENCE_REDIS_DIFF_CASES", 400) as u32;
    let seed = super::env_num("PRESENCE_REDIS_DIFF_SEED", 1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let names = Names { run: format!("e{}x{}", std::process::id(), nanos % 1_000_000_000) };
    let mut con = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let real = rt.block_on(async {
        let reg = RedisRegistry::from_url(&url, RedisConfig::new(names.server())).expect("a redis url");
        assert!(reg.wait_connected(Duration::from_secs(5)).await, "cannot connect to {url}");
        reg
    });

    let mut config = Config::with_cases(cases);
    config.failure_persistence = None;
    config.max_shrink_iters = 5_000;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let con = std::cell::RefCell::new(&mut con);
    let sequences = std::cell::Cell::new(0u64);
    let result = runner.run(&prop::collection::vec(step(), 10..=40), |steps| {
        sequences.set(sequences.get() + 1);
        run_sequence(&rt, &mut con.borrow_mut(), &real, &names, &steps)
    });
    wipe(&mut con.borrow_mut(), &names.run);
    println!("embedded registry vs redis (seed {seed}): {} sequences compared", sequences.get());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => panic!("{why}\nminimal sequence: {steps:?}"),
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
    }
}
