//! Line charts exported as PNG or SVG (plotters), for `osd analyze`,
//! `osd tune` and `bench --plot`. The font is bundled so PNG text renders
//! on machines without system fonts.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

/// Errors of plot export.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}: plots are written as .png or .svg")]
    Format(String),
    #[error("plot: {0}")]
    Draw(String),
}

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, axis labels, lines.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Registration fails only for a malformed font, which is bundled.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Writes `chart` to `path`, as PNG or SVG by extension, 900×560 pixels.
pub fn write_chart(chart: &Chart, path: &Path) -> Result<(), PlotError> {
    register();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = (900, 560);
    match ext.as_deref() {
        Some("png") => in_place_of(path, |tmp| {
            draw(BitMapBackend::new(tmp, size).into_drawing_area(), chart)
        }),
        Some("svg") => in_place_of(path, |tmp| {
            draw(SVGBackend::new(tmp, size).into_drawing_area(), chart)
        }),
        _ => Err(PlotError::Format(path.display().to_string())),
    }
}

/// Draws into a temp file beside `path` (same extension, which plotters
/// goes by) and renames it into place: a failed or killed export never
/// leaves a half image at `path`.
fn in_place_of(
    path: &Path,
    draw: impl FnOnce(&Path) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    crate::format::atomic::refuse_special_target(path)
        .map_err(|e| PlotError::Draw(e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A fresh, unpredictable name (created exclusively), so nothing planted
    // at a guessable temp path can receive the image.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}", crate::format::atomic::TEMP_MARK))
        .suffix(&format!(
            ".tmp.{}",
            path.extension().and_then(|e| e.to_str()).unwrap_or("out")
        ))
        .tempfile_in(dir)
        .map_err(|e| PlotError::Draw(format!("{}: {e}", dir.display())))?
        .into_temp_path();
    draw(&tmp)?;
    tmp.persist(path)
        .map_err(|e| PlotError::Draw(format!("{}: {}", path.display(), e.error)))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, y_min.min(0.0)..y_max * 1.02)
        .map_err(|e| err(&e))?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, series) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        ctx.draw_series(LineSeries::new(
            series.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(series.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    if chart.series.len() > 1 {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One horizontal bar.
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// Horizontal bars on a log axis with a reference line (1 = the anchor),
/// for `bench --plot`: how each figure compares with what it is measured
/// against.
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub bars: Vec<Bar>,
}

/// Writes `chart` to `path`, as PNG or SVG by extension; the height grows
/// with the number of bars.
pub fn write_bars(chart: &BarChart, path: &Path) -> Result<(), PlotError> {
    register();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let height = 120
        + 34 * u32::try_from(chart.bars.len())
            .unwrap_or(u32::MAX / 64)
            .min(200);
    let size = (1100, height);
    match ext.as_deref() {
        Some("png") => in_place_of(path, |tmp| {
            draw_bars(BitMapBackend::new(tmp, size).into_drawing_area(), chart)
        }),
        Some("svg") => in_place_of(path, |tmp| {
            draw_bars(SVGBackend::new(tmp, size).into_drawing_area(), chart)
        }),
        _ => Err(PlotError::Format(path.display().to_string())),
    }
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &BarChart,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let finite = || {
        chart
            .bars
            .iter()
            .map(|b| b.value)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    // A log axis spanning every bar and 1 (the anchor), padded a little.
    let lo = finite().fold(1.0f64, f64::min) / 1.5;
    let hi = finite().fold(1.0f64, f64::max) * 1.5;
    let n = chart.bars.len();
    let label_width = chart
        .bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(10, 70);
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(u32::try_from(label_width * 8).unwrap_or(560))
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n.max(1) as f64)
        .map_err(|e| err(&e))?;
    let labels: Vec<String> = chart.bars.iter().map(|b| b.label.clone()).collect();
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .x_labels(5)
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_labels(n.max(1) * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at bar centres (i + 0.5); other ticks stay blank.
            let i = (*y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(n - 1 - i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .disable_y_mesh()
        .draw()
        .map_err(|e| err(&e))?;
    for (i, bar) in chart.bars.iter().enumerate() {
        if !(bar.value.is_finite() && bar.value > 0.0) {
            continue;
        }
        let y = (n - 1 - i) as f64;
        let color = if bar.value >= 1.0 {
            GREEN.mix(0.7)
        } else {
            RED.mix(0.7)
        };
        ctx.draw_series(std::iter::once(Rectangle::new(
            [(lo, y + 0.15), (bar.value, y + 0.85)],
            color.filled(),
        )))
        .map_err(|e| err(&e))?;
        ctx.draw_series(std::iter::once(Text::new(
            format!("×{:.2}", bar.value),
            (bar.value, y + 0.35),
            ("sans-serif", 13),
        )))
        .map_err(|e| err(&e))?;
    }
    ctx.draw_series(LineSeries::new(
        [(1.0, 0.0), (1.0, n as f64)],
        BLACK.stroke_width(1),
    ))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "energy retained".into(),
            x_label: "rank".into(),
            y_label: "energy".into(),
            series: vec![Series {
                name: "overall".into(),
                points: (0..=8).map(|k| (k as f64, 1.0 - 0.5f64.powi(k))).collect(),
            }],
        }
    }

    #[test]
    fn png_and_svg_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("c.png");
        write_chart(&chart(), &png).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let svg = dir.path().join("c.svg");
        write_chart(&chart(), &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("energy retained"));
        assert!(matches!(
            write_chart(&chart(), &dir.path().join("c.gif")),
            Err(PlotError::Format(_))
        ));
    }

    #[test]
    fn bars_are_written_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let bars = BarChart {
            title: "speed vs anchors".into(),
            x_label: "relative speed".into(),
            bars: vec![
                Bar {
                    label: "cold load vs safetensors".into(),
                    value: 1.3,
                },
                Bar {
                    label: "fuse vs memcpy".into(),
                    value: 0.2,
                },
                Bar {
                    label: "not measured".into(),
                    value: f64::NAN,
                },
            ],
        };
        let svg = dir.path().join("b.svg");
        write_bars(&bars, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("cold load vs safetensors") && text.contains("×0.20"));
        let png = dir.path().join("b.png");
        write_bars(&bars, &png).unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    }
}
