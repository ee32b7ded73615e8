//! Sending this program's executable to the scheduler, when a worker needs it to start
//! a worker of the program (for its typed ops).

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::msg::ToScheduler;
use tracing::{info, warn};

use crate::client::Inner;

/// Parts of this many bytes, each in its own frame.
const PART: usize = 4 << 20;

/// Sends the executable in parts; a file that cannot be read (or is not the size
/// announced) is reported instead, so that the tasks waiting for it fail with why.
pub(crate) async fn send_program(inner: Arc<Inner>, code: u64) {
    let Some(program) = inner.program.clone() else {
        let _ = inner.sender().send(ToScheduler::ProgramFailed {
            code,
            message: "this client runs no program".into(),
        });
        return;
    };
    if program.info.code != code {
        let _ = inner.sender().send(ToScheduler::ProgramFailed {
            code,
            message: format!(
                "this client runs program {:016x}, not {code:016x}",
                program.info.code
            ),
        });
        return;
    }
    info!(path = %program.path.display(), bytes = program.info.size, "sending this program to the cluster");
    let size = program.info.size;
    let to_scheduler = inner.sender();
    let path = program.path.clone();
    // Read off the runtime (megabytes), sent as read.
    let sent = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; PART];
            let mut n = 0;
            while n < PART {
                match f.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            if n == 0 {
                break;
            }
            if offset + n as u64 > size {
                return Err(format!(
                    "{} has grown past the {size} bytes announced",
                    path.display()
                ));
            }
            buf.truncate(n);
            let msg = ToScheduler::ProgramPart {
                code,
                offset,
                size,
                buf: 0,
            };
            to_scheduler
                .send_with(msg, vec![Bytes::from(buf)])
                .map_err(|_| "the connection closed".to_string())?;
            offset += n as u64;
        }
        if offset != size {
            return Err(format!(
                "{} has {offset} bytes, not the {size} announced",
                path.display()
            ));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(message) = sent {
        warn!("cannot send this program to the cluster: {message}");
        let _ = inner
            .sender()
            .send(ToScheduler::ProgramFailed { code, message });
    }
}
