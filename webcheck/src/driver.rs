//! Starts Debian's `chromedriver` on a free loopback port in its own process group,
//! and kills that whole group (chromedriver and every Chromium process it started)
//! when dropped, so that a failing test leaves no browser behind.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::WebcheckError;

/// How long chromedriver gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running chromedriver.
pub(crate) struct Driver {
    child: Child,
    /// The port chromedriver listens on (loopback only).
    pub(crate) addr: SocketAddr,
    /// chromedriver's own log, shown when a session cannot be created.
    pub(crate) log: PathBuf,
}

impl Driver {
    /// Starts `chromedriver` with `home` as its (and so Chromium's) `$HOME`: the
    /// profile's NSS database, where a trusted CA goes, lives under it.
    pub(crate) fn start(program: &Path, home: &Path) -> Result<Driver, WebcheckError> {
        let addr = free_port()?;
        let log = home.join("chromedriver.log");
        let child = Command::new(program)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: Drop kills chromedriver and its Chromium processes at once.
            .process_group(0)
            .spawn()
            .map_err(|source| WebcheckError::SpawnDriver {
                program: program.display().to_string(),
                source,
            })?;
        let mut driver = Driver { child, addr, log };
        driver.wait_until_listening()?;
        Ok(driver)
    }

    fn wait_until_listening(&mut self) -> Result<(), WebcheckError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(WebcheckError::DriverExited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if Instant::now() > deadline {
                return Err(WebcheckError::DriverTimeout {
                    after: START_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of chromedriver's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group we created for
        // chromedriver in `start`; it touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<SocketAddr, WebcheckError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(WebcheckError::Port)?;
    listener.local_addr().map_err(WebcheckError::Port)
}
