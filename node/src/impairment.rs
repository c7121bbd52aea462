//! The test-only impairment spec: `loss=0.05,delay=10,jitter=5,reorder=0.01,seed=7` (delay and
//! jitter in ms) parsed into `treecast-media`'s seeded link model, which `impaired_runtime`
//! applies to every datagram a node sends, or with `only=rtp` to its RTP packets alone (the
//! media it forwards and resends; its STUN, DTLS and RTCP go out untouched).

use std::time::Duration;

use treecast_media::impairment::ImpairmentConfig;

/// Impairment parameters and the seed of their random sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Loss, delay, jitter and reordering.
    pub config: ImpairmentConfig,
    /// Seed; each socket of the node derives its own sequence from it.
    pub seed: u64,
    /// Impair RTP packets only (`only=rtp`): a node whose forwarding is poor while its
    /// connections (ICE consent, DTLS, RTCP feedback) stay up.
    pub rtp_only: bool,
}

/// A malformed impairment spec.
#[derive(Debug, thiserror::Error)]
#[error("bad impairment spec {0:?}: expected loss=P,delay=MS,jitter=MS,reorder=P,seed=N,only=rtp")]
pub struct ImpairmentParseError(String);

impl std::str::FromStr for Impairment {
    type Err = ImpairmentParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ImpairmentParseError(s.to_owned());
        let prob = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(err)
        };
        let ms = |v: &str| v.parse().map(Duration::from_millis).map_err(|_| err());
        let mut imp = Impairment {
            config: ImpairmentConfig::default(),
            seed: 1,
            rtp_only: false,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(err)?;
            match k.trim() {
                "loss" => imp.config.loss = prob(v)?,
                "delay" => imp.config.delay = ms(v)?,
                "jitter" => imp.config.jitter = ms(v)?,
                "reorder" => {
                    imp.config.reorder = prob(v)?;
                    imp.config.reorder_delay = Duration::from_millis(5);
                }
                "seed" => imp.seed = v.parse().map_err(|_| err())?,
                "only" if v.trim() == "rtp" => imp.rtp_only = true,
                _ => return Err(err()),
            }
        }
        Ok(imp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let spec: Impairment = "loss=0.05,delay=3,jitter=2,seed=9".parse().unwrap();
        assert_eq!(spec.config.loss, 0.05);
        assert_eq!(spec.config.delay, Duration::from_millis(3));
        assert_eq!(spec.config.jitter, Duration::from_millis(2));
        assert_eq!(spec.seed, 9);
        assert!(!spec.rtp_only);
        assert!("loss=0.5,only=rtp".parse::<Impairment>().unwrap().rtp_only);
        assert!("only=rtcp".parse::<Impairment>().is_err());
        assert!("loss=2".parse::<Impairment>().is_err());
        assert!("speed=1".parse::<Impairment>().is_err());
        assert!("loss".parse::<Impairment>().is_err());
    }
}
