//! A request naming users more than once is answered at every position, in order, and each
//! distinct user is read once: `presence_registry_users_read_total` (users named in registry
//! reads) grows by the number of distinct users, on the WebSocket and over HTTP.

use presence_tests::Stack;

#[tokio::test]
#[ignore = "needs the presence-server binary: run scripts/test"]
async fn query_repeated_ids() {
    let stack = Stack::embedded("query_repeated_ids");
    let server = stack.server("ws-a").start().await;
    let bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;
    let carol = server.connect("carol").await;
    carol.close().await;

    let read = "presence_registry_users_read_total";
    let before = server.metric(read).await;
    // try_query checks that the answer lists the users in the order asked.
    let entries = alice.query(&["bob", "carol", "bob", "bob", "carol"]).await;
    assert_eq!(server.metric(read).await - before, 2, "bob and carol are read once each");
    let online: Vec<bool> = entries.iter().map(|e| e.online).collect();
    assert_eq!(online, [true, false, true, true, false]);
    assert!(entries[1].last_seen.is_some() && entries[1] == entries[4], "{entries:?}");
    assert_eq!((&entries[0], &entries[0]), (&entries[2], &entries[3]));

    let before = server.metric(read).await;
    let entries = server.presence_http("alice", &["carol", "carol", "carol"]).await;
    assert_eq!(server.metric(read).await - before, 1);
    assert_eq!(entries.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(), ["carol", "carol", "carol"]);
    assert!(entries.iter().all(|e| *e == entries[0]), "{entries:?}");
    bob.close().await;
}
