//! Cheap bounded draws from the seeded generator every pick is given.

use rand::RngCore;
use rand::rngs::SmallRng;

/// A uniform index in `0..n` (Lemire's multiply-shift; the bias is below n / 2^64).
#[inline]
pub(crate) fn below(rng: &mut SmallRng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A uniform float in `[0, 1)` with 53 bits of precision.
#[inline]
pub(crate) fn unit(rng: &mut SmallRng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// SplitMix64: turns a counter into well-spread seeds for per-clone generators.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
