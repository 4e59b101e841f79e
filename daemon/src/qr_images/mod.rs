//! QR codes in camera frames and screenshots (`POST /v1/decode`).
//!
//! rqrr alone misses dark-mode screens (light modules on dark) and blurred photos, and
//! most of its time on a receipt-sized code (version 15–16) goes to refining the code's
//! perspective by trial. So ([`Strategy::Staged`]):
//! - the frame's busy regions (16-pixel blocks with a wide range of grey) are located
//!   once, and everything works on a cropped region instead of the whole frame; a frame
//!   without contrast costs that one pass;
//! - each crop goes first to our own locator ([`locate`], [`Pass::Located`]): finder
//!   patterns, version, alignment patterns and a least-squares fit are measured on the
//!   crop's Otsu threshold, every module is read at its centre, and rqrr only decodes
//!   that grid (its error correction). It reads every kind of frame the benchmark makes,
//!   in a few ms;
//! - when it reads nothing (or sees finder patterns of a code it could not read), the
//!   crop is tried in rqrr's forms (Otsu threshold, local-mean threshold, rqrr's own,
//!   unsharp-masked, enlarged 2×), each as it is and inverted, until one yields a code,
//!   in measured cost × success order, the likely polarity first (a dark edge around
//!   the region means a dark-mode screen). The locator can thus only add codes;
//! - thresholds are handed to rqrr as bitmaps (no intermediate image), and inverting
//!   flips the comparison instead of copying; each form's image, integral image and
//!   Otsu threshold are made once and shared by both polarities and the locator;
//! - when other decodes leave cores idle, the next forms run on them in parallel, and
//!   the answer is still the first form in order that has codes.
//!
//! The benchmark `scanners` prints the old whole-frame order ([`Strategy::Exhaustive`])
//! beside this one, and how many frames the locator read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageReader};

mod locate;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the body is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
    #[error("the image is {width}×{height} pixels; at most {MAX_PIXELS} pixels and {MAX_SIDE} on a side are decoded")]
    TooLarge { width: u32, height: u32 },
}

/// The largest side accepted (a 4K frame fits).
pub const MAX_SIDE: u32 = 4096;
/// The most pixels decoded (a 3840×2160 frame fits), checked from the header before
/// anything is decoded.
pub const MAX_PIXELS: u64 = 8 * 1024 * 1024;
/// The most memory one decode may allocate.
const MAX_ALLOC: u64 = 96 * 1024 * 1024;

/// Which form of the image yielded the codes (for logs and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Our own locator and module sampler ([`locate`]) on the Otsu threshold; rqrr only
    /// decodes the sampled grid.
    Located,
    /// The image as it is: rqrr alone.
    AsIs,
    /// Black and white at the threshold that best splits the histogram (Otsu): blur.
    Global,
    /// Black where darker than the local mean: uneven light, glare.
    Local,
    /// Unsharp-masked, then Otsu: stronger blur.
    Sharpened,
    /// Unsharp-masked, then local threshold: blur with uneven light.
    SharpenedLocal,
    /// Enlarged 2×, then local threshold: very small modules.
    Enlarged,
    /// Enlarged 2×, strongly unsharp-masked, then Otsu: small and blurred.
    EnlargedSharpened,
}

/// The codes found in an image, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Every code's text, in the order found.
    pub codes: Vec<String>,
    /// The form that found them, and whether it was inverted (a dark-mode screen).
    pub by: Option<(Pass, bool)>,
}

/// Every QR code in a PNG or JPEG.
pub fn decode(bytes: &[u8]) -> Result<Found, ImageError> {
    let gray = load(bytes)?;
    Ok(find_codes(&gray))
}

/// The image's size, read from its header only.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|_| ImageError::UnknownFormat)?;
    reader.into_dimensions().map_err(|error| ImageError::Corrupt(error.to_string()))
}

/// The image's size from its header, or `TooLarge` when it exceeds [`MAX_PIXELS`] or
/// [`MAX_SIDE`]: the one size rule, checked before anything is decoded.
pub fn size_within_limits(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let (width, height) = dimensions(bytes)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS || width.max(height) > MAX_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok((width, height))
}

fn load(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(ImageError::UnknownFormat);
    }
    let (width, height) = size_within_limits(bytes)?;
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|error| match error {
        image::ImageError::Limits(_) => ImageError::TooLarge { width, height },
        other => ImageError::Corrupt(other.to_string()),
    })?;
    let gray = decoded.to_luma8();
    drop(decoded);
    Ok(scaled_for_scanning(gray))
}

