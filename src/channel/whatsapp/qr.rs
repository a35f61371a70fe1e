//! The pairing QR code, for a terminal and as a PNG file (for a headless device, fetch it and scan it).

use std::path::Path;

use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, QrCode};

use crate::channel::whatsapp::WhatsAppError;
use crate::channel::whatsapp::auth::write_private;

/// Pixels per QR module in the PNG.
pub const PNG_SCALE: usize = 8;
/// Light modules around the code, as the QR specification asks.
pub const QUIET_ZONE: usize = 4;

fn encode(data: &str) -> Result<QrCode, WhatsAppError> {
    QrCode::new(data.as_bytes()).map_err(|e| WhatsAppError::Qr(e.to_string()))
}

/// The code as text, two modules per character cell. Colours are inverted for the usual dark
/// terminal background (light text draws the dark modules); phone scanners accept both.
pub fn render_terminal(data: &str) -> Result<String, WhatsAppError> {
    Ok(encode(data)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The code as an 8-bit greyscale PNG: dark modules black, everything else white.
pub fn png_bytes(data: &str) -> Result<Vec<u8>, WhatsAppError> {
    let code = encode(data)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET_ZONE, i / modules + QUIET_ZONE);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            pixels[y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let side32 = u32::try_from(side).map_err(|e| WhatsAppError::Qr(e.to_string()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side32, side32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let png_err = |e: png::EncodingError| WhatsAppError::Qr(e.to_string());
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&pixels).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

/// Writes the PNG (mode 0600: while valid, the code links a device to the account).
pub fn write_png(data: &str, path: &Path) -> Result<(), WhatsAppError> {
    write_private(path, &png_bytes(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DATA: &str = "2@AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/==,ref,pubkey,identity,adv";

    #[test]
    fn png_decodes_to_the_same_modules() {
        let bytes = png_bytes(DATA).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        let code = QrCode::new(DATA.as_bytes()).unwrap();
        let modules = code.width();
        let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
        assert_eq!(frame.width as usize, side);
        assert_eq!(frame.height as usize, side);
        assert_eq!(frame.color_type, png::ColorType::Grayscale);
        // Sample the centre pixel of every module, and the quiet zone.
        let colors = code.to_colors();
        for (i, color) in colors.iter().enumerate() {
            let x = (i % modules + QUIET_ZONE) * PNG_SCALE + PNG_SCALE / 2;
            let y = (i / modules + QUIET_ZONE) * PNG_SCALE + PNG_SCALE / 2;
            let expected = if *color == Color::Dark { 0 } else { 255 };
            assert_eq!(buf[y * side + x], expected, "module {i}");
        }
        assert!(
            buf[..side * QUIET_ZONE * PNG_SCALE]
                .iter()
                .all(|&p| p == 255)
        );
    }

    #[test]
    fn png_file_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("qr.png");
        write_png(DATA, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn terminal_rendering_is_square_with_quiet_zone() {
        let text = render_terminal(DATA).unwrap();
        let code = QrCode::new(DATA.as_bytes()).unwrap();
        let cols = code.width() + 2 * QUIET_ZONE;
        let lines: Vec<&str> = text.lines().collect();
        // Two modules per line, rounded up.
        assert_eq!(lines.len(), cols.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == cols));
        // Inverted: the quiet zone is drawn with full blocks.
        assert!(lines[0].chars().all(|c| c == '█'));
    }
}
