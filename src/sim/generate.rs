//! A synthetic working day of drafters, deterministic for a seed (the example trace is made
//! with `cadbroker simulate generate-trace --drafters 200 --seed 42`).
//!
//! Each drafter, independently:
//! - is absent that day with probability 4 %;
//! - starts early (30 %, around 07:35 ± 15 min) or at the usual time (around 08:35 ± 25 min);
//! - works part-time with probability 10 % (leaves around 12:45 ± 20 min, no afternoon);
//! - ends the session for lunch with probability 75 % (around 12:15 ± 20 min, 25-55 min);
//! - ends it for a meeting with probability 25 % (starting 14:00-15:30, 30-90 min);
//! - leaves around 17:00 ± 35 min (15:30-19:30, at least 4 h after starting);
//! - checks in again in the evening with probability 10 % (around 20:30 ± 1 h, 10-40 min).
//!
//! Every stretch of work between breaks is one request. "±" is one standard deviation of a
//! normal distribution (a sum of 12 uniforms, so only additions: identical on every platform).
//! The random numbers come from SplitMix64, written out here, so a seed gives the same trace
//! with every build.

use std::time::Duration;

use jiff::{
    Timestamp,
    civil::{Date, DateTime, Time},
};

use super::trace::{Arrival, Trace};
use crate::domain::{PoolName, Zone};

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and fully specified.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Approximately normal (Irwin-Hall: the sum of 12 uniforms, minus 6).
    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let sum: f64 = (0..12).map(|_| self.uniform()).sum();
        mean + sd * (sum - 6.0)
    }

    /// Uniform in [lo, hi).
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkdaySpec {
    /// How many drafters.
    pub drafters: u32,
    /// Seed of the random numbers.
    pub seed: u64,
    /// The working day.
    pub date: Date,
    /// The drafters' time zone.
    pub zone: Zone,
    /// The pool they use.
    pub pool: PoolName,
}

/// Minutes after local midnight.
type Minute = f64;

fn minutes(h: u32, m: u32) -> Minute {
    f64::from(h * 60 + m)
}

/// A working day for `spec.drafters` drafters.
pub fn workday(spec: &WorkdaySpec) -> Trace {
    let mut rng = SplitMix64::new(spec.seed);
    let mut arrivals = Vec::new();
    for i in 0..spec.drafters {
        let user = format!("drafter-{:03}", i + 1);
        for (from, to) in drafter_day(&mut rng) {
            let at = local(spec, from);
            let duration = Duration::from_secs(((to - from) * 60.0).round() as u64);
            arrivals.push(Arrival { at, user: user.clone(), pool: spec.pool.clone(), duration, line: 0 });
        }
    }
    arrivals.sort_by(|a, b| (a.at, &a.user).cmp(&(b.at, &b.user)));
    Trace { arrivals }
}

/// One drafter's stretches of work, in minutes after midnight.
fn drafter_day(rng: &mut SplitMix64) -> Vec<(Minute, Minute)> {
    // Draw everything up front, so each drafter uses the same number of random numbers.
    let absent = rng.chance(0.04);
    let early = rng.chance(0.30);
    let start = if early { rng.normal(minutes(7, 35), 15.0) } else { rng.normal(minutes(8, 35), 25.0) };
    let start = start.clamp(minutes(6, 45), minutes(10, 30));
    let part_time = rng.chance(0.10);
    let part_time_end = rng.normal(minutes(12, 45), 20.0);
    let lunch = rng.chance(0.75);
    let lunch_at = rng.normal(minutes(12, 15), 20.0);
    let lunch_len = rng.between(25.0, 55.0);
    let meeting = rng.chance(0.25);
    let meeting_at = rng.between(minutes(14, 0), minutes(15, 30));
    let meeting_len = rng.between(30.0, 90.0);
    let leave = rng.normal(minutes(17, 0), 35.0).clamp(minutes(15, 30), minutes(19, 30)).max(start + 240.0);
    let evening = rng.chance(0.10);
    let evening_at = rng.normal(minutes(20, 30), 60.0).clamp(minutes(19, 45), minutes(23, 0));
    let evening_len = rng.between(10.0, 40.0);
    if absent {
        return Vec::new();
    }
    let end = if part_time { part_time_end.max(start + 180.0) } else { leave };
    let mut breaks = Vec::new();
    if lunch && lunch_at > start + 60.0 && lunch_at + lunch_len < end - 30.0 {
        breaks.push((lunch_at, lunch_at + lunch_len));
    }
    let after_lunch = breaks.last().map_or(start, |b| b.1);
    if !part_time && meeting && meeting_at > after_lunch + 30.0 && meeting_at + meeting_len < end - 30.0 {
        breaks.push((meeting_at, meeting_at + meeting_len));
    }
    let mut stretches = Vec::new();
    let mut from = start;
    for (b_from, b_to) in breaks {
        stretches.push((from, b_from));
        from = b_to;
    }
    stretches.push((from, end));
    if evening && !part_time && evening_at > end + 60.0 {
        stretches.push((evening_at, evening_at + evening_len));
    }
    stretches
}

fn local(spec: &WorkdaySpec, minute: Minute) -> Timestamp {
    let secs = (minute * 60.0).round() as i64;
    let (h, rest) = (secs / 3600, secs % 3600);
    let time = Time::new(h as i8, (rest / 60) as i8, (rest % 60) as i8, 0).unwrap_or(Time::MAX);
    spec.zone.tz().to_timestamp(DateTime::from_parts(spec.date, time)).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> WorkdaySpec {
        WorkdaySpec {
            drafters: 200,
            seed,
            date: "2026-03-10".parse().unwrap(),
            zone: Zone::parse("Europe/Amsterdam").unwrap(),
            pool: "drafting-2d".into(),
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference values for seed 0 from the published SplitMix64 algorithm.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn a_seed_gives_the_same_day_and_another_seed_another() {
        let a = workday(&spec(42));
        assert_eq!(a, workday(&spec(42)));
        assert_ne!(a, workday(&spec(43)));
    }

    #[test]
    fn a_day_of_200_drafters_has_a_morning_peak_and_no_overlaps_per_user() {
        let t = workday(&spec(42));
        let n = t.arrivals.len();
        assert!((350..=650).contains(&n), "{n} requests");
        let zone = Zone::parse("Europe/Amsterdam").unwrap();
        let hour = |a: &Arrival| a.at.to_zoned(zone.tz().clone()).hour();
        let morning = t.arrivals.iter().filter(|a| (7..10).contains(&hour(a))).count();
        assert!(morning > 150, "{morning} requests 07:00-10:00");
        let mut by_user = std::collections::BTreeMap::<&str, Vec<&Arrival>>::new();
        for a in &t.arrivals {
            by_user.entry(&a.user).or_default().push(a);
        }
        for sessions in by_user.values() {
            for pair in sessions.windows(2) {
                let end = crate::domain::time::after(pair[0].at, pair[0].duration);
                assert!(end < pair[1].at, "{} overlaps", pair[0].user);
            }
        }
    }
}
