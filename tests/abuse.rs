//! The edges hold under abuse, through the real binary on loopback (bounded sizes): idle
//! connections do not starve a payment, a storm of huge images does not blow the memory
//! up, and requests with made-up HTTP methods do not grow `/metrics`. Each test prints
//! its figures (`cargo test --test abuse -- --nocapture`).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use posbridge::sandbox::{SandboxOptions, SmartumSandbox};
use posbridge_testkit::{Daemon, Install, TILL_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_posbridge");

struct Shop {
    smartum: SmartumSandbox,
    daemon: Daemon,
}

fn shop(server_extra: &str) -> Shop {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let smartum = SmartumSandbox::start(listen, SandboxOptions::default()).unwrap();
    let install = Install::new(BIN);
    install.add_plugin("posbridge-plugin-smartum");
    install.configure(&smartum.config_section(install.path(), "").unwrap());
    // The per-client limit is lifted: these tests are one client sending on purpose as
    // fast as it can, and measure the edges, not the limiter.
    install.write("conf.d/server.toml", &format!("[server]\nrate_limit = 100000\nrate_burst = 100000\n{server_extra}\n"));
    let daemon = install.start();
    Shop { smartum, daemon }
}

impl Shop {
    /// One payment created and paid over fresh connections; answers how long it took.
    fn pay(&self) -> Duration {
        let client = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
        let receipt = self.smartum.create_receipt(1000);
        let (_, took, paid) = posbridge_testkit::create_and_scan(&client, &self.daemon.base_url, 1000, &receipt.jws);
        assert_eq!(paid["status"], "succeeded", "{paid}");
        took
    }

    fn address(&self) -> SocketAddr {
        self.daemon.base_url.trim_start_matches("http://").parse().unwrap()
    }
}

/// Lets this test process hold many sockets.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// The daemon's peak resident memory, from /proc (kB).
fn peak_rss_kb(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn two_thousand_idle_connections_do_not_keep_a_payment_waiting() {
    raise_open_files_limit();
    let shop = shop("");
    let idle: Vec<TcpStream> = (0..2000).map(|_| TcpStream::connect(shop.address()).expect("connect")).collect();
    let during = shop.pay();
    eprintln!("figures: {} idle connections held open; a payment took {during:?}", idle.len());
    assert!(during < Duration::from_secs(1), "a payment took {during:?} beside 2,000 idle connections");
    drop(idle);
}

#[test]
fn a_connection_that_says_nothing_is_let_go_and_the_cap_closes_the_surplus() {
    use std::io::Read;
    let shop = shop("header_read_timeout = \"2s\"\nmax_connections = 16");
    let mut silent = TcpStream::connect(shop.address()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).expect("closed, not timed out"), 0, "the server closed the silent connection");
    eprintln!("figures: a silent connection was closed after {:?}", started.elapsed());

    let mut held: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(shop.address()).unwrap()).collect();
    let mut surplus = TcpStream::connect(shop.address()).unwrap();
    surplus.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let closed = matches!(surplus.read(&mut byte), Ok(0) | Err(_));
    assert!(closed, "the 17th connection is closed at once");
    // A connection that holds a slot is served (within its header timeout).
    use std::io::Write;
    held[0].write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut metrics = String::new();
    held[0].read_to_string(&mut metrics).unwrap();
    assert!(metrics.lines().any(|line| line.starts_with("posbridge_connections_refused_total") && !line.ends_with(" 0")), "{metrics}");
}

/// A blank `side`×`side` PNG (small on the wire, large decoded).
fn blank_png(side: u32) -> Vec<u8> {
    let image = image::GrayImage::from_pixel(side, side, image::Luma([255]));
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

#[test]
fn a_storm_of_huge_images_leaves_memory_bounded_and_payments_flowing() {
    let shop = shop("");
    let before = peak_rss_kb(&shop.daemon);
    let huge = blank_png(4096);
    let large = blank_png(2000); // 4 Mpx: decoded (scaled to full HD), but only two at a time
    eprintln!("figures: PNG bodies of {} and {} bytes", huge.len(), large.len());
    let url = format!("{}/v1/decode", shop.daemon.base_url);
    let storm: Vec<_> = (0..100)
        .map(|index| {
            let body = if index % 2 == 0 { huge.clone() } else { large.clone() };
            let url = url.clone();
            std::thread::spawn(move || {
                let response = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .post(url)
                    .bearer_auth(TILL_TOKEN)
                    .header("Content-Type", "image/png")
                    .body(body)
                    .send()
                    .unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let during = shop.pay();
    let statuses: Vec<u16> = storm.into_iter().map(|request| request.join().unwrap()).collect();
    let peak = peak_rss_kb(&shop.daemon);
    let count = |status: u16| statuses.iter().filter(|found| **found == status).count();
    eprintln!(
        "figures: 100 concurrent decodes: {} too large (413), {} busy (429), {} decoded (200); peak RSS {} MB (before the storm {} MB); a payment took {during:?}",
        count(413),
        count(429),
        count(200),
        peak / 1024,
        before / 1024
    );
    assert_eq!(count(413), 50, "every 4096×4096 image is refused from its header: {statuses:?}");
    assert_eq!(count(413) + count(429) + count(200), 100, "{statuses:?}");
    assert!(peak < 300 * 1024, "peak RSS {} MB", peak / 1024);
    assert!(during < Duration::from_secs(5), "a payment took {during:?} during the storm");
}

#[test]
fn ten_thousand_requests_with_made_up_methods_leave_metrics_bounded() {
    let shop = shop("global_rate_limit = 100000");
    let client = reqwest::blocking::Client::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name: String = (0..6).map(|shift| (b'A' + ((seed >> (shift * 5)) % 26) as u8) as char).collect();
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let _ = client.request(method, format!("{}/v1/payments", shop.daemon.base_url)).bearer_auth(TILL_TOKEN).send().unwrap();
    }
    let metrics = shop.daemon.get("/metrics").text().unwrap();
    let series = metrics.lines().filter(|line| line.starts_with("posbridge_http_requests_total")).count();
    let during = shop.pay();
    eprintln!(
        "figures: after 10,000 made-up methods, {series} HTTP request series, /metrics {} bytes; a payment took {during:?}",
        metrics.len()
    );
    assert!(metrics.contains("method=\"other\""), "made-up methods count as other");
    assert!(series < 20, "{series} series:\n{metrics}");
}
