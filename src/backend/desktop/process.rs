//! One local desktop as processes: Xvfb on its own display, the window manager, the
//! application, x11vnc on a private Unix socket and websockify (serving noVNC) on a loopback
//! port. All of them share one process group that this module creates, so stopping a desktop
//! signals exactly that group (its id is the Xvfb process's id) and nothing else on the host.

use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process_group};
use thiserror::Error;
use tokio::process::{Child, Command};

use super::config::DesktopConfig;

/// How long the processes get to end after SIGTERM before the group gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How often start and stop look again.
const POLL: Duration = Duration::from_millis(50);

/// Why a desktop did not start.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The display was taken by someone else between the check and the start (try another).
    #[error("display :{0} is in use")]
    DisplayTaken(u32),
    /// A program could not be started.
    #[error("failed to start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// The private folder could not be made.
    #[error("failed to create {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    /// A program ended while the desktop was starting.
    #[error("{0} exited while the desktop was starting")]
    Exited(&'static str),
    /// The desktop did not answer in time.
    #[error("the desktop did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where one desktop runs.
#[derive(Debug, Clone)]
pub struct Placement {
    /// X display number.
    pub display: u32,
    /// Loopback port of websockify (noVNC and the VNC WebSocket).
    pub port: u16,
}

/// A running desktop. Dropping it kills its process group (a safety net; use [`Desktop::stop`]).
pub struct Desktop {
    pgid: Pid,
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
    /// Where it runs.
    pub placement: Placement,
    stopped: bool,
}

impl std::fmt::Debug for Desktop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desktop").field("pgid", &self.pgid).field("placement", &self.placement).finish()
    }
}

/// Whether display `n` looks free (no lock file, no socket).
pub fn display_free(n: u32) -> bool {
    !Path::new(&format!("/tmp/.X{n}-lock")).exists() && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
}

/// Starts a desktop at `placement` with noVNC served from `web_dir`; returns once websockify
/// answers on its port. On any failure everything started so far is stopped.
pub async fn launch(
    config: &DesktopConfig,
    placement: Placement,
    web_dir: &Path,
) -> Result<Desktop, LaunchError> {
    let dir = private_dir()?;
    let Placement { display, port } = placement.clone();
    let (width, height) = super::config::parse_geometry(&config.geometry).unwrap_or((1600, 900));
    let screen = format!("{width}x{height}x24");
    let x = format!(":{display}");
    let x = x.as_str();
    let xvfb_args = [x, "-screen", "0", screen.as_str(), "-nolisten", "tcp", "-noreset"];
    let xvfb = spawn(&dir, "Xvfb", &xvfb_args, None)?;
    let pgid = xvfb.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw);
    let pgid = pgid.ok_or(LaunchError::Exited("Xvfb"))?;
    let mut desktop = Desktop { pgid, children: vec![("Xvfb", xvfb)], dir, placement, stopped: false };
    // From here on, dropping `desktop` on an error path kills the group.
    desktop
        .wait_for(config.start_timeout, |_| Ok(Path::new(&format!("/tmp/.X11-unix/X{display}")).exists()))
        .await
        .map_err(|e| {
            if matches!(e, LaunchError::Exited("Xvfb")) { LaunchError::DisplayTaken(display) } else { e }
        })?;
    let wm = config.window_manager.as_str();
    desktop.add("window manager", &desktop.dir.clone(), wm, &[], Some(x))?;
    let (app, args) =
        config.application.split_first().map_or(("librecad", &[][..]), |(a, r)| (a.as_str(), r));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    desktop.add("application", &desktop.dir.clone(), app, &args, Some(x))?;
    let socket = desktop.dir.join("vnc.sock");
    let socket_arg = socket.display().to_string();
    // A Unix socket in a 0700 folder instead of a TCP port: no other local user can reach the
    // VNC server, which has no password. `-rfbport 0` turns IPv4 TCP off and `-noipv6` the
    // IPv6 listener, which x11vnc otherwise opens on [::]:5900 even then.
    let vnc = [
        "-display",
        x,
        "-unixsock",
        socket_arg.as_str(),
        "-rfbport",
        "0",
        "-noipv6",
        "-forever",
        "-shared",
        "-nopw",
        "-quiet",
    ];
    desktop.add("x11vnc", &desktop.dir.clone(), "x11vnc", &vnc, None)?;
    desktop.wait_for(config.start_timeout, |_| Ok(socket.exists())).await?;
    let listen = format!("127.0.0.1:{port}");
    let web = web_dir.display().to_string();
    let target = format!("--unix-target={socket_arg}");
    let websockify = ["--web", web.as_str(), target.as_str(), listen.as_str()];
    desktop.add("websockify", &desktop.dir.clone(), "websockify", &websockify, None)?;
    desktop.wait_for(config.start_timeout, |_| Ok(std::net::TcpStream::connect(&listen).is_ok())).await?;
    Ok(desktop)
}

