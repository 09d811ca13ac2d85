//! `pool get`, `pool list` and `pool usage`.

use super::{word, Render, Table};
use crate::view::*;

impl Render for PoolView {
    fn text(&self) -> String {
        PoolListView {
            pools: vec![self.clone()],
            revision: self.revision,
        }
        .table()
    }
}

impl PoolListView {
    fn table(&self) -> String {
        let mut table = Table::new(vec!["NAME", "KIND", "FIRST", "LAST", "REVISION"]);
        for pool in &self.pools {
            table.row(vec![
                pool.name.clone(),
                word(&pool.kind),
                pool.first.clone(),
                pool.last.clone(),
                pool.revision.to_string(),
            ]);
        }
        table.render()
    }
}

impl Render for PoolListView {
    fn text(&self) -> String {
        self.table()
    }
}

impl Render for PoolUsageListView {
    fn text(&self) -> String {
        let mut table = Table::new(vec!["NAME", "KIND", "SIZE", "USED", "USED%", "WARNING"]);
        for usage in &self.usages {
            let percent = if usage.size == 0 {
                0.0
            } else {
                usage.used as f64 * 100.0 / usage.size as f64
            };
            table.row(vec![
                usage.name.clone(),
                word(&usage.kind),
                usage.size.to_string(),
                usage.used.to_string(),
                format!("{percent:.1}"),
                if usage.near_exhaustion {
                    "near exhaustion".into()
                } else {
                    String::new()
                },
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{render, Format};

    #[test]
    fn pool_usage_table_shows_percent_and_warning() {
        let usage = PoolUsageListView {
            usages: vec![PoolUsageView {
                name: "macs".into(),
                kind: PoolKindView::Mac,
                size: 10,
                used: 9,
                near_exhaustion: true,
            }],
            revision: 5,
        };
        let text = render(Format::Table, &usage);
        assert!(text.contains("90.0"), "{text}");
        assert!(text.contains("near exhaustion"), "{text}");
    }
}
