//! Rendering answers: one [`Report`] (columns, rows, metadata) per command, written
//! as an aligned table, one JSON document, JSON lines or CSV.
//!
//! - `table` (default): aligned columns, numbers right-aligned, times as RFC 3339 UTC,
//!   then one `tiers: …` line with the answer's metadata. The same bytes whether or
//!   not standard output is a terminal (no colors), so it can be piped to `column`,
//!   `grep` or `awk` and compared in tests.
//! - `json`: one object: the metadata fields and the rows under one name
//!   (`points`, `entries`, `series` …), each row an object.
//! - `jsonl`: one object per row, nothing else; `csv`: a header line and one line
//!   per row (RFC 4180 quoting). For these two, the metadata line goes to standard
//!   error, so standard output holds only rows.
//!
//! Machine formats carry times twice: `time` (RFC 3339) and `timestamp_ms`.

use std::io::{self, Write};

use serde_json::{Map, Value as Json};

use crate::timefmt::format_utc;

/// Output format of query commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and a metadata line.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per row.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// An integer.
    Int(i64),
    /// A float (avg, rate).
    Float(f64),
    /// Text.
    Str(String),
    /// A flag; shown as `*` / empty in tables.
    Flag(bool),
    /// Nothing (e.g. a missing label).
    Empty,
}

impl Cell {
    fn table_text(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => format_float(*v),
            Cell::Str(s) => s.clone(),
            Cell::Flag(true) => "*".into(),
            Cell::Flag(false) | Cell::Empty => String::new(),
        }
    }

    fn csv_text(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
            Cell::Str(s) => csv_quote(s),
            Cell::Flag(b) => b.to_string(),
            Cell::Empty => String::new(),
        }
    }

    fn json(&self) -> Json {
        match self {
            Cell::Int(v) => Json::from(*v),
            Cell::Float(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
            Cell::Str(s) => Json::from(s.as_str()),
            Cell::Flag(b) => Json::from(*b),
            Cell::Empty => Json::Null,
        }
    }

    fn right_aligned(&self) -> bool {
        matches!(self, Cell::Int(_) | Cell::Float(_))
    }
}

/// Floats in tables: at most three decimals, trailing zeros dropped.
pub fn format_float(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// RFC 4180: quote when the text has a comma, quote, CR or LF; double inner quotes.
pub fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A column: its name and whether the table format shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header / JSON key.
    pub name: String,
    /// Shown in `table` (machine-only columns such as `timestamp_ms` are not).
    pub in_table: bool,
}

impl Column {
    /// A column in every format.
    pub fn new(name: impl Into<String>) -> Column {
        Column {
            name: name.into(),
            in_table: true,
        }
    }

    /// A column of the machine formats only.
    pub fn machine(name: impl Into<String>) -> Column {
        Column {
            name: name.into(),
            in_table: false,
        }
    }
}

/// A time as a cell: RFC 3339 text.
pub fn time_cell(ms: i64) -> Cell {
    Cell::Str(format_utc(ms))
}

/// What a command prints.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// JSON key of the rows, e.g. `points`.
    pub rows_name: &'static str,
    /// Columns.
    pub columns: Vec<Column>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Cell>>,
    /// Metadata as JSON fields (`json` format).
    pub meta: Vec<(&'static str, Json)>,
    /// Metadata as one human line (`table` below the rows; `csv`/`jsonl` on stderr).
    pub meta_line: Option<String>,
    /// Notes for standard error in every format (e.g. "no such series").
    pub notes: Vec<String>,
}

