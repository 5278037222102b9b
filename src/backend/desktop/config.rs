//! The `[backend.desktop]` section: which programs make a local desktop, how many GPU slots the
//! host offers, and the check that the programs are installed (`detect`). No processes here.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Settings of the local desktop backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DesktopConfig {
    /// GPU slots this host offers; a workstation takes its pool's `gpusPerWorkstation` of them
    /// (a pool's `gpuModel` is not checked: the host has what it has). Workstations that do not
    /// fit wait as Pending until slots free up.
    pub slots: u32,
    /// Screen size of each desktop, `WIDTHxHEIGHT`.
    pub geometry: String,
    /// The first X display number tried; each desktop takes the next free one.
    pub first_display: u32,
    /// The window manager (a program on PATH or a path).
    pub window_manager: String,
    /// The application shown on the desktop, with its arguments (`["librecad"]`).
    pub application: Vec<String>,
    /// Folder with noVNC's `vnc.html` (Debian's `novnc` package puts it in /usr/share/novnc).
    pub novnc_dir: PathBuf,
    /// How long a desktop may take to answer before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            geometry: "1600x900".into(),
            first_display: 100,
            window_manager: "openbox".into(),
            application: vec!["librecad".into()],
            novnc_dir: PathBuf::from("/usr/share/novnc"),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The Debian packages that provide what a desktop needs, for the install hint.
pub const INSTALL_HINT: &str = "apt-get install xvfb openbox librecad x11vnc novnc websockify";

impl DesktopConfig {
    /// Every program the backend runs, X server first.
    pub fn programs(&self) -> Vec<&str> {
        let mut programs = vec!["Xvfb", "x11vnc", "websockify", self.window_manager.as_str()];
        programs.extend(self.application.first().map(String::as_str));
        programs
    }

    /// What is missing on this host (programs not on PATH, no noVNC); empty when all is there.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> =
            self.programs().into_iter().filter(|p| find_program(p).is_none()).map(str::to_owned).collect();
        if !self.novnc_dir.join("vnc.html").is_file() {
            missing.push(format!("noVNC ({}/vnc.html)", self.novnc_dir.display()));
        }
        missing
    }

    /// Problems with the values, each naming its field under `backend.desktop`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.slots == 0 {
            problems.push("backend.desktop.slots: must be at least 1".to_owned());
        }
        if parse_geometry(&self.geometry).is_none() {
            problems.push(format!("backend.desktop.geometry: '{}' is not WIDTHxHEIGHT", self.geometry));
        }
        if self.application.is_empty() {
            problems.push("backend.desktop.application: name the program to run".to_owned());
        }
        if !(1..=60_000).contains(&self.first_display) {
            problems.push("backend.desktop.firstDisplay: must be between 1 and 60000".to_owned());
        }
        if self.start_timeout < Duration::from_secs(1) {
            problems.push("backend.desktop.startTimeout: must be at least 1s".to_owned());
        }
        problems
    }
}

/// `(width, height)` of `WIDTHxHEIGHT`, each between 320 and 8192.
pub fn parse_geometry(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    let ok = |v: u32| (320..=8192).contains(&v);
    (ok(w) && ok(h)).then_some((w, h))
}

/// The program's path: itself when it contains a `/`, else the first match on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_width_by_height_within_bounds() {
        assert_eq!(parse_geometry("1600x900"), Some((1600, 900)));
        assert_eq!(parse_geometry("10x10"), None);
        assert_eq!(parse_geometry("1600"), None);
        assert_eq!(parse_geometry("axb"), None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let config = DesktopConfig { slots: 0, application: vec![], ..DesktopConfig::default() };
        let problems = config.validate();
        assert!(problems.iter().any(|p| p.starts_with("backend.desktop.slots")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("backend.desktop.application")), "{problems:?}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let config = DesktopConfig {
            window_manager: "no-such-window-manager-here".into(),
            novnc_dir: "/nonexistent".into(),
            ..DesktopConfig::default()
        };
        let missing = config.missing();
        assert!(missing.contains(&"no-such-window-manager-here".to_owned()), "{missing:?}");
        assert!(missing.iter().any(|m| m.starts_with("noVNC")), "{missing:?}");
    }
}
