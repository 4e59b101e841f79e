//! Serves the fake provider: `fake-provider [LISTEN] [API_KEY]` (defaults
//! `127.0.0.1:9911` and the key in plugin-test.toml).

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9911".to_string());
    let api_key = args.next().unwrap_or_else(|| "fake-api-key-0123456789".to_string());
    let fake = {{crate_name}}::fake::FakeProvider::new(&api_key);
    fake.serve(&listen)
}
