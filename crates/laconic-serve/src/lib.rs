//! An OpenAI-compatible HTTP server over `laconic-infer`'s decoder: `laconic serve`.
//!
//! Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (whole or streamed as
//! server-sent events; `n`, `temperature`, `top_p`, `max_tokens`, `stop`, `seed`; token usage
//! in the answer), `GET /v1/models`, `GET /health`. Every error is a JSON object in OpenAI's
//! shape. `docs/SERVE.md` describes the protocol; this crate is the library behind it.
//!
//! The design is the one of llama.cpp's `llama-server` and mistral.rs's server core, cut to
//! size: an async HTTP front ([`axum`] on a small [`tokio`] runtime) that never touches the
//! model, a bounded queue that answers 503 when full, and model worker threads that run
//! [`laconic_infer::generate`] on the shared model ([`engine`]). It lives in its own crate so
//! that `laconic-infer` stays free of any HTTP stack.
//!
//! ```no_run
//! use burn::prelude::*;
//! use laconic_serve::{ServeConfig, start};
//!
//! let model = laconic_infer::load(std::path::Path::new("model.gguf"), &Device::flex())?;
//! let server = start(model, ServeConfig { port: 0, ..Default::default() })?;
//! println!("listening on http://{}", server.local_addr());
//! server.shutdown()?; // finishes queued and running requests first
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod error;
pub mod openai;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::serve::ListenerExt;
use laconic_infer::LoadedModel;
use laconic_infer::policy::KvPolicyConfig;
use tokio::sync::watch;

pub use error::{Result, ServeError};

/// Settings of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Host name or address to listen on.
    pub host: String,
    /// Port; 0 picks a free one (see [`ServerHandle::local_addr`]).
    pub port: u16,
    /// The model's name in responses and `/v1/models` (requests may name any model).
    pub model_name: String,
    /// Requests that may wait for a model worker; past that, 503.
    pub queue_capacity: usize,
    /// Largest request body, in bytes; past that, 413.
    pub max_body_bytes: usize,
    /// `max_tokens` of a request that gives none; `None`: until the context is full.
    pub default_max_tokens: Option<usize>,
    /// Largest `n` (choices per request).
    pub max_n: usize,
    /// Model worker threads: requests generated at once, each with its own KV cache.
    pub parallel: usize,
    /// What the KV cache keeps as it grows, for every request.
    pub kv_policy: KvPolicyConfig,
    /// Log one line per request to stderr.
    pub log_requests: bool,
}

impl Default for ServeConfig {
    /// `127.0.0.1:8080`, a queue of 64, 1 MiB bodies, `n` up to 16, one worker, full cache.
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: "laconic".into(),
            queue_capacity: 64,
            max_body_bytes: 1 << 20,
            default_max_tokens: None,
            max_n: 16,
            parallel: 1,
            kv_policy: KvPolicyConfig::Full,
            log_requests: true,
        }
    }
}

impl ServeConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ServeError::InvalidConfig(m));
        for (name, v) in [
            ("queue capacity", self.queue_capacity),
            ("max body bytes", self.max_body_bytes),
            ("max n", self.max_n),
            ("parallel workers", self.parallel),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.default_max_tokens == Some(0) {
            return bad("default max tokens must be at least 1".into());
        }
        if self.model_name.trim().is_empty() {
            return bad("the model name is empty".into());
        }
        self.kv_policy
            .validate()
            .or_else(|e| bad(format!("KV policy: {e}")))
    }

    /// `host:port`, with brackets around an IPv6 host.
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Asks a running server to shut down gracefully; cheap to clone and send to other threads.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl ShutdownTrigger {
    /// Stop accepting connections, finish queued and running requests, then stop.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A running server. Dropping it asks for a shutdown without waiting for it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    finished: watch::Receiver<bool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can ask for the shutdown from elsewhere (see [`ServerHandle::wait`]).
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Shuts down gracefully: stops accepting, finishes queued and running requests (streams
    /// included), stops the workers, then returns.
    pub fn shutdown(mut self) -> Result<()> {
        self.trigger.shutdown();
        self.join()
    }

    /// Waits until the server has stopped (after a [`ShutdownTrigger::shutdown`]).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServeError::Panicked("server"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.trigger.shutdown();
        }
    }
}

