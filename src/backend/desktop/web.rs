//! The folder websockify serves: Debian's noVNC, plus an `index.html` that opens `vnc.html`
//! with the right WebSocket path. Behind the gateway the desktop lives at `/connect/<id>/`, and
//! noVNC takes its WebSocket path from the `path` query parameter (relative to the host), so the
//! page derives it from its own location: the same folder works with and without the gateway.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, symlink},
    path::{Path, PathBuf},
};

/// The page at the desktop's root.
const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Desktop</title></head>
<body><p>Opening the desktop…</p>
<script>
  var base = location.pathname.replace(/[^/]*$/, "");
  var ws = base.replace(/^\//, "") + "websockify";
  location.replace(base + "vnc.html?autoconnect=true&reconnect=true&resize=scale&path=" + encodeURIComponent(ws));
</script></body></html>
"#;

/// A served folder that is removed when dropped.
#[derive(Debug)]
pub struct WebDir {
    path: PathBuf,
}

impl WebDir {
    /// Links every entry of `novnc` into a fresh folder beside our `index.html`.
    pub fn create(novnc: &Path) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("cadbroker-novnc-{}", uuid::Uuid::new_v4()));
        fs::DirBuilder::new().mode(0o755).create(&path)?;
        let dir = Self { path };
        for entry in fs::read_dir(novnc)? {
            let entry = entry?;
            if entry.file_name() != "index.html" {
                symlink(entry.path(), dir.path.join(entry.file_name()))?;
            }
        }
        fs::write(dir.path.join("index.html"), INDEX)?;
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WebDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
