//! `GetServiceResponse`, written by hand so that a server can answer discovery reads with
//! instances encoded once per change of the service rather than once per read. On the wire it
//! is exactly the message declared in `registry.proto` (field 1 `revision`, field 2 repeated
//! `instances`); decoding always produces the plain fields.

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
}
