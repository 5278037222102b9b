//! A CapacityPool's schedules and autoscale tuning as the API server stores them: plain strings
//! where the domain parses a value (time zones, times, dates, durations). The domain types
//! reject a bad value when they are read; kept as strings here, one mistyped zone makes only
//! that window unusable (ignored and reported as a Warning Event on the pool) instead of
//! making the whole pool unreadable for the broker's watch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{AutoscaleSpec, Day, ScheduleWindow};

/// A recurring window in which the pool keeps a different warm buffer or minimum, for example
/// weekdays 07:30-18:00 Europe/Amsterdam. The first active window wins, so list exceptions (a
/// holiday window) before the general ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleWindowSpec {
    /// Short name shown in decisions (`weekday-peak`).
    pub name: String,
    /// IANA time zone the times and dates are in (`Europe/Amsterdam`).
    pub time_zone: String,
    /// Days the window opens on (`Mon` … `Sun`; the day it starts, for windows past midnight).
    /// Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// Local time the window opens (`07:30`).
    pub start: String,
    /// Local time the window closes (`18:00`). At or before `start`: the window runs past
    /// midnight into the next day (equal to `start`: a whole day).
    pub end: String,
    /// If given, the window opens only on these local dates (`2026-12-24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<String>,
    /// Local dates the window does not open on, such as public holidays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_dates: Vec<String>,
    /// Warm buffer while the window is active (default: `capacity.warm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<u32>,
    /// Minimum while the window is active (default: `capacity.min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
}

impl ScheduleWindowSpec {
    /// The domain's window, or why this one cannot be used.
    pub fn to_domain(&self) -> Result<ScheduleWindow, String> {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("schedule window '{}' is ignored: {e}", self.name))
    }

    /// The stored form of a domain window.
    pub fn of(window: &ScheduleWindow) -> Self {
        serde_json::to_value(window)
            .and_then(serde_json::from_value)
            .expect("a parsed window always has a stored form")
    }
}

/// How the warm buffer follows demand. Every field is optional; absent ones take the default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleTuning {
    /// Requests over this window set the demand rate (`15m`; 1m to 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_window: Option<String>,
    /// Percentage of requests the buffer aims to serve instantly at the recent rate (1-99); 0
    /// turns demand scaling off (the schedule alone sets the buffer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 99))]
    pub instant_percent: Option<u32>,
    /// A lower target applies only after the target stayed below the buffer this long (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_cooldown: Option<String>,
}

impl AutoscaleTuning {
    /// The domain's tuning (placeholders are the pool's `placeholders`), or why it cannot be
    /// used (the defaults then apply).
    pub fn to_domain(&self) -> Result<AutoscaleSpec, String> {
        let defaults = AutoscaleSpec::default();
        let duration = |value: &Option<String>, default, field: &str| match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| format!("autoscale.{field} '{text}' is ignored: {e}")),
        };
        Ok(AutoscaleSpec {
            demand_window: duration(&self.demand_window, defaults.demand_window, "demandWindow")?,
            instant_percent: self.instant_percent.unwrap_or(defaults.instant_percent),
            scale_down_cooldown: duration(
                &self.scale_down_cooldown,
                defaults.scale_down_cooldown,
                "scaleDownCooldown",
            )?,
            placeholders: 0,
        })
    }

    /// The stored form of domain tuning.
    pub fn of(spec: &AutoscaleSpec) -> Self {
        Self {
            demand_window: Some(humantime::format_duration(spec.demand_window).to_string().replace(' ', "")),
            instant_percent: Some(spec.instant_percent),
            scale_down_cooldown: Some(
                humantime::format_duration(spec.scale_down_cooldown).to_string().replace(' ', ""),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(zone: &str, start: &str) -> ScheduleWindowSpec {
        serde_json::from_value(serde_json::json!({
            "name": "weekday-peak", "timeZone": zone, "days": ["Mon", "Tue"], "start": start,
            "end": "18:00", "exceptDates": ["2026-12-25"], "warm": 5
        }))
        .unwrap()
    }

    #[test]
    fn a_stored_window_becomes_the_domains_and_back() {
        let stored = window("Europe/Amsterdam", "07:30");
        let parsed = stored.to_domain().unwrap();
        assert_eq!(parsed.time_zone.name(), "Europe/Amsterdam");
        assert_eq!(parsed.warm, Some(5));
        // Written back by the admin API, it reads as the same window (times gain seconds).
        assert_eq!(ScheduleWindowSpec::of(&parsed).to_domain().unwrap(), parsed);
    }

    #[test]
    fn a_bad_zone_or_time_names_the_window_and_the_problem() {
        let e = window("Europe/Amsterdm", "07:30").to_domain().unwrap_err();
        assert!(e.contains("weekday-peak") && e.contains("Europe/Amsterdm"), "{e}");
        assert!(window("UTC", "7h30").to_domain().is_err());
    }

    #[test]
    fn tuning_fills_defaults_and_rejects_bad_durations() {
        let tuning = AutoscaleTuning { instant_percent: Some(90), ..AutoscaleTuning::default() };
        let spec = tuning.to_domain().unwrap();
        assert_eq!(spec.instant_percent, 90);
        assert_eq!(spec.demand_window, AutoscaleSpec::default().demand_window);
        let bad = AutoscaleTuning { demand_window: Some("15x".into()), ..AutoscaleTuning::default() };
        assert!(bad.to_domain().unwrap_err().contains("demandWindow"));
        assert_eq!(AutoscaleTuning::of(&spec).to_domain().unwrap(), spec);
    }
}
