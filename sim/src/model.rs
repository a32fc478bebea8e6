//! The reference model: what the simulated clients know for certain about their sessions, every
//! presence answer they received, and the faults the nemesis injected (as intervals of virtual
//! time), and the privacy changes the settings host requested. The oracles (`crate::oracle`,
//! `crate::privacy_oracle`) judge the answers, the pushes and the stores against it.

use presence_core::frame::Approx;

/// A client-side connection (one WebSocket attempt).
pub type ConnIx = usize;

/// How a connection ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client sent `bye` (or a Close frame) and received the server's Close frame: the server
    /// ended the session before `t`.
    CloseAcked,
    /// The client sent `bye`/Close but no Close came back in time; then it dropped the socket.
    CloseUnacked,
    /// The client dropped the TCP connection (FIN) without a close frame.
    Dropped,
    /// The client stopped touching the socket (no reads, no writes, no FIN): a dead phone.
    Silent,
    /// The client found the connection unresponsive and dropped it.
    DeadDetected,
    /// The server closed it (Close frame, EOF or reset).
    ServerClosed,
    /// The WebSocket handshake did not complete; the socket was dropped.
    HandshakeFailed,
}

/// One WebSocket connection as its client saw it.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Index of the user.
    pub user: usize,
    /// Device host name.
    pub device: String,
    /// Server index.
    pub server: usize,
    /// The server's incarnation when the client connected.
    pub incarnation: usize,
    /// When the TCP connect started.
    pub t_attempt: u64,
    /// When the handshake completed (101 received).
    pub t_open: Option<u64>,
    /// Last time the client wrote to or read from the socket (reads send automatic pongs).
    pub last_touch: u64,
    /// Send time of the latest request that got an answer (the server received it).
    pub last_acked_send: Option<u64>,
    /// How and when it ended.
    pub end: Option<(End, u64)>,
    /// The request id of this connection's `subscribe` to every other user, if it sent one.
    pub subscribed: Option<u64>,
    /// What this connection was last shown of each watched user (snapshot, then pushes).
    pub view: std::collections::BTreeMap<usize, Shown>,
}

/// One user's entry as a viewer received it: `(online, last_seen, last_seen_approx)`; the bucket
/// is there only when the privacy rule hid the exact last_seen.
pub type Shown = (bool, Option<i64>, Option<Approx>);

impl Conn {
    /// The moment after which the client sent nothing more on this connection (for a silent
    /// client: its last read or write; otherwise the end, when it dropped the socket or got the
    /// server's close).
    pub fn gone_at(&self) -> Option<u64> {
        self.end.map(|(kind, t)| if kind == End::Silent { self.last_touch } else { t })
    }
}

/// One presence answer a client received.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The asking connection.
    pub conn: ConnIx,
    /// The answering server.
    pub server: usize,
    /// When the query was sent / the answer received.
    pub t_sent: u64,
    /// When the answer arrived.
    pub t_recv: u64,
    /// Upper bound of the answering server's core "now" at `t_recv`: its largest clock reading,
    /// or true time + its largest clock offset, whichever is larger.
    pub reader_max_wall: i64,
    /// `(user index, online, last_seen)` of the entries the viewer saw in full (the other
    /// oracles judge these as the truth).
    pub entries: Vec<(usize, bool, Option<i64>)>,
    /// `(user index, entry)` of the entries the privacy rule hid (they carry a bucket): only the
    /// privacy oracle judges them.
    pub hidden: Vec<(usize, Shown)>,
}

/// A live `presence` frame's entry, as a watcher received it.
#[derive(Clone, Debug)]
pub struct Push {
    /// The watching connection.
    pub conn: ConnIx,
    /// When it arrived.
    pub t: u64,
    /// About whom.
    pub user: usize,
    /// What it showed.
    pub shown: Shown,
    /// What the connection showed of the user before (its snapshot or the previous push).
    pub before: Option<Shown>,
}

/// A user's privacy settings as the settings host sets them (the rule's inputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSettings {
    /// `last_seen`: 0 everyone, 1 contacts, 2 nobody.
    pub last_seen: u8,
    /// `online` is `everyone` (else `same_as_last_seen`).
    pub online_everyone: bool,
    /// `except`, as user indices.
    pub except: std::collections::BTreeSet<usize>,
}

impl SimSettings {
    /// What a user who never set any has (the servers' `--default-privacy` is `everyone`).
    pub fn default_everyone() -> SimSettings {
        SimSettings { last_seen: 0, online_everyone: false, except: Default::default() }
    }
}

