//! Privacy settings and contact lists: where they are stored, how the core reads them, and the
//! HTTP API's JSON (docs/PRIVACY.md states the rule; `presence_core::privacy` decides with it).
//!
//! | module       | role                                                                      |
//! |--------------|---------------------------------------------------------------------------|
//! | `api`        | the HTTP routes: `/v1/me/...` and `/v1/users/{user}/...`, announcing each change |
//! | [`json`]     | the settings object and contact bodies of the HTTP API, parsed and checked |
//! | [`cache`]    | the executor of the core's `PrivacyOp::Read`: a per-server cache over a backend, invalidated by change notices |
//! | [`memory`]   | an in-process backend (tests and the simulator)                            |
//! | [`redb`]     | the embedded backend, in the same redb file as last_seen                  |
//! | [`dynamo`]   | the DynamoDB backend (settings in `users`, contacts in their own table)   |
//!
//! A backend is the durable truth; it is read only on a cache miss. Every backend honours:
//!
//! - **Whole or nothing.** `put_settings`, `put_contacts` and `patch_contacts` either land whole
//!   or not at all (an error says it did not land; a timeout may or may not have landed, and
//!   repeating the same request is safe).
//! - **Membership without the list.** `read_memberships` answers "is `member` in `owner`'s list"
//!   without reading the list (a 10,000-contact list is never read to answer a query).
//! - **Small lists whole.** `read_users` may return, with a user's settings, the user's whole list
//!   when it holds at most [`WHOLE_LIST_MAX`] ids and the backend can read it in the same
//!   consistent read ([`StoredUser::contacts`]): the cache then answers every membership of that
//!   owner from one entry instead of one entry per question (docs/PRIVACY.md, "Caching").
//! - **Versioned lists.** `read_users` returns, with each user's settings, the version of the
//!   user's current contact list (`list`): membership reads name the version they were derived
//!   from, so a backend that writes a new list beside the old one (DynamoDB) answers from one
//!   consistent list. A backend that updates in place (redb, memory) may ignore it.
//! - **Bounded.** Each call finishes within the backend's op timeout ([`StoreError::Timeout`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use presence_core::privacy::Settings;
use presence_core::store::StoreError;
use presence_core::user::UserId;

pub(crate) mod api;
pub mod cache;
pub mod dynamo;
pub mod json;
pub mod memory;
pub mod redb;

pub use self::redb::RedbPrivacy;
pub use cache::{PrivacyCache, PrivacyCacheConfig};
pub use dynamo::DynamoPrivacy;
pub use memory::MemoryPrivacy;

/// A boxed, `Send` future of a backend call.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the store holds for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUser {
    /// The settings the user set; `None`: never set (the server's default applies).
    pub settings: Option<Settings>,
    /// The version of the user's current contact list (0: none ever written).
    pub list: u64,
    /// The user's whole contact list of that version, sorted, when the backend read it with the
    /// settings (at most [`WHOLE_LIST_MAX`] ids); `None`: memberships are asked one by one with
    /// [`PrivacyBackend::read_memberships`].
    pub contacts: Option<Arc<[UserId]>>,
}

impl StoredUser {
    /// What a backend holds for a user who never set settings nor wrote a list: the default
    /// settings and a known, empty list.
    pub fn never_set() -> StoredUser {
        StoredUser { settings: None, list: 0, contacts: Some(Arc::from([])) }
    }
}

/// The longest contact list a backend returns whole with [`PrivacyBackend::read_users`]. Longer
/// lists are asked member by member (a 10,000-contact list is never read to answer a query).
pub const WHOLE_LIST_MAX: usize = 64;

/// One membership question: is `member` in `owner`'s contact list (version `list`)?
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Membership {
    /// Whose list.
    pub owner: UserId,
    /// The list version, from [`StoredUser::list`].
    pub list: u64,
    /// Who is looked for.
    pub member: UserId,
}

/// Why a contact-list change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactsError {
    /// The list would hold more than the server's `--max-contacts`; nothing was changed.
    #[error("a contact list holds at most {max} users ({would} requested)")]
    TooMany {
        /// The limit.
        max: usize,
        /// How many the list would have held.
        would: usize,
    },
    /// The store could not take the change; nothing was changed (or, for a timeout, maybe it
    /// was: repeating the request is safe).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The durable home of settings and contact lists.
pub trait PrivacyBackend: Send + Sync + 'static {
    /// Per user, in order: the stored settings, the current list version and, where the backend
    /// has it at hand, the whole list if it is short ([`StoredUser::contacts`]). Strongly
    /// consistent (a read decides what viewers see), settings and list from the same read.
    fn read_users(&self, users: Vec<UserId>) -> BackendFuture<Result<Vec<StoredUser>, StoreError>>;

    /// Per question, in order: whether the member is in the owner's list of that version.
    /// Strongly consistent.
    fn read_memberships(&self, pairs: Vec<Membership>) -> BackendFuture<Result<Vec<bool>, StoreError>>;

    /// `user`'s whole contact list, sorted (for `GET /v1/me/contacts`).
    fn contacts(&self, user: UserId) -> BackendFuture<Result<Vec<UserId>, StoreError>>;

    /// Replaces `user`'s settings.
    fn put_settings(&self, user: UserId, settings: Settings) -> BackendFuture<Result<(), StoreError>>;

    /// Replaces `user`'s contact list (already checked against the limit by the caller).
    fn put_contacts(
        &self,
        user: UserId,
        contacts: BTreeSet<UserId>,
    ) -> BackendFuture<Result<(), ContactsError>>;

    /// Adds `add` then removes `remove` (an id in both ends up removed), refusing with
    /// [`ContactsError::TooMany`] if the list would exceed `max`. Returns the list's new length.
    fn patch_contacts(
        &self,
        user: UserId,
        add: BTreeSet<UserId>,
        remove: BTreeSet<UserId>,
        max: usize,
    ) -> BackendFuture<Result<usize, ContactsError>>;

    /// Short label for logs and metrics (`"dynamodb"`, `"redb"`, `"memory"`).
    fn kind(&self) -> &'static str;
}