/// Pixels scanned at most: a full-HD frame. Larger frames are scaled down first (a
/// receipt's modules stay several pixels wide), which bounds the scanner's working
/// memory (several bytes per pixel) and time.
const SCAN_PIXELS: u64 = 1920 * 1080;

fn scaled_for_scanning(gray: GrayImage) -> GrayImage {
    let pixels = u64::from(gray.width()) * u64::from(gray.height());
    if pixels <= SCAN_PIXELS {
        return gray;
    }
    let scale = (SCAN_PIXELS as f64 / pixels as f64).sqrt();
    let width = ((f64::from(gray.width()) * scale) as u32).max(1);
    let height = ((f64::from(gray.height()) * scale) as u32).max(1);
    imageops::resize(&gray, width, height, FilterType::Triangle)
}

/// How [`find_codes_with`] looks for codes. The benchmark prints both side by side.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The pipeline before [`Strategy::Staged`]: every form of the whole frame in the
    /// order [`Pass`] lists them, each as is then inverted, one at a time.
    Exhaustive,
    /// The busy regions of the frame located once; each cropped region read by our
    /// locator, then if needed tried in the forms of [`STAGED`] (measured cost ×
    /// success), on idle cores in parallel.
    Staged,
}

/// Reads the image's codes: our locator on each busy region, then rqrr's forms, each
/// as it is and inverted, until one has codes.
pub fn find_codes(gray: &GrayImage) -> Found {
    find_codes_with(gray, Strategy::Staged)
}

/// [`find_codes`] with a chosen strategy (the benchmark's "before" and "after").
#[doc(hidden)]
pub fn find_codes_with(gray: &GrayImage, strategy: Strategy) -> Found {
    let none = Found { codes: Vec::new(), by: None };
    if gray.width() == 0 || gray.height() == 0 {
        return none;
    }
    match strategy {
        Strategy::Exhaustive => {
            let order: Vec<(Pass, bool)> = EXHAUSTIVE.iter().flat_map(|&pass| [(pass, false), (pass, true)]).collect();
            first_hit(&Forms::new(gray), &order, 1)
        }
        Strategy::Staged => {
            let _decoding = Decoding::start();
            let workers = Decoding::idle_workers();
            busy_regions(gray)
                .into_iter()
                .map(|region| {
                    let crop = imageops::crop_imm(gray, region.x, region.y, region.width, region.height).to_image();
                    let dark = looks_dark(&crop);
                    let forms = Forms::new(&crop);
                    let located = located(&crop, forms.plain.threshold(&crop), dark);
                    if located.by.is_some() && !located.unexplained {
                        return Found { codes: located.codes, by: located.by };
                    }
                    // Every form in the likely polarity before any in the other.
                    let order: Vec<(Pass, bool)> = [dark, !dark].into_iter().flat_map(|invert| STAGED.map(|pass| (pass, invert))).collect();
                    let found = first_hit(&forms, &order, workers);
                    if located.by.is_none() {
                        return found;
                    }
                    // Ours read some codes but saw finder patterns of another: keep ours
                    // and add what rqrr found beside them.
                    let mut codes = located.codes;
                    codes.extend(found.codes.into_iter().filter(|code| !codes.contains(code)).collect::<Vec<_>>());
                    Found { codes, by: located.by }
                })
                .find(|found| found.by.is_some())
                .unwrap_or(none)
        }
    }
}

/// What our locator ([`locate`]) read on the crop's Otsu threshold, the likely polarity
/// first (the other only when the first reads nothing).
struct Located {
    codes: Vec<String>,
    by: Option<(Pass, bool)>,
    unexplained: bool,
}

fn located(crop: &GrayImage, threshold: u8, dark: bool) -> Located {
    let mut unexplained = false;
    for invert in [dark, !dark] {
        let found = locate::read_codes(crop, threshold, invert);
        if !found.codes.is_empty() {
            return Located { codes: found.codes, by: Some((Pass::Located, invert)), unexplained: found.unexplained };
        }
        unexplained |= found.unexplained;
    }
    Located { codes: Vec::new(), by: None, unexplained }
}

/// The old order: cheapest first on the whole frame.
const EXHAUSTIVE: [Pass; 7] =
    [Pass::AsIs, Pass::Global, Pass::Local, Pass::Sharpened, Pass::SharpenedLocal, Pass::Enlarged, Pass::EnlargedSharpened];

