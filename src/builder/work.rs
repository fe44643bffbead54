//! The build's work folder: a new folder (never one that was there) at a canonical path under the system temp
//! folder, root's, that others may pass through (`0711`) but not list or change; removed when dropped.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::warn;

/// A work folder under the system temp folder, removed when dropped: a new folder (never one that was there),
/// at a canonical path, that others may pass through (`0711`) but not list or change.
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    pub(crate) fn create() -> std::io::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let temp = std::fs::canonicalize(std::env::temp_dir())?;
        let path = temp.join(format!("layer-builder-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&path)?;
        let work = Self(path);
        set_mode(work.path(), 0o711)?;
        Ok(work)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            warn!(path = %self.0.display(), error = %e, "could not remove the work folder");
        }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
