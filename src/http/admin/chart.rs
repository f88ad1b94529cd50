//! Server-rendered SVG charts (no chart script): a stacked bar per day and a bar per category.
//! They carry only shapes and numbers the page's tables repeat; colours are set by class in the
//! stylesheet (the CSP allows no inline style).

use std::fmt::Write;

use super::data::{Day, GrantRate};

const W: f64 = 640.0;
const H: f64 = 200.0;

/// Decisions per day, stacked: accept all, custom, reject all, withdraw (bottom to top).
pub fn days(days: &[Day], title: &str) -> String {
    let max = days.iter().map(Day::total).max().unwrap_or(0).max(1) as f64;
    let slot = W / days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = svg_open(W, H + 20.0, title);
    for (i, day) in days.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H;
        for (n, class) in
            [(day.accept_all, "accept"), (day.custom, "custom"), (day.reject_all, "reject"), (day.withdraw, "withdraw")]
        {
            if n == 0 {
                continue;
            }
            let h = n as f64 / max * H;
            y -= h;
            let _ = write!(svg, r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"/>"#);
        }
    }
    let _ = write!(svg, r#"<line class="axis" x1="0" y1="{H}" x2="{W}" y2="{H}"/>"#);
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text x="0" y="{}">{}</text><text x="{W}" y="{}" text-anchor="end">{}</text>"#,
            H + 16.0,
            first.date,
            H + 16.0,
            last.date
        );
    }
    svg + "</svg>"
}

/// One horizontal bar per category, its length the grant rate.
pub fn rates(rates: &[GrantRate], title: &str) -> String {
    let row = 32.0;
    let label = 110.0;
    let h = row * rates.len() as f64;
    let mut svg = svg_open(W, h, title);
    for (i, r) in rates.iter().enumerate() {
        let y = i as f64 * row;
        let len = (W - label - 50.0) * r.percent as f64 / 100.0;
        let _ = write!(
            svg,
            r#"<text x="0" y="{:.1}">{}</text><rect class="accept" x="{label}" y="{:.1}" width="{len:.1}" height="{:.1}"/><text x="{:.1}" y="{:.1}">{} %</text>"#,
            y + row * 0.65,
            r.category,
            y + 4.0,
            row - 8.0,
            label + len + 6.0,
            y + row * 0.65,
            r.percent
        );
    }
    svg + "</svg>"
}

fn svg_open(w: f64, h: f64, title: &str) -> String {
    // `title` is one of the page's own fixed strings, never input.
    format!(r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{title}"><title>{title}</title>"#)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_day() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let days = [
            Day { date: d, accept_all: 2, reject_all: 2, ..Day::default() },
            Day { date: d.succ_opt().unwrap(), custom: 1, ..Day::default() },
        ];
        let svg = super::days(&days, "Decisions per day");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3, "no rect for a zero count: {svg}");
        // The busiest day (4) fills the height: each half is 100 high; the quiet day's one is 50.
        assert!(svg.contains(r#"class="accept" x="32.0" y="100.0" width="256.0" height="100.0""#), "{svg}");
        assert!(svg.contains(r#"class="custom" x="352.0" y="150.0" width="256.0" height="50.0""#), "{svg}");
        assert!(svg.contains("2026-03-01") && svg.contains("2026-03-02"));
    }

    #[test]
    fn rate_bars_are_proportional() {
        let r = [
            GrantRate { category: "analytics", granted: 1, decisions: 2, percent: 50 },
            GrantRate { category: "marketing", granted: 0, decisions: 2, percent: 0 },
        ];
        let svg = rates(&r, "Grant rate");
        assert!(svg.contains(r#"x="110" y="4.0" width="240.0""#), "{svg}");
        assert!(svg.contains(r#"width="0.0""#) && svg.contains("50 %"), "{svg}");
    }
}