/// A fresh 0700 folder under the temp dir: the desktop's HOME, logs and VNC socket.
fn private_dir() -> Result<PathBuf, LaunchError> {
    let path = std::env::temp_dir().join(format!("cadbroker-desktop-{}", uuid::Uuid::new_v4()));
    for sub in ["", "home", "run", "home/.config", "home/.config/LibreCAD", "home/.config/openbox"] {
        let p = path.join(sub);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(|source| LaunchError::Folder { path: p.clone(), source })?;
    }
    // LibreCAD opens a first-run dialog over its window in every fresh HOME; mark it as done so
    // the drafter sees the drawing area.
    let settings = path.join("home/.config/LibreCAD/LibreCAD.conf");
    fs::write(&settings, LIBRECAD_SETTINGS)
        .map_err(|source| LaunchError::Folder { path: settings, source })?;
    // The desktop is one application: openbox's own configuration, with every window maximised.
    if let Ok(rc) = fs::read_to_string(OPENBOX_RC) {
        let rc = rc.replacen("</applications>", MAXIMISE_ALL, 1);
        let target = path.join("home/.config/openbox/rc.xml");
        fs::write(&target, rc).map_err(|source| LaunchError::Folder { path: target, source })?;
    }
    Ok(path)
}

/// Debian's openbox configuration, the base of each desktop's own.
const OPENBOX_RC: &str = "/etc/xdg/openbox/rc.xml";
const MAXIMISE_ALL: &str =
    "<application class=\"*\" type=\"normal\"><maximized>yes</maximized></application>\n</applications>";

/// LibreCAD's settings in a new desktop's HOME: first-run dialog done, metric units.
const LIBRECAD_SETTINGS: &str = "[Startup]\nFirstLoad=0\n\n[Defaults]\nUnit=Millimeter\n";

/// Starts `program` in process group `group` (a new group when `None`), with a clean
/// environment: only PATH, HOME, a private runtime folder and, for X clients, DISPLAY.
fn spawn(dir: &Path, program: &str, args: &[&str], group: Option<(Pid, &str)>) -> Result<Child, LaunchError> {
    let spawn_error = |source| LaunchError::Spawn { program: program.to_owned(), source };
    let log =
        fs::File::create(dir.join(format!("{}.log", program.replace('/', "_")))).map_err(spawn_error)?;
    let log2 = log.try_clone().map_err(spawn_error)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("LANG", "C.UTF-8")
        .current_dir(dir.join("home"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true);
    match group {
        Some((pgid, display)) => {
            cmd.process_group(pgid.as_raw_pid());
            if !display.is_empty() {
                cmd.env("DISPLAY", display);
            }
        }
        None => {
            cmd.process_group(0);
        }
    }
    cmd.spawn().map_err(spawn_error)
}

impl Desktop {
    /// The process group id (the Xvfb process's id).
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw_pid()
    }

    fn add(
        &mut self,
        name: &'static str,
        dir: &Path,
        program: &str,
        args: &[&str],
        display: Option<&str>,
    ) -> Result<(), LaunchError> {
        let child = spawn(dir, program, args, Some((self.pgid, display.unwrap_or(""))))?;
        self.children.push((name, child));
        Ok(())
    }

    /// Polls `ready` until it holds, a program ends, or `timeout` passes.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        ready: impl Fn(&Self) -> Result<bool, LaunchError>,
    ) -> Result<(), LaunchError> {
        let started = Instant::now();
        loop {
            if let Some(name) = self.exited() {
                return Err(LaunchError::Exited(name));
            }
            if ready(self)? {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(LaunchError::Timeout(timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first of X server, VNC server and websockify that has ended, if any. The window
    /// manager and the application may end (a user closes LibreCAD) without ending the desktop.
    pub fn exited(&mut self) -> Option<&'static str> {
        self.children
            .iter_mut()
            .filter(|(name, _)| matches!(*name, "Xvfb" | "x11vnc" | "websockify"))
            .find_map(|(name, child)| child.try_wait().ok().flatten().map(|_| *name))
    }

    /// Ends every process of the desktop: SIGTERM to its group, SIGKILL after a grace period,
    /// children reaped, folder removed. Blocks the thread for up to a few seconds: call it from
    /// `spawn_blocking` or at shutdown.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = kill_process_group(self.pgid, Signal::TERM);
        if !self.wait_gone(TERM_GRACE) {
            tracing::warn!(pgid = self.pgid(), "desktop did not end on SIGTERM; sending SIGKILL");
            let _ = kill_process_group(self.pgid, Signal::KILL);
            self.wait_gone(TERM_GRACE);
        }
        self.remove_files();
    }

    /// Reaps our children and waits until no live process is left in the group.
    fn wait_gone(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            for (_, child) in &mut self.children {
                let _ = child.try_wait();
            }
            if group_members(self.pgid()).is_empty() {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Desktop {
    /// Removes the desktop's folder, and the X lock file and socket if they are still there:
    /// Xvfb removes them itself on SIGTERM, not when killed. Only files whose lock names our
    /// Xvfb's pid are touched; another X server's display is never.
    fn remove_files(&self) {
        let _ = fs::remove_dir_all(&self.dir);
        let display = self.placement.display;
        let lock = format!("/tmp/.X{display}-lock");
        let ours = fs::read_to_string(&lock).is_ok_and(|pid| pid.trim() == self.pgid().to_string());
        if ours {
            let _ = fs::remove_file(format!("/tmp/.X11-unix/X{display}"));
            let _ = fs::remove_file(lock);
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        if !self.stopped {
            // A desktop dropped without `stop` (a failed start, a panic, runtime shutdown) must
            // not leave processes behind: kill the group at once.
            self.stopped = true;
            let _ = kill_process_group(self.pgid, Signal::KILL);
            for (_, child) in &mut self.children {
                let _ = child.start_kill();
                let _ = child.try_wait();
            }
            self.remove_files();
        }
    }
}

/// Live (not zombie) processes in process group `pgid`, read from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // Fields after the command name (which may contain spaces) are "state ppid pgrp".
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
        })
        .collect()
}
