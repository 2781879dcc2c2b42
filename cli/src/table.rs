//! Aligned text the way kubectl prints it. `tabwrite` is Go's `text/tabwriter`
//! (elastic tabstops: a tab-terminated cell is padded to the widest cell of its column
//! among the consecutive lines that have one), which both `get` tables (padding 3) and
//! `describe` (padding 2) are built on.

/// Aligns `\t`-separated cells. The last cell of a line is not padded, and trailing
/// blanks are trimmed so output is stable for tests and diffs.
pub fn tabwrite(text: &str, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths: Vec<Vec<usize>> = lines
        .iter()
        .map(|l| vec![0; l.len().saturating_sub(1)])
        .collect();
    for col in 0..columns.saturating_sub(1) {
        let has_cell = |i: usize| lines[i].len() > col + 1;
        let mut i = 0;
        while i < lines.len() {
            if !has_cell(i) {
                i += 1;
                continue;
            }
            let start = i;
            let mut width = 0;
            while i < lines.len() && has_cell(i) {
                width = width.max(display_width(lines[i][col]));
                i += 1;
            }
            for row in &mut widths[start..i] {
                row[col] = width + padding;
            }
        }
    }
    let mut out = String::with_capacity(text.len() * 2);
    for (cells, widths) in lines.iter().zip(&widths) {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - display_width(cell)));
        }
        line.push_str(cells.last().copied().unwrap_or(""));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn display_width(s: &str) -> usize {
    s.chars().count()
}

/// A `get` table: upper-case headers, three spaces between columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Headers exactly as given (`kubectl top` writes `CPU(cores)`).
    pub fn with_headers<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let cells: Vec<String> = row.iter().map(|c| clean(c)).collect();
            text.push_str(&cells.join("\t"));
            text.push('\n');
        }
        tabwrite(&text, 3)
    }
}

/// A cell must stay on one line and must not introduce columns of its own.
fn clean(cell: &str) -> String {
    let cell: String = cell
        .chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect();
    if cell.is_empty() {
        "<none>".into()
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell_plus_three() {
        let mut t = Table::new(&["name", "ready", "status"]);
        t.push(vec![
            "web-7d4b9c-x2x".into(),
            "1/1".into(),
            "Running".into(),
        ]);
        t.push(vec!["db".into(), "0/1".into(), "CrashLoopBackOff".into()]);
        assert_eq!(
            t.render(),
            "NAME             READY   STATUS\n\
             web-7d4b9c-x2x   1/1     Running\n\
             db               0/1     CrashLoopBackOff\n"
        );
    }

    #[test]
    fn empty_cells_and_stray_tabs_keep_the_layout() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec!["".into(), "x\ty".into()]);
        assert_eq!(t.render(), "A        B\n<none>   x y\n");
    }

    #[test]
    fn tabwriter_blocks_end_at_lines_without_the_column() {
        let text = "Name:\tweb\nLabels:\tapp=web\n\tx=y\nContainers:\n  c:\n    Image:\tbusybox\n    Restart Count:\t0\n";
        assert_eq!(
            tabwrite(text, 2),
            "Name:    web\nLabels:  app=web\n         x=y\nContainers:\n  c:\n    Image:          busybox\n    Restart Count:  0\n"
        );
    }
}