/// The order on a cropped region, by measured cost × success: on the benchmark's frames
/// Otsu alone decodes all but the strongest blur; a threshold costs a few ms when it
/// fails, rqrr ~20 ms when it succeeds, a 2× enlargement (slow to resize) comes last.
const STAGED: [Pass; 7] =
    [Pass::Global, Pass::Local, Pass::AsIs, Pass::Sharpened, Pass::SharpenedLocal, Pass::EnlargedSharpened, Pass::Enlarged];

/// Runs the forms in `order` on up to `workers` threads and returns the first in
/// `order` that has codes (the same answer as one thread gives). The first form runs
/// alone (it decodes most frames, and a second form beside it would only be waited
/// for); the rest share the workers, none taking a form after one that already hit.
fn first_hit(forms: &Forms, order: &[(Pass, bool)], workers: usize) -> Found {
    let Some((&first, rest)) = order.split_first() else { return Found { codes: Vec::new(), by: None } };
    let codes = forms.scan(first.0, first.1);
    if !codes.is_empty() {
        return Found { codes, by: Some(first) };
    }
    in_parallel(forms, rest, workers)
}

/// [`first_hit`] over `order`, on up to `workers` threads.
fn in_parallel(forms: &Forms, order: &[(Pass, bool)], workers: usize) -> Found {
    let next = AtomicUsize::new(0);
    let best: Mutex<Option<(usize, Vec<String>)>> = Mutex::new(None);
    let hit_before = |index: usize| best.lock().unwrap().as_ref().is_some_and(|(hit, _)| *hit < index);
    let work = || loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= order.len() || hit_before(index) {
            return;
        }
        let (pass, invert) = order[index];
        let codes = forms.scan(pass, invert);
        let mut best = best.lock().unwrap();
        if !codes.is_empty() && best.as_ref().is_none_or(|(hit, _)| index < *hit) {
            *best = Some((index, codes));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(work);
        }
        work();
    });
    match best.into_inner().unwrap() {
        Some((index, codes)) => Found { codes, by: Some(order[index]) },
        None => Found { codes: Vec::new(), by: None },
    }
}

/// Decodes in flight in this process, so that a decode only borrows cores that no other
/// decode is using.
static DECODING: AtomicUsize = AtomicUsize::new(0);

struct Decoding;

impl Decoding {
    fn start() -> Self {
        DECODING.fetch_add(1, Ordering::Relaxed);
        Decoding
    }

    /// Threads for this decode: its own, plus the cores other decodes leave idle (at
    /// most 4: the forms are few and the later ones rarely needed).
    fn idle_workers() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let others = DECODING.load(Ordering::Relaxed).saturating_sub(1);
        cores.saturating_sub(others).clamp(1, 4)
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        DECODING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The transformed images the passes threshold, each made once, when first needed (by
/// whichever worker needs it first), with its integral image and Otsu threshold.
struct Forms<'a> {
    gray: &'a GrayImage,
    plain: Base,
    sharpened: OnceLock<Base>,
    sharpened_less: OnceLock<Base>,
    enlarged: OnceLock<Base>,
    enlarged_sharpened: OnceLock<Base>,
}

impl<'a> Forms<'a> {
    fn new(gray: &'a GrayImage) -> Self {
        Forms {
            gray,
            plain: Base::default(),
            sharpened: OnceLock::new(),
            sharpened_less: OnceLock::new(),
            enlarged: OnceLock::new(),
            enlarged_sharpened: OnceLock::new(),
        }
    }

    /// The codes that rqrr finds in one form of the image.
    fn scan(&self, pass: Pass, invert: bool) -> Vec<String> {
        let gray = self.gray;
        match pass {
            Pass::Located => locate::read_codes(gray, self.plain.threshold(gray), invert).codes,
            Pass::AsIs => scan_grey(gray, invert),
            Pass::Global => self.plain.otsu(gray, invert),
            Pass::Local => self.plain.local(gray, invert),
            Pass::Sharpened => self.sharpened.get_or_init(|| Base::of(imageops::unsharpen(gray, 3.0, 0))).otsu_own(invert),
            Pass::SharpenedLocal => self.sharpened_less.get_or_init(|| Base::of(imageops::unsharpen(gray, 2.0, 0))).local_own(invert),
            Pass::Enlarged => self.enlarged().local_own(invert),
            Pass::EnlargedSharpened => {
                self.enlarged_sharpened.get_or_init(|| Base::of(imageops::unsharpen(self.enlarged().image(), 4.0, 0))).otsu_own(invert)
            }
        }
    }

