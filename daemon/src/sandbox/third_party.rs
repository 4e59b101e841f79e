//! An integrator's fake providers (`[[sandbox.providers]]`), run beside the built-in
//! ones so a plugin's quick start is the project's: `posbridge sandbox` starts each
//! `command` (or expects it already running), waits until it listens, and stops it when
//! the sandbox ends.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::SandboxError;
use crate::config::FakeProviderConfig;

/// How often a starting fake is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// A started (or found running) fake; its process, if we started it, ends with it.
pub struct RunningFake {
    child: Option<Child>,
}

impl Drop for RunningFake {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts every configured fake and waits until each listens.
pub async fn start(providers: &[FakeProviderConfig]) -> Result<Vec<RunningFake>, SandboxError> {
    let mut running = Vec::new();
    for provider in providers {
        let child = match &provider.command {
            Some(command) => Some(Command::new(&command[0]).args(&command[1..]).current_dir(&provider.dir).spawn().map_err(|error| {
                SandboxError::Setup(format!("cannot start the fake provider {:?} ({}): {error}", provider.name, command[0]))
            })?),
            None => None,
        };
        let mut fake = RunningFake { child };
        wait_until_listening(provider, &mut fake).await?;
        println!("Fake {}: http://{}", provider.name, provider.address);
        running.push(fake);
    }
    Ok(running)
}

/// Waits until `provider` accepts connections: its process may build first (`cargo run`).
async fn wait_until_listening(provider: &FakeProviderConfig, fake: &mut RunningFake) -> Result<(), SandboxError> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(provider.address).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = fake.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
            return Err(SandboxError::Setup(format!(
                "the fake provider {:?} exited ({status}) before listening on {}",
                provider.name, provider.address
            )));
        }
        if started.elapsed() > provider.startup_timeout {
            return Err(SandboxError::Setup(not_listening(&provider.name, provider.address, provider.startup_timeout)));
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

fn not_listening(name: &str, address: SocketAddr, after: Duration) -> String {
    format!("the fake provider {name:?} did not listen on {address} within {after:?} (check [[sandbox.providers]] url and command)")
}
