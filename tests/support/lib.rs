//! Support for posbridge's black-box tests: a temporary installation (config, tokens,
//! plugin directory with the chosen real plugin libraries), the real binary started on
//! an ephemeral loopback port, and a small HTTP client.
//!
//! Synchronisation is by events, never by sleeping: the daemon is ready when it logs
//! `listening` (JSON log line), and a stopped daemon is waited for.

pub mod images;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client token every test installation has, for register `till-1`.
pub const TILL_TOKEN: &str = "test-till-1-token-0123456789abcdef";
/// The manager's token every test installation has (acts on every register).
pub const MANAGER_TOKEN: &str = "test-manager-token-0123456789abcdef";
/// The technician's token every test installation has (reads, moves no money).
pub const TECHNICIAN_TOKEN: &str = "test-technician-token-0123456789ab";

/// Longest wait for the daemon to come up: generous, since CI machines are shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A plugin library's file name on this platform (`libsmartum.so`, `smartum.dll`…).
pub fn library_file_name(crate_name: &str) -> String {
    format!("{}{}{}", std::env::consts::DLL_PREFIX, crate_name.replace('-', "_"), std::env::consts::DLL_SUFFIX)
}

/// A temporary installation of posbridge.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    /// The database URL, on the PostgreSQL backend.
    pub store_url: Option<String>,
}

/// Node names of installations on a shared store, unique in the test process.
static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl Install {
    /// An empty installation for the binary at `bin` (pass `env!("CARGO_BIN_EXE_posbridge")`).
    pub fn new(bin: &str) -> Install {
        let dir = tempfile::Builder::new().prefix("posbridge-test-").tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins dir");
        // The daemon refuses files and directories other users may write: make the
        // installation's modes independent of the umask the tests run under.
        set_mode(&dir.path().join("plugins"), 0o755);
        let store_url =
            (postgres::store_backend() == postgres::StoreBackend::Postgres).then(|| postgres::Postgres::shared().new_database());
        let install = Install { dir, bin: PathBuf::from(bin), store_url: None };
        let install = match store_url {
            Some(url) => install.on_shared_store(&url),
            None => install,
        };
        for (file, token) in [("till-1.token", TILL_TOKEN), ("office.token", MANAGER_TOKEN), ("tech.token", TECHNICIAN_TOKEN)] {
            private(&install.write(file, &format!("{token}\n")));
        }
        install
    }

    /// Points this installation at the PostgreSQL database `url` (shared with any other
    /// installation given the same), under a node name of its own.
    pub fn on_shared_store(mut self, url: &str) -> Install {
        let node = NODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.write(
            "conf.d/00-store.toml",
            &format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"test-node-{node}\"\nlease = \"3s\"\n"),
        );
        self.store_url = Some(url.to_string());
        self
    }

    /// Another installation on the same shared store (PostgreSQL), as a second till's
    /// machine would be.
    pub fn beside(&self) -> Install {
        let url = self.store_url.as_deref().expect("an installation on a shared store (Install::on_shared_store)");
        Install::new(&self.bin.to_string_lossy()).on_shared_store(url)
    }

    /// The installation's root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin directory the base config points at.
    pub fn plugins_dir(&self) -> PathBuf {
        self.path().join("plugins")
    }

    /// The library a workspace crate built. Cargo writes a dependency's cdylib to
    /// `deps/` beside the binary and copies it up only in some builds, so `deps/` (always
    /// the fresh one) is looked at first.
    pub fn built_library(&self, crate_name: &str) -> PathBuf {
        let dir = self.bin.parent().expect("binary has a directory");
        let name = library_file_name(crate_name);
        let candidates = [dir.join("deps").join(&name), dir.join(&name)];
        candidates.iter().find(|file| file.exists()).cloned().unwrap_or_else(|| {
            panic!("{name} was not built (looked in {} and its deps/); the daemon's dev-dependencies should build it", dir.display())
        })
    }

    /// Copies a built plugin library into the plugin directory, under `file_name`.
    pub fn add_plugin_as(&self, crate_name: &str, file_name: &str) -> PathBuf {
        let target = self.plugins_dir().join(file_name);
        std::fs::copy(self.built_library(crate_name), &target).expect("copy plugin");
        set_mode(&target, 0o644);
        target
    }

    /// Copies a built plugin library into the plugin directory.
    pub fn add_plugin(&self, crate_name: &str) -> PathBuf {
        self.add_plugin_as(crate_name, &library_file_name(crate_name))
    }

    /// Writes a file relative to the installation.
    pub fn write(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent dir");
            set_mode(parent, 0o755);
        }
        std::fs::write(&path, contents).expect("write file");
        set_mode(&path, 0o644);
        path
    }

    /// The main config file.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("posbridge.toml")
    }

    /// Writes the main config: `base_config()` followed by `extra`.
    pub fn configure(&self, extra: &str) {
        self.write("posbridge.toml", &format!("{}\n{extra}", base_config()));
    }

    /// Lifts the per-client rate limit (for benchmarks, which are one client sending
    /// as fast as it can).
    pub fn unlimited(&self) {
        self.write("conf.d/unlimited.toml", "[server]\nrate_limit = 100000\nrate_burst = 100000\n");
    }

    /// Runs `posbridge ARGS --config <main config>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env_remove("POSBRIDGE_LOG")
            .output()
            .expect("run posbridge")
    }

    /// Starts the daemon and waits until it listens.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// Starts the daemon with extra environment variables (e.g. `FAILPOINTS` in the
    /// test build) and waits until it listens.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.migrate();
        Daemon::start(&self.bin, &[], &self.config_path(), env)
    }

    /// Starts `posbridge COMMAND… --config <main config>` (e.g. `sandbox`) and waits
    /// until its daemon listens.
    pub fn start_command(&self, command: &[&str]) -> Daemon {
        self.migrate();
        Daemon::start(&self.bin, command, &self.config_path(), &[])
    }

    /// On a shared store: `posbridge store migrate`, as a technician does once.
    fn migrate(&self) {
        if self.store_url.is_some() && self.config_path().exists() {
            let output = self.run(&["store", "migrate"]);
            assert!(output.status.success(), "store migrate failed: {}", all_output(&output));
        }
    }
}

