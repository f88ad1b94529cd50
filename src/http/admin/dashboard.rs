//! The consent dashboard: decisions per UTC day (accept all / reject all / custom / withdraw),
//! the grant rate per category, and the same by country and by consent config revision — over
//! the last 7, 30 or 90 days. One grouped query (`GROUP BY` day, action, country, config,
//! revision, with the grants summed in SQL) reads the period; the rows are at most days × 4 ×
//! countries × revisions, whatever the traffic, and [`tally`] folds them.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::consent_record;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, Func},
};
use serde::Serialize;
use uuid::Uuid;

use super::{Page, chart, domain_error, message, period, render, sql};
use crate::{app::AppState, consent::config::store, error::Result};

/// The categories a decision grants or refuses, in the order of [`Group::granted`].
pub const CATEGORIES: [&str; 3] = ["functional", "analytics", "marketing"];

/// Decisions of one day.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub accept_all: i64,
    pub reject_all: i64,
    pub custom: i64,
    pub withdraw: i64,
}

impl Day {
    pub fn total(&self) -> i64 {
        self.accept_all + self.reject_all + self.custom + self.withdraw
    }
}

/// A category's grant rate over the period: decisions granting it among all decisions.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrantRate {
    pub category: &'static str,
    pub granted: i64,
    pub decisions: i64,
    /// Whole percent, rounded down; 0 without decisions.
    pub percent: i64,
}

impl GrantRate {
    fn of(category: &'static str, granted: i64, decisions: i64) -> Self {
        GrantRate { category, granted, decisions, percent: if decisions == 0 { 0 } else { granted * 100 / decisions } }
    }
}

/// The decisions of one country, or of one revision of a consent config, over the period.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Group {
    /// The country code (`unknown` when the gateway could not tell), or the config's name and
    /// the revision.
    pub label: String,
    pub accept_all: i64,
    pub reject_all: i64,
    pub custom: i64,
    pub withdraw: i64,
    pub decisions: i64,
    /// Decisions granting functional, analytics, marketing.
    pub granted: [i64; 3],
    /// The same as whole percent of `decisions`, rounded down.
    pub percent: [i64; 3],
}

impl Group {
    fn add(&mut self, row: &Row) {
        match row.action.as_str() {
            "accept_all" => self.accept_all += row.n,
            "reject_all" => self.reject_all += row.n,
            "custom" => self.custom += row.n,
            "withdraw" => self.withdraw += row.n,
            _ => return,
        }
        self.decisions += row.n;
        for (sum, n) in self.granted.iter_mut().zip(row.granted) {
            *sum += n;
        }
    }

