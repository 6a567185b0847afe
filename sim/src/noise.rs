//! Deterministic noise. Every random-looking value is a hash of what it depends on (seed,
//! node, GPU, field, second), so a reading is a pure function of its inputs and two runs with
//! the same seed agree bit for bit. No RNG state is kept anywhere.
//!
//! The "gaussian" is an Irwin–Hall sum of four uniforms: bell-shaped, but bounded to
//! ±2√3 ≈ ±3.46 standard deviations, so healthy readings provably stay inside their bands.

/// Largest magnitude [`Noise::gauss`] can return: 2·√3.
#[cfg(test)]
pub const GAUSS_BOUND: f64 = 3.464_101_615_137_754_6;

/// splitmix64's finaliser: a cheap, well-mixed 64-bit hash.
#[inline]
pub fn mix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over the bytes, then mixed.
pub fn hash_str(s: &str) -> u64 {
    let h = s.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    mix(h)
}

#[inline]
fn unit_of(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[inline]
fn gauss_of(h: u64) -> f64 {
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    (s as f64 / 65_535.0 - 2.0) * 3f64.sqrt()
}

/// A noise stream for one entity (a node, a GPU, a NIC). Copy it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise(u64);

impl Noise {
    pub fn new(key: u64) -> Self {
        Noise(mix(key))
    }

    /// A stream for a sub-entity, e.g. GPU `i` of a node.
    pub fn child(self, k: u64) -> Self {
        Noise(mix(self.0 ^ mix(k.wrapping_add(0x632B_E59B_D9B4_E019))))
    }

    /// Raw 64 bits for `field` (constant over time).
    pub fn bits(self, field: u64) -> u64 {
        mix(self.0 ^ field.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    #[inline]
    fn at(self, field: u64, tick: i64) -> u64 {
        mix(self.0
            ^ field.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (tick as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// Uniform in `[0, 1)`, constant over time: for per-entity characteristics.
    pub fn constant(self, field: u64) -> f64 {
        unit_of(self.bits(field))
    }

    /// Uniform in `[lo, hi)`, constant over time.
    pub fn between(self, field: u64, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.constant(field)
    }

    /// Uniform in `[0, 1)` for one tick.
    pub fn unit(self, field: u64, tick: i64) -> f64 {
        unit_of(self.at(field, tick))
    }

    /// Bounded, approximately standard normal value for one tick.
    pub fn gauss(self, field: u64, tick: i64) -> f64 {
        gauss_of(self.at(field, tick))
    }

    /// Slowly varying bounded normal value: knots every `period_s` seconds, smoothly
    /// interpolated between them. Same bound as [`Noise::gauss`].
    pub fn wander(self, field: u64, t_s: f64, period_s: f64) -> f64 {
        let x = t_s / period_s;
        let k = x.floor();
        let f = x - k;
        let w = f * f * (3.0 - 2.0 * f);
        let a = self.gauss(field ^ 0x5A5A, k as i64);
        let b = self.gauss(field ^ 0x5A5A, k as i64 + 1);
        a + (b - a) * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_is_bounded_centred_and_unit_variance() {
        let n = Noise::new(42);
        let xs: Vec<f64> = (0..200_000).map(|t| n.gauss(7, t)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        assert!(xs.iter().all(|x| x.abs() <= GAUSS_BOUND));
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a = Noise::new(1).child(3);
        assert_eq!(a.gauss(1, 10), Noise::new(1).child(3).gauss(1, 10));
        assert_ne!(a.gauss(1, 10), Noise::new(1).child(4).gauss(1, 10));
        assert_ne!(a.gauss(1, 10), a.gauss(2, 10));
        assert_ne!(hash_str("gpu-node-01"), hash_str("gpu-node-02"));
    }

    #[test]
    fn wander_is_continuous_and_bounded() {
        let n = Noise::new(9);
        for i in 0..10_000 {
            let t = i as f64 * 0.5;
            let (a, b) = (n.wander(1, t, 60.0), n.wander(1, t + 0.5, 60.0));
            assert!((a - b).abs() < 0.2, "{t}: {a} {b}");
            assert!(a.abs() <= GAUSS_BOUND);
        }
    }
}
