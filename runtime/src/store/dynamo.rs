//! The durable store on DynamoDB (or any DynamoDB-compatible server, e.g. dynalite).
//!
//! # Schema (public: operators read it with the AWS CLI; never change it)
//!
//! Table `users` (name configurable), partition key `user_id` (String), attribute `last_seen`
//! (Number, Unix epoch milliseconds). Other attributes of the item are left alone. The privacy
//! settings and contact lists (`privacy`, `contacts_list`, `contacts_count` in the same item, and
//! the table `<users>_contacts`) are described in [`crate::privacy::dynamo`], whose backend
//! [`DynamoDurable::privacy`] shares this client.
//!
//! # Operations
//!
//! - `Write`: `UpdateItem` with `SET #ls = :ts` under the condition
//!   `attribute_not_exists(#ls) OR #ls < :ts` (a max-register). `ConditionalCheckFailedException`
//!   means a newer value already won: reported as success ([`StoreOutput::Superseded`]).
//! - `Read`: `BatchGetItem` with `ConsistentRead=true` (reads decide what users see), 100 distinct
//!   keys per request (the API limit; duplicates are removed first because the API rejects them),
//!   chunks in parallel. `UnprocessedKeys` are retried up to [`DynamoConfig::unprocessed_retries`]
//!   times with a short backoff, all within the op timeout; keys still unprocessed after that make
//!   the op fail as [`StoreError::Throttled`] (DynamoDB leaves keys unprocessed when it throttles).
//!   Answers are put back in request order. A `last_seen` that is not an integer Number is logged
//!   and reported as absent.
//!
//! # Errors
//!
//! | DynamoDB says                                                             | we report      |
//! |---------------------------------------------------------------------------|----------------|
//! | `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded` | `Throttled` |
//! | no answer within the op timeout (ours or the SDK's)                        | `Timeout`      |
//! | anything else (network, auth, missing table, ...)                          | `Unavailable`  |
//!
//! The SDK's own retries are off by default ([`DynamoConfig::max_attempts`] = 1): the core retries
//! with exponential backoff and jitter and coalesces pending writes per user, and two retry layers
//! would multiply the delay and hide throttling from it.
//!
//! # Credentials and region
//!
//! Without an endpoint override the standard AWS chain applies (environment, profile, SSO, web
//! identity, container and instance metadata). With an endpoint override (a local server), the
//! region is `AWS_REGION` / `AWS_DEFAULT_REGION` or else `us-east-1`, and unless the environment
//! names credentials (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_WEB_IDENTITY_TOKEN_FILE`, container
//! credentials), static dummy credentials are used: local servers accept any signature, and this
//! keeps the SDK from probing instance metadata on a laptop or CI machine.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use presence_core::store::{DurableOp, StoreError, StoreOutput};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;

use super::{with_timeout, DurableStore, StoreFuture};
use crate::privacy::dynamo::{DynamoPrivacy, CONTACTS_KEY_SCHEMA, CONTACTS_TABLE_SUFFIX};

/// The partition key attribute.
pub const USER_ID_ATTR: &str = "user_id";
/// The last_seen attribute (Number, epoch millis).
pub const LAST_SEEN_ATTR: &str = "last_seen";
/// BatchGetItem's limit on keys per request.
pub(crate) const BATCH_GET_MAX_KEYS: usize = 100;

/// Settings of the DynamoDB executor.
#[derive(Clone, Debug)]
pub struct DynamoConfig {
    /// Table name (default `users`).
    pub table: String,
    /// The contact lists' table ([`crate::privacy::dynamo`]); `None` (the default):
    /// `<table>_contacts`, e.g. `users_contacts`.
    pub contacts_table: Option<String>,
    /// Endpoint override for a local DynamoDB-compatible server (`http://127.0.0.1:8000`).
    /// `None`: the region's AWS endpoint (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region override; `None`: the standard chain (see the module docs for the endpoint case).
    pub region: Option<String>,
    /// Bound on every op, including all requests of a batched read (default 2 s).
    pub op_timeout: Duration,
    /// Attempts per HTTP request inside the SDK (default 1: no SDK retries, the core retries).
    pub max_attempts: u32,
    /// How many times a read re-requests `UnprocessedKeys` before giving up (default 5).
    pub unprocessed_retries: u32,
}

