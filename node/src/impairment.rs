//! A seeded network impairment (loss, delay, jitter) for tests, applied to the datagrams a node
//! sends. Parsed from `loss=0.05,delay=10,jitter=5,seed=7` (delay and jitter in ms).

use std::time::Duration;

/// Impairment parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped, 0..=1.
    pub loss: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter`.
    pub jitter: Duration,
    /// Seed of the deterministic random sequence.
    pub seed: u64,
}

/// A malformed impairment spec.
#[derive(Debug, thiserror::Error)]
#[error("bad impairment spec {0:?}: expected loss=P,delay=MS,jitter=MS,seed=N")]
pub struct ImpairmentParseError(String);

impl std::str::FromStr for Impairment {
    type Err = ImpairmentParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ImpairmentParseError(s.to_owned());
        let mut imp = Impairment {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 1,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(err)?;
            match k.trim() {
                "loss" => imp.loss = v.parse().map_err(|_| err())?,
                "delay" => imp.delay = Duration::from_millis(v.parse().map_err(|_| err())?),
                "jitter" => imp.jitter = Duration::from_millis(v.parse().map_err(|_| err())?),
                "seed" => imp.seed = v.parse().map_err(|_| err())?,
                _ => return Err(err()),
            }
        }
        if !(0.0..=1.0).contains(&imp.loss) {
            return Err(err());
        }
        Ok(imp)
    }
}

/// The deterministic decision sequence of one impaired socket: splitmix64 over the seed.
#[derive(Debug, Clone)]
pub struct Dice {
    state: u64,
    spec: Impairment,
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped.
    Drop,
    /// Sent after this delay (zero: at once).
    Send(Duration),
}

impl Dice {
    /// A sequence for `spec`, salted so that several sockets with one seed differ.
    pub fn new(spec: Impairment, salt: u64) -> Self {
        Dice {
            state: spec.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            spec,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fate of the next datagram.
    pub fn roll(&mut self) -> Fate {
        if self.unit() < self.spec.loss {
            return Fate::Drop;
        }
        let jitter = self.spec.jitter.mul_f64(self.unit());
        Fate::Send(self.spec.delay + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_roll() {
        let spec: Impairment = "loss=0.05,delay=3,jitter=2,seed=9".parse().unwrap();
        assert_eq!(spec.delay, Duration::from_millis(3));
        assert!("loss=2".parse::<Impairment>().is_err());
        assert!("speed=1".parse::<Impairment>().is_err());
        let mut a = Dice::new(spec, 1);
        let mut b = Dice::new(spec, 1);
        let fa: Vec<_> = (0..1000).map(|_| a.roll()).collect();
        let fb: Vec<_> = (0..1000).map(|_| b.roll()).collect();
        assert_eq!(fa, fb, "deterministic for a seed");
        let drops = fa.iter().filter(|f| **f == Fate::Drop).count();
        assert!((25..=80).contains(&drops), "about 5% of 1000: {drops}");
        assert!(fa.iter().all(|f| match f {
            Fate::Drop => true,
            Fate::Send(d) => *d >= Duration::from_millis(3) && *d < Duration::from_millis(5),
        }));
    }
}