/// Sets a file's or directory's permission bits (on Unix).
pub fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// Makes a secret file readable by its owner only, as a technician would.
pub fn private(file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// The parts of a config every test installation shares: an ephemeral loopback port,
/// the store (by default) and plugin directory inside the installation, one client.
pub fn base_config() -> String {
    // The store is the default (sled in `data/` beside the config), or, on PostgreSQL,
    // the database the installation's `conf.d/00-store.toml` names.
    r#"[server]
listen = "127.0.0.1:0"

[plugins]
dir = "plugins"

[[clients]]
name = "till-1"
token_file = "till-1.token"

[[clients]]
name = "office"
role = "manager"
token_file = "office.token"

[[clients]]
name = "tech"
role = "technician"
token_file = "tech.token"

[[registers]]
id = "till-1"
"#
    .to_string()
}

/// The client token of till `number` (`till-1` is [`TILL_TOKEN`]).
pub fn till_token(number: usize) -> String {
    if number == 1 {
        TILL_TOKEN.to_string()
    } else {
        format!("test-till-{number}-token-0123456789abcdef")
    }
}

/// Config for tills 2 to `count`: a client and a register each, named `till-N`, holding
/// [`till_token`]`(N)`.
pub fn more_tills(count: usize) -> String {
    (2..=count)
        .map(|number| {
            format!("[[clients]]\nname = \"till-{number}\"\ntoken = \"{}\"\n\n[[registers]]\nid = \"till-{number}\"\n", till_token(number))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running daemon. Killed when dropped.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    log: Arc<Mutex<Vec<String>>>,
    logged: Arc<std::sync::Condvar>,
    printed: Arc<std::sync::Condvar>,
    output: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

impl Daemon {
    fn start(bin: &Path, command: &[&str], config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(bin)
            .args(command)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .env_remove("POSBRIDGE_LOG")
            .env_remove("FAILPOINTS")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start posbridge");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let output = Arc::new(Mutex::new(Vec::new()));
        let output_writer = output.clone();
        let printed = Arc::new(std::sync::Condvar::new());
        let notify_printed = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                output_writer.lock().unwrap().push(line);
                notify_printed.notify_all();
            }
        });
        let log_writer = log.clone();
        let logged = Arc::new(std::sync::Condvar::new());
        let notify = logged.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Kept before it is announced, so the log holds the `listening` line
                // by the time `start` returns.
                let address = listening_address(&line);
                log_writer.lock().unwrap().push(line);
                notify.notify_all();
                if let Some(address) = address {
                    let _ = address_tx.send(address);
                }
            }
        });
        let address = match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("posbridge did not start (exit {status:?}); log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90)).build().expect("http client");
        Daemon { child, base_url: format!("http://{address}"), log, logged, printed, output, http }
    }

    /// Reads `count` events from `/v1/events` with the till's token (after
    /// `Last-Event-ID` when given): id, kind and data of each.
    pub fn events(&self, last_event_id: Option<u64>, count: usize) -> Vec<(u64, String, serde_json::Value)> {
        self.events_until(last_event_id, |events| events.len() >= count)
    }

    /// Reads events from `/v1/events` until `enough` says so of those read.
    pub fn events_until(
        &self,
        last_event_id: Option<u64>,
        enough: impl Fn(&[(u64, String, serde_json::Value)]) -> bool,
    ) -> Vec<(u64, String, serde_json::Value)> {
        let mut request = self.request(reqwest::Method::GET, "/v1/events");
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.send().unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut lines = BufReader::new(response).lines();
        let mut events = Vec::new();
        let (mut id, mut kind) = (0, String::new());
        let started = std::time::Instant::now();
        while !enough(&events) {
            assert!(started.elapsed() < Duration::from_secs(60), "only {} events: {events:?}", events.len());
            let line = lines.next().expect("stream open").expect("line");
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse().unwrap();
            } else if let Some(value) = line.strip_prefix("event: ") {
                kind = value.to_string();
            } else if let Some(value) = line.strip_prefix("data: ") {
                events.push((id, kind.clone(), serde_json::from_str(value).unwrap()));
            }
        }
        events
    }

    /// `POST path` with the till's token from a thread of its own, for a request whose
    /// answer never comes (the daemon is killed, or the provider stalls, meanwhile): the
    /// answer, if any, is dropped; join the handle once the test is done with it.
    pub fn post_unanswered(&self, path: &str, body: &serde_json::Value) -> std::thread::JoinHandle<()> {
        let (url, body) = (format!("{}{path}", self.base_url), body.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let _ = client.post(url).bearer_auth(TILL_TOKEN).json(&body).timeout(Duration::from_secs(30)).send();
        })
    }

    /// `GET path` without a token.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http.get(format!("{}{path}", self.base_url)).send().expect("GET")
    }

    /// A request builder with the till's token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base_url)).bearer_auth(TILL_TOKEN)
    }

    /// `POST path` with a JSON body and the till's token.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.request(reqwest::Method::POST, path).json(body).send().expect("POST")
    }

    /// `POST path` with the till's token: status and JSON answer.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.post_json(path, body);
        let status = response.status().as_u16();
        (status, response.json().expect("JSON answer"))
    }

    /// `GET path` with the till's token: status and JSON answer.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        self.get_json_as(TILL_TOKEN, path)
    }

    /// `GET path` with `token`: status and JSON answer.
    pub fn get_json_as(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(format!("{}{path}", self.base_url)).bearer_auth(token).send().expect("GET");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON answer"))
    }

    /// `POST path` with a JSON body and `token`: status and JSON answer.
    pub fn post_as(&self, token: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.http.post(format!("{}{path}", self.base_url)).bearer_auth(token).json(body).send().expect("POST");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON answer"))
    }

    /// Follows payment `id` with long polls from `version` while its status is one of
    /// `waiting`; answers the first payment in another status.
    pub fn follow(&self, id: &str, version: u64, waiting: &[&str]) -> serde_json::Value {
        self.follow_as(TILL_TOKEN, id, version, waiting)
    }

    /// [`Daemon::follow`] with `token` (another register's payment).
    pub fn follow_as(&self, token: &str, id: &str, version: u64, waiting: &[&str]) -> serde_json::Value {
        let mut version = version;
        loop {
            let (status, payment) = self.get_json_as(token, &format!("/v1/payments/{id}?wait=30&version={version}"));
            assert_eq!(status, 200, "{payment}");
            if !waiting.iter().any(|state| payment["status"] == *state) {
                return payment;
            }
            version = payment["version"].as_u64().expect("a version");
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line (stderr) so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains every one of `needles`; answers it.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let matching = |log: &Vec<String>| log.iter().find(|line| needles.iter().all(|needle| line.contains(needle))).cloned();
        let log = self.log.lock().unwrap();
        let (log, _) = self.logged.wait_timeout_while(log, timeout, |log| matching(log).is_none()).unwrap();
        matching(&log)
    }

    /// Waits until a line printed on stdout contains `needle`; answers it.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Option<String> {
        let matching = |output: &Vec<String>| output.iter().find(|line| line.contains(needle)).cloned();
        let output = self.output.lock().unwrap();
        let (output, _) = self.printed.wait_timeout_while(output, timeout, |output| matching(output).is_none()).unwrap();
        matching(&output)
    }

    /// Every line printed on stdout so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for posbridge")
    }

    /// Kills the process at once (SIGKILL), as a power cut would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_address(line: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("message")?.as_str()? != "listening" {
        return None;
    }
    Some(event.get("address")?.as_str()?.to_string())
}