impl Default for DynamoConfig {
    fn default() -> DynamoConfig {
        DynamoConfig {
            table: "users".to_owned(),
            contacts_table: None,
            endpoint: None,
            region: None,
            op_timeout: Duration::from_secs(2),
            max_attempts: 1,
            unprocessed_retries: 5,
        }
    }
}

impl DynamoConfig {
    /// The contact lists' table: [`DynamoConfig::contacts_table`], or `<table>_contacts`.
    pub fn contacts_table_name(&self) -> String {
        self.contacts_table.clone().unwrap_or_else(|| format!("{}{CONTACTS_TABLE_SUFFIX}", self.table))
    }
}

/// The durable last_seen store on DynamoDB.
///
/// Cheap to share: the SDK client is a handle around a connection pool.
pub struct DynamoDurable {
    client: Client,
    /// Shared with the op futures (which are `'static`).
    config: Arc<DynamoConfig>,
}

/// Whether the environment names credentials the standard chain should use.
fn env_has_credentials() -> bool {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl DynamoDurable {
    /// Builds the client from `config` and the environment (see the module docs), without any
    /// network I/O: credentials are resolved on the first request.
    pub async fn connect(config: DynamoConfig) -> DynamoDurable {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(config.op_timeout)
                    .connect_timeout(config.op_timeout)
                    .build(),
            );
        let region = config.region.clone().or_else(|| {
            // A local server needs some region to sign with; do not let the chain go looking
            // (the last link asks instance metadata).
            config.endpoint.as_ref().map(|_| env_region().unwrap_or_else(|| "us-east-1".to_owned()))
        });
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
            if !env_has_credentials() {
                loader = loader.credentials_provider(Credentials::new(
                    "presence-local",
                    "presence-local",
                    None,
                    None,
                    "presence-static-local",
                ));
            }
        }
        let sdk = loader.load().await;
        DynamoDurable::from_client(Client::new(&sdk), config)
    }

    /// Wraps an already configured client (custom HTTP client, tests). `config.endpoint`,
    /// `region` and `max_attempts` are ignored: the client's own settings apply.
    pub fn from_client(client: Client, config: DynamoConfig) -> DynamoDurable {
        DynamoDurable { client, config: Arc::new(config) }
    }

    /// The SDK client (for admin tasks and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// The privacy backend over the same client: settings in this table, contact lists in
    /// [`DynamoConfig::contacts_table_name`], with the same op timeout and retries.
    pub fn privacy(&self) -> DynamoPrivacy {
        DynamoPrivacy::new(
            self.client.clone(),
            &self.config.table,
            &self.config.contacts_table_name(),
            self.config.op_timeout,
        )
        .with_unprocessed_retries(self.config.unprocessed_retries)
    }

    /// Creates the tables if they do not exist (on-demand billing): the users table (`user_id`
    /// String partition key) and the contact lists' table (`list` String partition key, `contact`
    /// String sort key; [`crate::privacy::dynamo`]), and waits until both are `ACTIVE` (at most
    /// `wait`). Returns whether this call created either.
    ///
    /// Idempotent and safe to race: a concurrent creator's `ResourceInUseException` is success.
    /// An existing table is not checked beyond its status (its key schema is the operator's).
    pub async fn create_table_if_missing(&self, wait: Duration) -> Result<bool, StoreError> {
        let users = self.config.table.clone();
        let contacts = self.config.contacts_table_name();
        let created_users = self.create_if_missing(&users, &[(USER_ID_ATTR, KeyType::Hash)]).await?;
        let created_contacts = self.create_if_missing(&contacts, &CONTACTS_KEY_SCHEMA).await?;
        let deadline = tokio::time::Instant::now() + wait;
        for table in [&users, &contacts] {
            loop {
                if self.table_status(table).await? == Some(TableStatus::Active) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(StoreError::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(created_users || created_contacts)
    }

    /// Creates `table` with String key attributes `keys` unless it exists; whether this call did.
    async fn create_if_missing(&self, table: &str, keys: &[(&str, KeyType)]) -> Result<bool, StoreError> {
        if self.table_status(table).await?.is_some() {
            return Ok(false);
        }
        let unavailable = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        let mut request =
            self.client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest);
        for (name, key_type) in keys {
            let key = KeySchemaElement::builder()
                .attribute_name(*name)
                .key_type(key_type.clone())
                .build()
                .map_err(unavailable)?;
            let attr = AttributeDefinition::builder()
                .attribute_name(*name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)?;
            request = request.key_schema(key).attribute_definitions(attr);
        }
        match request.send().await {
            Ok(_) => {
                tracing::info!(table, "created dynamodb table");
                Ok(true)
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(false),
            Err(e) => Err(classify(&e)),
        }
    }

    /// `DescribeTable`'s status, `None` if the table does not exist.
    async fn table_status(&self, table: &str) -> Result<Option<TableStatus>, StoreError> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(out) => Ok(Some(
                out.table()
                    .and_then(|t| t.table_status())
                    .cloned()
                    // A server that omits the status: treat the table as usable.
                    .unwrap_or(TableStatus::Active),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Maps an SDK error to the core's error (table in the module docs).
pub(crate) fn classify<E, R>(err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if matches!(err, SdkError::TimeoutError(_)) {
        return StoreError::Timeout;
    }
    match err.code() {
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
            StoreError::Throttled
        }
        _ => StoreError::Unavailable(format!("dynamodb: {}", DisplayErrorContext(err))),
    }
}

/// The key of `user`'s item in the users table.
pub(crate) fn user_key(user: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(USER_ID_ATTR.to_owned(), AttributeValue::S(user.to_owned()))])
}

/// The max-register write.
async fn write(
    client: &Client,
    table: &str,
    user: &UserId,
    last_seen: UnixMillis,
) -> Result<StoreOutput, StoreError> {
    let res = client
        .update_item()
        .table_name(table)
        .set_key(Some(user_key(user.as_str())))
        .update_expression("SET #ls = :ts")
        .condition_expression("attribute_not_exists(#ls) OR #ls < :ts")
        .expression_attribute_names("#ls", LAST_SEEN_ATTR)
        .expression_attribute_values(":ts", AttributeValue::N(last_seen.0.to_string()))
        .send()
        .await;
    match res {
        Ok(_) => Ok(StoreOutput::Done),
        // A newer (or equal) value is already stored: the max-register holds, nothing to do.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
            Ok(StoreOutput::Superseded)
        }
        Err(e) => {
            let err = classify(&e);
            tracing::debug!(user = %user, error = %err, "dynamodb write failed");
            Err(err)
        }
    }
}

/// One item as the SDK returns it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// `BatchGetItem` with `ConsistentRead=true` of at most 100 distinct `keys` of `table`, projected
/// to `names` (placeholder -> attribute), following `UnprocessedKeys` up to `retries` times with a
/// short backoff. Keys still unprocessed then: [`StoreError::Throttled`] (DynamoDB leaves keys
/// unprocessed when it throttles). The items found, in no particular order.
pub(crate) async fn batch_get_consistent(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    names: &[(&str, &str)],
    retries: u32,
) -> Result<Vec<Item>, StoreError> {
    let projection = names.iter().map(|(placeholder, _)| *placeholder).collect::<Vec<_>>().join(", ");
    let mut pending = keys;
    let mut found = Vec::with_capacity(pending.len());
    let mut round: u32 = 0;
    loop {
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(pending))
            .consistent_read(true)
            .projection_expression(&projection);
        for (placeholder, attr) in names {
            request = request.expression_attribute_names(*placeholder, *attr);
        }
        let request = request.build().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let out =
            client.batch_get_item().request_items(table, request).send().await.map_err(|e| classify(&e))?;
        found.extend(out.responses().and_then(|r| r.get(table)).into_iter().flatten().cloned());
        pending =
            out.unprocessed_keys().and_then(|u| u.get(table)).map(|k| k.keys().to_vec()).unwrap_or_default();
        if pending.is_empty() {
            return Ok(found);
        }
        if round >= retries {
            tracing::warn!(table, left = pending.len(), "dynamodb left keys unprocessed after retries");
            return Err(StoreError::Throttled);
        }
        // Unprocessed keys mean the table is throttling us: back off a little before asking again.
        tokio::time::sleep(Duration::from_millis(10u64 << round.min(5))).await;
        round += 1;
    }
}

