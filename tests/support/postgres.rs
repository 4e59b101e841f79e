//! A throwaway PostgreSQL server for the black-box tests of the shared store: one
//! cluster per test process, in a temporary directory, on a free loopback port, made
//! with the machine's `initdb` and `pg_ctl` (Debian's `postgresql` package) and stopped
//! when the process exits. Each installation gets a database of its own.
//!
//! Run as root (CI), the server runs as the `postgres` user, as PostgreSQL requires.
//! `POSBRIDGE_TEST_POSTGRES=postgres://user@host:port` uses a running server instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Which store the black-box tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Sled,
    Postgres,
}

/// The backend of this test process: PostgreSQL for the test targets whose name ends in
/// `_on_postgres` (the same test files built a second time: a matrix, not copies), or
/// when `POSBRIDGE_TEST_STORE=postgres`; sled otherwise.
pub fn store_backend() -> StoreBackend {
    static BACKEND: OnceLock<StoreBackend> = OnceLock::new();
    *BACKEND.get_or_init(|| {
        let target = std::env::current_exe().ok().and_then(|exe| exe.file_name().map(|name| name.to_string_lossy().into_owned()));
        let by_target = target.is_some_and(|name| name.split('-').next().is_some_and(|target| target.ends_with("_on_postgres")));
        let by_env = std::env::var("POSBRIDGE_TEST_STORE").is_ok_and(|value| value == "postgres");
        if by_target || by_env {
            StoreBackend::Postgres
        } else {
            StoreBackend::Sled
        }
    })
}

/// The server of this test process.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    pub server_url: String,
    /// The cluster's directory, when this process made it.
    cluster: Option<Cluster>,
}

struct Cluster {
    _root: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl Postgres {
    /// The server, started on first use.
    pub fn shared() -> &'static Postgres {
        SERVER.get_or_init(|| match std::env::var("POSBRIDGE_TEST_POSTGRES") {
            Ok(url) => Postgres { server_url: url.trim_end_matches('/').to_string(), cluster: None },
            Err(_) => Postgres::start_cluster(),
        })
    }

    /// A server of the caller's own (stopped when dropped): for a test that stops it.
    pub fn private() -> Postgres {
        Postgres::start_cluster()
    }

    fn start_cluster() -> Postgres {
        let bin = server_binaries().unwrap_or_else(|| {
            panic!("PostgreSQL's server programs (initdb, pg_ctl) are not installed: `apt-get install postgresql` (the shared-store tests need them)")
        });
        let root = tempfile::Builder::new().prefix("posbridge-pg-").tempdir().expect("temp dir");
        let data = root.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(root.path()).status().expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let initdb = run_as_server_user(
            Command::new(bin.join("initdb")).args(["--auth=trust", "--username=postgres", "--no-sync", "--encoding=UTF8", "-D"]).arg(&data),
        );
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = crate::free_port();
        let cluster = Cluster { _root: root, data, bin, port };
        cluster.start();
        register_stop_at_exit(cluster.data.clone(), cluster.bin.clone());
        Postgres { server_url: format!("postgres://postgres@127.0.0.1:{port}"), cluster: Some(cluster) }
    }

    /// A new, empty database on the server: its URL.
    pub fn new_database(&self) -> String {
        let name = format!("posbridge_test_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::SeqCst));
        let output = Command::new("psql")
            .arg(format!("{}/postgres", self.server_url))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql (package postgresql-client)");
        assert!(output.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&output.stderr));
        format!("{}/{name}", self.server_url)
    }

    /// Stops the server at once (as a crash or an outage would), keeping its data.
    pub fn stop(&self) {
        self.cluster.as_ref().expect("a cluster this process started").stop("immediate");
    }

    /// Starts the stopped server again.
    pub fn start(&self) {
        self.cluster.as_ref().expect("a cluster this process started").start();
    }
}

impl Cluster {
    fn start(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300", self.port);
        let log = self.data.parent().expect("root").join("server.log");
        let started = run_as_server_user(
            Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args(["-o", &options, "-l"]).arg(&log).args(["-w", "start"]),
        );
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&self, mode: &str) {
        let _ = run_as_server_user(Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args(["-m", mode, "-w", "stop"]));
    }
}

/// Where `initdb` and `pg_ctl` are: Debian keeps them out of PATH, under
/// `/usr/lib/postgresql/VERSION/bin`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    let on_path = std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    versions.into_iter().rev().chain(on_path).find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run_as_server_user(command: &mut Command) -> Output {
    if !is_root() {
        return command.output().expect("run a PostgreSQL program");
    }
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(args).current_dir(Path::new("/")).output().expect("runuser")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// Clusters to stop when the test binary exits: the shared one lives in a static, which
/// is never dropped (nor its temporary directory removed).
static AT_EXIT: std::sync::Mutex<Vec<(PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn register_stop_at_exit(data: PathBuf, bin: PathBuf) {
    extern "C" fn stop_clusters() {
        let clusters = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for (data, bin) in clusters {
            let _ = run_as_server_user(Command::new(bin.join("pg_ctl")).arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]));
            let _ = std::fs::remove_dir_all(data.parent().expect("root"));
        }
    }
    let mut clusters = AT_EXIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if clusters.is_empty() {
        // SAFETY: registers a plain function with no captured state, run once at exit.
        unsafe {
            libc::atexit(stop_clusters);
        }
    }
    clusters.push((data, bin));
}
