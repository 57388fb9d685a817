//! `rhea bench --plot FILE.svg`: the measured rows as a bar chart, written
//! by hand (no plotting crate): one group per model and batch, one bar per
//! backend, its length the examples per second relative to the group's
//! fastest, labelled with the value and, where both ran, the GPU/CPU ratio.

use std::fmt::Write;

use crate::bench::Row;

const WIDTH: f64 = 760.0;
const LABEL: f64 = 150.0;
const BAR: f64 = 18.0;
const GAP: f64 = 6.0;
const HEAD: f64 = 26.0;

fn colour(backend: &str) -> &'static str {
    match backend {
        "interp" => "#9a9a9a",
        "cpu" => "#3b6fb6",
        "cuda" => "#4a9a4a",
        "cuda+graph" => "#8cc68c",
        _ => "#b6793b",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn rate(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

/// The chart of `rows` as an SVG document; `machine` is its subtitle.
pub fn svg(rows: &[Row], machine: &str) -> String {
    let mut groups: Vec<(String, usize, Vec<&Row>)> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|(m, b, _)| *m == r.model && *b == r.batch) {
            Some(g) => g.2.push(r),
            None => groups.push((r.model.clone(), r.batch, vec![r])),
        }
    }
    let mut body = String::new();
    let mut y = 56.0;
    for (model, batch, members) in &groups {
        let best = members.iter().map(|r| r.examples_per_s).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
        let by = |b: &str| members.iter().find(|r| r.backend == b);
        let ratio = match (by("cpu"), by("cuda")) {
            (Some(c), Some(g)) => format!(" — GPU/CPU {:.2}x", c.step_us / g.step_us),
            _ => String::new(),
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.0}" font-weight="bold">{} (batch {batch}){}</text>"#,
            y + 14.0,
            escape(model),
            escape(&ratio)
        );
        y += HEAD;
        for r in members {
            let len = (WIDTH - LABEL - 140.0) * r.examples_per_s / best;
            let _ = writeln!(
                body,
                r##"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect class="bar" x="{LABEL:.0}" y="{y:.0}" width="{len:.1}" height="{BAR:.0}" fill="{}"/><text x="{:.1}" y="{:.0}">{} ex/s</text>"##,
                LABEL - 8.0,
                y + 13.0,
                escape(&r.backend),
                colour(&r.backend),
                LABEL + len + 6.0,
                y + 13.0,
                rate(r.examples_per_s),
            );
            y += BAR + GAP;
        }
        y += GAP * 2.0;
    }
    let height = y + 10.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="16" font-weight="bold">rhea bench: examples per second (longer is faster)</text>
<text x="10" y="42" fill="#555">{}</text>
{body}</svg>
"##,
        escape(machine)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, backend: &str, step_us: f64) -> Row {
        Row {
            model: model.into(),
            backend: backend.into(),
            batch: 10,
            compile_ms: 1.0,
            first_call_ms: 1.0,
            step_us,
            step_min_us: step_us,
            step_max_us: step_us,
            examples_per_s: 10.0 / (step_us * 1e-6),
            gflops: 1.0,
            epoch_ms: None,
        }
    }

    #[test]
    fn one_bar_per_row_scaled_to_its_group_with_the_ratio() {
        let rows = [row("sonar-mlp", "cpu", 10.0), row("sonar-mlp", "cuda", 5.0), row("theano-mlp", "interp", 100.0)];
        let svg = svg(&rows, "2 threads <test>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert_eq!(svg.matches(r#"class="bar""#).count(), 3);
        assert!(svg.contains("sonar-mlp (batch 10) — GPU/CPU 2.00x"), "{svg}");
        assert!(svg.contains("2 threads &lt;test&gt;"), "{svg}");
        // The fastest bar of each group is full length; cpu is half of cuda.
        let full = WIDTH - LABEL - 140.0;
        assert!(svg.contains(&format!(r#"width="{full:.1}""#)));
        assert!(svg.contains(&format!(r#"width="{:.1}""#, full / 2.0)));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