    fn finish(mut self) -> Self {
        for (pct, granted) in self.percent.iter_mut().zip(self.granted) {
            *pct = if self.decisions == 0 { 0 } else { granted * 100 / self.decisions };
        }
        self
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Dashboard {
    pub days: Vec<Day>,
    pub rates: Vec<GrantRate>,
    pub total: i64,
    /// Most decisions first.
    pub by_country: Vec<Group>,
    /// By config name, then revision.
    pub by_revision: Vec<Group>,
}

/// One row of the grouped query: `n` decisions with this action on this day from this country
/// under this revision, `granted` of them granting each of [`CATEGORIES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub date: NaiveDate,
    pub action: String,
    pub country: Option<String>,
    pub config_id: Uuid,
    pub revision: i32,
    pub n: i64,
    pub granted: [i64; 3],
}

/// The tenant's consent decisions of the last `days` days (today included), per UTC day.
pub async fn load(db: &impl ConnectionTrait, tenant_id: Uuid, days: i64, now: DateTime<Utc>) -> Result<Dashboard> {
    let first = now.date_naive() - Duration::days(days - 1);
    let since = first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let backend = db.get_database_backend();
    let day = sql::utc_day(backend, "created_at");
    let [f, a, m] = CATEGORIES.map(|c| sql::count_where(&sql::grants(backend, "choices", c)));
    type Tuple = (String, String, Option<String>, Uuid, i32, i64, i64, i64, i64);
    let rows: Vec<Tuple> = consent_record::Entity::find()
        .select_only()
        .column_as(Expr::cust(day.clone()), "day")
        .column(consent_record::Column::Action)
        .column(consent_record::Column::Country)
        .column(consent_record::Column::ConfigId)
        .column(consent_record::Column::Revision)
        .column_as(Expr::from(Func::count(Expr::col(consent_record::Column::Id))), "n")
        .column_as(Expr::cust(f), "functional")
        .column_as(Expr::cust(a), "analytics")
        .column_as(Expr::cust(m), "marketing")
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .filter(consent_record::Column::CreatedAt.gte(since))
        .group_by(Expr::cust(day))
        .group_by(consent_record::Column::Action)
        .group_by(consent_record::Column::Country)
        .group_by(consent_record::Column::ConfigId)
        .group_by(consent_record::Column::Revision)
        .into_tuple()
        .all(db)
        .await?;
    let names: HashMap<Uuid, String> =
        store::list(db, tenant_id).await?.into_iter().map(|c| (c.id, c.spec.display_name)).collect();
    let rows = rows.into_iter().filter_map(|(date, action, country, config_id, revision, n, f, a, m)| {
        let date = NaiveDate::parse_from_str(&date, "%Y-%m-%d").ok()?;
        Some(Row { date, action, country, config_id, revision, n, granted: [f, a, m] })
    });
    Ok(tally(first, days, rows, &names))
}

/// Pure counting: one entry per day from `first`, every day present (zero when quiet); rows of
/// other days and unknown actions are left out. `names` are the consent configs' display names.
pub fn tally(first: NaiveDate, days: i64, rows: impl Iterator<Item = Row>, names: &HashMap<Uuid, String>) -> Dashboard {
    let mut by_day: BTreeMap<NaiveDate, Day> =
        (0..days).map(|i| first + Duration::days(i)).map(|date| (date, Day { date, ..Day::default() })).collect();
    let mut all = Group::default();
    let mut countries: BTreeMap<String, Group> = BTreeMap::new();
    let mut revisions: BTreeMap<(String, Uuid, i32), Group> = BTreeMap::new();
    for row in rows {
        let Some(day) = by_day.get_mut(&row.date) else { continue };
        match row.action.as_str() {
            "accept_all" => day.accept_all += row.n,
            "reject_all" => day.reject_all += row.n,
            "custom" => day.custom += row.n,
            "withdraw" => day.withdraw += row.n,
            _ => continue,
        }
        all.add(&row);
        let country = row.country.clone().unwrap_or_else(|| "unknown".into());
        countries.entry(country.clone()).or_insert_with(|| Group { label: country, ..Group::default() }).add(&row);
        let name = names.get(&row.config_id).cloned().unwrap_or_else(|| format!("config {}", row.config_id));
        revisions
            .entry((name.clone(), row.config_id, row.revision))
            .or_insert_with(|| Group { label: format!("{name}, revision {}", row.revision), ..Group::default() })
            .add(&row);
    }
    let rates = CATEGORIES.into_iter().zip(all.granted).map(|(c, g)| GrantRate::of(c, g, all.decisions)).collect();
    let mut by_country: Vec<Group> = countries.into_values().map(Group::finish).collect();
    by_country.sort_by(|a, b| b.decisions.cmp(&a.decisions).then_with(|| a.label.cmp(&b.label)));
    Dashboard {
        days: by_day.into_values().collect(),
        rates,
        total: all.decisions,
        by_country,
        by_revision: revisions.into_values().map(Group::finish).collect(),
    }
}

/// A CSV field: quoted when it has a comma, quote or line break, and a leading `= + - @` (a
/// spreadsheet formula) defused with an apostrophe.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The dashboard's numbers as CSV: one row per day, one per category, one per country, one per
/// revision (blocks separated by an empty line, each with its header).
pub fn csv(d: &Dashboard) -> String {
    let mut out = String::from("date,accept_all,reject_all,custom,withdraw\n");
    for day in &d.days {
        out += &format!("{},{},{},{},{}\n", day.date, day.accept_all, day.reject_all, day.custom, day.withdraw);
    }
    out += "\ncategory,granted,decisions,percent\n";
    for r in &d.rates {
        out += &format!("{},{},{},{}\n", r.category, r.granted, r.decisions, r.percent);
    }
    for (head, groups) in [("country", &d.by_country), ("revision", &d.by_revision)] {
        out += &format!(
            "\n{head},accept_all,reject_all,custom,withdraw,decisions,functional_granted,analytics_granted,marketing_granted\n"
        );
        for g in groups {
            let [f, a, m] = g.granted;
            out += &format!(
                "{},{},{},{},{},{},{f},{a},{m}\n",
                field(&g.label),
                g.accept_all,
                g.reject_all,
                g.custom,
                g.withdraw,
                g.decisions
            );
        }
    }
    out
}

pub async fn page(State(state): State<AppState>, page: Page, RawQuery(query): RawQuery) -> Response {
    let days = match period(query.as_deref()) {
        Ok(d) => d,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid period", &m),
    };
    let d = match load(&state.db, page.holder.tenant.id, days, Utc::now()).await {
        Ok(d) => d,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "dashboard");
    ctx.insert("period", &days);
    ctx.insert("dash", &d);
    ctx.insert("days_chart", &chart::days(&d.days, &format!("Consent decisions per day, last {days} days")));
    ctx.insert("rates_chart", &chart::rates(&d.rates, &format!("Grant rate per category, last {days} days")));
    let breakdown = |id: &str, title: &str, head: &str, groups: &[Group]| {
        let chart = chart::groups(groups, &format!("Consent decisions {}, last {days} days", title.to_lowercase()));
        serde_json::json!({"id": id, "title": title, "head": head, "groups": groups, "chart": chart})
    };
    ctx.insert(
        "breakdowns",
        &[
            breakdown("country", "By country", "Country", &d.by_country),
            breakdown("revision", "By consent config revision", "Config, revision", &d.by_revision),
        ],
    );
    ctx.insert("chart_rows", &chart::GROUP_BARS);
    render(StatusCode::OK, "dashboard.html", &ctx)
}

pub async fn csv_file(State(state): State<AppState>, page: Page, RawQuery(query): RawQuery) -> Response {
    let days = match period(query.as_deref()) {
        Ok(d) => d,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid period", &m),
    };
    match load(&state.db, page.holder.tenant.id, days, Utc::now()).await {
        Ok(d) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"consent-{days}d.csv\"")),
            ],
            csv(&d),
        )
            .into_response(),
        Err(e) => domain_error(&page, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(date: NaiveDate, action: &str, country: Option<&str>, revision: i32, n: i64, granted: [i64; 3]) -> Row {
        Row {
            date,
            action: action.into(),
            country: country.map(Into::into),
            config_id: Uuid::nil(),
            revision,
            n,
            granted,
        }
    }

    #[test]
    fn tally_counts_per_day_country_revision_and_grant_rates() {
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = d1 + Duration::days(1);
        let rows = vec![
            row(d1, "accept_all", Some("SE"), 1, 2, [2, 2, 2]),
            row(d1, "reject_all", Some("SE"), 1, 1, [0, 0, 0]),
            row(d2, "custom", None, 2, 1, [1, 1, 0]),
            row(d2, "withdraw", Some("DE"), 2, 1, [0, 0, 0]),
            row(d2, "unknown", Some("DE"), 2, 9, [9, 9, 9]),
            row(d2 + Duration::days(5), "accept_all", Some("FR"), 2, 1, [1, 1, 1]),
        ];
        let names = HashMap::from([(Uuid::nil(), "Shop".to_string())]);
        let d = tally(d1, 3, rows.into_iter(), &names);
        assert_eq!(d.days.len(), 3, "every day, quiet ones too");
        assert_eq!((d.days[0].accept_all, d.days[0].reject_all), (2, 1));
        assert_eq!((d.days[1].custom, d.days[1].withdraw, d.days[1].total()), (1, 1, 2));
        assert_eq!(d.days[2].total(), 0);
        assert_eq!(d.total, 5, "outside the period and unknown actions are not counted");
        let pct: Vec<_> = d.rates.iter().map(|r| (r.category, r.granted, r.percent)).collect();
        assert_eq!(pct, [("functional", 3, 60), ("analytics", 3, 60), ("marketing", 2, 40)]);

        let countries: Vec<_> = d.by_country.iter().map(|g| (g.label.as_str(), g.decisions, g.percent[1])).collect();
        assert_eq!(countries, [("SE", 3, 66), ("DE", 1, 0), ("unknown", 1, 100)], "most decisions first");
        let se = &d.by_country[0];
        assert_eq!((se.accept_all, se.reject_all, se.granted), (2, 1, [2, 2, 2]));
        let revisions: Vec<_> = d.by_revision.iter().map(|g| (g.label.as_str(), g.decisions, g.custom)).collect();
        assert_eq!(revisions, [("Shop, revision 1", 3, 0), ("Shop, revision 2", 2, 1)]);

        let csv = csv(&d);
        assert!(csv.starts_with("date,accept_all,reject_all,custom,withdraw\n2026-03-01,2,1,0,0\n"), "{csv}");
        assert!(csv.contains("\nmarketing,2,5,40\n"), "{csv}");
        assert!(csv.contains("\ncountry,accept_all,") && csv.contains("\nSE,2,1,0,0,3,2,2,2\n"), "{csv}");
        assert!(csv.ends_with("\n\"Shop, revision 2\",0,0,1,1,2,1,1,0\n"), "{csv}");
    }

    #[test]
    fn no_decisions_no_division() {
        let d = tally(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(), 7, std::iter::empty(), &HashMap::new());
        assert!(d.rates.iter().all(|r| r.percent == 0));
        assert!(d.by_country.is_empty() && d.by_revision.is_empty());
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        for (input, want) in [
            ("SE", "SE"),
            ("Shop, revision 2", "\"Shop, revision 2\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("a,\"b\"", "\"a,\"\"b\"\"\""),
            ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
            ("-1", "'-1"),
        ] {
            assert_eq!(field(input), want, "{input}");
        }
    }
}
