//! `GetServiceResponse` and `WatchResponse`, written by hand so that a server can send parts
//! encoded once to many readers: a service's instances once per change of the service rather
//! than once per read, a watch event once per change rather than once per watcher. On the
//! wire they are exactly the messages declared in `registry.proto`; decoding always produces
//! the plain fields.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType},
};

use crate::v1;

/// The decoded form of `waggle.v1.GetServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct Fields {
    #[prost(uint64, tag = "1")]
    revision: u64,
    #[prost(message, repeated, tag = "2")]
    instances: Vec<v1::Instance>,
}

/// Instances already encoded as repeated field 2 of `GetServiceResponse` (tag, length and
/// message for each), ready to be sent to any number of readers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EncodedInstances(Bytes);

impl EncodedInstances {
    /// Encodes instances once.
    pub fn encode<'a>(instances: impl IntoIterator<Item = &'a v1::Instance>) -> Self {
        let mut buf = Vec::new();
        for instance in instances {
            prost::encoding::message::encode(2, instance, &mut buf);
        }
        EncodedInstances(Bytes::from(buf))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Body {
    Fields(Fields),
    Encoded { revision: u64, instances: EncodedInstances },
}

/// `waggle.v1.GetServiceResponse`: a revision and the service's instances.
#[derive(Clone, Debug, PartialEq)]
pub struct GetServiceResponse(Body);

impl Default for GetServiceResponse {
    fn default() -> Self {
        GetServiceResponse(Body::Fields(Fields::default()))
    }
}

impl GetServiceResponse {
    /// A response from plain instances.
    pub fn new(revision: u64, instances: Vec<v1::Instance>) -> Self {
        GetServiceResponse(Body::Fields(Fields { revision, instances }))
    }

    /// A response from pre-encoded instances (shared, not copied).
    pub fn pre_encoded(revision: u64, instances: EncodedInstances) -> Self {
        GetServiceResponse(Body::Encoded { revision, instances })
    }

    /// The revision the read reflects.
    pub fn revision(&self) -> u64 {
        match &self.0 {
            Body::Fields(f) => f.revision,
            Body::Encoded { revision, .. } => *revision,
        }
    }

    /// The instances (decoding pre-encoded ones, which only happens in tests of the server).
    pub fn into_instances(self) -> Vec<v1::Instance> {
        match self.0 {
            Body::Fields(f) => f.instances,
            Body::Encoded { instances, .. } => Fields::decode(instances.0).map(|f| f.instances).unwrap_or_default(),
        }
    }
}

impl Message for GetServiceResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.0 {
            Body::Fields(f) => f.encode_raw(buf),
            Body::Encoded { revision, instances } => {
                if *revision != 0 {
                    prost::encoding::uint64::encode(1, revision, buf);
                }
                buf.put_slice(&instances.0);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if let Body::Encoded { revision, instances } = &self.0 {
            let instances = Fields::decode(instances.0.clone())?.instances;
            self.0 = Body::Fields(Fields { revision: *revision, instances });
        }
        match &mut self.0 {
            Body::Fields(f) => f.merge_field(tag, wire_type, buf, ctx),
            Body::Encoded { .. } => Ok(()),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.0 {
            Body::Fields(f) => f.encoded_len(),
            Body::Encoded { revision, instances } => {
                let rev = if *revision != 0 { prost::encoding::uint64::encoded_len(1, revision) } else { 0 };
                rev + instances.0.len()
            }
        }
    }

    fn clear(&mut self) {
        self.0 = Body::Fields(Fields::default());
    }
}

/// The `event` oneof of `waggle.v1.WatchResponse`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Event {
    /// A snapshot (or one chunk of it).
    #[prost(message, tag = "1")]
    Snapshot(v1::Snapshot),
    /// The changes of one revision.
    #[prost(message, tag = "2")]
    Deltas(v1::Deltas),
}

/// A watch event already encoded (field tag, length and message), shareable by any number of
/// watchers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EncodedEvent(Bytes);

impl EncodedEvent {
    /// Encodes an event once.
    pub fn encode(event: &Event) -> Self {
        let mut buf = Vec::with_capacity(event.encoded_len());
        event.encode(&mut buf);
        EncodedEvent(Bytes::from(buf))
    }
}

/// `waggle.v1.WatchResponse`: one event, stamped with the registry's incarnation.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WatchResponse {
    /// The event (always `None` on a response built with [`WatchResponse::pre_encoded`]).
    pub event: Option<Event>,
    /// The registry's history id.
    pub incarnation: u64,
    pre_encoded: Option<EncodedEvent>,
}

impl WatchResponse {
    /// A response carrying `event`.
    pub fn new(event: Event) -> Self {
        WatchResponse { event: Some(event), incarnation: 0, pre_encoded: None }
    }

    /// A response carrying an event encoded earlier (shared, not copied).
    pub fn pre_encoded(event: EncodedEvent) -> Self {
        WatchResponse { event: None, incarnation: 0, pre_encoded: Some(event) }
    }
}

impl Message for WatchResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.pre_encoded, &self.event) {
            (Some(encoded), _) => buf.put_slice(&encoded.0),
            (None, Some(event)) => event.encode(buf),
            (None, None) => {}
        }
        if self.incarnation != 0 {
            prost::encoding::uint64::encode(3, &self.incarnation, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 | 2 => Event::merge(&mut self.event, tag, wire_type, buf, ctx),
            3 => prost::encoding::uint64::merge(wire_type, &mut self.incarnation, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let event = match (&self.pre_encoded, &self.event) {
            (Some(encoded), _) => encoded.0.len(),
            (None, Some(event)) => event.encoded_len(),
            (None, None) => 0,
        };
        let incarnation =
            if self.incarnation != 0 { prost::encoding::uint64::encoded_len(3, &self.incarnation) } else { 0 };
        event + incarnation
    }

    fn clear(&mut self) {
        *self = WatchResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(port: u32) -> v1::Instance {
        v1::Instance { service: "web".into(), address: "10.0.0.1".into(), port, ..Default::default() }
    }

    #[test]
    fn pre_encoded_and_plain_responses_are_the_same_bytes() {
        let instances = vec![instance(1), instance(2)];
        let plain = GetServiceResponse::new(7, instances.clone()).encode_to_vec();
        let fast = GetServiceResponse::pre_encoded(7, EncodedInstances::encode(&instances)).encode_to_vec();
        assert_eq!(plain, fast);
        let decoded = GetServiceResponse::decode(fast.as_slice()).expect("decodes");
        assert_eq!(decoded.revision(), 7);
        assert_eq!(decoded.into_instances(), instances);
    }

    #[test]
    fn pre_encoded_watch_events_decode_to_the_event() {
        let event = Event::Deltas(v1::Deltas {
            revision: 9,
            deltas: vec![v1::Delta { kind: v1::DeltaKind::Added as i32, instance: Some(instance(1)) }],
        });
        let mut plain = WatchResponse::new(event.clone());
        plain.incarnation = 42;
        let mut fast = WatchResponse::pre_encoded(EncodedEvent::encode(&event));
        fast.incarnation = 42;
        assert_eq!(plain.encode_to_vec(), fast.encode_to_vec());
        let decoded = WatchResponse::decode(fast.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!((decoded.event, decoded.incarnation), (Some(event), 42));
    }
}
