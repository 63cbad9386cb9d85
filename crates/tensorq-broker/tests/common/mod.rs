//! Helpers for integration tests: an in-process broker on an ephemeral port and lapin clients.
#![allow(dead_code)]

use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use tensorq_broker::{BrokerConfig, RunningServer};

pub async fn server() -> RunningServer {
    server_with(BrokerConfig {
        data_dir: None,
        ..BrokerConfig::default()
    })
    .await
}

/// A server without a data dir unless `config` names one.
pub async fn server_with(mut config: BrokerConfig) -> RunningServer {
    config.listen = "127.0.0.1:0".into();
    RunningServer::start(config).await.expect("server starts")
}

pub async fn connect(s: &RunningServer) -> Connection {
    Connection::connect(&s.url(), ConnectionProperties::default())
        .await
        .expect("lapin connects")
}

pub async fn channel(c: &Connection) -> Channel {
    c.create_channel().await.expect("channel opens")
}

/// Bounds every await in a test so a hang fails instead of blocking CI.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
