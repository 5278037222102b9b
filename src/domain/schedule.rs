//! Schedules: time-zone-aware windows (weekdays and times, dates for public holidays) that
//! override a pool's `warm` and `min` while they are active. Pure: a window is active or not at
//! an instant, computed with the IANA time zone database built into the binary (jiff's bundled
//! copy), so the answer never depends on the host's `/usr/share/zoneinfo`.
//!
//! A window's start and end are civil times on a local date. They become instants with the
//! "compatible" rule: a time skipped by a daylight-saving gap moves forward (02:30 on the last
//! Sunday of March in Europe/Amsterdam is 03:30 CEST, one hour after 01:30 CET), a time that occurs
//! twice when clocks go back is its first occurrence. So a window always opens and closes once a
//! day, and a 07:30-18:00 window is 07:30-18:00 on the wall clock all year.

use std::{fmt, sync::LazyLock};

use jiff::{
    Timestamp,
    civil::{Date, DateTime, Time, Weekday},
    tz::{TimeZone, TimeZoneDatabase},
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use super::FieldError;

/// The IANA time zone database compiled into the binary; zone names resolve against it only.
static ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// An IANA time zone (`Europe/Amsterdam`), resolved when parsed. Compared by name.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// Resolves an IANA name (case-insensitive) against the built-in database.
    pub fn parse(name: &str) -> Result<Self, String> {
        let tz = ZONES.get(name).map_err(|_| {
            format!("'{name}' is not an IANA time zone name (for example Europe/Amsterdam or UTC)")
        })?;
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self { name, tz })
    }

    /// The canonical name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Zone::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// A day of the week, written `Mon` … `Sun` (full English names are accepted too).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[allow(missing_docs)] // the names say it
pub enum Day {
    #[serde(alias = "Monday", alias = "mon", alias = "monday")]
    Mon,
    #[serde(alias = "Tuesday", alias = "tue", alias = "tuesday")]
    Tue,
    #[serde(alias = "Wednesday", alias = "wed", alias = "wednesday")]
    Wed,
    #[serde(alias = "Thursday", alias = "thu", alias = "thursday")]
    Thu,
    #[serde(alias = "Friday", alias = "fri", alias = "friday")]
    Fri,
    #[serde(alias = "Saturday", alias = "sat", alias = "saturday")]
    Sat,
    #[serde(alias = "Sunday", alias = "sun", alias = "sunday")]
    Sun,
}

impl Day {
    /// Every day, Monday first.
    pub const ALL: [Day; 7] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri, Day::Sat, Day::Sun];

    fn of(weekday: Weekday) -> Self {
        Self::ALL[weekday.to_monday_zero_offset() as usize]
    }
}

/// A recurring window in which the pool keeps a different warm buffer or minimum, for example
/// weekdays 07:30-18:00 Europe/Amsterdam. The first active window of a pool's `schedules` wins,
/// so list exceptions (a holiday window) before the general ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleWindow {
    /// Short name shown in decisions (`weekday-peak`).
    pub name: String,
    /// IANA time zone the times and dates are in.
    #[schema(value_type = String, example = "Europe/Amsterdam")]
    #[schemars(with = "String")]
    pub time_zone: Zone,
    /// Days the window opens on (the day it starts, for windows past midnight). Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// Local time the window opens (`07:30`).
    #[schema(value_type = String, example = "07:30")]
    #[schemars(with = "String")]
    pub start: Time,
    /// Local time the window closes (`18:00`). At or before `start`: the window runs past
    /// midnight into the next day (equal to `start`: a whole day).
    #[schema(value_type = String, example = "18:00")]
    #[schemars(with = "String")]
    pub end: Time,
    /// If given, the window opens only on these local dates (for example a holiday window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, example = json!(["2026-12-24"]))]
    #[schemars(with = "Vec<String>")]
    pub dates: Vec<Date>,
    /// Local dates the window does not open on, such as public holidays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, example = json!(["2026-04-27", "2026-12-25"]))]
    #[schemars(with = "Vec<String>")]
    pub except_dates: Vec<Date>,
    /// Warm buffer while the window is active (default: the pool's `capacity.warm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<u32>,
    /// Minimum while the window is active (default: the pool's `capacity.min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
}

