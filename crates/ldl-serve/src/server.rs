//! Binding, serving until a shutdown signal, and stopping cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use ldl_train::TrainedModel;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::batcher::{Batcher, Batching};
use crate::describe::describe;
use crate::error::{Error, Result};
use crate::options::ServeOptions;
use crate::response::AxisLabel;
use crate::routes::{router, AppState};

/// A server bound to its address, with its inference thread started: [`Server::run`]
/// serves until a shutdown signal.
pub struct Server {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    inference: JoinHandle<()>,
}

impl Server {
    /// Binds `options.host:options.port` (port 0: a free port) and starts the inference
    /// thread, which takes the model. `checkpoint` is what `/v1/model` names as its source.
    /// Needs a tokio runtime.
    pub async fn bind(
        model: TrainedModel,
        checkpoint: &str,
        options: &ServeOptions,
    ) -> Result<Server> {
        options.check()?;
        let address = format!("{}:{}", options.host, options.port);
        let listener = TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|source| Error::Bind {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| Error::Bind { address, source })?;
        let description = describe(&model, checkpoint);
        let axes = model
            .model
            .label_space()
            .axes()
            .iter()
            .map(|axis| AxisLabel {
                name: axis.name().to_string(),
                unit: axis.unit().to_string(),
            })
            .collect();
        let reads_images = model.reads_images();
        let batching = Batching {
            max_batch: options.max_batch,
            window: options.batch_window,
        };
        let (batcher, inference) = Batcher::start(model, batching, options.queue)?;
        let state = AppState {
            batcher,
            permits: Arc::new(Semaphore::new(options.queue)),
            reads_images,
            axes,
            description,
            max_body: options.max_body,
            body_timeout: options.body_timeout,
        };
        Ok(Server {
            listener,
            address,
            router: router(Arc::new(state)),
            inference,
        })
    }

    /// The address the server listens on (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes, then stops taking connections, finishes the
    /// requests already accepted, and waits for the inference thread to end.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        // Every handle to the batcher went with the router: the channel is closed, and the
        // thread ends after its last batch.
        let inference = self.inference;
        tokio::task::spawn_blocking(move || inference.join())
            .await
            .map_err(|_| Error::InferencePanic)?
            .map_err(|_| Error::InferencePanic)
    }
}

/// A future that completes on Ctrl-C or (on Unix) SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled, so a signal that arrives
/// right after the server reports its address already stops it cleanly. Needs a tokio
/// runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("stopping: answering the requests already accepted");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            // Without a handler there is no Ctrl-C to wait for: serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            eprintln!("stopping: answering the requests already accepted");
        })
    }
}

/// Serves `model` as `options` say until Ctrl-C or SIGTERM, printing
/// `listening on http://ADDRESS` to stdout once it accepts connections.
pub fn serve(model: TrainedModel, checkpoint: &str, options: &ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::bind(model, checkpoint, options).await?;
        let shutdown = shutdown_signal()?;
        println!("listening on http://{}", server.local_addr());
        server.run(shutdown).await
    })
}
