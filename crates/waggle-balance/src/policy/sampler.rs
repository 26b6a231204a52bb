//! O(1) sampling proportional to weight (Vose's alias method), shared by weighted random and
//! the P2C policies; a plain uniform draw when all weights are equal.

use rand::RngCore;
use rand::rngs::SmallRng;

use super::Candidate;

#[derive(Debug)]
pub(crate) enum Sampler {
    Uniform(usize),
    /// `(probability of keeping column i, alias of column i)` per column.
    Alias(Box<[(f64, u32)]>),
}

impl Sampler {
    pub(crate) fn new(candidates: &[Candidate]) -> Self {
        let n = candidates.len();
        let first = candidates.first().map_or(1.0, Candidate::weight);
        if candidates.iter().all(|c| c.weight() == first) {
            return Sampler::Uniform(n);
        }
        let total: f64 = candidates.iter().map(Candidate::weight).sum();
        let mut scaled: Vec<f64> = candidates.iter().map(|c| c.weight() * n as f64 / total).collect();
        let mut table = vec![(1.0, 0u32); n];
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            table[s] = (scaled[s], l as u32);
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding: those columns always keep themselves.
        for i in small.into_iter().chain(large) {
            table[i] = (1.0, i as u32);
        }
        Sampler::Alias(table.into_boxed_slice())
    }

    /// One index, drawn with a single random number: the high half of `x * n` picks the
    /// column, the low half (uniform and independent of it) flips the column's coin.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut SmallRng) -> usize {
        match self {
            Sampler::Uniform(n) => crate::rng::below(rng, *n),
            Sampler::Alias(table) => {
                let product = u128::from(rng.next_u64()) * table.len() as u128;
                let column = (product >> 64) as usize;
                let coin = (product as u64) as f64 * (1.0 / 18_446_744_073_709_551_616.0);
                let (keep, alias) = table[column];
                if coin < keep { column } else { alias as usize }
            }
        }
    }

    pub(crate) fn is_uniform(&self) -> bool {
        matches!(self, Sampler::Uniform(_))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::EndpointStats;

    proptest! {
        /// The alias table's exact probabilities (no sampling) equal the normalised weights.
        #[test]
        fn alias_table_probabilities_equal_weights(weights in prop::collection::vec(0.001f64..1000.0, 1..200)) {
            let candidates: Vec<Candidate> =
                weights.iter().map(|w| Candidate::new(*w, 0, Arc::new(EndpointStats::new()))).collect();
            let n = weights.len() as f64;
            let total: f64 = weights.iter().sum();
            let mut probability = vec![0.0; weights.len()];
            match Sampler::new(&candidates) {
                Sampler::Uniform(len) => probability.iter_mut().for_each(|p| *p = 1.0 / len as f64),
                Sampler::Alias(table) => {
                    for (column, (keep, alias)) in table.iter().enumerate() {
                        probability[column] += keep / n;
                        probability[*alias as usize] += (1.0 - keep) / n;
                    }
                }
            }
            for (p, w) in probability.iter().zip(&weights) {
                prop_assert!((p - w / total).abs() < 1e-9, "{p} vs {}", w / total);
            }
        }
    }
}
