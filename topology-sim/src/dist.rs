//! Random draws the scenarios need, from the one seeded generator (rand's `SmallRng`, so a run
//! is reproducible from `--seed`).

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use crate::config::SessionDist;

/// A session length with the given mean, seconds.
pub fn session(rng: &mut SmallRng, dist: SessionDist, mean: f64) -> f64 {
    match dist {
        SessionDist::Exponential => exponential(rng, mean),
        // Shape 2: the mean is twice the minimum, the variance infinite (long-tailed audiences).
        SessionDist::Pareto => (mean / 2.0) / open_unit(rng).sqrt(),
        SessionDist::Fixed => mean,
    }
}

/// An exponential draw with the given mean.
pub fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    -open_unit(rng).ln() * mean
}

/// A one-way network delay: `latency ± jitter` ms, uniform.
pub fn delay(rng: &mut SmallRng, latency_ms: f64, jitter_ms: f64) -> Duration {
    let ms = if jitter_ms > 0.0 {
        latency_ms + rng.random_range(-jitter_ms..=jitter_ms)
    } else {
        latency_ms
    };
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// A uniform sample of `count` items of `pool` (a partial Fisher-Yates shuffle), in the
/// shuffle's order.
pub fn sample<T>(rng: &mut SmallRng, mut pool: Vec<T>, count: usize) -> Vec<T> {
    let count = count.min(pool.len());
    for k in 0..count {
        let j = rng.random_range(k..pool.len());
        pool.swap(k, j);
    }
    pool.truncate(count);
    pool
}

/// Uniform in (0, 1]: never 0, so logarithms and divisions stay finite.
fn open_unit(rng: &mut SmallRng) -> f64 {
    1.0 - rng.random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn means_come_out_about_right() {
        let mut rng = SmallRng::seed_from_u64(7);
        for dist in [
            SessionDist::Exponential,
            SessionDist::Pareto,
            SessionDist::Fixed,
        ] {
            let n = 200_000;
            let mean = (0..n).map(|_| session(&mut rng, dist, 60.0)).sum::<f64>() / n as f64;
            assert!((mean - 60.0).abs() < 6.0, "{dist:?}: {mean}");
        }
    }
}