/// A loopback port free at the time of asking (for servers whose address must be
/// written into a config before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// stdout and stderr of a finished command, as one string for assertions.
pub fn all_output(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// One payment as a register makes it: created, then paid with `code`, over `client`.
/// Answers the time to the created answer, the time to the paid answer, and the paid
/// payment.
pub fn create_and_scan(
    client: &reqwest::blocking::Client,
    base_url: &str,
    amount: u64,
    code: &str,
) -> (Duration, Duration, serde_json::Value) {
    let payment = serde_json::json!({"method": "smartum", "amount": amount, "currency": "EUR"});
    create_and_scan_as(client, base_url, TILL_TOKEN, &payment, code)
}

/// [`create_and_scan`] with another client's `token` and payment body (a manager paying
/// at a register it names).
pub fn create_and_scan_as(
    client: &reqwest::blocking::Client,
    base_url: &str,
    token: &str,
    payment: &serde_json::Value,
    code: &str,
) -> (Duration, Duration, serde_json::Value) {
    let started = std::time::Instant::now();
    let created: serde_json::Value = client
        .post(format!("{base_url}/v1/payments"))
        .bearer_auth(token)
        .json(payment)
        .send()
        .expect("create")
        .json()
        .expect("JSON answer");
    let id = created["id"].as_str().unwrap_or_else(|| panic!("not created: {created}")).to_string();
    let created_after = started.elapsed();
    let paid: serde_json::Value = client
        .post(format!("{base_url}/v1/payments/{id}/scan"))
        .bearer_auth(token)
        .json(&serde_json::json!({"code": code}))
        .send()
        .expect("scan")
        .json()
        .expect("JSON answer");
    (created_after, started.elapsed(), paid)
}
