//! Stripe webhook events, read only as far as Herd routes them.
//!
//! The object stays untyped JSON: Stripe adds event types and fields with
//! every API version, and an event Herd has no use for must still parse so
//! that it can be acknowledged.

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_...`: Herd records it to handle each event once.
    pub id: String,
    /// `invoice.paid`, `customer.subscription.updated`, ...
    pub type_: String,
    /// Unix seconds.
    pub created: i64,
    /// The object the event is about, as it was when the event happened.
    pub object: serde_json::Value,
}

#[derive(Debug, Error)]
#[error("the webhook payload is not a Stripe event: {0}")]
pub struct MalformedEvent(#[from] serde_json::Error);

#[derive(Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    created: i64,
    data: WireData,
}

#[derive(Deserialize)]
struct WireData {
    object: serde_json::Value,
}

/// Reads an event from a webhook's body; check its signature first
/// ([`crate::webhook::verify`]).
pub fn parse(payload: &[u8]) -> Result<Event, MalformedEvent> {
    let event: WireEvent = serde_json::from_slice(payload)?;
    Ok(Event {
        id: event.id,
        type_: event.type_,
        created: event.created,
        object: event.data.object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stripe_event() {
        let payload = br#"{
            "id": "evt_1",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": 1790000000,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": "customer.subscription.updated",
            "data": {
                "object": {"id": "sub_1", "object": "subscription", "status": "past_due",
                           "metadata": {"order": "ord_1"}},
                "previous_attributes": {"status": "active"}
            }
        }"#;
        let event = parse(payload).unwrap();
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.type_, "customer.subscription.updated");
        assert_eq!(event.created, 1_790_000_000);
        assert_eq!(event.object["id"], "sub_1");
        assert_eq!(event.object["metadata"]["order"], "ord_1");
    }

    #[test]
    fn reads_event_types_herd_does_not_know() {
        let payload = br#"{"id":"evt_2","type":"v9.something.new","created":1,
                           "data":{"object":{"object":"novelty"}}}"#;
        let event = parse(payload).unwrap();
        assert_eq!(event.type_, "v9.something.new");
        assert_eq!(event.object["object"], "novelty");
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        for payload in [
            &b""[..],
            b"not json",
            br#"{"id":"evt_3","type":"invoice.paid","created":1,"data":{"object":{}}"#,
            br#"[]"#,
            br#"{"type":"invoice.paid","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_3","type":"invoice.paid","created":"yesterday","data":{"object":{}}}"#,
            br#"{"id":"evt_3","type":"invoice.paid","created":1,"data":{}}"#,
        ] {
            let err = parse(payload).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("the webhook payload is not a Stripe event: "),
                "{err}"
            );
        }
        let err = parse(br#"{"id":"evt_3","created":1,"data":{"object":{}}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `type`"), "{err}");
    }
}