/// Reads one chunk of at most 100 distinct users.
async fn read_chunk(
    client: &Client,
    config: &DynamoConfig,
    users: &[&str],
) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError> {
    let keys = users.iter().map(|u| user_key(u)).collect();
    let names = [("#uid", USER_ID_ATTR), ("#ls", LAST_SEEN_ATTR)];
    let items = batch_get_consistent(client, &config.table, keys, &names, config.unprocessed_retries).await?;
    Ok(items
        .iter()
        .filter_map(|item| match item.get(USER_ID_ATTR) {
            Some(AttributeValue::S(user)) => {
                Some((user.clone(), parse_last_seen(user, item.get(LAST_SEEN_ATTR))))
            }
            _ => None,
        })
        .collect())
}

/// `last_seen` as stored; anything but an integer Number is logged and treated as absent.
fn parse_last_seen(user: &str, value: Option<&AttributeValue>) -> Option<UnixMillis> {
    match value {
        None => None,
        Some(AttributeValue::N(n)) => match n.parse::<i64>() {
            Ok(ms) => Some(UnixMillis(ms)),
            Err(_) => {
                tracing::warn!(user, value = %n, "unparseable last_seen in dynamodb: treated as absent");
                None
            }
        },
        Some(other) => {
            tracing::warn!(user, value = ?other, "last_seen in dynamodb is not a Number: treated as absent");
            None
        }
    }
}

