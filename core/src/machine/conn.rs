//! Connections: open, frames, heartbeat, token lifetime, and the end of a session.
//!
//! Token lifetime: the runtime verifies tokens (at the handshake, and for an `auth` frame through
//! [`Effect::VerifyToken`]) and hands in when each stops being valid, on the wall clock. The core
//! converts that once into a monotonic deadline (`expires - wall now`, from `mono now`) and owns
//! the timer: at the deadline the connection gets `error` `token_expired` and is closed with
//! 4001, its last_seen the close time, as for any server-initiated close. An `auth` frame whose
//! token verifies for the same user replaces the deadline; anything else gets `bad_token` and the
//! old deadline stays.

use std::time::Duration;

use crate::codec;
use crate::frame::{DecodeErrorKind, Encoding, ErrorCode, Frame};
use crate::ratelimit::TokenBucket;
use crate::time::{MonoTime, UnixMillis};
use crate::user::{SessionId, UserId};

use std::collections::{BTreeMap, BTreeSet};

use super::io::{close_code, ConnId, Effect, EndReason, OutMessage, Scopes, TokenGrant};
use super::watch::{SeenView, Shown};
use super::writes::{Session, Sid};
use super::Presence;

/// A live connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) user: UserId,
    pub(super) sid: Sid,
    /// Last proof of life (any inbound frame, pong or ping), on both clocks: the monotonic time
    /// drives the heartbeat, the wall time is the last_seen of an ungraceful end.
    last_proof: MonoTime,
    last_proof_wall: UnixMillis,
    /// When this connection's heartbeat check is armed in `Presence::timers`.
    timer_at: MonoTime,
    /// Encoding of the client's latest data frame; unsolicited frames use it.
    encoding: Encoding,
    /// Backstop of the runtime's per-connection frame rate (see `Config::frame_rate`).
    frames: TokenBucket,
    /// When the token stops being valid (monotonic; armed in `Presence::expiries`).
    expires: Option<MonoTime>,
    /// The token's scopes. A service connection (`scopes.service`) has no session: `sid` names
    /// no entry of `Presence::sessions`, and its end records nothing.
    pub(super) scopes: Scopes,
    /// Users this connection subscribed to.
    pub(super) watching: BTreeSet<UserId>,
    /// What this connection was last shown of each of them (snapshot, then pushes).
    pub(super) shown: BTreeMap<UserId, Shown>,
    /// What this connection's user may see of each watched user (from the latest privacy read
    /// answered; absent until one is: then nothing is pushed, failing closed).
    pub(super) views: BTreeMap<UserId, SeenView>,
    /// When this connection's views are next read again without a notice
    /// (`Config::privacy_refresh`; armed in `Watches::privacy_retry`).
    pub(super) privacy_refresh_at: Option<MonoTime>,
}

impl Presence {
    pub(super) fn on_open(
        &mut self,
        conn: ConnId,
        user: UserId,
        session: SessionId,
        expires: Option<UnixMillis>,
        scopes: Scopes,
    ) {
        if self.conns.contains_key(&conn) {
            // A reused id is a driver bug; keep the existing session rather than corrupt it.
            return;
        }
        if self.shutting_down || self.at_capacity() {
            self.stats.sessions_refused += 1;
            let reason = if self.shutting_down { "server shutting down" } else { "server at capacity" };
            self.effects.push_back(Effect::Close { conn, code: close_code::TRY_AGAIN_LATER, reason });
            return;
        }
        self.next_sid += 1;
        let sid = Sid(self.next_sid);
        let dead_at = self.now.saturating_add(self.config.heartbeat_timeout);
        let timer_at = grid_up(dead_at, self.config.heartbeat_check_step);
        let expires = self.deadline_of(expires);
        self.conns.insert(
            conn,
            Box::new(Conn {
                user: user.clone(),
                sid,
                last_proof: self.now,
                last_proof_wall: self.wall,
                timer_at,
                encoding: Encoding::Json,
                frames: TokenBucket::full(self.config.frame_burst, self.now),
                expires,
                scopes,
                watching: BTreeSet::new(),
                shown: BTreeMap::new(),
                views: BTreeMap::new(),
                privacy_refresh_at: None,
            }),
        );
        self.timers.insert((timer_at, conn));
        if let Some(at) = expires {
            self.expiries.insert((at, conn));
        }
        if scopes.service {
            // A service is never online and has no last_seen: no session to register.
            return;
        }
        self.sessions.insert(sid, Session::new(user.clone(), session));
        self.users.entry(user.clone()).or_default().live += 1;
        self.user_ref(&user);
        self.stats.sessions_opened += 1;
        self.dirty_sessions.insert(sid);
    }

