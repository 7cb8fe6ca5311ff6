//! Wires a node together: identity, core, network and the local API.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, sync::Arc, time::Duration};

use tracing::{info, warn};

use crate::{api, core, home, identity::DeviceKeys, net, search, store};

/// Everything `outpost daemon` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub net: net::Config,
    /// How the core is tuned (tests and benchmarks only).
    pub core: core::Options,
}

impl Config {
    pub fn new(home: PathBuf) -> Self {
        Self {
            home,
            net: net::Config {
                listen: vec![
                    "/ip4/0.0.0.0/tcp/0".parse().expect("valid"),
                    "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid"),
                ],
                peers: Vec::new(),
                mdns: true,
                resync_interval: Duration::from_secs(30),
                anchor: false,
                upload_rate: None,
            },
            core: core::Options::default(),
        }
    }
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    #[error("cannot open the store")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error("a daemon is already running for this home (its API answers at {0})")]
    AlreadyRunning(PathBuf),
    #[error(
        "the node's core stopped: {0}; see the log above, then restart the daemon (what was acknowledged is stored)"
    )]
    CoreStopped(String),
    #[error("cannot serve the local API at {path}")]
    Api {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the node until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let keys = Arc::new(DeviceKeys::load(&config.home)?);
    let socket = home::socket_path(&config.home);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(Error::AlreadyRunning(socket));
    }
    let (core, core_thread) = core::spawn_with(config.home.clone(), keys.clone(), config.core.clone())?;
    let (net, net_task) = net::spawn(config.net.clone(), keys.clone(), core.clone())?;
    let clock = tokio::spawn(remind_every_second(core.clone()));

    let api_err = |source| Error::Api {
        path: socket.clone(),
        source,
    };
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(api_err(e)),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(api_err)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(api_err)?;
    home::record_socket_path(&config.home, &socket).map_err(api_err)?;
    info!(device = %keys.device_id(), socket = %socket.display(), "daemon ready");

    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    // Derived and local: a node without its index still runs, and says so.
    let (search, indexer) = match search::indexer::spawn(
        config.home.join("search"),
        search::sealed::IndexKey::new(*keys.storage_key()),
        core.clone(),
    ) {
        Ok((index, task)) => (Some(index), Some(task)),
        Err(error) => {
            warn!(%error, "search is unavailable");
            (None, None)
        }
    };
    let app = api::router(core.clone(), net.clone(), keys.clone(), stopping, search);
    // A core that stopped by itself (a bug made it panic) must not leave a
    // daemon that answers every request with "shutting down": it exits, with
    // an error, so that its supervisor restarts it.
    let watched = core.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                () = watched.stopped() => {}
            }
            let _ = stopping_tx.send(true);
        })
        .await
        .map_err(api_err)?;

    info!("shutting down");
    let core_failed = core.is_stopped();
    clock.abort();
    net_task.abort();
    if let Some(indexer) = indexer {
        indexer.abort();
    }
    drop(net);
    drop(core);
    let _ = std::fs::remove_file(&socket);
    // The core thread exits once every handle is gone; the API's handles are
    // dropped with the server. Wait briefly so the last commit completes.
    let joined = tokio::task::spawn_blocking(move || core_thread.join()).await;
    if core_failed {
        let why = match joined {
            Ok(Err(panic)) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "it panicked".into()),
            _ => "it ended unexpectedly".into(),
        };
        return Err(Error::CoreStopped(why));
    }
    Ok(())
}

/// The reminders' clock: every second, the core fires what came due.
async fn remind_every_second(core: core::CoreHandle) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        core.remind().await;
    }
}
