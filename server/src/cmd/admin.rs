//! The admin commands: `FLUSH`, `COMPACT` and `SNAPSHOT`, each one engine call answered
//! by `ADMIN_OK` with a message saying what was done. They need the admin role, checked
//! by the dispatcher. A `SNAPSHOT` target must be an absolute path outside the data
//! directory ([`check_snapshot_target`]): a relative path would depend on the server's
//! working directory, and a copy inside the live directory would be mixed with it.

use std::path::{Component, Path, PathBuf};

use bytes::BytesMut;
use tallydb_protocol::{encode_response, AdminOk, ErrorCode, ErrorReply, Response, Snapshot};
use tallydb_storage::Engine;

use super::{storage_error, Handled};

/// Answers a `FLUSH`: the memtable into segments.
pub fn flush(engine: &Engine, id: u32, out: &mut BytesMut) -> Handled {
    let f = engine.flush().map_err(|e| storage_error(&e))?;
    let msg = format!(
        "flushed {} memtables into {} segments ({} cells); checkpoint at LSN {}",
        f.memtables, f.segments, f.cells, f.checkpoint_lsn
    );
    encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
    Ok(())
}

/// Answers a `COMPACT`: one compaction run.
pub fn compact(engine: &Engine, id: u32, out: &mut BytesMut) -> Handled {
    let c = engine.compact().map_err(|e| storage_error(&e))?;
    let msg = format!(
        "compaction ran {} tasks over {} segments: {} cells in, {} cells out",
        c.tasks, c.segments_in, c.cells_in, c.cells_out
    );
    encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
    Ok(())
}

/// Why a `SNAPSHOT` target directory is refused (answered `INVALID_ARGUMENT`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotTargetError {
    /// The path is relative: its meaning would depend on the server's working directory.
    #[error("snapshot target {0:?} is not an absolute path; give the full path of a directory on the server's machine")]
    Relative(PathBuf),
    /// The path is the data directory or inside it.
    #[error("snapshot target {target:?} is inside the data directory {data_dir:?}; choose a directory outside it")]
    InsideDataDir {
        /// The target, resolved.
        target: PathBuf,
        /// The data directory, resolved.
        data_dir: PathBuf,
    },
    /// A path could not be resolved.
    #[error("cannot resolve {path:?}: {source}")]
    Resolve {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// The absolute path `path` names, with symbolic links of its existing part resolved
/// and `.`/`..` of the part still to be created applied.
fn resolve(path: &Path) -> Result<PathBuf, SnapshotTargetError> {
    let mut base = None;
    for ancestor in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(ancestor) {
            base = Some((ancestor, real));
            break;
        }
    }
    let Some((ancestor, mut resolved)) = base else {
        return Err(SnapshotTargetError::Resolve {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no part of it exists"),
        });
    };
    let rest = path.strip_prefix(ancestor).unwrap_or(Path::new(""));
    for part in rest.components() {
        match part {
            Component::Normal(name) => resolved.push(name),
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(resolved)
}

/// Checks a `SNAPSHOT` target: absolute, and neither the data directory `data_dir`
/// nor inside it (after resolving symbolic links and `..`).
pub fn check_snapshot_target(target: &Path, data_dir: &Path) -> Result<(), SnapshotTargetError> {
    if !target.is_absolute() {
        return Err(SnapshotTargetError::Relative(target.to_path_buf()));
    }
    let target = resolve(target)?;
    let data_dir =
        std::fs::canonicalize(data_dir).map_err(|source| SnapshotTargetError::Resolve {
            path: data_dir.to_path_buf(),
            source,
        })?;
    if target.starts_with(&data_dir) {
        return Err(SnapshotTargetError::InsideDataDir { target, data_dir });
    }
    Ok(())
}

/// Answers a `SNAPSHOT`: an online snapshot into a directory on the server's machine.
pub fn snapshot(engine: &Engine, id: u32, s: &Snapshot<'_>, out: &mut BytesMut) -> Handled {
    if s.target_dir.is_empty() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            "snapshot target directory must not be empty",
        ));
    }
    check_snapshot_target(Path::new(s.target_dir), engine.dir())
        .map_err(|e| ErrorReply::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let m = engine
        .snapshot(Path::new(s.target_dir))
        .map_err(|e| storage_error(&e))?;
    let msg = format!(
        "snapshot of {} segments written to {}",
        m.segments.len(),
        s.target_dir
    );
    encode_response(id, &Response::AdminOk(AdminOk::new(msg)), out);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn snapshot_targets_must_be_absolute_and_outside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("segments")).unwrap();
        let ok = |t: &Path| check_snapshot_target(t, &data);
        assert!(matches!(
            ok(Path::new("snap")),
            Err(SnapshotTargetError::Relative(_))
        ));
        for inside in [
            data.clone(),
            data.join("snap"),
            data.join("segments/new/deeper"),
            dir.path().join("elsewhere/../data/snap"),
        ] {
            assert!(
                matches!(ok(&inside), Err(SnapshotTargetError::InsideDataDir { .. })),
                "{inside:?} was accepted"
            );
        }
        ok(&dir.path().join("snap")).unwrap();
        ok(&dir.path().join("data-snap")).unwrap();
        ok(&data.join("../snap2")).unwrap();
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            assert!(matches!(
                ok(&link.join("snap")),
                Err(SnapshotTargetError::InsideDataDir { .. })
            ));
        }
    }
}
