//! The `hid` source: a USB HID scanner through hidapi, one reader thread per device,
//! surviving unplug and replug. Also the technician's `scanners list` and `record`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hidapi::{DeviceInfo, HidApi};

use super::Feed;

/// Which device a `[[scanners]]` entry means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMatch {
    pub vendor_id: u16,
    pub product_id: u16,
    pub serial: Option<String>,
    pub usage_page: Option<u16>,
}

impl DeviceMatch {
    fn matches(&self, device: &DeviceInfo) -> bool {
        device.vendor_id() == self.vendor_id
            && device.product_id() == self.product_id
            && self.serial.as_deref().is_none_or(|serial| device.serial_number() == Some(serial))
            && self.usage_page.is_none_or(|page| device.usage_page() == page)
    }
}

/// One HID device present, for `posbridge scanners list`.
#[derive(Debug, Clone)]
pub struct PresentDevice {
    pub vendor_id: u16,
    pub product_id: u16,
    pub usage_page: u16,
    pub usage: u16,
    pub serial: Option<String>,
    pub product: Option<String>,
    pub manufacturer: Option<String>,
    pub path: String,
}

/// hidapi allows one context per process: shared by every reader.
pub type SharedApi = Arc<Mutex<HidApi>>;

/// Opens the hidapi context.
pub fn open_api() -> Result<SharedApi, String> {
    HidApi::new().map(|api| Arc::new(Mutex::new(api))).map_err(|error| format!("cannot start hidapi: {error}"))
}

/// The HID devices present now.
pub fn list(api: &SharedApi) -> Result<Vec<PresentDevice>, String> {
    let mut api = api.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    api.refresh_devices().map_err(|error| format!("cannot list HID devices: {error}"))?;
    Ok(api
        .device_list()
        .map(|device| PresentDevice {
            vendor_id: device.vendor_id(),
            product_id: device.product_id(),
            usage_page: device.usage_page(),
            usage: device.usage(),
            serial: device.serial_number().map(str::to_string),
            product: device.product_string().map(str::to_string),
            manufacturer: device.manufacturer_string().map(str::to_string),
            path: device.path().to_string_lossy().into_owned(),
        })
        .collect())
}

fn open(api: &SharedApi, wanted: &DeviceMatch) -> Option<(hidapi::HidDevice, String)> {
    let mut api = api.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    api.refresh_devices().ok()?;
    let info = api.device_list().find(|device| wanted.matches(device))?.clone();
    let device = info.open_device(&api).ok()?;
    Some((device, info.path().to_string_lossy().into_owned()))
}

/// How often an absent scanner is looked for again.
const REPLUG_POLL: Duration = Duration::from_secs(1);
/// Bytes read per report (HID POS reports are 64 bytes, keyboards 8).
const READ_BUFFER: usize = 64;

/// Reads the matching device until the feed says stop, reconnecting after an unplug.
pub fn run(api: SharedApi, wanted: DeviceMatch, idle_every: Duration, feed: &mut dyn Feed) {
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut announced_absent = false;
    while feed.keep_going() {
        let Some((device, path)) = open(&api, &wanted) else {
            if !announced_absent {
                feed.disconnected("not connected");
                announced_absent = true;
            }
            std::thread::sleep(REPLUG_POLL);
            continue;
        };
        feed.connected(&path);
        let mut buffer = [0u8; READ_BUFFER];
        let reason = loop {
            if !feed.keep_going() {
                break "stopped".to_string();
            }
            match device.read_timeout(&mut buffer, idle_every.as_millis() as i32) {
                Ok(0) => feed.idle(now()),
                Ok(length) => feed.report(now(), &buffer[..length]),
                Err(error) => break format!("unplugged or failed: {error}"),
            }
        };
        feed.end_of_input();
        feed.disconnected(&reason);
        announced_absent = true;
    }
}

/// Writes the raw reports of the device `wanted` to `out`, one `@<ms> <hex>` line each,
/// until `stop` says so; answers how many were written.
pub fn record(api: &SharedApi, wanted: &DeviceMatch, out: &mut dyn Write, stop: &dyn Fn() -> bool) -> Result<u64, String> {
    let (device, path) = open(api, wanted).ok_or_else(|| {
        format!("no HID device {:04x}:{:04x} is connected (see `posbridge scanners list`)", wanted.vendor_id, wanted.product_id)
    })?;
    writeln!(out, "# posbridge recording of {:04x}:{:04x} at {path}", wanted.vendor_id, wanted.product_id)
        .map_err(|error| error.to_string())?;
    let started = Instant::now();
    let mut buffer = [0u8; READ_BUFFER];
    let mut written = 0;
    while !stop() {
        match device.read_timeout(&mut buffer, 200) {
            Ok(0) => {}
            Ok(length) => {
                writeln!(out, "@{} {}", started.elapsed().as_millis(), hex::encode(&buffer[..length]))
                    .map_err(|error| error.to_string())?;
                out.flush().map_err(|error| error.to_string())?;
                written += 1;
            }
            Err(error) => return Err(format!("reading the device failed: {error}")),
        }
    }
    Ok(written)
}
