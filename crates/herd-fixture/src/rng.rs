//! A small seeded generator. Its own few lines rather than a crate, so a
//! fixture stays byte-for-byte the same whatever a dependency changes.

/// SplitMix64: fast, full-period, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream of its own for every (seed, purpose, index), so one table's
    /// rows can be computed again without replaying the others.
    pub fn derive(seed: u64, purpose: &str, index: u64) -> Rng {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        for byte in purpose.bytes() {
            state = mix(state ^ u64::from(byte));
        }
        Rng(mix(state ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Sizes spread evenly over orders of magnitude, as file sizes are.
    pub fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let (low, high) = ((low.max(1)) as f64, high as f64);
        let unit = self.next_u64() as f64 / u64::MAX as f64;
        (low * (high / low).powf(unit)) as u64
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn hex(&mut self, bytes: usize) -> String {
        let mut raw = vec![0; bytes];
        self.fill(&mut raw);
        raw.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let first: Vec<u64> = (0..4)
            .map(|_| Rng::derive(7, "statuses", 3).next_u64())
            .collect();
        assert!(first.windows(2).all(|pair| pair[0] == pair[1]));
        assert_ne!(
            Rng::derive(7, "statuses", 3).next_u64(),
            Rng::derive(7, "statuses", 4).next_u64()
        );
        assert_ne!(
            Rng::derive(7, "statuses", 3).next_u64(),
            Rng::derive(8, "statuses", 3).next_u64()
        );
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::derive(1, "t", 0);
        assert!((0..10_000).all(|_| rng.below(3) < 3));
        assert!((0..10_000).all(|_| (10..20).contains(&rng.log_uniform(10, 20))));
    }
}
