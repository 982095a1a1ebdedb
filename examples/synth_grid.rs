//! Renders a grid of synthetic faces: ages 2 to 90 across, poses down (frontal, yaw,
//! pitch, roll), the picture in docs/datasets.md.
//!
//! `cargo run --release --example synth_grid -- docs/synthetic_faces.png`

use ldl::data::{render, SynthConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synthetic_faces.png".into());
    let size = 96u32;
    let config = SynthConfig {
        size,
        ..SynthConfig::default()
    };
    let ages = [2.0, 8.0, 15.0, 25.0, 40.0, 55.0, 70.0, 90.0];
    let poses = [
        (0.0, 0.0, 0.0),
        (45.0, 0.0, 0.0),
        (-80.0, 0.0, 0.0),
        (0.0, 35.0, 0.0),
        (0.0, -35.0, 0.0),
        (0.0, 0.0, 25.0),
    ];
    let mut grid = image::RgbImage::new(size * ages.len() as u32, size * poses.len() as u32);
    // Search the stream for faces close to each cell's age and pose (the generator draws
    // them at random), so the grid shows real samples, not special renders.
    for (row, pose) in poses.iter().enumerate() {
        for (column, age) in ages.iter().enumerate() {
            let config = SynthConfig {
                max_yaw: 90.0,
                ..config.clone()
            };
            let face = (0..200_000u64)
                .map(|i| (i, render_label(&config, i)))
                .find(|(_, l)| {
                    (l.0 - age).abs() < 4.0
                        && (l.1 - pose.0).abs() < 12.0
                        && (l.2 - pose.1).abs() < 12.0
                        && (l.3 - pose.2).abs() < 8.0
                })
                .map(|(i, _)| render(&config, i))
                .ok_or("no face found for a cell")?;
            for y in 0..size {
                for x in 0..size {
                    let p = ((y * size + x) * 3) as usize;
                    let pixel = image::Rgb([
                        face.image.pixels[p],
                        face.image.pixels[p + 1],
                        face.image.pixels[p + 2],
                    ]);
                    grid.put_pixel(column as u32 * size + x, row as u32 * size + y, pixel);
                }
            }
        }
    }
    grid.save(&out)?;
    println!("wrote {out}");
    Ok(())
}

fn render_label(config: &SynthConfig, index: u64) -> (f64, f64, f64, f64) {
    let face = render(
        &SynthConfig {
            size: 8,
            ..config.clone()
        },
        index,
    );
    (face.age, face.yaw, face.pitch, face.roll)
}
