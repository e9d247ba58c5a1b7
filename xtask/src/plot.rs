//! The PNG plot of docs/bench.md (plotters, with a bundled font so no system font library is
//! needed).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// Generation tokens/s against parameter count (log-log), one line per (type, threads) series.
pub fn tg_by_size(points: &[(String, f64, f64)], out: &Path) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", out.display());
    // Registering twice is harmless; the font is the Ubuntu Light face egui ships.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (pmin, pmax) = points.iter().fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (tmin, tmax) = points.iter().fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.2), hi.max(p.2)));
    if points.is_empty() {
        return Err(anyhow!("no generation results to plot"));
    }
    let mut chart = ChartBuilder::on(&root)
        .caption("Token generation on this CPU (bitnet-rs)", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((pmin / 1.5..pmax * 1.5).log_scale(), (tmin / 1.5..tmax * 1.5).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("parameters")
        .y_desc("tokens/s")
        .x_label_formatter(&|v| if *v >= 1e9 { format!("{:.1}B", v / 1e9) } else { format!("{:.0}M", v / 1e6) })
        .draw()
        .map_err(|x| e(&x))?;
    let mut labels: Vec<&str> = points.iter().map(|p| p.0.as_str()).collect();
    labels.dedup();
    labels.sort_unstable();
    labels.dedup();
    for (i, label) in labels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut series: Vec<(f64, f64)> = points.iter().filter(|p| p.0 == *label).map(|p| (p.1, p.2)).collect();
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(series.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|x| e(&x))?;
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
