//! Server-rendered SVG charts (no chart script): a stacked bar per day, a bar per category, a
//! stacked horizontal bar per country or revision. They carry only shapes and numbers the page's
//! tables repeat; colours are set by class in the stylesheet (the CSP allows no inline style).

use std::fmt::Write;

use chrono::NaiveDate;

use super::{
    dashboard::{Day, GrantRate, Group},
    data::DeliveryDay,
};

const W: f64 = 640.0;
const H: f64 = 200.0;

/// Decisions per day, stacked: accept all, custom, reject all, withdraw (bottom to top).
pub fn days(days: &[Day], title: &str) -> String {
    let bars: Vec<_> = days
        .iter()
        .map(|day| {
            let parts = vec![
                (day.accept_all, "accept"),
                (day.custom, "custom"),
                (day.reject_all, "reject"),
                (day.withdraw, "withdraw"),
            ];
            (day.date, parts)
        })
        .collect();
    stacked(&bars, title)
}

/// A config's deliveries per day, stacked: delivered, dropped, waiting, retrying, dead.
pub fn deliveries(days: &[DeliveryDay], title: &str) -> String {
    let bars: Vec<_> = days
        .iter()
        .map(|d| {
            let parts = vec![
                (d.delivered, "delivered"),
                (d.dropped, "dropped"),
                (d.waiting, "waiting"),
                (d.retrying, "retrying"),
                (d.dead, "dead"),
            ];
            (d.date, parts)
        })
        .collect();
    stacked(&bars, title)
}

/// One vertical bar per day, its parts (count, class) stacked bottom to top, scaled to the
/// busiest day.
fn stacked(days: &[(NaiveDate, Vec<(i64, &str)>)], title: &str) -> String {
    let total = |parts: &Vec<(i64, &str)>| parts.iter().map(|(n, _)| n).sum::<i64>();
    let max = days.iter().map(|(_, parts)| total(parts)).max().unwrap_or(0).max(1) as f64;
    let slot = W / days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = svg_open(W, H + 20.0, title);
    for (i, (_, parts)) in days.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H;
        for &(n, class) in parts {
            if n == 0 {
                continue;
            }
            let h = n as f64 / max * H;
            y -= h;
            let _ = write!(svg, r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"/>"#);
        }
    }
    let _ = write!(svg, r#"<line class="axis" x1="0" y1="{H}" x2="{W}" y2="{H}"/>"#);
    if let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text x="0" y="{}">{first}</text><text x="{W}" y="{}" text-anchor="end">{last}</text>"#,
            H + 16.0,
            H + 16.0,
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

/// Groups drawn at most; the table beside lists them all.
pub const GROUP_BARS: usize = 12;

/// One horizontal bar per group (the first [`GROUP_BARS`]), its decisions stacked left to right
/// (accept all, custom, reject all, withdraw), scaled to the largest group; the count after it.
pub fn groups(groups: &[Group], title: &str) -> String {
    let row = 28.0;
    let label = 190.0;
    let shown = &groups[..groups.len().min(GROUP_BARS)];
    let max = shown.iter().map(|g| g.decisions).max().unwrap_or(0).max(1) as f64;
    let mut svg = svg_open(W, (row * shown.len() as f64).max(row), title);
    for (i, g) in shown.iter().enumerate() {
        let y = i as f64 * row;
        // The label is the tenant's own text (a config name): escaped, and cut to fit.
        let name: String = g.label.chars().take(26).collect();
        let _ = write!(svg, r#"<text x="0" y="{:.1}">{}</text>"#, y + row * 0.65, escape(&name));
        let mut x = label;
        for (n, class) in
            [(g.accept_all, "accept"), (g.custom, "custom"), (g.reject_all, "reject"), (g.withdraw, "withdraw")]
        {
            if n == 0 {
                continue;
            }
            let w = n as f64 / max * (W - label - 50.0);
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}"/>"#,
                y + 4.0,
                row - 8.0
            );
            x += w;
        }
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 6.0, y + row * 0.65, g.decisions);
    }
    svg + "</svg>"
}

/// Text for SVG markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
    fn group_bars_scale_to_the_largest_group_and_escape_labels() {
        let g = |label: &str, accept_all, reject_all| Group {
            label: label.into(),
            accept_all,
            reject_all,
            decisions: accept_all + reject_all,
            ..Group::default()
        };
        let many: Vec<_> = (0..20).map(|i| g(&format!("C{i}"), 1, 0)).collect();
        assert_eq!(groups(&many, "t").matches("<rect").count(), GROUP_BARS, "at most GROUP_BARS bars");
        let svg = groups(&[g("SE", 3, 1), g("<b>&", 2, 0)], "By country");
        // 400 px of bar for the largest group (4): 300 accept then 100 reject; 2 is half of it.
        assert!(svg.contains(r#"class="accept" x="190.0" y="4.0" width="300.0""#), "{svg}");
        assert!(svg.contains(r#"class="reject" x="490.0" y="4.0" width="100.0""#), "{svg}");
        assert!(svg.contains(r#"class="accept" x="190.0" y="32.0" width="200.0""#), "{svg}");
        assert!(svg.contains("&lt;b&gt;&amp;") && !svg.contains("<b>"), "{svg}");
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
