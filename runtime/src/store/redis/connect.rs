//! How the executors reach Redis: the byte streams ([`AsyncStream`]) and the connectors that open
//! them ([`RedisConnector`]: TCP or a Unix socket in production, a simulated stream in the
//! simulator), and the guard that ties a background task to its owner (`AbortOnDrop`).
//!
//! The single-node executor and the change feed both open their streams through a connector; the
//! cluster executor's connections are managed by the `redis` crate.

use std::future::Future;
use std::io;
use std::pin::Pin;

use redis::ConnectionAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::config::{check_addr, RedisUrlError};

#[cfg(doc)]
use super::config::RedisConfig;

/// A byte stream Redis can run over: TCP, a Unix socket, a simulated stream, ...
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// What [`RedisConnector::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn AsyncStream>>> + Send + 'static>>;

/// Opens a fresh byte stream to the Redis server; called by the reconnect loop for every attempt.
///
/// The executor bounds each call with [`RedisConfig::connect_timeout`], so an implementation need
/// not (but may) time out by itself.
pub trait RedisConnector: Send + Sync + 'static {
    /// Opens a new stream.
    fn connect(&self) -> ConnectFuture;
}

/// Connects over TCP (`redis://host:port`) or a Unix socket (`redis+unix:///path`).
#[derive(Clone, Debug)]
pub struct TcpConnector {
    addr: ConnectionAddr,
}

impl TcpConnector {
    /// A TCP connector to `host:port`.
    pub fn tcp(host: impl Into<String>, port: u16) -> TcpConnector {
        TcpConnector { addr: ConnectionAddr::Tcp(host.into(), port) }
    }

    /// The connector for a parsed URL's address (TCP or Unix socket; TLS is rejected).
    pub fn for_addr(addr: &ConnectionAddr) -> Result<TcpConnector, RedisUrlError> {
        check_addr(addr)?;
        Ok(TcpConnector { addr: addr.clone() })
    }
}

impl RedisConnector for TcpConnector {
    fn connect(&self) -> ConnectFuture {
        let addr = self.addr.clone();
        Box::pin(async move {
            match addr {
                ConnectionAddr::Tcp(host, port) => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                    // Requests are small and latency-bound: do not let Nagle batch them.
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as Box<dyn AsyncStream>)
                }
                #[cfg(unix)]
                ConnectionAddr::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok(Box::new(s) as Box<dyn AsyncStream>)
                }
                other => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unsupported redis address {other}"),
                )),
            }
        })
    }
}

/// Aborts a spawned task when dropped, so no background task outlives its owner.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
