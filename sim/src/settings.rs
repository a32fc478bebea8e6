//! The settings host: users change their privacy settings and contact lists during the faults,
//! through the real HTTP API (`PUT /v1/me/privacy`, `PUT /v1/me/contacts`, with the user's own
//! token) of a random server, one request at a time. Every request is recorded in the model with
//! when it was sent and when (and how) it was answered; the privacy oracle (I10) judges every
//! answer and push against what the settings allowed at the time. Changes stop when the quiet
//! phase begins, so the last ones have time to reach every server.
//!
//! The host is not among the nemesis's targets (its links never go down), but the servers it talks
//! to crash, lose Redis and get cut off like any other: a request may fail, or land without an
//! answer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use presence_core::user::UserId;

use crate::model::{PrivacyChange, PrivacyEdit, SimSettings};
use crate::rng::Rng;
use crate::world::{lock, World};

/// How long a request may take before the host gives up on it (its change may still land).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings host's software.
pub async fn settings_main(w: Arc<World>) -> turmoil::Result {
    let users = w.users();
    let tokens: Vec<String> = users
        .iter()
        .map(|u| UserId::new(u).map(|id| w.auth.issue(&id, Duration::from_secs(30 * 24 * 3600))))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(w.subseed(0x5E7, 0));
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(500, 3_000))).await;
        if w.is_quiet() || w.is_over() {
            std::future::pending::<()>().await;
        }
        let user = rng.pick(users.len());
        let server = rng.pick(w.params.servers);
        let edit = random_edit(&mut rng, user, users.len());
        let (path, body) = request_of(&edit, &users);
        let t_sent = w.now();
        let ix = {
            let mut m = lock(&w.model);
            m.privacy.push(PrivacyChange { user, edit: edit.clone(), t_sent, answer: None });
            m.privacy.len() - 1
        };
        let srv = World::server_name(server);
        w.trace(format!("settings p{ix} {} PUT {srv} {path} {body}", users[user]));
        let result = tokio::time::timeout(REQUEST_TIMEOUT, put(&srv, path, &tokens[user], body)).await;
        let status = match result {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => {
                w.trace(format!("settings p{ix} failed: {e}"));
                None
            }
            Err(_) => {
                w.trace(format!("settings p{ix} timed out"));
                None
            }
        };
        if let Some(status) = status {
            let t = w.now();
            lock(&w.model).privacy[ix].answer = Some((t, status));
            w.trace(format!("settings p{ix} -> {status}"));
        }
    }
}

/// A random change of `user`'s settings (60 %) or contacts (40 %), among `n` users. Half of the
/// settings are the default (everyone sees everything), so most answers stay fully visible and
/// the other oracles keep judging them.
fn random_edit(rng: &mut Rng, user: usize, n: usize) -> PrivacyEdit {
    let others: Vec<usize> = (0..n).filter(|&u| u != user).collect();
    if rng.chance(0.6) {
        let last_seen = match rng.range(0, 10) {
            0..=4 => 0,
            5..=7 => 1,
            _ => 2,
        };
        let online_everyone = rng.chance(0.3);
        let mut except = BTreeSet::new();
        if rng.chance(0.2) {
            except.insert(others[rng.pick(others.len())]);
        }
        PrivacyEdit::Settings(SimSettings { last_seen, online_everyone, except })
    } else {
        PrivacyEdit::Contacts(others.into_iter().filter(|_| rng.chance(0.5)).collect())
    }
}

/// The route and JSON body of `edit`.
fn request_of(edit: &PrivacyEdit, users: &[String]) -> (&'static str, String) {
    let names = |set: &BTreeSet<usize>| set.iter().map(|&u| users[u].clone()).collect::<Vec<_>>();
    match edit {
        PrivacyEdit::Settings(s) => {
            let last_seen = ["everyone", "contacts", "nobody"][s.last_seen as usize];
            let online = if s.online_everyone { "everyone" } else { "same_as_last_seen" };
            let body =
                serde_json::json!({"last_seen": last_seen, "online": online, "except": names(&s.except)});
            ("/v1/me/privacy", body.to_string())
        }
        PrivacyEdit::Contacts(c) => {
            ("/v1/me/contacts", serde_json::json!({"contacts": names(c)}).to_string())
        }
    }
}

/// One `PUT` over a fresh turmoil TCP connection; the answer's status code.
async fn put(srv: &str, path: &str, token: &str, body: String) -> Result<u16, String> {
    let stream = turmoil::net::TcpStream::connect((srv, 8080)).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driving = tokio::spawn(conn);
    let request = hyper::Request::put(path)
        .header("host", srv)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = send.send_request(request).await.map_err(|e| e.to_string());
    driving.abort();
    Ok(answer?.status().as_u16())
}
