//! `bench`: a table per kind of request.

use super::{Render, Table};
use crate::view::*;

impl Render for BenchView {
    fn text(&self) -> String {
        let mut out = String::new();
        for (title, levels) in [
            (
                "writes (CreateProfile, and DeleteProfile of older ones)",
                &self.writes,
            ),
            ("linearizable reads (GetProfile)", &self.reads),
        ] {
            if levels.is_empty() {
                continue;
            }
            let mut table = Table::new(vec![
                "CONCURRENCY",
                "OPS",
                "ERRORS",
                "OPS/S",
                "P50 MS",
                "P99 MS",
                "MAX MS",
            ]);
            for level in levels.iter() {
                table.row(vec![
                    level.concurrency.to_string(),
                    level.ok.to_string(),
                    level.errors.to_string(),
                    format!("{:.1}", level.ops_per_s),
                    format!("{:.2}", level.p50_ms),
                    format!("{:.2}", level.p99_ms),
                    format!("{:.2}", level.max_ms),
                ]);
            }
            out.push_str(title);
            out.push('\n');
            out.push_str(&table.render());
            for level in levels.iter() {
                if let Some(error) = &level.first_error {
                    out.push_str(&format!(
                        "  first error at concurrency {}: {error}\n",
                        level.concurrency
                    ));
                }
            }
            out.push('\n');
        }
        out
    }
}