impl ScheduleWindow {
    /// Whether the window is open at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        let tz = self.time_zone.tz();
        let today = tz.to_datetime(now).date();
        // A window that opened yesterday may still be open (past midnight, or a gap-shifted end).
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .any(|day| self.opens_on(day) && self.span(tz, day).is_some_and(|(s, e)| s <= now && now < e))
    }

    /// Whether the window opens on the local date `day`.
    fn opens_on(&self, day: Date) -> bool {
        (self.days.is_empty() || self.days.contains(&Day::of(day.weekday())))
            && (self.dates.is_empty() || self.dates.contains(&day))
            && !self.except_dates.contains(&day)
    }

    /// The instants the window opens and closes when it opens on `day`.
    fn span(&self, tz: &TimeZone, day: Date) -> Option<(Timestamp, Timestamp)> {
        let start = tz.to_timestamp(DateTime::from_parts(day, self.start)).ok()?;
        let end_day = if self.end <= self.start { day.tomorrow().ok()? } else { day };
        let end = tz.to_timestamp(DateTime::from_parts(end_day, self.end)).ok()?;
        Some((start, end))
    }

    /// One line for decisions: `weekday-peak Mon-Fri 07:30-18:00 Europe/Amsterdam`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}{}-{} {}",
            self.name,
            describe_days(&self.days),
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M"),
            self.time_zone.name()
        )
    }

    /// Problems with this window, given the pool's `max`; `index` names it in messages.
    pub(super) fn validate(&self, index: usize, max: u32, errors: &mut Vec<FieldError>) {
        let mut bad = |message: String| {
            errors.push(FieldError {
                field: "schedules",
                message: format!("[{index}] '{}': {message}", self.name),
            })
        };
        if self.name.trim().is_empty() {
            bad("name must not be empty".into());
        }
        if let Some(warm) = self.warm.filter(|w| *w > max) {
            bad(format!("warm {warm} is more than capacity.max ({max})"));
        }
        if let Some(min) = self.min.filter(|m| *m > max) {
            bad(format!("min {min} is more than capacity.max ({max})"));
        }
        if self.warm.is_none() && self.min.is_none() {
            bad("sets neither warm nor min, so it changes nothing".into());
        }
    }
}

fn describe_days(days: &[Day]) -> String {
    let mut sorted = days.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() || sorted.len() == 7 {
        return String::new();
    }
    let name = |d: Day| format!("{d:?}");
    let first = sorted[0] as usize;
    let contiguous = sorted.iter().enumerate().all(|(i, d)| *d as usize == first + i);
    if contiguous && sorted.len() > 2 {
        format!("{}-{} ", name(sorted[0]), name(sorted[sorted.len() - 1]))
    } else {
        format!("{} ", sorted.iter().map(|d| name(*d)).collect::<Vec<_>>().join(","))
    }
}

/// The first window of `windows` open at `now`.
pub fn active(windows: &[ScheduleWindow], now: Timestamp) -> Option<&ScheduleWindow> {
    windows.iter().find(|w| w.is_active(now))
}

