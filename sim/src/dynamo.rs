//! The DynamoDB stand-in: the runtime's [`DurableStore`] interface, in process, with the
//! max-register semantics of the real table (`SET last_seen = :ts IF attribute_not_exists OR
//! last_seen < :ts`; a failed condition is success). Its data survives every fault; the nemesis can
//! make it fail, hang, throttle or slow down for chosen windows.
//!
//! Latency and throttling are drawn from a hash of the seed and the operation's sequence number,
//! and waits use `tokio::time` (virtual time of the calling server host).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use presence_core::store::{DurableOp, StoreError, StoreOutput};
use presence_core::time::UnixMillis;
use presence_runtime::store::{DurableStore, StoreFuture};

use crate::params::{bounds, Plant, EPOCH_MS};
use crate::rng::mix3;
use crate::witness::{lock, Witness};

/// What is wrong with the table during a fault window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynFault {
    /// Every call fails at once (`Unavailable`); nothing is applied.
    Outage,
    /// Calls hang until the op timeout (`Timeout`); nothing is applied.
    Hang,
    /// This percentage of calls is refused with `Throttled`.
    Throttle(u8),
    /// Calls take this much longer; past the op timeout the write is applied but reported as
    /// `Timeout` (the ambiguous case real clients see).
    Slow(u64),
}

struct Inner {
    seed: u64,
    plant: Option<Plant>,
    table: Mutex<BTreeMap<String, i64>>,
    /// Per user, every applied write: (virtual ms, value), in order.
    history: Mutex<BTreeMap<String, Vec<(u64, i64)>>>,
    fault: Mutex<Option<DynFault>>,
    ops: AtomicU64,
    world: OnceLock<Weak<dyn Witness>>,
}

/// The stand-in; cheap to clone.
#[derive(Clone)]
pub struct SimDynamo(Arc<Inner>);

impl SimDynamo {
    pub(crate) fn new(seed: u64, plant: Option<Plant>) -> SimDynamo {
        SimDynamo(Arc::new(Inner {
            seed,
            plant,
            table: Mutex::new(BTreeMap::new()),
            history: Mutex::new(BTreeMap::new()),
            fault: Mutex::new(None),
            ops: AtomicU64::new(0),
            world: OnceLock::new(),
        }))
    }

    pub(crate) fn attach(&self, world: Weak<dyn Witness>) {
        let _ = self.0.world.set(world);
    }

    /// Starts (`Some`) or ends (`None`) a fault window.
    pub fn set_fault(&self, f: Option<DynFault>) {
        *lock(&self.0.fault) = f;
    }

    /// The whole table, for the oracles.
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        lock(&self.0.table).clone()
    }

    /// Per user, every write the table applied, as (virtual ms, value) in order: when each
    /// value became durable (the oracles' timely-durability check, I2).
    pub fn history(&self) -> BTreeMap<String, Vec<(u64, i64)>> {
        lock(&self.0.history).clone()
    }
}

impl Inner {
    fn world(&self) -> Option<Arc<dyn Witness>> {
        self.world.get().and_then(Weak::upgrade)
    }

    fn trace(&self, line: String) {
        if let Some(w) = self.world() {
            w.trace(&line);
        }
    }

    fn apply(&self, op: &DurableOp) -> StoreOutput {
        match op {
            DurableOp::Write { user, last_seen } => {
                let world = self.world();
                if let Some(w) = &world {
                    let limit = EPOCH_MS + w.now() as i64 + bounds::MAX_SKEW_MS;
                    if last_seen.0 > limit {
                        w.violation(format!(
                            "I5 dynamo write for {user} of {} is {} ms beyond true time + max skew",
                            last_seen.0,
                            last_seen.0 - limit
                        ));
                    }
                }
                let mut t = lock(&self.table);
                let cur = t.get(user.as_str()).copied();
                let wins = match self.plant {
                    Some(Plant::PlainOverwrite) => true,
                    _ => cur.is_none_or(|c| c < last_seen.0),
                };
                if wins {
                    t.insert(user.as_str().to_owned(), last_seen.0);
                    let now = world.map_or(0, |w| w.now());
                    lock(&self.history).entry(user.as_str().to_owned()).or_default().push((now, last_seen.0));
                    StoreOutput::Done
                } else {
                    StoreOutput::Superseded
                }
            }
            DurableOp::Read { users } => {
                let t = lock(&self.table);
                StoreOutput::Durable(
                    users.iter().map(|u| t.get(u.as_str()).map(|v| UnixMillis(*v))).collect(),
                )
            }
        }
    }
}

fn describe(op: &DurableOp) -> String {
    match op {
        DurableOp::Write { user, last_seen } => format!("write {user} {}", last_seen.0),
        DurableOp::Read { users } => {
            let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
            format!("read {}", names.join(","))
        }
    }
}

impl DurableStore for SimDynamo {
    fn execute(&self, op: DurableOp) -> StoreFuture {
        let inner = self.0.clone();
        Box::pin(async move {
            let n = inner.ops.fetch_add(1, Ordering::Relaxed);
            let r = mix3(inner.seed, 0xD7, n);
            let latency = Duration::from_millis(2 + r % 8);
            let fault = *lock(&inner.fault);
            let timeout = Duration::from_millis(bounds::DYNAMO_OP_TIMEOUT_MS);
            let what = describe(&op);
            let result = match fault {
                None => {
                    tokio::time::sleep(latency).await;
                    Ok(inner.apply(&op))
                }
                Some(DynFault::Outage) => {
                    tokio::time::sleep(latency).await;
                    Err(StoreError::Unavailable("dynamodb: simulated outage".into()))
                }
                Some(DynFault::Hang) => {
                    tokio::time::sleep(timeout).await;
                    Err(StoreError::Timeout)
                }
                Some(DynFault::Throttle(pct)) => {
                    tokio::time::sleep(latency).await;
                    if (r >> 8) % 100 < u64::from(pct) {
                        Err(StoreError::Throttled)
                    } else {
                        Ok(inner.apply(&op))
                    }
                }
                Some(DynFault::Slow(extra)) => {
                    let total = latency + Duration::from_millis(extra);
                    if total > timeout {
                        // Applied server-side, but the answer comes too late.
                        tokio::time::sleep(timeout / 2).await;
                        inner.apply(&op);
                        tokio::time::sleep(timeout - timeout / 2).await;
                        Err(StoreError::Timeout)
                    } else {
                        tokio::time::sleep(total).await;
                        Ok(inner.apply(&op))
                    }
                }
            };
            let shown = match &result {
                Ok(StoreOutput::Durable(v)) => {
                    let vals: Vec<String> =
                        v.iter().map(|x| x.map_or("-".into(), |x| x.0.to_string())).collect();
                    format!("ok [{}]", vals.join(","))
                }
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("err {e}"),
            };
            inner.trace(format!("dynamo {what} -> {shown}"));
            result
        })
    }

    fn kind(&self) -> &'static str {
        "sim-dynamodb"
    }
}
