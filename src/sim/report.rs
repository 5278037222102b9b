//! The simulation report as text: one column per policy, then the day hour by hour (queue
//! length over time, use and buffer), then, on request, every decision.

use std::{fmt::Write as _, time::Duration};

use super::{Outcome, SimConfig, Trace};
use crate::domain::time::after;

/// Formats a duration rounded to whole seconds ("1m 30s", "0s").
fn dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn money(currency: &str, amount: f64) -> String {
    format!("{currency}{amount:.2}")
}

/// One row of the comparison: a value of an outcome.
type Row<'a> = Box<dyn Fn(&Outcome) -> String + 'a>;

/// The report of `outcomes` (the first is cadbroker's policy) over `trace`.
pub fn render(config: &SimConfig, origin: &str, trace: &Trace, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let Some(first) = outcomes.first() else { return out };
    let s = &config.settings;
    let tz = s.time_zone.tz();
    let users: std::collections::BTreeSet<_> = trace.arrivals.iter().map(|a| &a.user).collect();
    let delays: Vec<_> = config.start_delays.iter().map(|(p, d)| format!("{p} {}", dur(*d))).collect();
    let _ = writeln!(
        out,
        "cadbroker simulate: {} requests by {} users from {origin}\nvirtual time {} to {} ({}), reconcile every {}, start delay {}, GPU {}/h\n",
        trace.arrivals.len(),
        users.len(),
        first.from.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M"),
        first.to.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M"),
        s.time_zone.name(),
        dur(config.tick),
        delays.join(", "),
        money(&s.currency, s.gpu_price_per_hour),
    );
    let rows: Vec<(&str, Row)> = vec![
        ("served instantly from warm", Box::new(|o| format!("{:.1}%", o.instant_share() * 100.0))),
        ("requests (instant)", Box::new(|o| format!("{} ({})", o.requests, o.instant))),
        ("wait p50", Box::new(|o| dur(o.wait_quantile(0.5)))),
        ("wait p95", Box::new(|o| dur(o.wait_quantile(0.95)))),
        ("wait max", Box::new(|o| dur(o.wait_quantile(1.0)))),
        ("queue length max", Box::new(|o| o.samples.iter().map(|s| s.queued).max().unwrap_or(0).to_string())),
        ("minutes with a queue", Box::new(|o| o.samples.iter().filter(|s| s.queued > 0).count().to_string())),
        ("workstation-hours in use", Box::new(|o| format!("{:.1}", o.hours.in_use))),
        ("workstation-hours idle", Box::new(|o| format!("{:.1}", o.hours.idle))),
        ("idle / in use", Box::new(|o| format!("{:.1}%", o.idle_ratio() * 100.0))),
        ("starting for a waiting user", Box::new(|o| format!("{:.1}", o.hours.starting))),
        ("GPU-hours (all)", Box::new(|o| format!("{:.1}", o.hours.gpu))),
        ("GPU cost", Box::new(|o| money(&s.currency, o.hours.gpu * s.gpu_price_per_hour))),
        ("ends by idle / lifetime", Box::new(|o| format!("{} / {}", o.idle_ends, o.lifetime_ends))),
        (
            "scaling decisions",
            Box::new(|o| o.decisions.iter().filter(|d| d.session.is_none()).count().to_string()),
        ),
    ];
    let _ = write!(out, "{:<30}", "");
    for o in outcomes {
        let _ = write!(out, "{:>16}", o.policy);
    }
    out.push('\n');
    for (label, value) in &rows {
        let _ = write!(out, "{label:<30}");
        for o in outcomes {
            let _ = write!(out, "{:>16}", value(o));
        }
        out.push('\n');
    }
    out.push('\n');
    for o in outcomes {
        let _ = writeln!(out, "{}: {}", o.policy, o.description);
    }
    if outcomes.iter().any(|o| o.duplicates + o.refused + o.unserved > 0) {
        for o in outcomes {
            let _ = writeln!(
                out,
                "{}: {} repeated requests returned the live session, {} refused, {} still waiting at the end",
                o.policy, o.duplicates, o.refused, o.unserved
            );
        }
    }
    out.push('\n');
    hourly(&mut out, config, trace, outcomes);
    out
}

/// Hour by hour: requests, use, and each policy's buffer and queue (queue length over time).
fn hourly(out: &mut String, config: &SimConfig, trace: &Trace, outcomes: &[Outcome]) {
    let tz = config.settings.time_zone.tz();
    let first = &outcomes[0];
    let _ =
        writeln!(out, "{:<30}   served instantly / average warm (unclaimed) / longest queue", "hour by hour");
    let _ = write!(out, "{:<8}{:>9}{:>13}", "hour", "requests", "in use avg");
    for o in outcomes {
        let _ = write!(out, "{:>20}", o.policy);
    }
    out.push('\n');
    let mut start = first.from;
    while start < first.to {
        let end = after(start, Duration::from_secs(3600));
        let requests = trace.arrivals.iter().filter(|a| a.at >= start && a.at < end).count();
        let in_hour = |o: &Outcome| {
            o.samples.iter().filter(|s| s.at >= start && s.at < end).copied().collect::<Vec<_>>()
        };
        let avg =
            |v: Vec<u32>| if v.is_empty() { 0.0 } else { v.iter().sum::<u32>() as f64 / v.len() as f64 };
        let in_use = avg(in_hour(first).iter().map(|s| s.in_use).collect());
        let hour = start.to_zoned(tz.clone()).strftime("%H:%M").to_string();
        let _ = write!(out, "{hour:<8}{requests:>9}{in_use:>13.1}");
        for o in outcomes {
            let samples = in_hour(o);
            let warm = avg(samples.iter().map(|s| s.warm).collect());
            let queue = samples.iter().map(|s| s.queued).max().unwrap_or(0);
            let served: Vec<_> = o.served.iter().filter(|(at, _)| *at >= start && *at < end).collect();
            let instant = match served.len() {
                0 => "-".to_owned(),
                n => format!("{:.0}%", 100.0 * served.iter().filter(|(_, i)| *i).count() as f64 / n as f64),
            };
            let _ = write!(out, "{:>20}", format!("{instant} / {warm:.1} / {queue}"));
        }
        out.push('\n');
        start = end;
    }
}

/// Every decision of `outcome`, one a line, in the report's time zone.
pub fn decisions(config: &SimConfig, outcome: &Outcome) -> String {
    let tz = config.settings.time_zone.tz();
    let mut out = format!("decisions of {}:\n", outcome.policy);
    for d in &outcome.decisions {
        let _ = writeln!(
            out,
            "{} {} {:?}: {}",
            d.at.to_zoned(tz.clone()).strftime("%H:%M:%S"),
            d.pool,
            d.kind,
            d.reason
        );
    }
    out
}
