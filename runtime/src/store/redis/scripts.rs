//! The registry's Lua scripts: one `.lua` source per script under `scripts/`, and
//! [`RegistryScript`], the one enum that names them for the executors, the simulator's Redis host
//! (which runs these very sources in its embedded Lua) and the differential test.
//!
//! A script's text is the concatenation of a shared library file and its own file, exactly as
//! Redis receives it: `last_seen_lib.lua` (the timestamp helpers) and `read_view_lib.lua` (the
//! read view), or `redis_now_lib.lua` (the Redis clock), then the body. No comments inside the sources: the text is what `EVALSHA` names
//! by its SHA-1, and these docs are where each script's contract lives.
//!
//! `last_seen_lib.lua` defines, as Lua locals: `wf(v)`, whether `v` is a well-formed fixed-width
//! timestamp (a malformed value reads as absent, so overwriting it loses nothing);
//! `max_into(key, ts)`, the max-register, creating the key (1 if it wrote); and
//! `record_end(cache, pending, ts)`: a session end's value goes into the cache if the cache is
//! present, else into the pending key (an absent cache may be below DynamoDB's value, so it is
//! only ever created from a durable value). Redis compares the strings in Lua; both sides have the
//! same fixed shape and differ only in digits, so the comparison is time order under any
//! collation locale.
//!
//! `read_view_lib.lua` defines `sync_view(lease, cache, pending, view)`: rewrites the user's read
//! view (`read_view:{u}`, docs/STORES.md) from the three keys it summarises: the lease tokens of
//! `ws_lease:{u}` (sorted as strings, so the text does not depend on the hash's order, which Redis
//! does not fix), then the cache and the pending value (each only if well formed), as
//! `<tok> <tok>...|<cache>|<pending>`; deletes it when all three are empty. Every script that
//! changes one of the three keys ends with it, so the view is always their projection (one script,
//! one slot: atomic).
//!
//! `redis_now_lib.lua` defines `now`: the Redis clock (`TIME`) in Unix milliseconds.

use std::sync::OnceLock;

use redis::Script;

/// The timestamp helpers (`wf`, `max_into`, `record_end`).
macro_rules! last_seen_lib {
    () => {
        include_str!("scripts/last_seen_lib.lua")
    };
}

/// The read view's writer (`sync_view`; uses `wf`).
macro_rules! read_view_lib {
    () => {
        include_str!("scripts/read_view_lib.lua")
    };
}

/// The Redis clock as a Lua local `now`.
macro_rules! redis_now_lib {
    () => {
        include_str!("scripts/redis_now_lib.lua")
    };
}

const SET_LAST_SEEN: &str =
    concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/set_last_seen.lua"));
const RECORD_LAST_SEEN: &str =
    concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/record_last_seen.lua"));
const END_SESSION: &str =
    concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/end_session.lua"));
const REAP_MARK: &str = concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/reap_mark.lua"));
const RENEW_LEASE: &str = concat!(redis_now_lib!(), include_str!("scripts/renew_lease.lua"));
const CLAIM_REAP: &str = concat!(redis_now_lib!(), include_str!("scripts/claim_reap.lua"));
const DROP_LEASE: &str = concat!(redis_now_lib!(), include_str!("scripts/drop_lease.lua"));
const REAP: &str = concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/reap.lua"));
const REGISTER: &str = concat!(last_seen_lib!(), read_view_lib!(), include_str!("scripts/register.lua"));

