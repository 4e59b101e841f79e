//! QR codes in camera frames and screenshots (`POST /v1/decode`).
//!
//! rqrr alone misses dark-mode screens (light modules on dark) and blurred photos. Each
//! image is therefore tried in a few forms, cheapest first, each as it is and inverted,
//! until one yields a code: as is; a global (Otsu) threshold; a threshold against the
//! local mean (uneven light); unsharp-masked then thresholded (blur); enlarged 2× (very
//! small modules). The benchmark `qr_decode` measures what each form recovers.

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageReader, Luma};

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

/// Tries each form of the image, as it is and inverted, cheapest first, until one has
/// codes.
pub fn find_codes(gray: &GrayImage) -> Found {
    let forms: [(Pass, &dyn Fn() -> GrayImage); 7] = [
        (Pass::AsIs, &|| gray.clone()),
        (Pass::Global, &|| otsu(gray)),
        (Pass::Local, &|| binarized(gray)),
        (Pass::Sharpened, &|| otsu(&imageops::unsharpen(gray, 3.0, 0))),
        (Pass::SharpenedLocal, &|| binarized(&imageops::unsharpen(gray, 2.0, 0))),
        (Pass::Enlarged, &|| binarized(&enlarged(gray))),
        (Pass::EnlargedSharpened, &|| otsu(&imageops::unsharpen(&enlarged(gray), 4.0, 0))),
    ];
    for (pass, form) in forms {
        let image = form();
        for invert in [false, true] {
            let codes = if invert { scan(&inverted(&image)) } else { scan(&image) };
            if !codes.is_empty() {
                return Found { codes, by: Some((pass, invert)) };
            }
        }
    }
    Found { codes: Vec::new(), by: None }
}

fn scan(gray: &GrayImage) -> Vec<String> {
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(gray.width() as usize, gray.height() as usize, |x, y| {
        gray.get_pixel(x as u32, y as u32)[0]
    });
    let mut codes: Vec<String> = prepared.detect_grids().iter().filter_map(|grid| grid.decode().ok().map(|(_, content)| content)).collect();
    codes.dedup();
    codes
}

fn inverted(gray: &GrayImage) -> GrayImage {
    let mut copy = gray.clone();
    imageops::invert(&mut copy);
    copy
}

fn enlarged(gray: &GrayImage) -> GrayImage {
    // Large frames are not enlarged: their modules are big enough already.
    if gray.width().max(gray.height()) > MAX_SIDE / 2 {
        return gray.clone();
    }
    imageops::resize(gray, gray.width() * 2, gray.height() * 2, FilterType::Triangle)
}

/// Black where a pixel is darker than the mean of its neighbourhood (an integral image
/// makes each mean O(1)), white elsewhere.
fn binarized(gray: &GrayImage) -> GrayImage {
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    let radius = (width.min(height) / 16).clamp(4, 64);
    let mut integral = vec![0u64; (width + 1) * (height + 1)];
    for y in 0..height {
        let mut row = 0u64;
        for x in 0..width {
            row += u64::from(gray.get_pixel(x as u32, y as u32)[0]);
            integral[(y + 1) * (width + 1) + x + 1] = integral[y * (width + 1) + x + 1] + row;
        }
    }
    GrayImage::from_fn(width as u32, height as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let (x0, y0) = (x.saturating_sub(radius), y.saturating_sub(radius));
        let (x1, y1) = ((x + radius + 1).min(width), (y + radius + 1).min(height));
        let sum = integral[y1 * (width + 1) + x1] + integral[y0 * (width + 1) + x0]
            - integral[y0 * (width + 1) + x1]
            - integral[y1 * (width + 1) + x0];
        let mean = sum / ((x1 - x0) * (y1 - y0)) as u64;
        let pixel = u64::from(gray.get_pixel(x as u32, y as u32)[0]);
        // A little below the mean, so flat areas stay white rather than noisy.
        Luma([if pixel * 100 < mean * 92 { 0 } else { 255 }])
    })
}

/// Black below the threshold that best splits the histogram in two (Otsu), white above.
fn otsu(gray: &GrayImage) -> GrayImage {
    let mut histogram = [0u64; 256];
    for pixel in gray.pixels() {
        histogram[usize::from(pixel[0])] += 1;
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
    GrayImage::from_fn(gray.width(), gray.height(), |x, y| Luma([if gray.get_pixel(x, y)[0] <= threshold { 0 } else { 255 }]))
}
