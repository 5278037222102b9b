//! The simulator end to end: the example working day against the example config (the figures
//! docs/autoscaling.md quotes), the example trace is what its generator makes, and the
//! `simulate` command's readable errors.

use std::{path::Path, process::Command};

use cadbroker::{
    cli::GenerateTraceArgs,
    domain::PoolName,
    sim::{SimConfig, Trace, command::generate_trace, policies, simulate},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn example() -> (SimConfig, Trace) {
    let config = SimConfig::load(&Path::new(ROOT).join("config/simulate-example.toml")).unwrap();
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/traces/workday-200.csv")).unwrap();
    let pools: Vec<PoolName> = config.pools.iter().map(|p| p.name.clone()).collect();
    let trace = Trace::parse("workday-200.csv", &text, &pools, &config.settings.time_zone).unwrap();
    (config, trace)
}

#[test]
fn the_example_trace_is_what_its_documented_generator_makes() {
    let args = GenerateTraceArgs {
        drafters: 200,
        seed: 42,
        date: "2026-03-10".parse().unwrap(),
        time_zone: "Europe/Amsterdam".into(),
        pool: "drafting-2d".into(),
    };
    let made = generate_trace(&args).unwrap();
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("examples/traces/workday-200.csv")).unwrap();
    assert!(made == shipped, "regenerate with: cadbroker simulate generate-trace --drafters 200 --seed 42");
}

#[test]
fn on_the_example_day_the_policy_serves_98_percent_instantly_with_idle_at_most_10_percent_of_use() {
    let (config, trace) = example();
    let outcomes: Vec<_> =
        policies(&config, true).iter().map(|p| simulate(&config, p, &trace, &mut |_| {})).collect();
    for o in &outcomes {
        eprintln!(
            "{:>14}: instant {:.1}%, idle/in-use {:.1}%, in use {:.1} h, idle {:.1} h, wait p95 {:?}",
            o.policy,
            o.instant_share() * 100.0,
            o.idle_ratio() * 100.0,
            o.hours.in_use,
            o.hours.idle,
            o.wait_quantile(0.95)
        );
    }
    let (cadbroker, fixed, schedule_only) = (&outcomes[0], &outcomes[1], &outcomes[2]);
    assert_eq!(cadbroker.requests, trace.arrivals.len() as u32, "every request made a session");
    assert!(cadbroker.instant_share() >= 0.98, "instant {:.3}", cadbroker.instant_share());
    assert!(cadbroker.idle_ratio() <= 0.10, "idle ratio {:.3}", cadbroker.idle_ratio());
    // The baselines miss one goal each: a fixed buffer pays for idle GPUs all night, the
    // schedule alone misses the lunch-time wave.
    assert!(fixed.idle_ratio() > 0.10, "fixed idle {:.3}", fixed.idle_ratio());
    assert!(schedule_only.instant_share() < 0.98, "schedule only {:.3}", schedule_only.instant_share());
    // Same trace, same use.
    assert!((cadbroker.hours.in_use - fixed.hours.in_use).abs() < 1.0);
    // No queue, nobody culled: the drafters stayed active while they worked.
    assert!(cadbroker.samples.iter().all(|s| s.queued == 0));
    assert_eq!((cadbroker.idle_ends, cadbroker.lifetime_ends), (0, 0));
    assert!(cadbroker.decisions.iter().any(|d| d.reason.contains("schedule window weekday-arrivals")));
    assert!(cadbroker.decisions.iter().any(|d| d.reason.contains("demand, ")));
}

fn cadbroker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cadbroker"));
    cmd.current_dir(ROOT).env_remove("CADBROKER_CONFIG");
    cmd
}

fn simulate_with(trace: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.csv");
    std::fs::write(&path, trace).unwrap();
    let out = cadbroker()
        .args(["simulate", "--config", "config/simulate-example.toml", "--trace", path.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_malformed_row_is_a_readable_error_naming_its_line() {
    let trace = "time,user,pool,duration\n2026-03-10T08:00:00+01:00,a,drafting-2d,1h\n2026-03-10T08:01:00+01:00,b,drafting-2d\n";
    let (ok, _, err) = simulate_with(trace, &[]);
    assert!(!ok);
    assert!(err.contains("trace.csv line 3: expected 4 fields (time,user,pool,duration), found 3"), "{err}");
    let trace = "2026-03-10T08:00:00+01:00,a,gis-3d,1h\n";
    let (ok, _, err) = simulate_with(trace, &[]);
    assert!(!ok);
    assert!(err.contains("line 1: unknown pool 'gis-3d' (the config has: drafting-2d)"), "{err}");
    let trace = "yesterday,a,drafting-2d,1h\n";
    let (_, _, err) = simulate_with(trace, &[]);
    assert!(err.contains("line 1: time 'yesterday' is not RFC 3339"), "{err}");
}

#[test]
fn a_small_trace_is_reported_side_by_side_with_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("day.svg");
    let trace = "time,user,pool,duration\n2026-03-10T08:00:00+01:00,a,drafting-2d,1h\n2026-03-10T08:00:30+01:00,b,drafting-2d,2h\n";
    let (ok, out, err) = simulate_with(trace, &["--compare", "--decisions", "--svg", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    for want in
        ["served instantly from warm", "cadbroker", "fixed buffer", "schedule only", "wait p95", "GPU cost"]
    {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(out.contains("decisions of cadbroker:"), "{out}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.matches("<polyline").count() >= 9, "three panels");
}

#[test]
fn generate_trace_is_deterministic_and_help_lists_simulate() {
    let run = || {
        cadbroker().args(["simulate", "generate-trace", "--drafters", "20", "--seed", "7"]).output().unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let help = cadbroker().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("simulate"));
    let bad = cadbroker().args(["simulate", "generate-trace", "--time-zone", "Mars/Base"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'Mars/Base' is not an IANA time zone name"));
}