    fn enlarged(&self) -> &Base {
        self.enlarged.get_or_init(|| Base::of(enlarged(self.gray)))
    }
}

/// One form of the image, with what its thresholds need, computed once for both
/// polarities (an inverted form flips the comparison instead of copying the image).
#[derive(Default)]
struct Base {
    image: Option<GrayImage>,
    integral: OnceLock<Integral>,
    otsu: OnceLock<u8>,
}

impl Base {
    fn of(image: GrayImage) -> Self {
        Base { image: Some(image), ..Base::default() }
    }

    fn image(&self) -> &GrayImage {
        self.image.as_ref().expect("a transformed form")
    }

    fn otsu_own(&self, invert: bool) -> Vec<String> {
        self.otsu(self.image(), invert)
    }

    fn local_own(&self, invert: bool) -> Vec<String> {
        self.local(self.image(), invert)
    }

    /// The Otsu threshold of `gray` (this form's image), computed once.
    fn threshold(&self, gray: &GrayImage) -> u8 {
        *self.otsu.get_or_init(|| otsu_threshold(gray))
    }

    /// Black at or below the Otsu threshold (above it when inverted).
    fn otsu(&self, gray: &GrayImage, invert: bool) -> Vec<String> {
        let threshold = self.threshold(gray);
        let (width, pixels) = (gray.width() as usize, gray.as_raw());
        scan_bitmap(gray, |x, y| (pixels[y * width + x] <= threshold) != invert)
    }

    /// Black where a pixel is darker than the mean of its neighbourhood (lighter when
    /// inverted): uneven light. A little beyond the mean, so flat areas stay white.
    fn local(&self, gray: &GrayImage, invert: bool) -> Vec<String> {
        let integral = self.integral.get_or_init(|| Integral::new(gray));
        let radius = (gray.width().min(gray.height()) as usize / 16).clamp(4, 64);
        let (width, pixels) = (gray.width() as usize, gray.as_raw());
        scan_bitmap(gray, |x, y| {
            let (sum, count) = integral.around(x, y, radius);
            let pixel = u64::from(pixels[y * width + x]);
            if invert {
                (255 - pixel) * count * 100 < (255 * count - sum) * 92
            } else {
                pixel * count * 100 < sum * 92
            }
        })
    }
}

/// rqrr's own threshold (a running mean along each row) on the grey image.
fn scan_grey(gray: &GrayImage, invert: bool) -> Vec<String> {
    let (width, pixels) = (gray.width() as usize, gray.as_raw());
    let flip = if invert { 255 } else { 0 };
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(width, gray.height() as usize, |x, y| pixels[y * width + x] ^ flip);
    deduped(prepared.detect_grids().iter().filter_map(|grid| grid.decode().ok().map(|(_, content)| content)).collect())
}

/// rqrr on a black-and-white form given pixel by pixel (no intermediate image).
fn scan_bitmap(gray: &GrayImage, black: impl Fn(usize, usize) -> bool) -> Vec<String> {
    let mut prepared = rqrr::PreparedImage::prepare_from_bitmap(gray.width() as usize, gray.height() as usize, black);
    deduped(prepared.detect_grids().iter().filter_map(|grid| grid.decode().ok().map(|(_, content)| content)).collect())
}

/// The texts rqrr decoded, each once.
fn deduped(mut codes: Vec<String>) -> Vec<String> {
    codes.dedup();
    codes
}

fn enlarged(gray: &GrayImage) -> GrayImage {
    // Large frames are not enlarged: their modules are big enough already.
    if gray.width().max(gray.height()) > MAX_SIDE / 2 {
        return gray.clone();
    }
    imageops::resize(gray, gray.width() * 2, gray.height() * 2, FilterType::Triangle)
}

/// Sums of every rectangle from the origin: the sum over any box in O(1).
struct Integral {
    width: usize,
    height: usize,
    sums: Vec<u32>,
}

impl Integral {
    fn new(gray: &GrayImage) -> Self {
        let (width, height) = (gray.width() as usize, gray.height() as usize);
        let stride = width + 1;
        let mut sums = vec![0u32; stride * (height + 1)];
        for (y, row) in gray.as_raw().chunks_exact(width).enumerate() {
            let mut run = 0u32;
            for (x, &pixel) in row.iter().enumerate() {
                run += u32::from(pixel);
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + run;
            }
        }
        Integral { width, height, sums }
    }

