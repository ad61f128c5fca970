//! The admin commands: `FLUSH`, `COMPACT` and `SNAPSHOT`, each one engine call answered
//! by `ADMIN_OK` with a message saying what was done. They need the admin role, checked
//! by the dispatcher.

use std::path::Path;

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

/// Answers a `SNAPSHOT`: an online snapshot into a directory on the server's machine.
pub fn snapshot(engine: &Engine, id: u32, s: &Snapshot<'_>, out: &mut BytesMut) -> Handled {
    if s.target_dir.is_empty() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            "snapshot target directory must not be empty",
        ));
    }
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
