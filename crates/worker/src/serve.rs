//! Serving one proxy's requests: the model must be one we offer, each model runs at
//! most `max_concurrent` requests at once, and every request is counted. A request
//! whose stream is dropped (the proxy sent `Cancel`) stops the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cocoon_inference::Engine;
use cocoon_protocol::{Connection, ErrorKind, Event, Handler, RequestBody, WireError};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// Live counters of a worker, shared by all its proxy connections.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub active: AtomicU64,
    pub tokens_generated: AtomicU64,
    /// The engine's own load (running, waiting), polled; `None` when it cannot tell.
    pub engine_load: std::sync::Mutex<Option<cocoon_inference::EngineLoad>>,
}

pub(crate) struct RequestHandler {
    pub engine: Arc<dyn Engine>,
    pub limits: HashMap<String, Arc<Semaphore>>,
    pub stats: Arc<WorkerStats>,
}

/// Counts a request as active until dropped; if it ends without a terminal event
/// the request was cancelled.
struct Tracker {
    stats: Arc<WorkerStats>,
    ended: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        if !self.ended {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for RequestHandler {
    fn serve(&self, _conn: &Connection, body: RequestBody) -> BoxStream<'static, Event> {
        let request = match body {
            RequestBody::ListModels => {
                return stream::iter([Event::Models(self.engine.listed_models())]).boxed();
            }
            RequestBody::Generate(request) => request,
        };
        let Some(limit) = self.limits.get(&request.model) else {
            let error = WireError::new(
                ErrorKind::ModelNotFound,
                format!("this worker does not serve '{}'", request.model),
            );
            return stream::iter([Event::Error(error)]).boxed();
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            let error = WireError::new(
                ErrorKind::Overloaded,
                format!("worker is at capacity for '{}'", request.model),
            );
            return stream::iter([Event::Error(error)]).boxed();
        };
        self.stats.started.fetch_add(1, Ordering::SeqCst);
        self.stats.active.fetch_add(1, Ordering::SeqCst);
        let mut tracker = Tracker {
            stats: self.stats.clone(),
            ended: false,
        };
        self.engine
            .generate(request)
            .map(move |event| {
                let _permit = &permit;
                let stats = &tracker.stats;
                match &event {
                    Event::Delta { tokens, .. } => {
                        stats
                            .tokens_generated
                            .fetch_add(*tokens as u64, Ordering::SeqCst);
                    }
                    Event::Done(_) | Event::Models(_) => {
                        stats.completed.fetch_add(1, Ordering::SeqCst);
                        tracker.ended = true;
                    }
                    Event::Error(_) => {
                        stats.failed.fetch_add(1, Ordering::SeqCst);
                        tracker.ended = true;
                    }
                }
                event
            })
            .boxed()
    }
}