/// Binds `config.host:config.port`, starts the model workers and the HTTP server on threads of
/// their own, and returns at once.
pub fn start(model: LoadedModel, config: ServeConfig) -> Result<ServerHandle> {
    config.validate()?;
    let address = config.address();
    let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
        .map_err(|e| error::bind_error(&address, &e))?;
    let addr = listener.local_addr().map_err(ServeError::Start)?;
    listener.set_nonblocking(true).map_err(ServeError::Start)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("laconic-serve-http")
        .enable_all()
        .build()
        .map_err(ServeError::Start)?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(ServeError::Start)?
    };
    let model = Arc::new(model);
    let queue = Arc::new(engine::Queue::new(config.queue_capacity));
    let workers = engine::spawn_workers(Arc::clone(&model), Arc::clone(&queue), config.parallel)
        .map_err(|e| {
            queue.close();
            ServeError::Start(e)
        })?;
    let state = Arc::new(routes::AppState {
        model,
        queue: Arc::clone(&queue),
        name: config.model_name.clone(),
        max_body_bytes: config.max_body_bytes,
        default_max_tokens: config.default_max_tokens,
        max_n: config.max_n,
        kv_policy: config.kv_policy.clone(),
        log_requests: config.log_requests,
        started: routes::unix_now(),
    });
    let (trigger_tx, mut trigger_rx) = watch::channel(false);
    let (finished_tx, finished_rx) = watch::channel(false);
    let close_queue = Arc::clone(&queue);
    let thread = std::thread::Builder::new()
        .name("laconic-serve".into())
        .spawn(move || {
            let app = routes::router(state);
            let listener = listener.tap_io(|tcp| {
                // Stream chunks are small: send each at once.
                let _ = tcp.set_nodelay(true);
            });
            let served = runtime.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        // Also ends when every trigger is gone (the handle was dropped).
                        let _ = trigger_rx.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            // Every connection is closed, so no handler waits on the queue any more.
            queue.close();
            let panicked = workers
                .into_iter()
                .map(JoinHandle::join)
                .filter(std::result::Result::is_err)
                .count();
            drop(runtime);
            finished_tx.send_replace(true);
            served.map_err(ServeError::Start)?;
            match panicked {
                0 => Ok(()),
                _ => Err(ServeError::Panicked("model worker")),
            }
        })
        .map_err(|e| {
            close_queue.close();
            ServeError::Start(e)
        })?;
    Ok(ServerHandle {
        addr,
        trigger: ShutdownTrigger(Arc::new(trigger_tx)),
        finished: finished_rx,
        thread: Some(thread),
    })
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream of signal names.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).map_err(ServeError::Signal)?,
                int: signal(SignalKind::interrupt()).map_err(ServeError::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "interrupt",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupt"
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains: stops accepting, finishes queued and running
/// requests, and returns `Ok`. A second signal while draining returns [`ServeError::Aborted`]
/// at once. What the CLI's `laconic serve` runs after [`start`].
pub fn run_until_signal(mut handle: ServerHandle) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Signal)?;
    let trigger = handle.trigger();
    let mut finished = handle.finished.clone();
    let aborted = runtime.block_on(async move {
        let mut signals = Signals::new()?;
        tokio::select! {
            name = signals.recv() => eprintln!(
                "laconic serve: {name} received; finishing queued and running requests \
                 (send it again to stop at once)"
            ),
            _ = finished.wait_for(|f| *f) => return Ok(false),
        }
        trigger.shutdown();
        tokio::select! {
            _ = finished.wait_for(|f| *f) => Ok(false),
            _ = signals.recv() => Ok::<_, ServeError>(true),
        }
    })?;
    if aborted {
        return Err(ServeError::Aborted);
    }
    handle.join()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(ServeConfig::default().validate().is_ok());
        let c = ServeConfig {
            queue_capacity: 0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("queue capacity")
        );
        let c = ServeConfig {
            host: "::1".into(),
            ..Default::default()
        };
        assert_eq!(c.address(), "[::1]:8080");
    }

    #[test]
    fn the_model_can_be_shared_by_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<LoadedModel>();
    }
}