/// One change request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivacyEdit {
    /// `PUT /v1/me/privacy`.
    Settings(SimSettings),
    /// `PUT /v1/me/contacts`, as user indices.
    Contacts(std::collections::BTreeSet<usize>),
}

/// A change request the settings host sent.
#[derive(Clone, Debug)]
pub struct PrivacyChange {
    /// Whose (the token's user).
    pub user: usize,
    /// What.
    pub edit: PrivacyEdit,
    /// When it was sent.
    pub t_sent: u64,
    /// When it was answered, and the HTTP status; `None` if it never was (it may have landed).
    pub answer: Option<(u64, u16)>,
}

/// Something the nemesis did, as an interval of virtual time (`start == end` for instants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Messages from `from` to `to` are dropped.
    LinkDown {
        /// Sending host.
        from: String,
        /// Receiving host.
        to: String,
    },
    /// The Redis host is down (its data is lost at the start).
    RedisDown,
    /// Server `0` is down (crashed).
    ServerDown(usize),
    /// The DynamoDB stand-in misbehaves.
    Dynamo(String),
    /// Server's clock stepped.
    ClockStep(usize),
}

/// A fault interval.
#[derive(Clone, Debug)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// From.
    pub start: u64,
    /// To (`u64::MAX` while open).
    pub end: u64,
}

/// Everything the oracles need.
#[derive(Debug, Default)]
pub struct Model {
    /// User names.
    pub users: Vec<String>,
    /// Every connection, in order of attempt.
    pub conns: Vec<Conn>,
    /// Every presence answer.
    pub answers: Vec<Answer>,
    /// Live `presence` frames the watchers received.
    pub pushes: u64,
    /// Every entry of those frames.
    pub push_log: Vec<Push>,
    /// Every privacy change the settings host requested, in order of sending.
    pub privacy: Vec<PrivacyChange>,
    /// Queries answered with an error (`unavailable`, `rate_limited`, ...), by code.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Faults.
    pub faults: Vec<Fault>,
}

impl Model {
    pub(crate) fn new(users: Vec<String>) -> Model {
        Model { users, ..Model::default() }
    }

    /// Index of a user name.
    pub fn user_ix(&self, name: &str) -> Option<usize> {
        self.users.iter().position(|u| u == name)
    }

    /// Opens a fault interval; returns its index.
    pub fn fault_start(&mut self, kind: FaultKind, t: u64) -> usize {
        self.faults.push(Fault { kind, start: t, end: u64::MAX });
        self.faults.len() - 1
    }

    /// Closes the newest open interval of `kind`.
    pub fn fault_end(&mut self, kind: &FaultKind, t: u64) {
        if let Some(f) = self.faults.iter_mut().rev().find(|f| &f.kind == kind && f.end == u64::MAX) {
            f.end = t;
        }
    }

    /// Records an instant fault.
    pub fn fault_instant(&mut self, kind: FaultKind, t: u64) {
        self.faults.push(Fault { kind, start: t, end: t });
    }

    /// Whether fault `f` disturbs server `s`'s path to Redis.
    pub fn disturbs_redis_path(f: &Fault, s: usize) -> bool {
        let srv = format!("srv{s}");
        match &f.kind {
            FaultKind::LinkDown { from, to } => {
                (from == &srv && to == "redis") || (from == "redis" && to == &srv)
            }
            FaultKind::RedisDown => true,
            _ => false,
        }
    }

    /// Whether fault `f` disturbs some server's path to Redis (so some server's change feed may
    /// lose a notice).
    pub fn disturbs_some_redis_path(f: &Fault) -> bool {
        match &f.kind {
            FaultKind::LinkDown { from, to } => {
                (from == "redis" && to.starts_with("srv")) || (to == "redis" && from.starts_with("srv"))
            }
            FaultKind::RedisDown => true,
            _ => false,
        }
    }

    /// The latest end of a fault on server `s`'s Redis path that started at or before `t`
    /// (`None` if there was none). Open faults count as ending at `u64::MAX`.
    pub fn last_redis_disturbance(&self, s: usize, t: u64) -> Option<u64> {
        self.faults.iter().filter(|f| f.start <= t && Model::disturbs_redis_path(f, s)).map(|f| f.end).max()
    }

    /// Whether the DynamoDB stand-in misbehaved at any time in `[a, b]`.
    pub fn dynamo_disturbed(&self, a: u64, b: u64) -> bool {
        self.faults.iter().any(|f| matches!(f.kind, FaultKind::Dynamo(_)) && f.start <= b && f.end >= a)
    }
}
