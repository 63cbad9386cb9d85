//! The TCP server: binding, the accept loop, and graceful shutdown (every connection is closed
//! with 320 CONNECTION_FORCED before [`Server::run`] returns).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::alarm;
use crate::alarm::Alarm;
use crate::broker::{Broker, BrokerError};
use crate::config::BrokerConfig;
use crate::connection;
use crate::shutdown::ShutdownSignal;

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// How often free disk space is checked.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    broker: Arc<Broker>,
}

impl Server {
    /// Binds the configured address (port 0 picks a free port).
    pub async fn bind(config: BrokerConfig) -> Result<Server, ServerError> {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let broker = Broker::open(config)?;
        Ok(Server { listener, broker })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The broker state, for embedding (tests, in-process workers).
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Accepts connections until `stop` completes, then closes them all with 320.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let limit = self.broker.memory_limit();
        let monitor = alarm::spawn_memory_monitor(self.broker.alarm_setter.clone(), limit);
        let disk = self.broker.persistence.clone().map(|p| {
            let setter = self.broker.alarm_setter.clone();
            tokio::spawn(async move {
                let mut raised = false;
                loop {
                    match p.store.disk_status() {
                        Ok(st) => {
                            if st.alarm != raised {
                                raised = st.alarm;
                                if raised {
                                    tracing::warn!(free = st.free_bytes, limit = st.limit, "disk alarm: free space below the limit, blocking publishers");
                                } else {
                                    tracing::info!(free = st.free_bytes, "disk alarm cleared");
                                }
                            }
                            setter.set(Alarm::Disk, st.alarm);
                        }
                        Err(e) => tracing::warn!("cannot read free disk space: {e}"),
                    }
                    tokio::time::sleep(DISK_CHECK_EVERY).await;
                }
            })
        });
        tracing::info!(addr = ?self.listener.local_addr().ok(), memory_limit = limit, "tensorq broker listening");
        let signal = ShutdownSignal::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Some(listener) = signal.listener() else { break };
                        tokio::spawn(connection::serve(stream, peer, self.broker.clone(), listener));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut stop => break,
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: closing connections");
        if tokio::time::timeout(SHUTDOWN_GRACE, signal.trigger_and_wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        monitor.abort();
        if let Some(d) = disk {
            d.abort();
        }
        self.broker.close_store();
    }
}

/// A server running on its own task, for tests and embedding.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds and starts a server in the background.
    pub async fn start(config: BrokerConfig) -> Result<RunningServer, ServerError> {
        let server = Server::bind(config).await?;
        let addr = server.local_addr().map_err(|source| ServerError::Bind {
            addr: "local address".into(),
            source,
        })?;
        let broker = server.broker();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
            broker,
            stop: Some(tx),
            task,
        })
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.addr.port())
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