/// A registry script. Keys and arguments are listed per variant; every script touches one slot.
/// `view` is `read_view:{u}`: each script that changes a user's sessions or last_seen values ends
/// with `sync_view` on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegistryScript {
    /// `SetLastSeen`: `KEYS[1]` = `last_seen:{u}`, `KEYS[2]` = `last_seen_pending:{u}`,
    /// `KEYS[3]` = `ws_lease:{u}`, `KEYS[4]` = view, `ARGV[1]` = the fixed-width timestamp (a
    /// durable value). Max-register of the cache,
    /// creating it; then the pending value is dropped if the cache covers it. Returns 1 if the
    /// cache was written.
    SetLastSeen,
    /// `RecordLastSeen`: `KEYS[1]` = `last_seen:{u}`, `KEYS[2]` = `last_seen_pending:{u}`,
    /// `KEYS[3]` = `ws_lease:{u}`, `KEYS[4]` = view, `ARGV[1]` = the fixed-width timestamp (a value
    /// not yet durable). `record_end` alone: the
    /// cache if present, else the pending key. Returns 1 if it wrote.
    RecordLastSeen,
    /// `EndSession`: `KEYS[1]` = `ws:{u}`, `KEYS[2]` = `last_seen:{u}`, `KEYS[3]` =
    /// `ws_lease:{u}`, `KEYS[4]` = `last_seen_pending:{u}`, `KEYS[5]` = view, `ARGV[1]` = session
    /// id, `ARGV[2]` = the
    /// fixed-width timestamp. `HDEL` of this session's fields only, then `record_end`, atomically
    /// (one script, one slot; docs/STORES.md, "Cache fill").
    EndSession,
    /// `MarkReaped`, per session: `KEYS[1]` = `ws_lease:{u}`, `KEYS[2]` = `last_seen:{u}`,
    /// `KEYS[3]` = `last_seen_pending:{u}`, `KEYS[4]` = view; `ARGV[1]` = session, `ARGV[2]` = the
    /// dead lease's
    /// token, `ARGV[3]` = the fixed-width timestamp of its last renewal. If the session is still
    /// held under that lease, `record_end` its value and return 1; else 0.
    ReapMark,
    /// `RenewLease`: `KEYS` = leases, lease_renewed, lease_token; `ARGV[1]` = server id,
    /// `ARGV[2]` = the token held (or empty), `ARGV[3]` = TTL ms, `ARGV[4]` = the server's wall
    /// clock (ms). Extends the lease if it is live; otherwise issues a new token (never below the
    /// clock in ms) and lease. Returns `{token, live lease names, up to 16 expired lease names}`.
    RenewLease,
    /// `ClaimReap`, first step: `KEYS` = leases, lease_renewed, lease_claims; `ARGV[1]` = the
    /// expired lease, `ARGV[2]` = the claimer (our server id), `ARGV[3]` = claim TTL ms. Claims
    /// the lease if it is still expired and unclaimed (or the claim expired, or is ours). Returns
    /// its last renewal (wall ms, as a string), or nil when it is not ours to reap.
    ClaimReap,
    /// `ClaimReap` on an empty index: `KEYS` = leases, lease_renewed, lease_claims; `ARGV[1]` =
    /// the lease. Forgets it if it is still expired (an expired lease is never renewed, so this is
    /// only a guard against a clock step).
    DropLease,
    /// `Reap`, per held session: `KEYS[1]` = `ws:{u}`, `KEYS[2]` = `ws_lease:{u}`, `KEYS[3]` =
    /// `last_seen:{u}`, `KEYS[4]` = `last_seen_pending:{u}`, `KEYS[5]` = view; `ARGV[1]` =
    /// session, `ARGV[2]` = the dead lease's token. Compare-and-delete on the fencing token.
    Reap,
    /// `Register`'s user part: `KEYS[1]` = `ws_lease:{u}`, `KEYS[2]` = `ws:{u}`, `KEYS[3]` =
    /// `last_seen:{u}`, `KEYS[4]` = `last_seen_pending:{u}`, `KEYS[5]` = view; `ARGV[1]` = session,
    /// `ARGV[2]` = the lease token, `ARGV[3]` = the server id. Sets both hash fields, then the
    /// view. Sent with `EVAL` (its text) inside the registration's pipeline, so a `NOSCRIPT` can
    /// never split the pipeline.
    Register,
}

impl RegistryScript {
    /// Every script.
    pub const ALL: [RegistryScript; 9] = [
        RegistryScript::SetLastSeen,
        RegistryScript::RecordLastSeen,
        RegistryScript::EndSession,
        RegistryScript::ReapMark,
        RegistryScript::RenewLease,
        RegistryScript::ClaimReap,
        RegistryScript::DropLease,
        RegistryScript::Reap,
        RegistryScript::Register,
    ];

