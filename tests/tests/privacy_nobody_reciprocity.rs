//! Privacy, `nobody` and reciprocity: Carol hides her last seen from everyone, so she cannot see
//! anyone else's either (WhatsApp's and Telegram's rule), though Dave shows his to everyone; she
//! always sees herself. `except` hides from the listed ids whatever the audience says.

use std::time::Duration;

use presence_tests::Stack;
use serde_json::json;

#[tokio::test]
#[ignore = "needs redis-server and dynalite: run scripts/test"]
async fn privacy_nobody_reciprocity() {
    let stack = Stack::new("privacy_nobody_reciprocity").await;
    let (a, b) = tokio::join!(stack.server("ws-a").start(), stack.server("ws-b").start());
    a.set_privacy("carol", json!({ "last_seen": "nobody" })).await;
    a.set_privacy("dave", json!({ "last_seen": "everyone", "except": ["mallory"] })).await;

    let dave = a.connect("dave").await;
    let mut watcher = b.connect("watcher").await;
    watcher.wait_online("dave").await;
    dave.close().await;
    let (seen, _) = watcher.wait_offline("dave", Duration::from_secs(10)).await;
    assert!(seen.last_seen.is_some());

    // Carol shows nobody her last seen, so she may not see Dave's.
    let mut carol = b.connect("carol").await;
    let got = carol.query(&["dave", "carol"]).await;
    assert_eq!((got[0].last_seen, got[0].last_seen_approx.as_deref()), (None, Some("recently")), "{got:?}");
    // Herself: everything (online now, her own last seen unknown yet).
    assert_eq!((got[1].online, got[1].last_seen_approx.as_deref()), (true, None), "{got:?}");

    // Mallory is in Dave's except list: nothing, though Dave shows everyone else.
    let mut mallory = b.connect("mallory").await;
    let got = mallory.query(&["dave"]).await;
    assert_eq!(
        (got[0].online, got[0].last_seen, got[0].last_seen_approx.as_deref()),
        (false, None, Some("recently"))
    );
    let _dave = a.connect("dave").await;
    watcher.wait_online("dave").await;
    let got = mallory.query(&["dave"]).await;
    assert!(!got[0].online, "except hides the online state too: {got:?}");
}
