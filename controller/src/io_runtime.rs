//! Runtimes of their own for what must answer while the controller's loops are busy:
//! network I/O (the embedded broker's gate and the controller's own MQTT connection,
//! as rumqttd's threads are) and the REST API. The controller's loops share the main
//! runtime's two workers, and a big apply keeps them busy for tens of seconds: at 5,000
//! boards an apply of 50,000 Pods stalled every keepalive (the broker dropped the
//! controller, the gate dropped the boards), and `punnet apply` of one Deployment took
//! up to 40 s, queued behind the passes it had set off.

use std::sync::Mutex;

use tokio::runtime::{Builder, Handle, RuntimeFlavor};

type Slot = Mutex<Option<Handle>>;

/// The I/O runtime's handle, started on first use; it lives as long as the process.
pub fn handle() -> std::io::Result<Handle> {
    static IO: Slot = Mutex::new(None);
    started(&IO, "punnet-io")
}

/// The REST API's runtime, started on first use; it lives as long as the process.
pub fn api() -> std::io::Result<Handle> {
    static API: Slot = Mutex::new(None);
    started(&API, "punnet-api")
}

fn started(slot: &Slot, name: &str) -> std::io::Result<Handle> {
    let mut handle = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = &*handle {
        return Ok(h.clone());
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?;
    let h = rt.handle().clone();
    // Never dropped: dropping a runtime inside another one panics, and what runs on it
    // stops with its own cancel tokens.
    std::mem::forget(rt);
    *handle = Some(h.clone());
    Ok(h)
}

/// Runs a pass that computes for a long time (seconds, at thousands of boards) without
/// parking the other tasks queued on this worker behind it: on a multi-threaded runtime
/// the worker hands them to another thread first.
pub fn long_pass<R>(pass: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(pass)
        }
        _ => pass(),
    }
}
