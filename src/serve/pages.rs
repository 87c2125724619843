//! The dashboard's HTML, server-rendered with maud: a layout, the tables and the
//! fragments that `app.js` swaps in while a study runs.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use crate::store::table::{cell, Table};

/// A whole page: the navigation, the title and `body`.
pub(super) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sweeper" }
                link rel="stylesheet" href="/app.css";
                script src="/app.js" defer {}
            }
            body {
                nav {
                    a href="/" { "sweeps" }
                    a href="/workers" { "workers" }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A part of a page that `app.js` re-fetches from `url` every `every_ms` while the
/// page is open.
pub(super) fn live(id: &str, url: &str, every_ms: u32, inner: Markup) -> Markup {
    html! {
        div id=(id) data-live=(url) data-every=(every_ms) data-updates="0" { (inner) }
    }
}

/// A part of a page loaded once after the page itself (it costs more than the page).
pub(super) fn deferred(id: &str, url: &str, what: &str) -> Markup {
    html! {
        div id=(id) data-load=(url) { p.muted { "loading " (what) "…" } }
    }
}

/// `table` as HTML; `link` turns a cell into a link (column name, cell value).
pub(super) fn table(
    class: &str,
    table: &Table,
    link: impl Fn(&str, &Value) -> Option<String>,
) -> Markup {
    html! {
        table class=(class) {
            thead { tr { @for column in &table.columns { th { (column) } } } }
            tbody {
                @for row in &table.rows {
                    tr {
                        @for (column, value) in table.columns.iter().zip(row) {
                            @let text = cell(value);
                            @let numeric = value.is_number();
                            td class=[numeric.then_some("num")] {
                                @match link(column, value) {
                                    Some(href) => a href=(href) { (text) },
                                    None => (text),
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A flat JSON object (parameters, a result) as a two-column table; nested values
/// as compact JSON.
pub(super) fn object(class: &str, value: &serde_json::Map<String, Value>) -> Markup {
    html! {
        table class=(class) {
            tbody {
                @for (key, value) in value {
                    tr {
                        th { (key) }
                        td { (match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        }) }
                    }
                }
            }
        }
    }
}

/// An SVG figure from the plot module, inline, with what a reader (or a test) needs
/// to find it: its name and how many data points it draws.
pub(super) fn figure(name: &str, points: usize, svg: &str) -> Markup {
    html! {
        figure class="chart" data-figure=(name) data-points=(points) {
            (PreEscaped(svg))
        }
    }
}

/// The report's Markdown as HTML (its tables, with the bold winners as `<strong>`).
pub(super) fn markdown(text: &str) -> Markup {
    use pulldown_cmark::{html::push_html, Options, Parser};
    let mut out = String::new();
    push_html(&mut out, Parser::new_ext(text, Options::ENABLE_TABLES));
    PreEscaped(out)
}

pub(super) const SCRIPT: &str = include_str!("app.js");
pub(super) const STYLE: &str = include_str!("app.css");
