//! Stable hashing for consistent-hash policies and the request keys they hash on.
//!
//! Every client of a service must map a key to the same endpoint, so hashes here never
//! depend on the process (no random seed), the platform's byte order or the std release:
//! FNV-1a over little-endian bytes, finished with MurmurHash3's avalanche step.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use http::HeaderName;

/// Hashes `value` with Waggle's stable hash: the same input gives the same `u64` in every
/// process, on every platform.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = StableHasher(FNV_OFFSET);
    value.hash(&mut hasher);
    hasher.finish()
}

pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher(FNV_OFFSET);
    hasher.write(bytes);
    hasher.finish()
}

/// MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit over the output.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

struct StableHasher(u64);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
}

/// Extracts the hash key of a request for [`RingHash`](crate::policy::RingHash) and
/// [`Maglev`](crate::policy::Maglev). `None` means "this request has no key": it is sent to a
/// random endpoint, as Envoy does.
///
/// Any `Fn(&Req) -> Option<u64>` is a `RequestHash`, so a user function needs no wrapper.
pub trait RequestHash<Req>: Send + Sync + 'static {
    /// The key of `request`, already hashed (use [`stable_hash`] for your own keys).
    fn hash_request(&self, request: &Req) -> Option<u64>;
}

impl<Req, F> RequestHash<Req> for F
where
    F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
{
    fn hash_request(&self, request: &Req) -> Option<u64> {
        self(request)
    }
}

/// Hashes on the value of one HTTP header (for example a user id or session cookie); a
/// request without the header has no key.
#[derive(Clone, Debug)]
pub struct HeaderHash {
    name: HeaderName,
}

impl HeaderHash {
    /// Hashes on header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderHash { name }
    }
}

impl<B> RequestHash<http::Request<B>> for HeaderHash {
    fn hash_request(&self, request: &http::Request<B>) -> Option<u64> {
        request.headers().get(&self.name).map(|value| hash_bytes(value.as_bytes()))
    }
}

/// Hashes on the URI path (without the query), so one resource always lands on one endpoint.
/// For gRPC the path is the method, so this spreads methods, not calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathHash;

impl<B> RequestHash<http::Request<B>> for PathHash {
    fn hash_request(&self, request: &http::Request<B>) -> Option<u64> {
        Some(hash_bytes(request.uri().path().as_bytes()))
    }
}

/// Hashes on the client's IP address ("sticky by source IP").
///
/// The address is taken, in order, from a [`SocketAddr`] or [`IpAddr`] request extension
/// (what servers such as axum's `ConnectInfo` record), then from the first entry of
/// `X-Forwarded-For`, then from `X-Real-IP`. Ports never take part, so a client's new
/// connections keep their endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientIpHash;

impl ClientIpHash {
    fn client_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
        if let Some(addr) = request.extensions().get::<SocketAddr>() {
            return Some(addr.ip());
        }
        if let Some(ip) = request.extensions().get::<IpAddr>() {
            return Some(*ip);
        }
        let header_ip = |name: &str| -> Option<IpAddr> {
            let value = request.headers().get(name)?.to_str().ok()?;
            value.split(',').next()?.trim().parse().ok()
        };
        header_ip("x-forwarded-for").or_else(|| header_ip("x-real-ip"))
    }
}

impl<B> RequestHash<http::Request<B>> for ClientIpHash {
    fn hash_request(&self, request: &http::Request<B>) -> Option<u64> {
        Some(match Self::client_ip(request)? {
            IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fixed_across_processes() {
        // Pinned values: a change here remaps every consistent-hash key in production.
        assert_eq!(stable_hash("10.0.0.1:8080"), 16_263_403_794_722_742_910);
        assert_eq!(stable_hash(&42u64), 11_971_793_068_411_553_624);
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET));
        assert_ne!(stable_hash(&1u32), stable_hash(&2u32));
    }

    #[test]
    fn client_ip_prefers_the_connection_then_forwarded_headers() {
        let mut request = http::Request::builder().header("x-forwarded-for", "192.0.2.7, 10.0.0.1").body(()).unwrap();
        let forwarded = ClientIpHash.hash_request(&request);
        assert_eq!(forwarded, Some(hash_bytes(&[192, 0, 2, 7])));
        request.extensions_mut().insert(SocketAddr::from(([127, 0, 0, 1], 4000)));
        let direct = ClientIpHash.hash_request(&request);
        assert_eq!(direct, Some(hash_bytes(&[127, 0, 0, 1])));
        request.extensions_mut().insert(SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(ClientIpHash.hash_request(&request), direct, "the port must not matter");
        let bare = http::Request::builder().body(()).unwrap();
        assert_eq!(ClientIpHash.hash_request(&bare), None);
    }

    #[test]
    fn header_and_path_keys() {
        let request = http::Request::builder().uri("/users/7?x=1").header("x-user", "7").body(()).unwrap();
        let by_header = HeaderHash::new(HeaderName::from_static("x-user"));
        assert_eq!(by_header.hash_request(&request), Some(hash_bytes(b"7")));
        assert_eq!(PathHash.hash_request(&request), Some(hash_bytes(b"/users/7")));
        let missing = HeaderHash::new(HeaderName::from_static("x-other"));
        assert_eq!(missing.hash_request(&request), None);
    }
}
