//! The chart of a simulation as SVG, written by hand. One panel per policy, sharing the time
//! axis: above, demand (sessions that want a workstation: in use, starting for them, queued) as
//! a grey area and in use as a line; below, on its own scale, the warm buffer (unclaimed: ready
//! or starting for the buffer), the autoscaler's target and the queue.

use std::{fmt::Write as _, time::Duration};

use jiff::Timestamp;

use super::{Outcome, SimConfig, run::Sample};
use crate::domain::time::{after, elapsed};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TITLE: f64 = 44.0;
const UPPER: f64 = 150.0;
const GAP: f64 = 22.0;
const LOWER: f64 = 80.0;
const AXIS: f64 = 30.0;
const PANEL: f64 = TITLE + UPPER + GAP + LOWER + AXIS;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;

/// An SVG with one panel per outcome.
pub fn chart(config: &SimConfig, outcomes: &[Outcome]) -> String {
    let height = PANEL * outcomes.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let samples = || outcomes.iter().flat_map(|o| &o.samples);
    let upper_max = nice_ceiling(samples().map(|s| s.demand.max(s.in_use)).max().unwrap_or(1));
    let lower_max = nice_ceiling(samples().map(|s| s.warm.max(s.target).max(s.queued)).max().unwrap_or(1));
    for (i, o) in outcomes.iter().enumerate() {
        panel(&mut svg, config, o, PANEL * i as f64, upper_max, lower_max);
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_ceiling(v: u32) -> u32 {
    let v = v.max(1);
    let step =
        [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000].into_iter().find(|s| v / s < 5).unwrap_or(1000);
    v.div_ceil(step) * step
}

/// A plot area: where it is and its vertical scale.
struct Plot {
    top: f64,
    height: f64,
    max: u32,
}

impl Plot {
    fn y(&self, v: u32) -> f64 {
        self.top + self.height * (1.0 - f64::from(v.min(self.max)) / f64::from(self.max))
    }

    fn grid(&self, svg: &mut String, label: &str) {
        for v in [0, self.max / 2, self.max] {
            let y = self.y(v);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
                LEFT + PLOT_W,
                LEFT - 6.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\" fill=\"#555555\">{label}</text>",
            self.top + self.height / 2.0,
            self.top + self.height / 2.0
        );
    }
}

fn panel(svg: &mut String, config: &SimConfig, o: &Outcome, y0: f64, upper_max: u32, lower_max: u32) {
    let span = elapsed(o.from, o.to).as_secs_f64().max(1.0);
    let x = |t: Timestamp| LEFT + PLOT_W * (elapsed(o.from, t).as_secs_f64() / span).min(1.0);
    let upper = Plot { top: y0 + TITLE, height: UPPER, max: upper_max };
    let lower = Plot { top: y0 + TITLE + UPPER + GAP, height: LOWER, max: lower_max };
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{} — served instantly {:.1}%, idle {:.1}% of in-use workstation-hours</text>",
        y0 + 15.0,
        o.policy,
        o.instant_share() * 100.0,
        o.idle_ratio() * 100.0
    );
    upper.grid(svg, "workstations");
    lower.grid(svg, "buffer");
    time_axis(svg, config, o, &x, upper.top, lower.top + lower.height, span);
    // Demand as an area, in use as a line over it.
    let mut area = format!("{:.1},{:.1} ", LEFT, upper.y(0));
    let mut last = None;
    for s in &o.samples {
        if last != Some(s.demand) {
            let _ = write!(area, "{:.1},{:.1} ", x(s.at), upper.y(s.demand));
            last = Some(s.demand);
        }
    }
    let _ = write!(area, "{:.1},{:.1}", x(o.samples.last().map_or(o.to, |s| s.at)), upper.y(0));
    let _ = writeln!(svg, "<polygon fill=\"#cccccc\" stroke=\"none\" points=\"{area}\"/>");
    line(svg, o, &x, &upper, |s| s.in_use, "#1f77b4", "");
    line(svg, o, &x, &lower, |s| s.target, "#2ca02c", " stroke-dasharray=\"4 3\"");
    line(svg, o, &x, &lower, |s| s.warm, "#ff7f0e", "");
    line(svg, o, &x, &lower, |s| s.queued, "#d62728", "");
    let legend = [
        ("demand", "#cccccc", ""),
        ("in use", "#1f77b4", ""),
        ("warm (unclaimed)", "#ff7f0e", ""),
        ("warm target", "#2ca02c", " stroke-dasharray=\"4 3\""),
        ("queued", "#d62728", ""),
    ];
    let mut lx = LEFT;
    for (name, colour, dash) in legend {
        let _ = writeln!(
            svg,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"4\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            lx + 18.0,
            y0 + 31.0,
            y0 + 31.0,
            lx + 22.0,
            y0 + 35.0
        );
        lx += 40.0 + 7.5 * name.len() as f64;
    }
}

fn line(
    svg: &mut String,
    o: &Outcome,
    x: &dyn Fn(Timestamp) -> f64,
    plot: &Plot,
    value: fn(&Sample) -> u32,
    colour: &str,
    dash: &str,
) {
    // A step line: a point where the value changes (and the last one), not one per minute.
    let mut points = String::new();
    let mut last: Option<u32> = None;
    for (i, s) in o.samples.iter().enumerate() {
        let v = value(s);
        if let Some(prev) = last.filter(|p| *p != v) {
            let _ = write!(points, "{:.1},{:.1} ", x(s.at), plot.y(prev));
        }
        if last != Some(v) || i + 1 == o.samples.len() {
            let _ = write!(points, "{:.1},{:.1} ", x(s.at), plot.y(v));
        }
        last = Some(v);
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash} points=\"{}\"/>",
        points.trim_end()
    );
}

fn time_axis(
    svg: &mut String,
    config: &SimConfig,
    o: &Outcome,
    x: &dyn Fn(Timestamp) -> f64,
    top: f64,
    bottom: f64,
    span: f64,
) {
    let tz = config.settings.time_zone.tz();
    let hours = (span / 3600.0).round() as u64;
    let every = if hours > 36 { 6 } else { 3 };
    for hr in (0..=hours).step_by(every as usize) {
        let t = after(o.from, Duration::from_secs(hr * 3600));
        let xx = x(t);
        let anchor = match hr {
            0 => "start",
            h if h == hours => "end",
            _ => "middle",
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"#eeeeee\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            bottom + 16.0,
            t.to_zoned(tz.clone()).strftime("%H:%M")
        );
    }
}