/// Checks every window of a pool and that names are unique.
pub(super) fn validate_all(windows: &[ScheduleWindow], max: u32, errors: &mut Vec<FieldError>) {
    for (i, w) in windows.iter().enumerate() {
        w.validate(i, max, errors);
        if windows[..i].iter().any(|earlier| earlier.name == w.name) {
            errors.push(FieldError {
                field: "schedules",
                message: format!("[{i}] '{}': another window has the same name", w.name),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::time;

    use super::*;

    fn window(days: &[Day], start: Time, end: Time) -> ScheduleWindow {
        ScheduleWindow {
            name: "w".into(),
            time_zone: Zone::parse("Europe/Amsterdam").unwrap(),
            days: days.to_vec(),
            start,
            end,
            dates: Vec::new(),
            except_dates: Vec::new(),
            warm: Some(5),
            min: None,
        }
    }

    /// An instant from a local Amsterdam wall-clock time with an explicit UTC offset.
    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

    #[test]
    fn a_weekday_window_follows_the_wall_clock_in_winter_and_summer() {
        let w = window(&WEEKDAYS, time(7, 30, 0, 0), time(18, 0, 0, 0));
        // Tuesday 10 March 2026, CET (+01:00).
        assert!(!w.is_active(at("2026-03-10T07:29:59+01:00")));
        assert!(w.is_active(at("2026-03-10T07:30:00+01:00")));
        assert!(w.is_active(at("2026-03-10T17:59:59+01:00")));
        assert!(!w.is_active(at("2026-03-10T18:00:00+01:00")));
        // Tuesday 9 June 2026, CEST (+02:00): same wall clock, an hour earlier in UTC.
        assert!(w.is_active(at("2026-06-09T07:30:00+02:00")));
        assert!(!w.is_active(at("2026-06-09T05:29:59Z")), "07:29:59 CEST");
        assert!(w.is_active(at("2026-06-09T05:30:00Z")), "07:30 CEST");
    }

    #[test]
    fn weekends_and_excepted_dates_are_closed_and_dates_restrict_a_window() {
        let mut w = window(&WEEKDAYS, time(7, 30, 0, 0), time(18, 0, 0, 0));
        assert!(!w.is_active(at("2026-03-14T10:00:00+01:00")), "Saturday");
        w.except_dates = vec!["2026-04-27".parse().unwrap()]; // King's Day, a Monday
        assert!(!w.is_active(at("2026-04-27T10:00:00+02:00")));
        assert!(w.is_active(at("2026-04-28T10:00:00+02:00")));
        w.days.clear();
        w.dates = vec!["2026-12-24".parse().unwrap()];
        assert!(w.is_active(at("2026-12-24T10:00:00+01:00")));
        assert!(!w.is_active(at("2026-12-23T10:00:00+01:00")));
    }

    #[test]
    fn an_overnight_window_belongs_to_the_day_it_opens() {
        let w = window(&[Day::Fri], time(22, 0, 0, 0), time(6, 0, 0, 0));
        assert!(w.is_active(at("2026-03-13T23:00:00+01:00")), "Friday night");
        assert!(w.is_active(at("2026-03-14T05:59:00+01:00")), "early Saturday, opened Friday");
        assert!(!w.is_active(at("2026-03-14T23:00:00+01:00")), "Saturday night");
        assert!(!w.is_active(at("2026-03-13T05:00:00+01:00")), "early Friday, opened Thursday");
    }

    /// 2026: clocks go forward on 29 March (02:00 CET -> 03:00 CEST) and back on 25 October
    /// (03:00 CEST -> 02:00 CET); 2027: 28 March and 31 October.
    #[test]
    fn windows_open_and_close_once_across_the_2026_and_2027_eu_transitions() {
        let every_day = window(&[], time(7, 30, 0, 0), time(18, 0, 0, 0));
        for (day, offset) in [
            ("2026-03-29", "+02:00"),
            ("2026-10-25", "+01:00"),
            ("2027-03-28", "+02:00"),
            ("2027-10-31", "+01:00"),
        ] {
            assert!(!every_day.is_active(at(&format!("{day}T07:29:59{offset}"))), "{day}");
            assert!(every_day.is_active(at(&format!("{day}T07:30:00{offset}"))), "{day}");
            assert!(every_day.is_active(at(&format!("{day}T17:59:59{offset}"))), "{day}");
            assert!(!every_day.is_active(at(&format!("{day}T18:00:00{offset}"))), "{day}");
        }
    }

    #[test]
    fn a_window_starting_in_the_spring_gap_opens_when_the_clocks_jump() {
        let w = window(&[], time(2, 30, 0, 0), time(4, 0, 0, 0));
        // 29 March 2026: 01:59:59 CET is followed by 03:00:00 CEST; 02:30 does not exist and
        // resolves to 03:30 CEST (the compatible rule), 01:30 UTC.
        assert!(!w.is_active(at("2026-03-29T01:59:59+01:00")));
        assert!(!w.is_active(at("2026-03-29T03:29:59+02:00")));
        assert!(w.is_active(at("2026-03-29T03:30:00+02:00")));
        assert!(!w.is_active(at("2026-03-29T04:00:00+02:00")));
        // The same window in 2027 (28 March).
        assert!(w.is_active(at("2027-03-28T03:45:00+02:00")));
    }

    #[test]
    fn a_window_in_the_autumn_fold_stays_open_through_the_repeated_hour() {
        let w = window(&[], time(2, 30, 0, 0), time(5, 0, 0, 0));
        // 25 October 2026: 02:00-03:00 happens twice (first CEST, then CET). The window opens at
        // the first 02:30 and must not close when the clocks go back to 02:00.
        assert!(!w.is_active(at("2026-10-25T02:29:59+02:00")));
        assert!(w.is_active(at("2026-10-25T02:30:00+02:00")));
        assert!(w.is_active(at("2026-10-25T02:10:00+01:00")), "the repeated hour, after the change");
        assert!(w.is_active(at("2026-10-25T04:59:59+01:00")));
        assert!(!w.is_active(at("2026-10-25T05:00:00+01:00")));
        // 31 October 2027.
        assert!(w.is_active(at("2027-10-31T02:10:00+01:00")));
        // A whole-day window is 25 hours long that day, 23 hours on the spring day.
        let day = window(&[Day::Sun], time(0, 0, 0, 0), time(0, 0, 0, 0));
        assert!(day.is_active(at("2026-10-25T23:59:59+01:00")));
        assert!(!day.is_active(at("2026-10-26T00:00:00+01:00")));
        assert!(day.is_active(at("2026-03-29T23:59:59+02:00")));
    }

    #[test]
    fn zones_come_from_the_built_in_database_and_bad_names_are_explained() {
        assert_eq!(Zone::parse("europe/amsterdam").unwrap().name(), "Europe/Amsterdam");
        let err = Zone::parse("Europe/Amsterdm").unwrap_err();
        assert!(err.contains("'Europe/Amsterdm' is not an IANA time zone name"), "{err}");
    }

    #[test]
    fn a_window_reads_from_toml_with_short_times_and_describes_itself() {
        let w: ScheduleWindow = toml::from_str(
            r#"name = "weekday-peak"
               timeZone = "Europe/Amsterdam"
               days = ["Mon", "Tue", "Wed", "Thu", "Fri"]
               start = "07:30"
               end = "18:00"
               exceptDates = ["2026-04-27"]
               warm = 6"#,
        )
        .unwrap();
        assert_eq!(w.describe(), "weekday-peak Mon-Fri 07:30-18:00 Europe/Amsterdam");
        assert_eq!(w.except_dates.len(), 1);
        let err = toml::from_str::<ScheduleWindow>(
            r#"name = "x"
               timeZone = "Mars/Olympus"
               start = "07:30"
               end = "18:00""#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("'Mars/Olympus' is not an IANA time zone name"), "{err}");
    }
}