/// The batched read, answers in request order.
async fn read(client: &Client, config: &DynamoConfig, users: &[UserId]) -> Result<StoreOutput, StoreError> {
    let mut seen = HashSet::new();
    let unique: Vec<&str> = users.iter().map(UserId::as_str).filter(|u| seen.insert(*u)).collect();
    let chunks = unique.chunks(BATCH_GET_MAX_KEYS).map(|chunk| read_chunk(client, config, chunk));
    let found: HashMap<String, Option<UnixMillis>> =
        futures_util::future::try_join_all(chunks).await?.into_iter().flatten().collect();
    Ok(StoreOutput::Durable(users.iter().map(|u| found.get(u.as_str()).copied().flatten()).collect()))
}

impl DurableStore for DynamoDurable {
    fn execute(&self, op: DurableOp) -> StoreFuture {
        let client = self.client.clone();
        let config = Arc::clone(&self.config);
        Box::pin(with_timeout(config.op_timeout, async move {
            match op {
                DurableOp::Write { user, last_seen } => write(&client, &config.table, &user, last_seen).await,
                DurableOp::Read { users } if users.is_empty() => Ok(StoreOutput::Durable(Vec::new())),
                DurableOp::Read { users } => read(&client, &config, &users).await,
            }
        }))
    }

    fn kind(&self) -> &'static str {
        "dynamodb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_last_seen_leniently() {
        let n = |s: &str| AttributeValue::N(s.to_owned());
        assert_eq!(parse_last_seen("u", None), None);
        assert_eq!(parse_last_seen("u", Some(&n("1705311720000"))), Some(UnixMillis(1_705_311_720_000)));
        assert_eq!(parse_last_seen("u", Some(&n("1.5"))), None);
        assert_eq!(parse_last_seen("u", Some(&AttributeValue::S("1".into()))), None);
    }
}
