//! The SVG of a replay: the metric on the left axis; the desired count, the replicas written
//! and the ready replicas on the right, each a step line.

use std::path::Path;

use anyhow::Result;
use hoist_api::autoscaling::Algorithm as AlgorithmName;
use hoist_decide::modes::replay::{Replay, Sample, Setup};

/// Picks one series' value from a sample.
type Pick<'a> = &'a dyn Fn(&Sample) -> Option<f64>;

/// Draws the replay into an SVG: the metric on the left axis, replicas on the right.
pub(super) fn plot(setup: &Setup, replay: &Replay, out: &Path) -> Result<()> {
    use plotters::prelude::*;

    let to_s = |ms: i64| {
        #[allow(clippy::cast_precision_loss)] // plotting
        let s = ms as f64 / 1000.0;
        s
    };
    let samples = &replay.samples;
    let t0 = samples.first().map_or(0.0, |s| to_s(s.at_ms));
    let t1 = samples.last().map_or(1.0, |s| to_s(s.at_ms)).max(t0 + 1.0);
    let metric_max = samples
        .iter()
        .filter_map(|s| s.value)
        .fold(setup.target, f64::max)
        * 1.1;
    let replicas_max = samples
        .iter()
        .flat_map(|s| [s.replicas, s.ready, s.desired.unwrap_or(0)])
        .max()
        .unwrap_or(1)
        .max(1);
    let replicas_top = f64::from(replicas_max) * 1.1 + 0.5;

    let root = SVGBackend::new(out, (1200, 600)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let name = match setup.builtin.algorithm {
        AlgorithmName::Kpa => "kpa",
        AlgorithmName::Apa => "apa",
        AlgorithmName::Hpa => "hpa",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("hoist simulate: {name}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0.0..metric_max)
        .map_err(|e| err(&e))?
        .set_secondary_coord(t0..t1, 0.0..replicas_top);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("metric")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("replicas")
        .draw()
        .map_err(|e| err(&e))?;

    // Steps: a value holds until the next sample.
    let steps = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        let mut points = Vec::with_capacity(samples.len() * 2);
        for (i, s) in samples.iter().enumerate() {
            let Some(y) = f(s) else { continue };
            points.push((to_s(s.at_ms), y));
            let next = samples.get(i + 1).map_or(t1, |n| to_s(n.at_ms));
            points.push((next, y));
        }
        points
    };
    let metric_color = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(steps(&|s| s.value), &metric_color))
        .map_err(|e| err(&e))?
        .label("metric")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], metric_color));
    let series: [(&str, RGBColor, Pick<'_>); 3] = [
        ("desired", RGBColor(230, 120, 0), &|s| {
            s.desired.map(f64::from)
        }),
        ("replicas", RGBColor(0, 90, 200), &|s| {
            Some(f64::from(s.replicas))
        }),
        ("ready", RGBColor(0, 160, 60), &|s| Some(f64::from(s.ready))),
    ];
    for (label, color, f) in series {
        chart
            .draw_secondary_series(LineSeries::new(steps(f), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
