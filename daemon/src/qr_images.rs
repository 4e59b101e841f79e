//! QR codes in camera frames and screenshots (`POST /v1/decode`).
//!
//! rqrr alone misses dark-mode screens (light modules on dark), blurred photos and small
//! codes (3 px per module). Each image is therefore tried in a few forms, cheapest first,
//! until one yields a code: as is; inverted; binarized against the local mean (blur and
//! uneven light), both ways; and enlarged 2× then binarized (small modules).

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageReader, Luma};

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the body is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
    #[error("the image is larger than {max}×{max} pixels")]
    TooLarge { max: u32 },
}

/// The largest side accepted (a 4K frame fits).
pub const MAX_SIDE: u32 = 4096;

/// Which form of the image yielded the codes (for metrics and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    AsIs,
    Inverted,
    Binarized,
    BinarizedInverted,
    Enlarged,
    EnlargedInverted,
}

/// Every QR code found in a PNG or JPEG, and the pass that found them.
pub fn decode(bytes: &[u8]) -> Result<(Vec<String>, Option<Pass>), ImageError> {
    let gray = load(bytes)?;
    Ok(find_codes(&gray))
}

fn load(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnknownFormat)?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(ImageError::UnknownFormat);
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|error| match error {
        image::ImageError::Limits(_) => ImageError::TooLarge { max: MAX_SIDE },
        other => ImageError::Corrupt(other.to_string()),
    })?;
    Ok(decoded.to_luma8())
}

/// Tries the forms of the image in order until one has codes.
pub fn find_codes(gray: &GrayImage) -> (Vec<String>, Option<Pass>) {
    let attempts: [(Pass, &dyn Fn() -> GrayImage); 6] = [
        (Pass::AsIs, &|| gray.clone()),
        (Pass::Inverted, &|| inverted(gray)),
        (Pass::Binarized, &|| binarized(gray)),
        (Pass::BinarizedInverted, &|| inverted(&binarized(gray))),
        (Pass::Enlarged, &|| binarized(&enlarged(gray))),
        (Pass::EnlargedInverted, &|| inverted(&binarized(&enlarged(gray)))),
    ];
    for (pass, form) in attempts {
        let codes = scan(&form());
        if !codes.is_empty() {
            return (codes, Some(pass));
        }
    }
    (Vec::new(), None)
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