    /// The monotonic deadline of a wall-clock expiry, taken at the current input: a token that is
    /// already expired gets `now` (it fires before this input's handling ends).
    fn deadline_of(&self, expires: Option<UnixMillis>) -> Option<MonoTime> {
        let at = expires?;
        let left = u64::try_from(at.0.saturating_sub(self.wall.0)).unwrap_or(0);
        Some(self.now.saturating_add(Duration::from_millis(left)))
    }

    /// Records proof of life that arrived at `at` (now for a data frame; earlier for a pong handed
    /// in late, perhaps batched: see `Input::Alive`). Returns false if the connection is unknown
    /// (closed).
    fn proof_of_life(&mut self, conn: ConnId, at: MonoTime) -> bool {
        let (now, wall) = (self.now, self.wall);
        let at = at.min(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if at >= c.last_proof {
            // The wall time of that instant: now's, less the time since. (A wall-clock step in
            // between shifts it as it shifts now; it never goes below the proof held.)
            let behind = i64::try_from(now.since(at).as_millis()).unwrap_or(i64::MAX);
            c.last_proof = at;
            c.last_proof_wall = c.last_proof_wall.max(UnixMillis(wall.0.saturating_sub(behind)));
        }
        true
    }

    pub(super) fn on_alive(&mut self, conn: ConnId, at: MonoTime) {
        self.proof_of_life(conn, at);
    }

    pub(super) fn on_message(&mut self, conn: ConnId, encoding: Encoding, payload: &[u8]) {
        if !self.proof_of_life(conn, self.now) {
            return;
        }
        let (rate, burst, now) = (self.config.frame_rate, self.config.frame_burst, self.now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.encoding = encoding;
        if !c.frames.try_take(1, rate, burst, now) {
            self.close(conn, close_code::POLICY, "frame rate limit exceeded", EndReason::Policy);
            return;
        }
        match codec::decode(payload, encoding, &self.config.limits) {
            Ok(frame) => self.on_frame(conn, frame),
            Err(e) if matches!(e.kind, DecodeErrorKind::Oversized { .. }) => {
                self.close(conn, close_code::TOO_BIG, "message too big", EndReason::Policy);
            }
            Err(e) => self.send_error(conn, e.id, e.code(), &e.to_string()),
        }
    }

    fn on_frame(&mut self, conn: ConnId, frame: Frame) {
        match frame {
            Frame::Ping { seq } => self.send(conn, &Frame::Pong { seq }),
            Frame::Query { id, users } => self.start_query(conn, id, users),
            Frame::Subscribe { id, users } => self.on_subscribe(conn, id, users),
            Frame::Unsubscribe { users, .. } => self.on_unsubscribe(conn, users),
            Frame::Bye => self.close(conn, close_code::NORMAL, "bye", EndReason::Close),
            Frame::Auth { token } => self.effects.push_back(Effect::VerifyToken { conn, token }),
            Frame::Pong { .. } | Frame::Presence { .. } | Frame::Error { .. } => {
                self.send_error(conn, None, ErrorCode::BadFrame, "frame type is server-to-client only")
            }
        }
    }

    /// The runtime verified (or refused) the token of an `auth` frame.
    pub(super) fn on_token_checked(&mut self, conn: ConnId, result: Result<TokenGrant, String>) {
        let Some(c) = self.conns.get(&conn) else { return };
        let grant = match result {
            Ok(g) if g.user == c.user && g.scopes == c.scopes => g,
            Ok(g) if g.user == c.user => {
                let msg = "the token's scopes differ from the connection's";
                return self.send_error(conn, None, ErrorCode::BadToken, msg);
            }
            Ok(_) => {
                return self.send_error(conn, None, ErrorCode::BadToken, "the token is for another user")
            }
            Err(why) => return self.send_error(conn, None, ErrorCode::BadToken, &why),
        };
        let expires = self.deadline_of(grant.expires);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if let Some(old) = std::mem::replace(&mut c.expires, expires) {
            self.expiries.remove(&(old, conn));
        }
        if let Some(at) = expires {
            self.expiries.insert((at, conn));
        }
    }

    /// The expiry armed for `conn` at `at` fired.
    pub(super) fn check_expiry(&mut self, conn: ConnId, at: MonoTime) {
        if self.conns.get(&conn).is_some_and(|c| c.expires == Some(at)) {
            self.send_error(conn, None, ErrorCode::TokenExpired, "the connection's token expired");
            self.close(conn, close_code::TOKEN_EXPIRED, "token expired", EndReason::Expired);
        }
    }

    /// The connection's task closed it for breaking a per-connection limit.
    pub(super) fn on_policy_closed(&mut self, conn: ConnId) {
        self.end_conn(conn, EndReason::Policy);
    }

    pub(super) fn on_closed(&mut self, conn: ConnId, graceful: bool) {
        let reason = if graceful { EndReason::Close } else { EndReason::Abrupt };
        self.end_conn(conn, reason);
    }

    pub(super) fn on_shutdown(&mut self) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.close(conn, close_code::GOING_AWAY, "server shutting down", EndReason::Shutdown);
        }
    }

