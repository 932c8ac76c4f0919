//! `peftc serve`: the OpenAI-compatible HTTP server in front of the
//! continuous-batching engine (`peftc_runtime::engine`).
//!
//! Threads: the engine owns the model on the calling thread; a small tokio
//! runtime on another serves HTTP (axum) and talks to the engine through a
//! command channel. SIGINT / SIGTERM stop accepting connections, let the
//! requests in flight finish, then the engine drains and the command exits 0.

mod api;
mod error;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use peftc_compiler::task::TaskKind;
use peftc_runtime::engine::{Command, Metrics};
use peftc_runtime::tokenizer::TextTokenizer;
use routes::AppState;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 4 << 20;

pub struct ServerConfig {
    pub listener: std::net::TcpListener,
    pub tok: Arc<TextTokenizer>,
    pub context: usize,
    pub kind: TaskKind,
    pub metrics: Arc<Metrics>,
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/v1/models", get(routes::models))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/classify", post(routes::classify))
        .route("/v1/load_lora_adapter", post(routes::load_adapter))
        .route("/v1/unload_lora_adapter", post(routes::unload_adapter))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::count,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves HTTP until SIGINT / SIGTERM, once `ready` says the engine runs;
/// dropping `commands` at the end lets the engine finish.
pub fn http(
    c: ServerConfig,
    commands: std::sync::mpsc::Sender<Command>,
    ready: std::sync::mpsc::Receiver<()>,
) -> Result<(), String> {
    // The engine failed to start (it reported why).
    if ready.recv().is_err() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    rt.block_on(async move {
        c.listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot use the listening socket: {e}"))?;
        let addr = c
            .listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(c.listener)
            .map_err(|e| format!("cannot use the listening socket: {e}"))?;
        let started = routes::now();
        let state = Arc::new(AppState {
            commands,
            tok: c.tok,
            context: c.context,
            kind: c.kind,
            metrics: c.metrics,
            started,
            ids: AtomicU64::new(0),
        });
        eprintln!("peftc serve: listening on http://{addr}");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("the HTTP server failed: {e}"))
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("peftc serve: shutting down; finishing the requests in flight");
}
