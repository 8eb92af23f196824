//! `tstore du --svg FILE`: the du report as one self-contained SVG chart.
//!
//! Two sections, each on its own scale (a tier is small next to the sum of
//! all tiers): one stacked bar per tier (bytes shared with other tiers,
//! bytes only this tier uses, its private bytes) over a grey bar of what a
//! plain copy of it would take; then all tiers as plain copies against the
//! store plus the venvs, with the saving. Shared objects appear in the bar
//! of every tier that uses them, which is why the totals come from the
//! store and venvs, not from summing the tier bars.

use std::fmt::Write;

use tstore::upkeep::du::DuReport;

use super::report::human_bytes;

const SHARED: &str = "#2a7ab9";
const ONLY_HERE: &str = "#4caf50";
const PRIVATE: &str = "#e08a1e";
const PLAIN: &str = "#b0b0b0";
const STORE: &str = "#6a4c93";
const VENVS: &str = "#e08a1e";

const WIDTH: f64 = 820.0;
const LABEL_WIDTH: f64 = 150.0;
/// Room right of the longest bar for its figure.
const FIGURE_WIDTH: f64 = 190.0;
const BAR: f64 = 16.0;

/// The chart as SVG text.
pub fn render(report: &DuReport) -> String {
    let bar_room = WIDTH - LABEL_WIDTH - FIGURE_WIDTH;
    let tier_rows = report.tiers.len().max(1) as f64;
    let height = 100.0 + tier_rows * 52.0 + 130.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="15">Disk use per tier with tstore, against plain copies (allocated bytes)</text>"#
    );
    let legend = [
        (SHARED, "shared with other tiers"),
        (ONLY_HERE, "only in this tier"),
        (PRIVATE, "private (venv's own files)"),
        (PLAIN, "as a plain copy"),
    ];
    let mut x = 10.0;
    for (color, name) in legend {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{color}"/><text x="{}" y="45">{name}</text>"#,
            x + 16.0
        );
        x += 16.0 + name.len() as f64 * 7.0 + 18.0;
    }

    let mut y = 75.0;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{y}" font-weight="bold">Per tier (current generation)</text>"#
    );
    y += 12.0;
    if report.tiers.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}">no materialized tier</text>"#,
            y + 14.0
        );
        y += 52.0;
    }
    let tier_max = report
        .tiers
        .iter()
        .map(|t| {
            t.plain_copy_bytes
                .max(t.shared_bytes + t.unique_bytes + t.private_bytes)
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let scale = |bytes: u64, max: f64| bar_room * bytes as f64 / max;
    for tier in &report.tiers {
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}">{}</text>"#,
            y + 13.0,
            escape(&tier.name)
        );
        let mut x = LABEL_WIDTH;
        for (bytes, color, what) in [
            (tier.shared_bytes, SHARED, "shared"),
            (tier.unique_bytes, ONLY_HERE, "only here"),
            (tier.private_bytes, PRIVATE, "private"),
        ] {
            let w = scale(bytes, tier_max);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{BAR}" fill="{color}"><title>{}: {what} {}</title></rect>"#,
                escape(&tier.name),
                human_bytes(bytes)
            );
            x += w;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{} + {} + {}</text>"#,
            x + 5.0,
            y + 12.0,
            human_bytes(tier.shared_bytes),
            human_bytes(tier.unique_bytes),
            human_bytes(tier.private_bytes)
        );
        let w = scale(tier.plain_copy_bytes, tier_max);
        let _ = writeln!(
            svg,
            r#"<rect x="{LABEL_WIDTH}" y="{}" width="{w:.1}" height="{}" fill="{PLAIN}"/><text x="{:.1}" y="{}" fill="dimgray">plain copy {}</text>"#,
            y + BAR + 2.0,
            BAR - 4.0,
            LABEL_WIDTH + w + 5.0,
            y + BAR + 12.0,
            human_bytes(tier.plain_copy_bytes)
        );
        y += 52.0;
    }

    // Totals.
    y += 8.0;
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{y}" font-weight="bold">All tiers (store, and every kept generation of the venvs)</text>"#
    );
    y += 12.0;
    let actual = report.store_bytes + report.venv_bytes;
    let total_max = report.plain_copies_bytes.max(actual).max(1) as f64;
    let w = scale(report.plain_copies_bytes, total_max);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{}">as plain copies</text><rect x="{LABEL_WIDTH}" y="{y}" width="{w:.1}" height="{BAR}" fill="{PLAIN}"/><text x="{:.1}" y="{}">{}</text>"#,
        y + 13.0,
        LABEL_WIDTH + w + 5.0,
        y + 12.0,
        human_bytes(report.plain_copies_bytes)
    );
    y += BAR + 8.0;
    let store_w = scale(report.store_bytes, total_max);
    let venv_w = scale(report.venv_bytes, total_max);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{}">with tstore</text><rect x="{LABEL_WIDTH}" y="{y}" width="{store_w:.1}" height="{BAR}" fill="{STORE}"><title>store {}</title></rect><rect x="{:.1}" y="{y}" width="{venv_w:.1}" height="{BAR}" fill="{VENVS}"><title>venvs {}</title></rect><text x="{:.1}" y="{}">{} (store {} + venvs {})</text>"#,
        y + 13.0,
        human_bytes(report.store_bytes),
        LABEL_WIDTH + store_w,
        human_bytes(report.venv_bytes),
        LABEL_WIDTH + store_w + venv_w + 5.0,
        y + 12.0,
        human_bytes(actual),
        human_bytes(report.store_bytes),
        human_bytes(report.venv_bytes)
    );
    y += BAR + 22.0;
    let percent = if report.plain_copies_bytes > 0 {
        report.saving_bytes as f64 * 100.0 / report.plain_copies_bytes as f64
    } else {
        0.0
    };
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{y}" font-size="14" font-weight="bold">saving: {}{} ({percent:.0}% of the plain copies); store: {} objects</text>"#,
        if report.saving_bytes < 0 { "-" } else { "" },
        human_bytes(report.saving_bytes.unsigned_abs()),
        report.store_objects
    );
    svg.push_str("</svg>\n");
    svg
}

/// Text safe inside an SVG element or attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tstore::upkeep::du::TierUsage;

    #[test]
    fn names_are_escaped_and_bars_fit_the_width() {
        let report = DuReport {
            tiers: vec![TierUsage {
                name: "a<&>b".into(),
                venv: "/v".into(),
                generation: 1,
                files: 3,
                plain_copy_bytes: 4096,
                unique_bytes: 1024,
                shared_bytes: 2048,
                private_bytes: 1024,
            }],
            store_objects: 2,
            object_bytes: 3072,
            store_bytes: 8192,
            venv_bytes: 1024,
            plain_copies_bytes: 4096,
            saving_bytes: 4096 - 9216,
        };
        let svg = render(&report);
        assert!(svg.contains("a&lt;&amp;&gt;b"), "{svg}");
        assert!(!svg.contains("a<&>b"), "{svg}");
        assert!(svg.contains("saving: -5.0 KiB"), "{svg}");
        // No bar reaches into the figures' room (after the root's width and
        // the background's "100%").
        for width in svg.split(r#"width=""#).skip(3) {
            let w: f64 = width.split('"').next().unwrap().parse().unwrap();
            assert!(w <= WIDTH - LABEL_WIDTH - FIGURE_WIDTH + 0.1, "{w}");
        }
    }
}
