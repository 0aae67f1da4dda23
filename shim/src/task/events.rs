//! Task events to containerd. Each event type carries its own topic
//! (`containerd_shim::event::Event`), so a caller cannot pair an event with the wrong one.

use async_trait::async_trait;
use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::ttrpc::context::Context;

/// Where the Task service sends its events: containerd, or a recorder in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Failures are logged, never returned: an event containerd misses does not undo the
    /// call that caused it.
    async fn publish(&self, event: Box<dyn Event + Send + Sync>);
}

/// containerd's event service, over the ttrpc address it gave the shim.
pub struct RemoteEvents {
    publisher: RemotePublisher,
    namespace: String,
}

impl RemoteEvents {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> RemoteEvents {
        RemoteEvents {
            publisher,
            namespace: namespace.to_string(),
        }
    }
}

#[async_trait]
impl EventSink for RemoteEvents {
    async fn publish(&self, event: Box<dyn Event + Send + Sync>) {
        let topic = event.topic();
        if let Err(e) = self
            .publisher
            .publish(Context::default(), &topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, error = %e, "publishing event failed");
        }
    }
}
