//! Printing JSON answers of the HTTP API: as-is with `--format json`, as aligned tables of
//! their fields otherwise (so new fields show up without CLI changes).

use serde_json::Value;

use super::Format;

/// Prints a list of objects: a table with one column per field, or pretty JSON.
pub fn print_rows(rows: &[Value], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let columns = columns(rows);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(row.get(c))).collect())
        .collect();
    print_table(&columns, cells);
    Ok(())
}

/// Prints aligned columns under upper-cased headers.
pub fn print_table(columns: &[impl AsRef<str>], cells: Vec<Vec<String>>) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let header = c.as_ref().len();
            cells.iter().map(|r| r[i].len()).fold(header, usize::max)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.as_ref().to_uppercase()).collect());
    cells.into_iter().for_each(line);
}

/// Prints one object: scalar fields as `key: value`, lists of objects as tables.
pub fn print_object(doc: &Value, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(doc)?);
        return Ok(());
    }
    let Some(fields) = doc.as_object() else {
        println!("{}", cell(Some(doc)));
        return Ok(());
    };
    let (tables, scalars): (Vec<_>, Vec<_>) = fields
        .iter()
        .partition(|(_, v)| v.as_array().is_some_and(|a| a.iter().all(Value::is_object)));
    for (key, value) in scalars {
        println!("{key}: {}", cell(Some(value)));
    }
    for (key, value) in tables {
        println!("{key}:");
        print_rows(
            value.as_array().map(Vec::as_slice).unwrap_or_default(),
            format,
        )?;
    }
    Ok(())
}

/// Field names in first-seen order.
fn columns(rows: &[Value]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for key in rows
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys())
    {
        if !columns.contains(key) {
            columns.push(key.clone());
        }
    }
    columns
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_first_seen_order() {
        let rows = vec![
            serde_json::json!({"b": 1, "a": 2}),
            serde_json::json!({"c": null}),
        ];
        let cols = columns(&rows);
        assert_eq!(cols.len(), 3);
        assert!(cols.contains(&"c".to_string()));
        assert_eq!(cell(rows[1].get("c")), "-");
        assert_eq!(cell(rows[0].get("b")), "1");
    }
}
