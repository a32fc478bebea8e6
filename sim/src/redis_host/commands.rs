//! The Redis commands the host implements natively, with Redis's semantics: what the runtime sends
//! itself and what the registry's Lua scripts call through `redis.call`. The scripts' meaning is
//! not here: [`super::lua`] runs their real text, and these commands are all it can touch.
//!
//! Two commands carry the host's live checks while a registry script runs ([`Running`]): `HDEL`
//! of a registry entry (I7: only its owner, or a reaper once the entry's lease expired, removes
//! it; and the planted bug that removes every entry) and `SET` of a last_seen key (I5, and the
//! evidence of who recorded a value not yet durable).

use std::collections::{BTreeMap, BTreeSet};

use presence_core::time::UnixMillis;
use presence_runtime::store::redis::RegistryScript;

use super::resp::{bulk, redis_int, status, Reply};
use super::{RedisState, Val};
use crate::params::{bounds, Plant, EPOCH_MS};
use crate::witness::Witness;

/// The reply of a command on a key of the wrong type. In a script, Redis 7 passes the call's error
/// on with its own code (`-WRONGTYPE ... script: <sha>, on @user_script:<line>.`).
pub(crate) const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// The registry script a command comes from (through `redis.call`), for the live checks.
pub(crate) struct Running<'a> {
    /// The script, if it is one of the registry's (a client may `EVAL` anything).
    pub(crate) script: Option<RegistryScript>,
    /// The host that sent the script (`srv<N>`).
    pub(crate) peer: &'a str,
    /// The script's `KEYS`.
    pub(crate) keys: &'a [Vec<u8>],
    /// The script's `ARGV`.
    pub(crate) args: &'a [Vec<u8>],
}

impl Running<'_> {
    fn is(&self, script: RegistryScript) -> bool {
        self.script == Some(script)
    }
}

/// `ERR wrong number of arguments for '<name>' command`.
fn wrong_arity(name: &str) -> Reply {
    Reply::Err(format!("ERR wrong number of arguments for '{}' command", name.to_lowercase()))
}

