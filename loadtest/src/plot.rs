//! A throughput/latency plot of a run as a self-contained SVG image.

use std::fmt::Write;

use crate::ledger::Sample;

/// A line: name, colour, value of a sample, and whether it uses the latency axis.
type Series<'a> = (&'a str, &'a str, &'a dyn Fn(&Sample) -> f64, bool);

/// Throughput (accepted, decided, notified per second; left axis) and p99
/// latency (right axis) over the run.
pub fn svg(title: &str, samples: &[Sample]) -> String {
    let (w, h) = (900.0, 420.0);
    let (left, right, top, bottom) = (60.0, 60.0, 56.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let t_max = samples.last().map(|s| s.t_secs).unwrap_or(1.0).max(1.0);
    let rate_max = samples
        .iter()
        .flat_map(|s| [s.accepted_per_sec, s.decided_per_sec, s.notified_per_sec])
        .fold(1.0_f64, f64::max)
        * 1.1;
    let lat_max = samples.iter().map(|s| s.p99_ms).fold(1.0_f64, f64::max) * 1.1;
    let x = |t: f64| left + pw * t / t_max;
    let y_rate = |r: f64| top + ph - ph * r / rate_max;
    let y_lat = |l: f64| top + ph - ph * l / lat_max;

    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>
"##,
        w / 2.0,
        escape(title)
    );
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let yy = top + ph - ph * f;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text><text x="{:.1}" y="{:.1}">{:.0}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            rate_max * f,
            left + pw + 6.0,
            yy + 4.0,
            lat_max * f
        );
        let xx = left + pw * f;
        let _ = writeln!(
            out,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"##,
            top + ph + 18.0,
            t_max * f
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">orders / s</text><text x="{:.1}" y="{:.1}" transform="rotate(90 {:.1} {:.1})" text-anchor="middle">p99 latency (ms)</text>"##,
        left + pw / 2.0,
        h - 10.0,
        top + ph / 2.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0
    );
    let series: [Series; 4] = [
        ("accepted/s", "#2563eb", &|s| s.accepted_per_sec, false),
        ("decided/s", "#16a34a", &|s| s.decided_per_sec, false),
        ("notified/s", "#9333ea", &|s| s.notified_per_sec, false),
        ("p99 ms", "#dc2626", &|s| s.p99_ms, true),
    ];
    for (n, (name, color, value, is_latency)) in series.iter().enumerate() {
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                let v = value(s);
                let yy = if *is_latency { y_lat(v) } else { y_rate(v) };
                format!("{:.1},{:.1}", x(s.t_secs), yy)
            })
            .collect();
        let dash = if *is_latency {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"##,
            points.join(" ")
        );
        let lx = left + 10.0 + 130.0 * n as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{name}</text>"##,
            top - 14.0,
            lx + 22.0,
            top - 14.0,
            lx + 28.0,
            top - 10.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
