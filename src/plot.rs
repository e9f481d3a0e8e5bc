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
        Some("png") => draw(BitMapBackend::new(path, size).into_drawing_area(), chart),
        Some("svg") => draw(SVGBackend::new(path, size).into_drawing_area(), chart),
        _ => Err(PlotError::Format(path.display().to_string())),
    }
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
}