fn int_arg(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

impl RedisState {
    /// Runs one command (its name upper-cased in `name`) as host `peer` sent it and returns the
    /// reply: from a client (`running` = `None`) or from a script.
    pub(crate) fn dispatch(
        &mut self,
        w: &dyn Witness,
        peer: &str,
        running: Option<&Running<'_>>,
        name: &str,
        argv: &[Vec<u8>],
    ) -> Reply {
        let reply = match name {
            "HSET" | "HLEN" | "HGET" | "HVALS" | "HDEL" => self.hash_command(w, running, name, argv),
            "SADD" | "SREM" | "SRANDMEMBER" => self.set_command(name, argv),
            "GET" | "MGET" | "SET" | "DEL" | "INCR" => self.string_command(w, running, name, argv),
            "ZADD" | "ZSCORE" | "ZREM" | "ZRANGEBYSCORE" => self.zset_command(name, argv),
            "PING" => Some(status("PONG")),
            "CLIENT" | "SELECT" => Some(status("OK")),
            "INFO" => {
                let body = format!("# Server\r\nredis_version:7.0.0-sim\r\nrun_id:{}\r\n", self.run_id);
                Some(Reply::Bulk(Some(body.into_bytes())))
            }
            "TIME" => {
                let ms = clock_ms(w);
                Some(Reply::Array(vec![bulk((ms / 1000).to_string()), bulk((ms % 1000 * 1000).to_string())]))
            }
            "PUBLISH" if argv.len() == 3 => Some(Reply::Int(self.publish(&argv[1], &argv[2]))),
            "PUBLISH" => None,
            "SCRIPT" | "EVAL" | "EVALSHA" if running.is_some() => {
                Some(Reply::Err("ERR This Redis command is not allowed from script".into()))
            }
            "SCRIPT" => self.script_command(argv),
            "EVAL" | "EVALSHA" if argv.len() >= 3 => Some(self.eval(w, peer, name, argv)),
            "EVAL" | "EVALSHA" => None,
            _ => return Reply::Err(format!("ERR unknown command '{}'", name.to_lowercase())),
        };
        reply.unwrap_or_else(|| wrong_arity(name))
    }

    /// `HSET`, `HLEN`, `HGET`, `HVALS`, `HDEL`; `None` on a wrong number of arguments.
    fn hash_command(
        &mut self,
        w: &dyn Witness,
        running: Option<&Running<'_>>,
        name: &str,
        argv: &[Vec<u8>],
    ) -> Option<Reply> {
        let reply = match name {
            "HSET" if argv.len() >= 4 && argv.len().is_multiple_of(2) => match self.hash_mut(&argv[1]) {
                Ok(h) => {
                    let pairs = argv[2..].chunks(2);
                    Reply::Int(pairs.filter(|p| h.insert(p[0].clone(), p[1].clone()).is_none()).count() as i64)
                }
                Err(e) => Reply::Err(e),
            },
            "HLEN" if argv.len() >= 2 => match self.db.get(&argv[1]) {
                None => Reply::Int(0),
                Some(Val::Hash(h)) => Reply::Int(h.len() as i64),
                Some(_) => Reply::Err(WRONGTYPE.into()),
            },
            "HGET" if argv.len() >= 3 => match self.hget(&argv[1], &argv[2]) {
                Ok(v) => Reply::Bulk(v),
                Err(e) => Reply::Err(e),
            },
            "HVALS" if argv.len() >= 2 => match self.db.get(&argv[1]) {
                None => Reply::Array(Vec::new()),
                Some(Val::Hash(h)) => {
                    // In value order, not field order: fields are session ids, which carry the
                    // boot id `serve()` draws from the OS, so field order could differ between two
                    // runs of a seed (two incarnations of one server). Redis fixes no order either.
                    let mut vals: Vec<&Vec<u8>> = h.values().collect();
                    vals.sort();
                    Reply::Array(vals.into_iter().map(|v| bulk(v.clone())).collect())
                }
                Some(_) => Reply::Err(WRONGTYPE.into()),
            },
            "HDEL" if argv.len() >= 3 => self.hdel(w, running, &argv[1], &argv[2..]),
            _ => return None,
        };
        Some(reply)
    }

    /// `HDEL key field...`, with the registry's ownership checks when a registry script removes
    /// an entry of `ws:{u}` (its `KEYS[1]`).
    fn hdel(
        &mut self,
        w: &dyn Witness,
        running: Option<&Running<'_>>,
        key: &[u8],
        fields: &[Vec<u8>],
    ) -> Reply {
        let registry = running.filter(|r| r.keys.first().is_some_and(|k| k == key));
        let fields: Vec<Vec<u8>> = match (self.db.get(key), registry) {
            (None, _) => return Reply::Int(0),
            (Some(Val::Hash(h)), Some(r)) if r.is(RegistryScript::EndSession) => {
                if self.plant == Some(Plant::UnconditionalDelete) {
                    h.keys().cloned().collect()
                } else {
                    fields.to_vec()
                }
            }
            (Some(Val::Hash(_)), _) => fields.to_vec(),
            (Some(_), _) => return Reply::Err(WRONGTYPE.into()),
        };
        let mut removed = Vec::new();
        if let Some(Val::Hash(h)) = self.db.get_mut(key) {
            removed = fields.iter().filter_map(|f| h.remove(f).map(|owner| (f.clone(), owner))).collect();
        }
        self.drop_if_empty(key);
        if let Some(r) = registry {
            for (field, owner) in &removed {
                self.check_removal(w, r, key, field, owner);
            }
        }
        Reply::Int(removed.len() as i64)
    }

    /// I7 for a registry entry `field` of `key` (held by server `owner`) that a registry script
    /// removed: a session end only removes its own server's entries; a reap only entries whose
    /// lease (`<owner>#<token>`, the token being the script's `ARGV[2]`) has expired.
    fn check_removal(&self, w: &dyn Witness, r: &Running<'_>, key: &[u8], field: &[u8], owner: &[u8]) {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if r.is(RegistryScript::EndSession) && owner != r.peer.as_bytes() {
            w.violation(format!(
                "I7 {} removed registry entry {} of {} owned by {}",
                r.peer,
                show(field),
                show(key),
                show(owner)
            ));
        }
        if r.is(RegistryScript::Reap) {
            let Some(token) = r.args.get(1) else { return };
            let lease = [owner, b"#", token].concat();
            let expiry = match self.db.get(b"leases:{presence}".as_slice()) {
                Some(Val::ZSet(z)) => z.get(&lease).copied(),
                _ => None,
            };
            if expiry.is_some_and(|e| e > clock_ms(w)) {
                w.violation(format!(
                    "I7 {} reaped registry entry {} of {} under the live lease {}",
                    r.peer,
                    show(field),
                    show(key),
                    show(&lease)
                ));
            }
        }
    }

    /// `SADD`, `SREM`, `SRANDMEMBER`; `None` on a wrong number of arguments.
    fn set_command(&mut self, name: &str, argv: &[Vec<u8>]) -> Option<Reply> {
        let reply = match name {
            "SADD" if argv.len() >= 3 => match self.set_mut(&argv[1]) {
                Ok(set) => Reply::Int(argv[2..].iter().filter(|m| set.insert(m.to_vec())).count() as i64),
                Err(e) => Reply::Err(e),
            },
            "SREM" if argv.len() >= 3 => {
                let res = match self.db.get_mut(&argv[1]) {
                    None => Reply::Int(0),
                    Some(Val::Set(set)) => {
                        Reply::Int(argv[2..].iter().filter(|m| set.remove(*m)).count() as i64)
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                };
                self.drop_if_empty(&argv[1]);
                res
            }
            // The first members in order, so runs replay (Redis picks at random).
            "SRANDMEMBER" if argv.len() == 3 => {
                let Some(n) = std::str::from_utf8(&argv[2]).ok().and_then(|s| s.parse::<usize>().ok()) else {
                    return Some(Reply::Err(NOT_AN_INTEGER.into()));
                };
                match self.db.get(&argv[1]) {
                    None => Reply::Array(Vec::new()),
                    Some(Val::Set(set)) => {
                        Reply::Array(set.iter().take(n).map(|m| bulk(m.clone())).collect())
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                }
            }
            _ => return None,
        };
        Some(reply)
    }

    /// `GET`, `MGET`, `SET`, `DEL`, `INCR`; `None` on a wrong number of arguments.
    fn string_command(
        &mut self,
        w: &dyn Witness,
        running: Option<&Running<'_>>,
        name: &str,
        argv: &[Vec<u8>],
    ) -> Option<Reply> {
        let reply = match name {
            "GET" if argv.len() >= 2 => match self.get_str(&argv[1]) {
                Ok(v) => Reply::Bulk(v),
                Err(e) => Reply::Err(e),
            },
            // A key of another type reads as nil, as in Redis (MGET never fails on types).
            "MGET" if argv.len() >= 2 => Reply::Array(
                argv[1..]
                    .iter()
                    .map(|k| match self.db.get(k) {
                        Some(Val::Str(s)) => bulk(s.clone()),
                        _ => Reply::Bulk(None),
                    })
                    .collect(),
            ),
            "SET" if argv.len() >= 3 => {
                if let Some(r) = running {
                    self.check_last_seen_write(w, r, &argv[1], &argv[2]);
                }
                self.db.insert(argv[1].clone(), Val::Str(argv[2].clone()));
                status("OK")
            }
            "DEL" if argv.len() >= 2 => {
                Reply::Int(argv[1..].iter().filter(|k| self.db.remove(*k).is_some()).count() as i64)
            }
            "INCR" if argv.len() == 2 => self.incr(&argv[1]),
            _ => return None,
        };
        Some(reply)
    }

    /// `INCR`: the value must be a Redis integer, and must not overflow.
    fn incr(&mut self, key: &[u8]) -> Reply {
        let cur = match self.get_str(key) {
            Ok(None) => 0,
            Ok(Some(v)) => match redis_int(&v) {
                Some(n) => n,
                None => return Reply::Err(NOT_AN_INTEGER.into()),
            },
            Err(e) => return Reply::Err(e),
        };
        let Some(n) = cur.checked_add(1) else {
            return Reply::Err("ERR increment or decrement would overflow".into());
        };
        self.db.insert(key.to_vec(), Val::Str(n.to_string().into_bytes()));
        Reply::Int(n)
    }

    /// A registry script writes `value` to a last_seen key: I5 (no value beyond true time plus
    /// the maximum skew), and, for the writes of values not yet durable (a session end, a
    /// reaper's mark, a re-record), the evidence of who wrote it when.
    fn check_last_seen_write(&mut self, w: &dyn Witness, r: &Running<'_>, key: &[u8], value: &[u8]) {
        if !(key.starts_with(b"last_seen:") || key.starts_with(b"last_seen_pending:")) {
            return;
        }
        if let Some(v) = UnixMillis::parse_rfc3339(&String::from_utf8_lossy(value)) {
            let limit = clock_ms(w) + bounds::MAX_SKEW_MS;
            if v.0 > limit {
                w.violation(format!(
                    "I5 redis last_seen write {} is {} ms beyond true time + max skew",
                    String::from_utf8_lossy(key),
                    v.0 - limit
                ));
            }
        }
        let not_durable =
            [RegistryScript::EndSession, RegistryScript::RecordLastSeen, RegistryScript::ReapMark];
        if not_durable.iter().any(|&s| r.is(s)) {
            self.recorded.insert(key.to_vec(), (value.to_vec(), r.peer.to_owned(), w.now()));
        }
    }

    /// `ZADD key score member`, `ZSCORE`, `ZREM`, `ZRANGEBYSCORE`; `None` on a wrong number of
    /// arguments. Scores are integers (all the scripts write).
    fn zset_command(&mut self, name: &str, argv: &[Vec<u8>]) -> Option<Reply> {
        let reply = match name {
            "ZADD" if argv.len() == 4 => {
                let Some(score) = score_arg(&argv[2]) else {
                    return Some(Reply::Err("ERR value is not a valid float".into()));
                };
                match self.zset_mut(&argv[1]) {
                    Ok(z) => Reply::Int(i64::from(z.insert(argv[3].clone(), score).is_none())),
                    Err(e) => Reply::Err(e),
                }
            }
            "ZSCORE" if argv.len() == 3 => match self.db.get(&argv[1]) {
                None => Reply::Bulk(None),
                Some(Val::ZSet(z)) => Reply::Bulk(z.get(&argv[2]).map(|s| s.to_string().into_bytes())),
                Some(_) => Reply::Err(WRONGTYPE.into()),
            },
            "ZREM" if argv.len() >= 3 => {
                let res = match self.db.get_mut(&argv[1]) {
                    None => Reply::Int(0),
                    Some(Val::ZSet(z)) => {
                        Reply::Int(argv[2..].iter().filter(|m| z.remove(*m).is_some()).count() as i64)
                    }
                    Some(_) => Reply::Err(WRONGTYPE.into()),
                };
                self.drop_if_empty(&argv[1]);
                res
            }
            "ZRANGEBYSCORE" if argv.len() == 4 || argv.len() == 7 => self.zrangebyscore(argv),
            _ => return None,
        };
        Some(reply)
    }

    /// `ZRANGEBYSCORE key min max [LIMIT offset count]`: by score, then member.
    fn zrangebyscore(&self, argv: &[Vec<u8>]) -> Reply {
        let (Some(min), Some(max)) = (Bound::parse(&argv[2]), Bound::parse(&argv[3])) else {
            return Reply::Err("ERR min or max is not a float".into());
        };
        let (offset, count) = if argv.len() == 7 {
            if !argv[4].eq_ignore_ascii_case(b"LIMIT") {
                return Reply::Err("ERR syntax error".into());
            }
            match (int_arg(&argv[5]), int_arg(&argv[6])) {
                (Some(o), Some(c)) => (o, c),
                _ => return Reply::Err(NOT_AN_INTEGER.into()),
            }
        } else {
            (0, -1)
        };
        let z = match self.db.get(&argv[1]) {
            None => return Reply::Array(Vec::new()),
            Some(Val::ZSet(z)) => z,
            Some(_) => return Reply::Err(WRONGTYPE.into()),
        };
        let mut by_score: Vec<(i64, &Vec<u8>)> = z.iter().map(|(m, s)| (*s, m)).collect();
        by_score.sort();
        let in_range = by_score.into_iter().filter(|(s, _)| min.below(*s as f64) && max.above(*s as f64));
        let skipped = in_range.skip(usize::try_from(offset).unwrap_or(usize::MAX));
        let taken: Vec<Reply> = match usize::try_from(count) {
            Ok(c) => skipped.take(c).map(|(_, m)| bulk(m.clone())).collect(),
            Err(_) => skipped.map(|(_, m)| bulk(m.clone())).collect(),
        };
        Reply::Array(taken)
    }

    /// `SCRIPT LOAD <text>` (keeps the text under its SHA-1) and `SCRIPT FLUSH`.
    fn script_command(&mut self, argv: &[Vec<u8>]) -> Option<Reply> {
        let sub = argv.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_uppercase());
        let reply = match sub.as_deref() {
            Some("LOAD") if argv.len() >= 3 => {
                let sha = sha1_hex(&argv[2]);
                self.scripts.insert(sha.clone(), argv[2].clone().into());
                Reply::Bulk(Some(sha.into_bytes()))
            }
            Some("FLUSH") => {
                self.scripts.clear();
                status("OK")
            }
            Some(_) => Reply::Err("ERR unknown SCRIPT subcommand".into()),
            None => return None,
        };
        Some(reply)
    }

    /// `EVAL <text> numkeys keys... args...` (which also caches the text) and `EVALSHA <sha> ...`
    /// (`NOSCRIPT` unless cached): runs the text in the host's Lua ([`super::lua`]).
    fn eval(&mut self, w: &dyn Witness, peer: &str, name: &str, argv: &[Vec<u8>]) -> Reply {
        let (sha, body) = if name == "EVAL" {
            let sha = sha1_hex(&argv[1]);
            let body: std::sync::Arc<[u8]> = argv[1].clone().into();
            self.scripts.insert(sha.clone(), body.clone());
            (sha, body)
        } else {
            let sha = String::from_utf8_lossy(&argv[1]).to_ascii_lowercase();
            match self.scripts.get(&sha) {
                Some(body) => (sha, body.clone()),
                None => return Reply::Err("NOSCRIPT No matching script. Please use EVAL.".into()),
            }
        };
        let Some(nkeys) = std::str::from_utf8(&argv[2]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            return Reply::Err(NOT_AN_INTEGER.into());
        };
        if argv.len() < 3 + nkeys {
            return Reply::Err("ERR Number of keys can't be greater than number of args".into());
        }
        let (keys, args) = argv[3..].split_at(nkeys);
        let running = Running { script: RegistryScript::by_sha1(&sha), peer, keys, args };
        super::lua::run(self, w, &sha, &body, &running)
    }

    pub(crate) fn get_str(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.db.get(key) {
            None => Ok(None),
            Some(Val::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn set_mut(&mut self, key: &[u8]) -> Result<&mut BTreeSet<Vec<u8>>, String> {
        match self.db.entry(key.to_vec()).or_insert_with(|| Val::Set(BTreeSet::new())) {
            Val::Set(s) => Ok(s),
            _ => Err(WRONGTYPE.into()),
        }
    }

    fn zset_mut(&mut self, key: &[u8]) -> Result<&mut BTreeMap<Vec<u8>, i64>, String> {
        match self.db.entry(key.to_vec()).or_insert_with(|| Val::ZSet(BTreeMap::new())) {
            Val::ZSet(z) => Ok(z),
            _ => Err(WRONGTYPE.into()),
        }
    }

    fn hget(&self, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.db.get(key) {
            None => Ok(None),
            Some(Val::Hash(h)) => Ok(h.get(field).cloned()),
            Some(_) => Err(WRONGTYPE.into()),
        }
    }

    fn hash_mut(&mut self, key: &[u8]) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>, String> {
        match self.db.entry(key.to_vec()).or_insert_with(|| Val::Hash(BTreeMap::new())) {
            Val::Hash(h) => Ok(h),
            _ => Err(WRONGTYPE.into()),
        }
    }

    /// Redis removes a hash, set or sorted set when its last element goes.
    fn drop_if_empty(&mut self, key: &[u8]) {
        let empty = match self.db.get(key) {
            Some(Val::Hash(h)) => h.is_empty(),
            Some(Val::Set(s)) => s.is_empty(),
            Some(Val::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.db.remove(key);
        }
    }
}

/// The Redis clock (`TIME`) in Unix ms: true virtual time.
pub(crate) fn clock_ms(w: &dyn Witness) -> i64 {
    EPOCH_MS + w.now() as i64
}

/// SHA-1 of a script text, lowercase hex (what `EVALSHA` names).
pub(crate) fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// A `ZADD` score: an integer, or a float with an integer value (what a Lua number becomes).
fn score_arg(a: &[u8]) -> Option<i64> {
    if let Some(n) = int_arg(a) {
        return Some(n);
    }
    let f: f64 = std::str::from_utf8(a).ok()?.parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

/// A `ZRANGEBYSCORE` bound: `-inf`, `+inf`, `x` or `(x` (exclusive).
#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    fn parse(a: &[u8]) -> Option<Bound> {
        let s = std::str::from_utf8(a).ok()?;
        let (exclusive, s) = match s.strip_prefix('(') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let value = match s {
            "-inf" => f64::NEG_INFINITY,
            "+inf" | "inf" => f64::INFINITY,
            _ => s.parse().ok()?,
        };
        Some(Bound { value, exclusive })
    }

    /// This bound as a minimum admits `score`.
    fn below(self, score: f64) -> bool {
        if self.exclusive {
            score > self.value
        } else {
            score >= self.value
        }
    }

    /// This bound as a maximum admits `score`.
    fn above(self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}
