//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weight-aware.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;

use super::sampler::Sampler;
use super::{Candidate, PickContext, Picker, Policy};
use crate::hash::mix64;

/// Maglev hashing: a lookup table of prime size (65,537 by default) in which every candidate
/// claims slots along its own permutation, in turns proportional to its weight. Lookup is one
/// table read, O(1); with equal weights every candidate owns the same number of slots ±1;
/// removing one of n endpoints remaps slightly more than 1/n of the keys.
///
/// Requests without a hash key go to a weighted random endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Maglev {
    table_size: usize,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev { table_size: 65_537 }
    }
}

impl Maglev {
    /// A table of 65,537 slots (Envoy's default), good for up to a few hundred endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the table size, rounded up to a prime (at least 7). Use at least 100 × the number
    /// of endpoints for an even spread.
    pub fn table_size(mut self, size: usize) -> Self {
        self.table_size = next_prime(size.max(7));
        self
    }

    /// The table size.
    pub fn get_table_size(&self) -> usize {
        self.table_size
    }

    /// Builds the lookup table: `table[slot]` is a candidate index. Exposed for tests of the
    /// table's evenness.
    ///
    /// Candidates take turns in the order of their hash ids, not their positions, so every
    /// client builds the same table from the same endpoints whatever order discovery listed
    /// them in. A candidate of relative weight `w` (weight / max weight) takes a slot in round
    /// `r` while it holds fewer than `r × w` slots, so its share converges to `w / Σw`
    /// (Envoy's rule). When weights are skewed, turns come off a heap keyed by (round, turn
    /// order), so the build stays O(table size × log n).
    pub fn table(&self, candidates: &[Candidate]) -> Vec<u32> {
        let m = self.table_size as u64;
        let mut table = vec![u32::MAX; self.table_size];
        if candidates.is_empty() {
            return table;
        }
        let max_weight = candidates.iter().map(Candidate::weight).fold(0.0, f64::max);
        struct Cursor {
            idx: u32,
            position: u64,
            skip: u64,
            weight: f64,
            filled: u64,
        }
        let mut cursors: Vec<Cursor> = candidates
            .iter()
            .enumerate()
            .map(|(idx, c)| Cursor {
                idx: idx as u32,
                position: mix64(c.hash_id() ^ 0x5851_f42d_4c95_7f2d) % m,
                skip: mix64(c.hash_id() ^ 0x1405_7b7e_f767_814f) % (m - 1) + 1,
                weight: c.weight() / max_weight,
                filled: 0,
            })
            .collect();
        cursors.sort_by_key(|c| (candidates[c.idx as usize].hash_id(), c.idx));
        let fill = |cursor: &mut Cursor, table: &mut Vec<u32>| {
            while table[cursor.position as usize] != u32::MAX {
                cursor.position += cursor.skip;
                if cursor.position >= m {
                    cursor.position -= m;
                }
            }
            table[cursor.position as usize] = cursor.idx;
            cursor.filled += 1;
        };
        let total_weight: f64 = cursors.iter().map(|c| c.weight).sum();
        let mut n_filled = 0;
        if (cursors.len() as f64) <= 8.0 * total_weight {
            // Weights within a small factor of each other: plain rounds cost about one check
            // per slot.
            let mut round = 0u64;
            while n_filled < table.len() {
                round += 1;
                for cursor in cursors.iter_mut() {
                    if n_filled == table.len() {
                        break;
                    }
                    if (cursor.filled as f64) < round as f64 * cursor.weight {
                        fill(cursor, &mut table);
                        n_filled += 1;
                    }
                }
            }
        } else {
            // Skewed weights: most candidates sit out most rounds, so take turns from a heap
            // keyed by (the first round in which the candidate takes another slot, turn order).
            let next_round = |c: &Cursor| (c.filled as f64 / c.weight).floor() as u64 + 1;
            let mut turns: BinaryHeap<Reverse<(u64, usize)>> =
                cursors.iter().enumerate().map(|(order, c)| Reverse((next_round(c), order))).collect();
            while n_filled < table.len() {
                let Some(Reverse((_, order))) = turns.pop() else { break };
                let cursor = &mut cursors[order];
                fill(cursor, &mut table);
                n_filled += 1;
                turns.push(Reverse((next_round(cursor), order)));
            }
        }
        table
    }
}

fn next_prime(mut n: usize) -> usize {
    let is_prime = |n: usize| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d));
    while !is_prime(n) {
        n += 1;
    }
    n
}

impl Policy for Maglev {
    fn name(&self) -> &'static str {
        "maglev"
    }

    fn is_consistent_hash(&self) -> bool {
        true
    }

    fn build(&self, candidates: &[Candidate], _rng: &mut SmallRng) -> Box<dyn Picker> {
        Box::new(MaglevPicker { table: self.table(candidates).into(), fallback: Sampler::new(candidates) })
    }
}

#[derive(Debug)]
struct MaglevPicker {
    table: Box<[u32]>,
    fallback: Sampler,
}

impl Picker for MaglevPicker {
    #[inline]
    fn pick(&self, cx: &mut PickContext<'_>) -> usize {
        match cx.request_hash() {
            // Multiply-shift maps the hash onto the table without a division.
            Some(hash) => self.table[((u128::from(hash) * self.table.len() as u128) >> 64) as usize] as usize,
            None => self.fallback.sample(cx.rng()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_are_prime() {
        assert_eq!(Maglev::new().table_size(65_536).get_table_size(), 65_537);
        assert_eq!(Maglev::new().table_size(100).get_table_size(), 101);
        assert_eq!(Maglev::new().table_size(1).get_table_size(), 7);
    }
}