    /// The heartbeat check armed for `conn` fired: dead if no proof of life came within the
    /// timeout, else armed again for the timeout after the latest proof. (The probes that draw
    /// proofs are the runtime's: each connection's task pings it when it has been quiet for
    /// `Config::ping_interval`; the core owns only the deadline.)
    pub(super) fn check_heartbeat(&mut self, conn: ConnId) {
        let (timeout, step, now) =
            (self.config.heartbeat_timeout, self.config.heartbeat_check_step, self.now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let dead_at = c.last_proof.saturating_add(timeout);
        if now >= dead_at {
            self.close(conn, close_code::GOING_AWAY, "heartbeat timeout", EndReason::Timeout);
        } else {
            let at = grid_up(dead_at, step);
            c.timer_at = at;
            self.timers.insert((at, conn));
        }
    }

    /// Server-initiated close: end the session, tell the driver to close.
    pub(super) fn close(&mut self, conn: ConnId, code: u16, reason: &'static str, why: EndReason) {
        if self.end_conn(conn, why) {
            self.effects.push_back(Effect::Close { conn, code, reason });
        }
    }

    /// Forgets the connection and ends its session. Returns false if it was already gone.
    fn end_conn(&mut self, conn: ConnId, why: EndReason) -> bool {
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        self.timers.remove(&(c.timer_at, conn));
        if let Some(at) = c.expires {
            self.expiries.remove(&(at, conn));
        }
        if let Some(at) = c.privacy_refresh_at {
            self.watches.privacy_retry.remove(&(at, conn));
        }
        self.unwatch_all(conn, &c.user, c.watching);
        if c.scopes.service {
            return true;
        }
        // Graceful and server-initiated ends happen now; a timeout or a reset means the peer may have
        // been gone since its last proof of life, which is the more accurate last_seen.
        let at = match why {
            EndReason::Timeout | EndReason::Abrupt => c.last_proof_wall,
            EndReason::Close | EndReason::Policy | EndReason::Shutdown | EndReason::Expired => self.wall,
        };
        if let Some(u) = self.users.get_mut(&c.user) {
            u.live = u.live.saturating_sub(1);
        }
        let value = self.record_value(&c.user, at);
        self.end_session(c.sid, value);
        self.stats.sessions_ended[why as usize] += 1;
        true
    }

    pub(super) fn send(&mut self, conn: ConnId, frame: &Frame) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let message = match c.encoding {
            Encoding::Json => OutMessage::Text(codec::encode_json(frame)),
            Encoding::Binary => OutMessage::Binary(codec::encode_binary(frame)),
        };
        self.effects.push_back(Effect::Send { conn, message });
    }

    pub(super) fn send_error(&mut self, conn: ConnId, id: Option<u64>, code: ErrorCode, message: &str) {
        self.stats.errors_sent += 1;
        let mut message = message.to_owned();
        truncate_utf8(&mut message, crate::frame::MAX_ERROR_MESSAGE_BYTES);
        self.send(conn, &Frame::Error { id, code, message });
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The first multiple of `step` at or after `at` (`at` itself for a zero step): when the heartbeat
/// check of a connection dead at `at` runs (`Config::heartbeat_check_step`).
fn grid_up(at: MonoTime, step: Duration) -> MonoTime {
    let step = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    if step == 0 {
        return at;
    }
    MonoTime::from_nanos(at.as_nanos().div_ceil(step).saturating_mul(step))
}
