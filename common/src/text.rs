//! Plain-text tables for the command-line tools: columns padded to their widest cell, so
//! output reads as a table in a terminal and stays greppable.

/// `headers` and `rows` as left-aligned columns separated by two spaces, one line per row
/// (the header first), each line ending in a newline. Widths count characters, not bytes.
pub fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            if i + 1 < N {
                l.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_on_the_widest_cell() {
        let t = table(
            &["NAME", "ROLE"],
            &[
                ["alice".into(), "analyst".into()],
                ["ε-bob".into(), "admin".into()],
            ],
        );
        assert_eq!(t, "NAME   ROLE\nalice  analyst\nε-bob  admin\n");
        assert_eq!(table(&["A"], &[]), "A\n");
    }
}