impl Report {
    /// Writes the report to `out` (rows) and `err` (notes, metadata line of csv/jsonl).
    pub fn write(
        &self,
        format: Format,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<()> {
        match format {
            Format::Table => self.write_table(out)?,
            Format::Csv => {
                let names: Vec<String> = self.columns.iter().map(|c| csv_quote(&c.name)).collect();
                writeln!(out, "{}", names.join(","))?;
                for row in &self.rows {
                    let cells: Vec<String> = row.iter().map(Cell::csv_text).collect();
                    writeln!(out, "{}", cells.join(","))?;
                }
            }
            Format::Jsonl => {
                for row in &self.rows {
                    writeln!(out, "{}", Json::Object(self.row_object(row)))?;
                }
            }
            Format::Json => {
                let mut doc = Map::new();
                for (k, v) in &self.meta {
                    doc.insert((*k).to_string(), v.clone());
                }
                let rows: Vec<Json> = self
                    .rows
                    .iter()
                    .map(|r| Json::Object(self.row_object(r)))
                    .collect();
                doc.insert(self.rows_name.to_string(), Json::Array(rows));
                let text = serde_json::to_string_pretty(&Json::Object(doc))
                    .map_err(|e| io::Error::other(e.to_string()))?;
                writeln!(out, "{text}")?;
            }
        }
        if matches!(format, Format::Csv | Format::Jsonl) {
            if let Some(line) = &self.meta_line {
                writeln!(err, "{line}")?;
            }
        }
        for note in &self.notes {
            writeln!(err, "note: {note}")?;
        }
        out.flush()
    }

    fn row_object(&self, row: &[Cell]) -> Map<String, Json> {
        self.columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.name.clone(), v.json()))
            .collect()
    }

    fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        let shown: Vec<usize> = (0..self.columns.len())
            .filter(|&i| self.columns[i].in_table)
            .collect();
        let texts: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| shown.iter().map(|&i| r[i].table_text()).collect())
            .collect();
        let mut widths: Vec<usize> = shown
            .iter()
            .map(|&i| self.columns[i].name.chars().count())
            .collect();
        for row in &texts {
            for (w, t) in widths.iter_mut().zip(row) {
                *w = (*w).max(t.chars().count());
            }
        }
        // A column is right-aligned when its first non-empty cell is a number.
        let right: Vec<bool> = shown
            .iter()
            .map(|&i| {
                self.rows
                    .iter()
                    .map(|r| &r[i])
                    .find(|c| !matches!(c, Cell::Empty))
                    .is_some_and(Cell::right_aligned)
            })
            .collect();
        let line = |cells: Vec<&str>| -> String {
            let mut s = String::new();
            for (k, text) in cells.iter().enumerate() {
                if k > 0 {
                    s.push_str("  ");
                }
                let pad = widths[k].saturating_sub(text.chars().count());
                if right[k] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(text);
                } else {
                    s.push_str(text);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let header: Vec<&str> = shown
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        writeln!(out, "{}", line(header))?;
        for row in &texts {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        if let Some(meta) = &self.meta_line {
            writeln!(out, "{meta}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            rows_name: "entries",
            columns: vec![
                Column::new("series"),
                Column::new("sum"),
                Column::machine("ms"),
            ],
            rows: vec![
                vec![Cell::Str("a{x=1,y=2}".into()), Cell::Int(5), Cell::Int(1)],
                vec![Cell::Str("bb".into()), Cell::Int(12345), Cell::Int(2)],
            ],
            meta: vec![("tiers", Json::from("minute"))],
            meta_line: Some("tiers: minute".into()),
            notes: vec![],
        }
    }

    fn render(r: &Report, f: Format) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        r.write(f, &mut out, &mut err).expect("writes to memory");
        (
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[test]
    fn every_format() {
        let r = sample();
        assert_eq!(
            render(&r, Format::Table).0,
            "series        sum\na{x=1,y=2}      5\nbb          12345\ntiers: minute\n"
        );
        let (csv, err) = render(&r, Format::Csv);
        assert_eq!(csv, "series,sum,ms\n\"a{x=1,y=2}\",5,1\nbb,12345,2\n");
        assert_eq!(err, "tiers: minute\n");
        let (jsonl, _) = render(&r, Format::Jsonl);
        assert_eq!(jsonl.lines().count(), 2);
        let (json, _) = render(&r, Format::Json);
        let v: Json = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v["entries"][1]["sum"], 12345);
        assert_eq!(v["tiers"], "minute");
    }

    #[test]
    fn floats_and_quotes() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(2.0), "2");
        assert_eq!(format_float(0.33333), "0.333");
        assert_eq!(csv_quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_quote("plain"), "plain");
        assert_eq!(csv_quote("a,\"b"), "\"a,\"\"b\"");
    }
}