    /// The sum and the number of the pixels at most `radius` from (x, y) along each axis.
    fn around(&self, x: usize, y: usize, radius: usize) -> (u64, u64) {
        let stride = self.width + 1;
        let (x0, y0) = (x.saturating_sub(radius), y.saturating_sub(radius));
        let (x1, y1) = ((x + radius + 1).min(self.width), (y + radius + 1).min(self.height));
        let at = |x: usize, y: usize| u64::from(self.sums[y * stride + x]);
        (at(x1, y1) + at(x0, y0) - at(x1, y0) - at(x0, y1), ((x1 - x0) * (y1 - y0)) as u64)
    }
}

/// The threshold that best splits the histogram in two (Otsu).
fn otsu_threshold(gray: &GrayImage) -> u8 {
    let mut histogram = [0u64; 256];
    for &pixel in gray.as_raw() {
        histogram[usize::from(pixel)] += 1;
    }
    let total: u64 = histogram.iter().sum();
    let sum_all: u64 = histogram.iter().enumerate().map(|(value, count)| value as u64 * count).sum();
    let (mut below, mut sum_below, mut best, mut threshold) = (0u64, 0u64, 0f64, 128u8);
    for (value, count) in histogram.iter().enumerate() {
        below += count;
        sum_below += value as u64 * count;
        let above = total - below;
        if below == 0 || above == 0 {
            continue;
        }
        let mean_below = sum_below as f64 / below as f64;
        let mean_above = (sum_all - sum_below) as f64 / above as f64;
        let between = below as f64 * above as f64 * (mean_below - mean_above).powi(2);
        if between > best {
            best = between;
            threshold = value as u8;
        }
    }
    threshold
}

/// The side of the square blocks whose contrast [`busy_regions`] measures.
const BLOCK: u32 = 16;

/// A rectangle of the frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

/// Where codes may be, largest first: the bounding boxes of clusters of busy blocks
/// (a wide range of grey, as a code's modules make even when blurred; a flat or gently
/// shaded background never is), with a margin for the quiet zone. The expensive forms
/// then work on these crops instead of the whole frame, and a frame without contrast
/// costs one pass.
fn busy_regions(gray: &GrayImage) -> Vec<Region> {
    let busy = busy_blocks(gray);
    let (columns, rows) = (gray.width().div_ceil(BLOCK) as usize, gray.height().div_ceil(BLOCK) as usize);
    let mut seen = vec![false; busy.len()];
    let mut regions = Vec::new();
    for start in 0..busy.len() {
        if !busy[start] || seen[start] {
            continue;
        }
        // Flood the cluster (8-connected), keeping its bounding box in blocks.
        let (mut left, mut top, mut right, mut bottom) = (columns, rows, 0, 0);
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(block) = stack.pop() {
            let (column, row) = (block % columns, block / columns);
            (left, top, right, bottom) = (left.min(column), top.min(row), right.max(column), bottom.max(row));
            for (dx, dy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                let (c, r) = (column as isize + dx, row as isize + dy);
                if c < 0 || r < 0 || c >= columns as isize || r >= rows as isize {
                    continue;
                }
                let neighbour = r as usize * columns + c as usize;
                if busy[neighbour] && !seen[neighbour] {
                    seen[neighbour] = true;
                    stack.push(neighbour);
                }
            }
        }
        // A code of 21 modules of at least 2 pixels spans more than two blocks.
        if right - left >= 1 && bottom - top >= 1 {
            regions.push(with_margin(gray, left as u32, top as u32, right as u32 + 1, bottom as u32 + 1));
        }
    }
    regions.sort_by_key(|region| std::cmp::Reverse(u64::from(region.width) * u64::from(region.height)));
    regions.truncate(MAX_REGIONS);
    regions
}

/// The most regions tried in a frame: a cluttered scene is one large region anyway.
const MAX_REGIONS: usize = 4;

/// Blocks `left..right` × `top..bottom` in pixels, two blocks wider on every side
/// (the quiet zone rqrr needs), clipped to the frame.
fn with_margin(gray: &GrayImage, left: u32, top: u32, right: u32, bottom: u32) -> Region {
    let x = (left * BLOCK).saturating_sub(2 * BLOCK);
    let y = (top * BLOCK).saturating_sub(2 * BLOCK);
    let x1 = ((right + 2) * BLOCK).min(gray.width());
    let y1 = ((bottom + 2) * BLOCK).min(gray.height());
    Region { x, y, width: x1 - x, height: y1 - y }
}

/// Whether each block's range of grey is wide: at least a third of the widest block's,
/// and at least 24 levels (camera noise stays below).
fn busy_blocks(gray: &GrayImage) -> Vec<bool> {
    let (width, block) = (gray.width() as usize, BLOCK as usize);
    let columns = width.div_ceil(block);
    let rows = (gray.height() as usize).div_ceil(block);
    let (mut low, mut high) = (vec![255u8; columns * rows], vec![0u8; columns * rows]);
    for (y, row) in gray.as_raw().chunks_exact(width).enumerate() {
        let blocks = (y / block) * columns;
        for (column, run) in row.chunks(block).enumerate() {
            let (run_low, run_high) = run.iter().fold((255u8, 0u8), |(low, high), &pixel| (low.min(pixel), high.max(pixel)));
            low[blocks + column] = low[blocks + column].min(run_low);
            high[blocks + column] = high[blocks + column].max(run_high);
        }
    }
    let ranges: Vec<u8> = low.iter().zip(&high).map(|(low, high)| high.saturating_sub(*low)).collect();
    let widest = ranges.iter().copied().max().unwrap_or(0);
    let least = (widest / 3).max(24);
    ranges.iter().map(|range| *range >= least).collect()
}

/// Whether the region's edge (the quiet zone around a code) is dark: a dark-mode screen,
/// so the inverted forms go first.
fn looks_dark(crop: &GrayImage) -> bool {
    let (width, height) = (crop.width(), crop.height());
    let edge = (0..width).flat_map(|x| [(x, 0), (x, height - 1)]).chain((0..height).flat_map(|y| [(0, y), (width - 1, y)]));
    let (sum, count) = edge.fold((0u64, 0u64), |(sum, count), (x, y)| (sum + u64::from(crop.get_pixel(x, y)[0]), count + 1));
    sum < 128 * count
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;
    use posbridge_testkit::images::{qr_frame, rotated};

    const TEXT: &str = "tx_R60D21hL60bj5N1v and some more text so the code has a few versions' worth of modules";

    fn found(frame: &GrayImage) -> Vec<String> {
        find_codes(frame).codes
    }

    #[test]
    fn dark_mode_is_found_inverted() {
        let mut frame = qr_frame(TEXT, 6);
        imageops::invert(&mut frame);
        let found = find_codes(&frame);
        assert_eq!(found.codes, [TEXT]);
        assert!(found.by.is_some_and(|(_, inverted)| inverted), "{found:?}");
    }

    #[test]
    fn small_modules_and_rotation() {
        assert_eq!(found(&qr_frame(TEXT, 2)), [TEXT]);
        assert_eq!(found(&rotated(&qr_frame(TEXT, 4), 23.0)), [TEXT]);
    }

    #[test]
    fn uneven_light_and_blur() {
        // Light falling off from left to right, to a third of the brightness.
        let frame = qr_frame(TEXT, 5);
        let shaded = GrayImage::from_fn(frame.width(), frame.height(), |x, y| {
            let light = 1.0 - 0.66 * x as f32 / frame.width() as f32;
            Luma([(f32::from(frame.get_pixel(x, y)[0]) * light) as u8])
        });
        assert_eq!(found(&shaded), [TEXT]);
        assert_eq!(found(&imageops::blur(&frame, 2.0)), [TEXT]);
    }

    #[test]
    fn every_strategy_finds_the_same_and_a_blank_frame_has_none() {
        let frame = rotated(&qr_frame(TEXT, 6), 17.0);
        assert_eq!(find_codes_with(&frame, Strategy::Exhaustive).codes, find_codes_with(&frame, Strategy::Staged).codes);
        assert_eq!(find_codes(&GrayImage::from_pixel(640, 480, Luma([200]))), Found { codes: Vec::new(), by: None });
        assert_eq!(find_codes(&GrayImage::new(0, 0)).by, None);
    }

    #[test]
    fn busy_regions_frame_the_code_with_a_margin() {
        let regions = busy_regions(&qr_frame(TEXT, 6));
        assert_eq!(regions.len(), 1, "{regions:?}");
        let region = regions[0];
        // The code and its quiet zone are centred; the region holds them and little else.
        assert!(region.width < 640 && region.height < 640, "{region:?}");
        assert!(region.x < 640 && region.x + region.width > 640, "{region:?}");
    }
}
