//! One engine served directly as an OpenAI-compatible HTTP API, with the same
//! validation and response code as a client node but no network in between. Used
//! as the reference in `cocoon bench` and as a real upstream server in tests of the
//! `openai-http` engine.

use std::sync::Arc;

use cocoon_client::Backend;
use cocoon_inference::Engine;
use cocoon_protocol::{ErrorKind, Event, GenerateRequest, ModelInfo, WireError};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::StreamExt;

pub struct EngineBackend(pub Arc<dyn Engine>);

impl Backend for EngineBackend {
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, WireError>> {
        let models = self.0.listed_models();
        Box::pin(async move { Ok(models) })
    }

    fn generate(
        &self,
        request: GenerateRequest,
        _prefs: cocoon_protocol::RoutingPrefs,
    ) -> BoxStream<'static, Event> {
        let models = self.0.models();
        let Some(offer) = models.iter().find(|m| m.name == request.model) else {
            let error = WireError::new(
                ErrorKind::ModelNotFound,
                format!("The model '{}' does not exist", request.model),
            );
            return stream::iter([Event::Error(error)]).boxed();
        };
        if let Err(error) = request.check_served(&offer.features, "this engine") {
            return stream::iter([Event::Error(error)]).boxed();
        }
        self.0.generate(request)
    }
}
