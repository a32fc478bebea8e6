//! Shared pieces of the benchmark binaries (see `scripts/bench` and `BENCHMARKS.md`).

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The WebSocket configuration of the presence server (`runtime/src/ws.rs`, `WsLimits::default()`):
/// 4 KiB read buffer, write buffer 0 (flush every message), at most 128 KiB buffered for writing,
/// messages and frames of at most 64 KiB. Copied, not imported, so the baseline does not move
/// when the product does; keep in step with `WsLimits`.
pub fn server_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(128 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// An HS256 token (`sub`, `exp` one day ahead) as any client library makes it.
pub fn token(secret: &str, user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 86_400;
    let claims = serde_json::json!({ "sub": user, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing")
}
