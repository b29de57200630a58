//! PNG line charts of eval and bench results. The font is embedded
//! (DejaVu Sans, see assets/DejaVuSans.LICENSE), so plots look the same on
//! every machine and need no system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{EvalError, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points, ascending in x.
    pub points: Vec<(f64, f64)>,
    /// Drawn as a horizontal dashed line at its first y (a reference such as `full`).
    pub horizontal: bool,
}

/// A chart: titles and series.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// y range; `None` fits the data (from 0).
    pub y_range: Option<(f64, f64)>,
    /// Legend in the upper left corner (else lower right).
    pub legend_upper_left: bool,
}

/// Tick labels without needless decimals.
fn tick(span: f64) -> impl Fn(&f64) -> String {
    move |v: &f64| {
        if span >= 20.0 {
            format!("{v:.0}")
        } else if span >= 2.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The x range (widened when a single x) and the largest y of every point.
fn extent(chart: &Chart) -> Option<(f64, f64, f64)> {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut y1 = f64::NEG_INFINITY;
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return None;
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    Some((x0, x1, y1))
}

/// Draws `chart` to a 1000×640 PNG at `path`.
pub fn draw(chart: &Chart, path: &Path) -> Result<()> {
    REGISTER.call_once(|| {
        // The embedded font is valid; a failure would only leave labels out.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let fail = |e: String| EvalError::Plot {
        path: path.to_path_buf(),
        reason: e,
    };
    let (x0, x1, y1) = extent(chart).ok_or_else(|| fail("no points to plot".into()))?;
    let pad = (x1 - x0) * 0.05;
    let (y_lo, y_hi) = chart.y_range.unwrap_or((0.0, (y1 * 1.1).max(1e-9)));

    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(95)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), y_lo..y_hi)
        .map_err(|e| fail(e.to_string()))?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&tick(x1 - x0))
        .y_label_formatter(&tick(y_hi - y_lo))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = ShapeStyle::from(&color).stroke_width(3);
        let line: Vec<(f64, f64)> = if s.horizontal {
            let y = s.points.first().map_or(0.0, |p| p.1);
            vec![(x0 - pad, y), (x1 + pad, y)]
        } else {
            s.points.clone()
        };
        let drawn = if s.horizontal {
            ctx.draw_series(DashedLineSeries::new(line, 12, 8, style))
                .map_err(|e| fail(e.to_string()))?
        } else {
            ctx.draw_series(LineSeries::new(line, style))
                .map_err(|e| fail(e.to_string()))?
        };
        drawn.label(&s.label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
        });
        if !s.horizontal {
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(if chart.legend_upper_left {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::LowerRight
        })
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_written_as_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    label: "a".into(),
                    points: vec![(0.1, 0.5), (0.2, 0.7)],
                    horizontal: false,
                },
                Series {
                    label: "full".into(),
                    points: vec![(0.1, 0.8)],
                    horizontal: true,
                },
            ],
            y_range: Some((0.0, 1.0)),
            legend_upper_left: false,
        };
        draw(&chart, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
