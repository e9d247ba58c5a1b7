//! Choosing the next token from logits.

/// Sampling settings; the defaults are greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Random seed: the same seed, model and prompt give the same text.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// What each float sampling parameter may be: `Ok(v)`, or `Err` saying what it must be. The one
/// definition of the ranges, for [`SamplingParams::validate`] and for front ends that check
/// their flags as they parse them.
pub mod limits {
    /// One parameter's check.
    pub type Limit = fn(f32) -> Result<f32, &'static str>;

    fn check(v: f32, ok: bool, want: &'static str) -> Result<f32, &'static str> {
        if v.is_finite() && ok { Ok(v) } else { Err(want) }
    }

    /// Temperature: finite, ≥ 0.
    pub fn temperature(v: f32) -> Result<f32, &'static str> {
        check(v, v >= 0.0, "a finite number ≥ 0 (0 is greedy)")
    }

    /// Top-p: above 0, at most 1.
    pub fn top_p(v: f32) -> Result<f32, &'static str> {
        check(v, v > 0.0 && v <= 1.0, "above 0 and at most 1 (1 is off)")
    }

    /// Min-p: 0 to 1.
    pub fn min_p(v: f32) -> Result<f32, &'static str> {
        check(v, (0.0..=1.0).contains(&v), "between 0 and 1 (0 is off)")
    }

    /// Repeat penalty: finite, above 0.
    pub fn repeat_penalty(v: f32) -> Result<f32, &'static str> {
        check(v, v > 0.0, "a finite number above 0 (1 is off)")
    }
}

impl SamplingParams {
    /// Checks that every value is finite and means something ([`limits`]): temperature ≥ 0,
    /// top-p in (0, 1], min-p in [0, 1], repeat penalty > 0. The error names the field and the value.
    pub fn validate(&self) -> crate::Result<()> {
        let fields: [(&str, f32, limits::Limit); 4] = [
            ("temperature", self.temperature, limits::temperature),
            ("top_p", self.top_p, limits::top_p),
            ("min_p", self.min_p, limits::min_p),
            ("repeat_penalty", self.repeat_penalty, limits::repeat_penalty),
        ];
        for (name, v, limit) in fields {
            limit(v).map_err(|want| crate::ModelError::Invalid(format!("sampling: {name} = {v} must be {want}")))?;
        }
        Ok(())
    }
}

/// A seeded sampler.
///
/// ```
/// use bitnet_model::{Sampler, SamplingParams};
/// let logits = [0.1, 2.0, 0.3, 1.9];
/// let mut greedy = Sampler::try_new(SamplingParams::default())?;
/// assert_eq!(greedy.sample(&logits, &[]), 1);
/// let params = SamplingParams { temperature: 0.8, top_k: 2, seed: 7, ..SamplingParams::default() };
/// let mut s = Sampler::try_new(params)?;
/// assert!(matches!(s.sample(&logits, &[]), 1 | 3)); // one of the two most likely
/// assert!(Sampler::try_new(SamplingParams { temperature: f32::NAN, ..params }).is_err());
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    state: u64,
}

impl Sampler {
    /// A sampler with its own random stream.
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler { params, state: params.seed ^ 0x853c_49e6_748f_ea9b }
    }

    /// [`Sampler::new`] after [`SamplingParams::validate`].
    pub fn try_new(params: SamplingParams) -> crate::Result<Sampler> {
        params.validate()?;
        Ok(Sampler::new(params))
    }

    /// SplitMix64: small, fast, and good enough for sampling.
    fn next_f32(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token given the logits and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = self.params;
        let mut logits = logits.to_vec();
        if p.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l / p.temperature)).collect();
        // Best first, ties by id: a strict order, so selecting the top k before sorting gives
        // the same list as sorting everything (and the vocabulary is 10⁵ long).
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, order);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(order);
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = probs.len();
        if p.min_p > 0.0 {
            keep = keep.min(probs.iter().take_while(|&&q| q >= p.min_p * probs[0]).count().max(1));
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let n = probs.iter().take_while(|&&q| {
                let before = acc;
                acc += q;
                before < p.top_p
            });
            keep = keep.min(n.count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.next_f32() * total;
        for (c, &q) in cand[..keep].iter().zip(&probs[..keep]) {
            if r < q {
                return c.0;
            }
            r -= q;
        }
        cand[keep - 1].0
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 / 3.0).collect();
        let params =
            SamplingParams { temperature: 0.9, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 7, ..Default::default() };
        let run = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(params), run(params));
        assert_ne!(run(params), run(SamplingParams { seed: 8, ..params }));
    }

    #[test]
    fn filters_restrict_the_candidates() {
        let logits = [5.0, 4.0, 0.0, -3.0];
        for seed in 0..50 {
            let mut k1 = Sampler::new(SamplingParams { temperature: 1.0, top_k: 1, seed, ..Default::default() });
            assert_eq!(k1.sample(&logits, &[]), 0);
            let mut p = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.5,
                min_p: 0.0,
                seed,
                ..Default::default()
            });
            assert_eq!(p.sample(&logits, &[]), 0);
            let mut m = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.2,
                seed,
                ..Default::default()
            });
            assert!(m.sample(&logits, &[]) <= 1);
        }
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&[3.0, 2.0], &[0]), 1);
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]), 1);
    }
}
