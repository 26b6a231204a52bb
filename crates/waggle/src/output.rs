//! Human and JSON rendering of CLI output.

use serde_json::{Value, json};
use waggle_core::Instance;

/// An instance as the CLI's JSON: keys `id, service, address, port, tags, meta, weight, zone,
/// status, create_revision, modify_revision`.
pub(crate) fn instance_json(i: &Instance) -> Value {
    json!({
        "id": i.spec.id.as_str(),
        "service": i.spec.service.as_str(),
        "address": i.spec.address,
        "port": i.spec.port,
        "tags": i.spec.tags,
        "meta": i.spec.meta,
        "weight": i.spec.weight,
        "zone": i.spec.zone.as_ref().map(|z| z.as_str()),
        "status": i.spec.status.as_str(),
        "create_revision": i.create_revision.get(),
        "modify_revision": i.modify_revision.get(),
    })
}

/// Renders rows as a left-aligned table with a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (cell, w) in cells.zip(&widths) {
            parts.push(format!("{cell:<w$}"));
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// One instance as a table row for `waggle instances`.
pub(crate) fn instance_row(i: &Instance) -> Vec<String> {
    let meta: Vec<String> = i.spec.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        i.spec.id.to_string(),
        i.spec.address.clone(),
        i.spec.port.to_string(),
        i.spec.status.to_string(),
        i.spec.weight.to_string(),
        i.spec.zone.as_ref().map_or_else(|| "-".to_string(), |z| z.to_string()),
        if i.spec.tags.is_empty() { "-".to_string() } else { i.spec.tags.join(",") },
        if meta.is_empty() { "-".to_string() } else { meta.join(",") },
        i.modify_revision.to_string(),
    ]
}

/// The header matching [`instance_row`].
pub(crate) const INSTANCE_HEADER: &[&str] =
    &["ID", "ADDRESS", "PORT", "STATUS", "WEIGHT", "ZONE", "TAGS", "META", "REVISION"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(out, "A    LONGER\nxyz  1\nq    22\n");
    }
}
