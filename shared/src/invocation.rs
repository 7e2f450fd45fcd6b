//! End-of-invocation work in Lambda: buffered writers (the audit trail now, metrics later)
//! join [`InvocationHooks`] and are flushed once the invocation's response is complete and
//! before the runtime asks for the next event, because Lambda freezes the sandbox between
//! invocations (and may never thaw it): anything still buffered then is lost.
//!
//! Where it runs: the streaming loop (`lambda_streaming`) calls [`InvocationHooks::run`]
//! after the response stream ended; for buffered responses (`lambda_http::run`, which gives
//! no hook of its own) [`flush_layer`] collects the response body first (it is buffered
//! anyway) and flushes before handing the response back. Outside Lambda nothing calls them
//! per request; writers flush in the background there.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::response::Response;

/// A writer that must be flushed before the invocation ends.
#[async_trait]
pub trait EndOfInvocation: Send + Sync {
    /// Writes what is buffered. Must not fail the invocation: errors are the writer's to
    /// count and log.
    async fn end_of_invocation(&self);
}

/// The writers to flush at the end of every invocation, in order.
#[derive(Clone, Default)]
pub struct InvocationHooks {
    hooks: Vec<Arc<dyn EndOfInvocation>>,
}

impl InvocationHooks {
    /// These hooks and `hook` after them.
    pub fn with(mut self, hook: Arc<dyn EndOfInvocation>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Runs every hook, one after the other.
    pub async fn run(&self) {
        for h in &self.hooks {
            h.end_of_invocation().await;
        }
    }
}

/// Wraps `router` so each response is complete, then the hooks ran, before it is returned
/// (for `lambda_http::run`, which buffers the response whole anyway).
pub fn flush_layer(router: axum::Router, hooks: InvocationHooks) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let hooks = hooks.clone();
            async move {
                let response = next.run(req).await;
                let (parts, body) = response.into_parts();
                let collected = axum::body::to_bytes(body, usize::MAX).await;
                hooks.run().await;
                match collected {
                    Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
                    Err(e) => {
                        tracing::error!(error = %crate::http::error_chain(&e), "response body failed");
                        let mut failed = Response::new(Body::empty());
                        *failed.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        failed
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// Counts flushes, and whether the response body had been produced before each.
    struct Probe {
        flushes: AtomicUsize,
        produced: Arc<AtomicUsize>,
        produced_at_flush: AtomicUsize,
    }

    #[async_trait]
    impl EndOfInvocation for Probe {
        async fn end_of_invocation(&self) {
            self.produced_at_flush
                .store(self.produced.load(Ordering::SeqCst), Ordering::SeqCst);
            self.flushes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The buffered path: the hooks have run when the response is handed back, after the
    /// whole body (a stream here) was produced, and the body is intact.
    #[tokio::test]
    async fn the_flush_layer_runs_hooks_after_the_body_and_before_returning() {
        let produced = Arc::new(AtomicUsize::new(0));
        let probe = Arc::new(Probe {
            flushes: AtomicUsize::new(0),
            produced: produced.clone(),
            produced_at_flush: AtomicUsize::new(0),
        });
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let produced = produced.clone();
                async move {
                    let chunks = futures_util::stream::iter(["a", "b", "c"]).map(move |c| {
                        produced.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(c)
                    });
                    Body::from_stream(chunks)
                }
            }),
        );
        let hooks = InvocationHooks::default().with(probe.clone());
        let response = flush_layer(router, hooks)
            .oneshot(http::Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(probe.flushes.load(Ordering::SeqCst), 1);
        assert_eq!(probe.produced_at_flush.load(Ordering::SeqCst), 3);
        let body = axum::body::to_bytes(response.into_body(), 100)
            .await
            .unwrap();
        assert_eq!(&body[..], b"abc");
    }
}