    /// The script's name: the stem of its `.lua` file.
    pub fn name(self) -> &'static str {
        match self {
            RegistryScript::SetLastSeen => "set_last_seen",
            RegistryScript::RecordLastSeen => "record_last_seen",
            RegistryScript::EndSession => "end_session",
            RegistryScript::ReapMark => "reap_mark",
            RegistryScript::RenewLease => "renew_lease",
            RegistryScript::ClaimReap => "claim_reap",
            RegistryScript::DropLease => "drop_lease",
            RegistryScript::Reap => "reap",
            RegistryScript::Register => "register",
        }
    }

    /// The full text Redis receives (library, then body).
    pub fn source(self) -> &'static str {
        match self {
            RegistryScript::SetLastSeen => SET_LAST_SEEN,
            RegistryScript::RecordLastSeen => RECORD_LAST_SEEN,
            RegistryScript::EndSession => END_SESSION,
            RegistryScript::ReapMark => REAP_MARK,
            RegistryScript::RenewLease => RENEW_LEASE,
            RegistryScript::ClaimReap => CLAIM_REAP,
            RegistryScript::DropLease => DROP_LEASE,
            RegistryScript::Reap => REAP,
            RegistryScript::Register => REGISTER,
        }
    }

    /// The SHA-1 of [`RegistryScript::source`], lowercase hex: what `EVALSHA` names.
    pub fn sha1(self) -> &'static str {
        self.script().get_hash()
    }

    /// The script whose SHA-1 is `sha` (either case).
    pub fn by_sha1(sha: &str) -> Option<RegistryScript> {
        RegistryScript::ALL.into_iter().find(|s| s.sha1().eq_ignore_ascii_case(sha))
    }

    /// Whether the script reads the Redis clock (`TIME`), so its effect depends on when it runs.
    pub fn reads_clock(self) -> bool {
        matches!(self, RegistryScript::RenewLease | RegistryScript::ClaimReap | RegistryScript::DropLease)
    }

    /// The compiled script (`Script` precomputes the SHA-1 and does `EVALSHA`, loading the text
    /// on `NOSCRIPT`).
    pub(super) fn script(self) -> &'static Script {
        static SCRIPTS: OnceLock<Vec<Script>> = OnceLock::new();
        &SCRIPTS.get_or_init(|| RegistryScript::ALL.iter().map(|s| Script::new(s.source())).collect())
            [self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_what_we_think() {
        let end = RegistryScript::EndSession.source();
        assert!(end.contains("redis.call('HDEL', KEYS[1], ARGV[1])\nredis.call('HDEL', KEYS[3], ARGV[1])\n"));
        assert!(end.ends_with(
            "local wrote = record_end(KEYS[2], KEYS[4], ARGV[2])\nsync_view(KEYS[3], KEYS[2], KEYS[4], KEYS[5])\nreturn wrote\n"
        ));
        assert!(RegistryScript::RecordLastSeen
            .source()
            .ends_with("end\nlocal wrote = record_end(KEYS[1], KEYS[2], ARGV[1])\nsync_view(KEYS[3], KEYS[1], KEYS[2], KEYS[4])\nreturn wrote\n"));
        assert!(RegistryScript::SetLastSeen.source().contains("local wrote = max_into(KEYS[1], ARGV[1])"));
        assert!(RegistryScript::Reap
            .source()
            .contains("end\nif redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end"));
        // Every script that writes a user's keys rewrites the view last.
        for s in [
            RegistryScript::SetLastSeen,
            RegistryScript::RecordLastSeen,
            RegistryScript::EndSession,
            RegistryScript::ReapMark,
            RegistryScript::Reap,
            RegistryScript::Register,
        ] {
            assert!(s.source().contains("\nsync_view(KEYS["), "{}", s.name());
        }
    }

    /// The digests every deployed server has been sending with `EVALSHA`: a script's text is part
    /// of the contract with Redis (a rolling upgrade runs old and new servers side by side), so a
    /// change to one is deliberate and updates this list. Changed with the read view: the five
    /// scripts that write a user's keys end with `sync_view`, and `register` is new; servers of
    /// the earlier version do not keep the views (docs/OPERATIONS.md, "Upgrading to the read
    /// view").
    #[test]
    fn digests_are_the_deployed_ones() {
        let got: Vec<(&str, &str)> = RegistryScript::ALL.iter().map(|s| (s.name(), s.sha1())).collect();
        assert_eq!(
            got,
            [
                ("set_last_seen", "3915ab874cfccd45785b00fb5019a60fd550299c"),
                ("record_last_seen", "71e6d070dfb1d4c4f837e9bcd7c1f8ece675458e"),
                ("end_session", "3b101c240e2667b8e1865a2687b5debbbaca90e8"),
                ("reap_mark", "d3e34ec0bc8aad01d266324b01f3b2444ccd822b"),
                ("renew_lease", "ddacf2ca597116255b7470e55d8f6da97778e94c"),
                ("claim_reap", "f37e0f615e7910c2b952387b34665104737564f9"),
                ("drop_lease", "1f5b70523d20d3f365803ac19a185fa70282f0cb"),
                ("reap", "8085a7920298f8733fd256f84865e66e54ca5568"),
                ("register", "2caff95d590b7936757997306f02f4180aacf08a"),
            ]
        );
        for s in RegistryScript::ALL {
            assert_eq!(RegistryScript::by_sha1(&s.sha1().to_uppercase()), Some(s));
        }
    }
}
