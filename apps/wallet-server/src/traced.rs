//! Spans around what a service does off its requests: one
//! `consumer.event` span per event a consumer handles, and one
//! `relay.publish` span per event a relay publishes, each naming its
//! transfer, event and correlation id, and each continuing the trace the
//! event carries: a published event goes out with its publish span's
//! context (its `traceparent` header), and what a consumer writes while
//! handling an event carries the event span's context to its outbox.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Span;
use wallet_core::event::Envelope;
use wallet_core::ports::{BusError, Message, Payload, Publisher};
use wallet_core::runtime::{EventHandler, HandleError, Handled};
use wallet_http::trace::{context_of, continue_from};

/// `span`, continuing the trace of `event`, and `event` carrying the
/// span's context in place of its own (unchanged when the span has none).
fn continued(span: Span, event: &Envelope) -> (Span, Envelope) {
    if let Some(parent) = &event.trace {
        continue_from(&span, parent);
    }
    let trace = context_of(&span).or(event.trace);
    (span, event.clone().traced(trace))
}

/// The span of one event handled by consumer group `group`.
fn event_span(group: &str, event: &Envelope) -> Span {
    tracing::info_span!(
        "consumer.event",
        otel.kind = "consumer",
        group,
        event_type = event.event.event_type(),
        transfer_id = %event.transfer_id,
        event_id = %event.event_id,
        correlation_id = %event.correlation_id,
    )
}

/// The span of one event a relay of `group` publishes to `topic`.
fn publish_span(group: &str, topic: &str, event: &Envelope) -> Span {
    tracing::info_span!(
        "relay.publish",
        otel.kind = "producer",
        group,
        topic,
        event_type = event.event.event_type(),
        transfer_id = %event.transfer_id,
        event_id = %event.event_id,
        correlation_id = %event.correlation_id,
    )
}

/// An [`EventHandler`] whose events are each handled in a span of their
/// own, open while the batch they came in is handled.
#[derive(Clone)]
pub struct TracedHandler<H> {
    inner: H,
    group: String,
}

impl<H> TracedHandler<H> {
    /// `inner`, handling for consumer group `group`.
    pub fn new(inner: H, group: &str) -> TracedHandler<H> {
        TracedHandler {
            inner,
            group: group.to_owned(),
        }
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for TracedHandler<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let (spans, batch): (Vec<Span>, Vec<Envelope>) = batch
            .iter()
            .map(|e| continued(event_span(&self.group, e), e))
            .unzip();
        let handled = self.inner.handle(&batch).await;
        drop(spans);
        handled
    }
}

/// A [`Publisher`] for a relay: each event it publishes goes out in a
/// span of its own, open until the broker has the batch.
#[derive(Clone)]
pub struct TracedPublisher<P> {
    inner: P,
    group: String,
}

impl<P> TracedPublisher<P> {
    /// `inner`, publishing for the relay of `group`.
    pub fn new(inner: P, group: &str) -> TracedPublisher<P> {
        TracedPublisher {
            inner,
            group: group.to_owned(),
        }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for TracedPublisher<P> {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let mut spans = Vec::with_capacity(messages.len());
        let mut traced = Vec::with_capacity(messages.len());
        for message in messages {
            let mut message = message.clone();
            if let Payload::Event(event) = &message.payload {
                let (span, event) =
                    continued(publish_span(&self.group, &message.topic, event), event);
                spans.push(span);
                message.payload = Payload::Event(Arc::new(event));
            }
            traced.push(message);
        }
        let published = self.inner.publish(&traced).await;
        drop(spans);
        published
    }
}
