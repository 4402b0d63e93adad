//! The label that identifies a formatted target directory.
//!
//! Owns: [`Label`] (file system UUID, target name and index, format
//! version) stored as JSON in `<dir>/LABEL`, written once by `format`
//! (to a temporary file, synced, then renamed) and checked at every start.
//!
//! Must not: create or change anything but the label file, and only in
//! [`Label::write_new`], which refuses to replace one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::OstError;

/// The label's file name inside the target directory.
pub const LABEL_FILE: &str = "LABEL";
/// The on-disk layout this build writes and reads (2: objects and index
/// records named by (sequence, id), `O/<seq>/..`, a last id per sequence;
/// a version-1 directory is refused and must be formatted again).
pub const FORMAT_VERSION: u32 = 2;

/// Who a target directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The file system's UUID.
    pub fs_uuid: String,
    /// The target's name (`fsname-OST0000`).
    pub target: String,
    /// The target's index in the file system.
    pub index: u32,
    /// The layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
}

impl Label {
    /// Reads the label of `dir`: a missing directory, a missing label or
    /// one that does not parse is an [`OstError::Identity`].
    pub fn read(dir: &Path) -> Result<Label, OstError> {
        let ident = |why: String| OstError::Identity { path: dir.to_path_buf(), why };
        if !dir.is_dir() {
            return Err(ident("no such directory (format the target first)".into()));
        }
        let path = dir.join(LABEL_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ident("not a formatted target (no LABEL); run `sheen-oss format`".into()));
            }
            Err(e) => return Err(OstError::io("reading", path, e)),
        };
        let label: Label = serde_json::from_str(&text).map_err(|e| ident(format!("LABEL does not parse: {e}")))?;
        if label.format_version != FORMAT_VERSION {
            return Err(ident(format!(
                "format version {} (this build reads {FORMAT_VERSION}; format the target again)",
                label.format_version
            )));
        }
        Ok(label)
    }

    /// Checks that the label names the target the configuration expects.
    pub fn check(&self, dir: &Path, target: &str, index: u32, fs_uuid: Option<&str>) -> Result<(), OstError> {
        let ident = |why: String| OstError::Identity { path: dir.to_path_buf(), why };
        if self.target != target || self.index != index {
            return Err(ident(format!(
                "formatted for target {} (index {}), not {target} (index {index})",
                self.target, self.index
            )));
        }
        if let Some(u) = fs_uuid
            && u != self.fs_uuid
        {
            return Err(ident(format!("formatted for file system {}, not {u}", self.fs_uuid)));
        }
        Ok(())
    }

    /// Writes the label into `dir`, which must not have one.
    pub fn write_new(&self, dir: &Path) -> Result<(), OstError> {
        let path = dir.join(LABEL_FILE);
        if path.exists() {
            return Err(OstError::Identity { path: dir.to_path_buf(), why: "already formatted (LABEL exists)".into() });
        }
        let tmp = dir.join(".LABEL.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| OstError::Invalid(e.to_string()))?;
        let mut f = fs::File::create(&tmp).map_err(|e| OstError::io("creating", &tmp, e))?;
        f.write_all(text.as_bytes()).map_err(|e| OstError::io("writing", &tmp, e))?;
        f.sync_all().map_err(|e| OstError::io("syncing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| OstError::io("renaming", &path, e))?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| OstError::io("syncing", dir, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(format_version: u32) -> Label {
        Label { fs_uuid: "u".into(), target: "t-OST0000".into(), index: 0, format_version }
    }

    #[test]
    fn a_label_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        label(FORMAT_VERSION).write_new(dir.path()).unwrap();
        assert_eq!(Label::read(dir.path()).unwrap(), label(FORMAT_VERSION));

        // Version 1 kept objects as O/<oid & 0xff>/<oid>, before sequences.
        let old = tempfile::tempdir().unwrap();
        label(1).write_new(old.path()).unwrap();
        let err = Label::read(old.path()).unwrap_err();
        assert!(matches!(err, OstError::Identity { .. }), "{err}");
        assert!(err.to_string().contains("format version 1"), "{err}");
    }
}
