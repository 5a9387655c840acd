//! What answers the HTTP API.

use cocoon_protocol::{Event, GenerateRequest, ModelInfo, WireError};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// Something that can list models and generate: the network (through proxies) or,
/// for `cocoon engine serve`, one engine directly.
pub trait Backend: Send + Sync + 'static {
    /// Models reachable now, with their live worker counts.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, WireError>>;

    /// Generate: `Delta`s then `Done`, or an `Error`, on a worker chosen
    /// within `prefs`. Dropping the stream cancels.
    fn generate(
        &self,
        request: GenerateRequest,
        prefs: cocoon_protocol::RoutingPrefs,
    ) -> BoxStream<'static, Event>;

    /// Whether requests can be served now, and what that rests on (JSON for
    /// `/readyz` and `/stats`).
    fn readiness(&self) -> (bool, serde_json::Value) {
        (true, serde_json::json!({}))
    }
}
