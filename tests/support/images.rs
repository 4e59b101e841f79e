//! Phone-screen images of QR codes, made in the test: a code on a 1280×720 frame,
//! rotated, blurred or inverted by the caller.

use image::{GrayImage, Luma};

/// A QR code drawn as a phone screen shows it: `module` pixels per module, light quiet
/// zone, in a 1280×720 frame.
pub fn qr_frame(text: &str, module: u32) -> GrayImage {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    let width = code.width() as u32;
    let colors = code.to_colors();
    let size = (width + 8) * module;
    let mut frame = GrayImage::from_pixel(1280, 720, Luma([235]));
    let (left, top) = ((1280 - size) / 2, (720 - size) / 2);
    for y in 0..size {
        for x in 0..size {
            let (mx, my) = ((x / module) as i64 - 4, (y / module) as i64 - 4);
            let dark = (0..width as i64).contains(&mx)
                && (0..width as i64).contains(&my)
                && colors[(my as u32 * width + mx as u32) as usize] == qrcode::Color::Dark;
            frame.put_pixel(left + x, top + y, Luma([if dark { 20 } else { 250 }]));
        }
    }
    frame
}

/// Rotates about the centre (bilinear), the corners filled with the background.
pub fn rotated(image: &GrayImage, degrees: f32) -> GrayImage {
    let (width, height) = (image.width() as f32, image.height() as f32);
    let (sin, cos) = degrees.to_radians().sin_cos();
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        let (dx, dy) = (x as f32 - width / 2.0, y as f32 - height / 2.0);
        let (sx, sy) = (cos * dx + sin * dy + width / 2.0, -sin * dx + cos * dy + height / 2.0);
        if sx < 0.0 || sy < 0.0 || sx >= width - 1.0 || sy >= height - 1.0 {
            return Luma([235]);
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let at = |x: u32, y: u32| f32::from(image.get_pixel(x, y)[0]);
        let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
        let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
        Luma([(top * (1.0 - fy) + bottom * fy).round() as u8])
    })
}

pub fn encode(image: &GrayImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(image.clone()).write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}
