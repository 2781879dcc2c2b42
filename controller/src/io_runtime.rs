//! The runtime the controller's network I/O runs on: the embedded broker's gate and the
//! controller's own MQTT connection, on threads of their own (as rumqttd's are). The
//! controller's loops share the main runtime's two workers, and a big apply keeps them
//! busy for tens of seconds: before this, at 5,000 boards, an apply of 50,000 Pods
//! stalled every keepalive, so the broker dropped the controller and the gate dropped
//! the boards.

use std::sync::Mutex;

use tokio::runtime::{Builder, Handle};

/// The I/O runtime's handle, started on first use; it lives as long as the process.
pub fn handle() -> std::io::Result<Handle> {
    static HANDLE: Mutex<Option<Handle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = &*handle {
        return Ok(h.clone());
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("punnet-io")
        .enable_all()
        .build()?;
    let h = rt.handle().clone();
    // Never dropped: dropping a runtime inside another one panics, and what runs on it
    // stops with its own cancel tokens.
    std::mem::forget(rt);
    *handle = Some(h.clone());
    Ok(h)
}
