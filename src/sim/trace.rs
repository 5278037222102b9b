//! Traces of requests: CSV with one request per line, `time,user,pool,duration`.
//!
//! - `time`: RFC 3339 with an offset (`2026-03-10T07:41:12+01:00`), or a local date and time
//!   without one (`2026-03-10 07:41:12`) read in `simulate.timeZone`;
//! - `user`: any stable name; one user holds at most one live session per pool;
//! - `pool`: a pool of the config;
//! - `duration`: how long the drafter works once the desktop is ready (`4h12m`, `90s`, or seconds).
//!
//! Blank lines and lines starting with `#` are skipped; a first line `time,user,pool,duration`
//! is a header. Every problem names its line.

use std::{fmt::Write as _, time::Duration};

use jiff::{Timestamp, civil::DateTime};

use crate::domain::{PoolName, Zone};

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When the drafter asks for a workstation.
    pub at: Timestamp,
    /// Who asks.
    pub user: String,
    /// From which pool.
    pub pool: PoolName,
    /// How long the drafter works once the workstation is ready.
    pub duration: Duration,
    /// Line in the trace file (1-based), for messages.
    pub line: usize,
}

/// A parsed trace, sorted by time (ties keep file order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The requests.
    pub arrivals: Vec<Arrival>,
}

const HEADER: &str = "time,user,pool,duration";

impl Trace {
    /// Parses CSV text. `origin` names the file, `pools` the pools the config has, `zone` reads
    /// times without an offset.
    pub fn parse(origin: &str, text: &str, pools: &[PoolName], zone: &Zone) -> Result<Self, String> {
        let mut arrivals = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let row = raw.trim();
            if row.is_empty()
                || row.starts_with('#')
                || (arrivals.is_empty() && row.replace(' ', "") == HEADER)
            {
                continue;
            }
            let arrival =
                parse_row(row, line, pools, zone).map_err(|why| format!("{origin} line {line}: {why}"))?;
            arrivals.push(arrival);
        }
        if arrivals.is_empty() {
            return Err(format!("{origin}: the trace has no requests (expected lines like {HEADER})"));
        }
        arrivals.sort_by_key(|a| a.at);
        Ok(Self { arrivals })
    }

    /// The trace as CSV, with a header and `comment` lines first.
    pub fn to_csv(&self, comment: &str, zone: &Zone) -> String {
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "{HEADER}");
        for a in &self.arrivals {
            let local = a.at.to_zoned(zone.tz().clone());
            let _ = writeln!(
                out,
                "{},{},{},{}",
                local.strftime("%Y-%m-%dT%H:%M:%S%:z"),
                a.user,
                a.pool,
                humantime::format_duration(a.duration).to_string().replace(' ', "")
            );
        }
        out
    }
}

fn parse_row(row: &str, _line: usize, pools: &[PoolName], zone: &Zone) -> Result<Arrival, String> {
    let fields: Vec<&str> = row.split(',').map(str::trim).collect();
    if fields.len() != 4 {
        return Err(format!("expected 4 fields ({HEADER}), found {}: '{row}'", fields.len()));
    }
    let at = parse_time(fields[0], zone)?;
    let user = fields[1];
    if user.is_empty() {
        return Err("the user is empty".to_owned());
    }
    let pool = PoolName::from(fields[2]);
    if !pools.contains(&pool) {
        let known: Vec<_> = pools.iter().map(PoolName::as_str).collect();
        return Err(format!("unknown pool '{pool}' (the config has: {})", known.join(", ")));
    }
    let duration = parse_duration(fields[3])?;
    Ok(Arrival { at, user: user.to_owned(), pool, duration, line: _line })
}

fn parse_time(s: &str, zone: &Zone) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    s.parse::<DateTime>().ok().and_then(|dt| zone.tz().to_timestamp(dt).ok()).ok_or_else(|| {
        format!("time '{s}' is not RFC 3339 (2026-03-10T07:41:12+01:00) or a local date and time")
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("duration '{s}' is not a duration like 4h12m, 90s or 3600 ({e})"))?,
    };
    if d.is_zero() {
        return Err("the duration must be more than 0".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> Vec<PoolName> {
        vec![PoolName::from("cad")]
    }

    fn zone() -> Zone {
        Zone::parse("Europe/Amsterdam").unwrap()
    }

    #[test]
    fn a_trace_parses_with_header_comments_and_local_times_and_sorts() {
        let text = "# a day\ntime,user,pool,duration\n2026-03-10T09:00:00+01:00,b,cad,1h\n\n2026-03-10 08:00:00,a,cad,90\n";
        let t = Trace::parse("t.csv", text, &pools(), &zone()).unwrap();
        assert_eq!(t.arrivals.len(), 2);
        assert_eq!(t.arrivals[0].user, "a");
        assert_eq!(t.arrivals[0].at, "2026-03-10T07:00:00Z".parse().unwrap());
        assert_eq!(t.arrivals[0].duration, Duration::from_secs(90));
        assert_eq!(t.arrivals[1].line, 3);
        let again = Trace::parse("t.csv", &t.to_csv("x", &zone()), &pools(), &zone()).unwrap();
        assert_eq!(
            again.arrivals.iter().map(|a| (a.at, a.duration)).collect::<Vec<_>>(),
            t.arrivals.iter().map(|a| (a.at, a.duration)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_rows_are_named_by_line() {
        let cases = [
            ("2026-03-10T09:00:00+01:00,b,cad\n", "t.csv line 1: expected 4 fields"),
            (
                "2026-03-10T09:00:00+01:00,b,gis,1h\n",
                "t.csv line 1: unknown pool 'gis' (the config has: cad)",
            ),
            ("time,user,pool,duration\nnine,b,cad,1h\n", "t.csv line 2: time 'nine' is not RFC 3339"),
            ("2026-03-10T09:00:00+01:00,b,cad,soon\n", "t.csv line 1: duration 'soon' is not a duration"),
            ("2026-03-10T09:00:00+01:00,,cad,1h\n", "t.csv line 1: the user is empty"),
            ("2026-03-10T09:00:00+01:00,b,cad,0s\n", "t.csv line 1: the duration must be more than 0"),
            ("# nothing\n", "t.csv: the trace has no requests"),
        ];
        for (text, want) in cases {
            let err = Trace::parse("t.csv", text, &pools(), &zone()).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
