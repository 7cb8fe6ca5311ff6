//! Reading an org chart from a spreadsheet: .xlsx/.xls/.ods (calamine) or .csv
//! (UTF-8, UTF-8 with BOM, or GBK/GB18030 as Chinese-locale Excel writes it).
//!
//! One row per member: member id, name, department path (`总部/技术部/前端组`),
//! title, email, phone, department-head flag. Every row is checked and every
//! problem reported with its row and column, as the spreadsheet numbers them;
//! nothing is changed unless the whole file is good.

use std::{collections::BTreeMap, fmt, path::Path};

use super::body::{Department, MAX_DEPTH, MAX_FIELD_BYTES, MemberStatus, OrgMember, OrgRole, Policy};

/// Most rows a file may hold.
pub const MAX_ROWS: usize = 200_000;

/// The chart a file describes: departments (parents first) and members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chart {
    pub departments: Vec<Department>,
    pub members: Vec<ChartMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChartMember {
    pub id: String,
    pub name: String,
    pub department: u32,
    pub title: String,
    pub email: String,
    pub phone: String,
    pub head: bool,
}

/// One problem in a file, where the spreadsheet shows it (rows from 1, the
/// header row included; columns as letters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub row: usize,
    /// The column letter and its header, e.g. `F (phone)`.
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}, column {c}: {}", self.row, self.message),
            None => write!(f, "row {}: {}", self.row, self.message),
        }
    }
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a spreadsheet this build reads: {why}")]
    Format { path: String, why: String },
}

/// The columns a chart has, in the order of [`Field::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Id,
    Name,
    Department,
    Title,
    Email,
    Phone,
    Head,
}

impl Field {
    /// The header names each column is known by (lower case), English and Chinese.
    fn from_header(header: &str) -> Option<Field> {
        let h = header.trim().to_lowercase().replace(['_', '-'], " ");
        Some(match h.as_str() {
            "id" | "member id" | "employee id" | "工号" | "员工编号" | "编号" => Field::Id,
            "name" | "姓名" => Field::Name,
            "department" | "dept" | "department path" | "部门" | "部门路径" => Field::Department,
            "title" | "job title" | "职位" | "职务" => Field::Title,
            "email" | "e mail" | "mail" | "邮箱" | "电子邮件" => Field::Email,
            "phone" | "mobile" | "telephone" | "手机" | "手机号" | "电话" => Field::Phone,
            "head" | "department head" | "is head" | "负责人" | "部门负责人" => Field::Head,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Id => "member id",
            Field::Name => "name",
            Field::Department => "department",
            Field::Title => "title",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Head => "department head",
        }
    }
}

/// Reads the rows of `path` as text, by its extension.
pub fn read_rows(path: &Path) -> Result<Vec<Vec<String>>, ReadError> {
    let shown = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" | "txt" => {
            let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
                path: shown.clone(),
                source,
            })?;
            csv_rows(&bytes).map_err(|why| ReadError::Format { path: shown, why })
        }
        "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => {
            spreadsheet_rows(path).map_err(|why| ReadError::Format { path: shown, why })
        }
        _ => Err(ReadError::Format {
            path: shown,
            why: "use .xlsx, .xls, .ods or .csv".into(),
        }),
    }
}

/// The rows of a CSV file: UTF-8 (with or without a BOM), else GB18030 (a
/// superset of GBK).
pub fn csv_rows(bytes: &[u8]) -> Result<Vec<Vec<String>>, String> {
    let text = decode_text(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let bytes = text.as_bytes();
    let (mut counted_to, mut line_at) = (0usize, 1usize);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("not valid CSV: {e}"))?;
        // The reader skips blank lines, and its position is where it started
        // reading (before them): place each record at the line its first field
        // is on, so problems name the line a spreadsheet shows.
        let mut start = record.position().map_or(counted_to, |p| p.byte() as usize);
        while matches!(bytes.get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        let start = start.clamp(counted_to, bytes.len());
        line_at += bytes[counted_to..start].iter().filter(|b| **b == b'\n').count();
        counted_to = start;
        let line = line_at;
        if line > MAX_ROWS + 1 {
            return Err(format!("more than {MAX_ROWS} rows"));
        }
        rows.resize(line.saturating_sub(1).max(rows.len()), Vec::new());
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => encoding_rs::GB18030.decode(bytes).0.into_owned(),
    }
}

fn spreadsheet_rows(path: &Path) -> Result<Vec<Vec<String>>, String> {
    use calamine::{Data, Reader, open_workbook_auto};
    let mut book = open_workbook_auto(path).map_err(|e| e.to_string())?;
    let range = book
        .worksheet_range_at(0)
        .ok_or("the file has no sheet")?
        .map_err(|e| e.to_string())?;
    // Keep the leading empty rows and columns, so that problems name the row
    // and column the spreadsheet shows.
    let (first_row, first_col) = range.start().map_or((0, 0), |(r, c)| (r as usize, c as usize));
    if first_row + range.height() > MAX_ROWS + 1 || first_col > 1024 {
        return Err(format!("more than {MAX_ROWS} rows, or data far to the right"));
    }
    let mut rows = vec![Vec::new(); first_row];
    for row in range.rows() {
        let cells = row.iter().map(|cell| match cell {
            Data::Empty => String::new(),
            Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
            other => other.to_string(),
        });
        rows.push(std::iter::repeat_n(String::new(), first_col).chain(cells).collect());
    }
    Ok(rows)
}

/// The spreadsheet's name of column `i` (0 → A, 26 → AA).
fn column_letter(mut i: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// Checks every row and builds the chart; `progress` is told how many rows are
/// done. All problems are returned together.
pub fn parse(rows: &[Vec<String>], mut progress: impl FnMut(usize)) -> Result<Chart, Vec<Problem>> {
    let mut problems = Vec::new();
    // The header is the first non-empty row.
    let Some(header_at) = rows.iter().position(|r| r.iter().any(|c| !c.trim().is_empty())) else {
        return Err(vec![Problem {
            row: 1,
            column: None,
            message: "the file is empty".into(),
        }]);
    };
    let mut columns: BTreeMap<Field, usize> = BTreeMap::new();
    for (i, cell) in rows[header_at].iter().enumerate() {
        if cell.trim().is_empty() {
            continue;
        }
        let column = Some(format!("{} ({})", column_letter(i), cell.trim()));
        match Field::from_header(cell) {
            Some(field) if columns.contains_key(&field) => problems.push(Problem {
                row: header_at + 1,
                column,
                message: format!("a second {} column", field.name()),
            }),
            Some(field) => {
                columns.insert(field, i);
            }
            None => problems.push(Problem {
                row: header_at + 1,
                column,
                message: "unknown column: the columns are member id, name, department, title, email, phone, department head (or 工号, 姓名, 部门, 职位, 邮箱, 手机, 负责人)".into(),
            }),
        }
    }
    for required in [Field::Id, Field::Name, Field::Department] {
        if !columns.contains_key(&required) {
            problems.push(Problem {
                row: header_at + 1,
                column: None,
                message: format!("no {} column", required.name()),
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let col = |f: Field| columns.get(&f).copied();
    let mut departments: Vec<Department> = Vec::new();
    let mut by_path: BTreeMap<String, u32> = BTreeMap::new();
    let mut members = Vec::new();
    let mut first_row_of: BTreeMap<String, usize> = BTreeMap::new();
    for (at, row) in rows.iter().enumerate().skip(header_at + 1) {
        let line = at + 1;
        if at % 1024 == 0 {
            progress(at);
        }
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cell = |f: Field| -> &str { col(f).and_then(|i| row.get(i)).map_or("", |c| c.trim()) };
        let mut problem = |f: Field, message: String| {
            let i = col(f).unwrap_or(0);
            problems.push(Problem {
                row: line,
                column: Some(format!("{} ({})", column_letter(i), f.name())),
                message,
            });
        };
        for f in [Field::Id, Field::Name, Field::Title, Field::Email, Field::Phone] {
            if cell(f).len() > MAX_FIELD_BYTES {
                problem(f, format!("longer than {MAX_FIELD_BYTES} bytes"));
            }
        }
        let id = cell(Field::Id).to_string();
        if id.is_empty() {
            problem(Field::Id, "a member id is required".into());
        } else if let Some(first) = first_row_of.get(&id) {
            problem(Field::Id, format!("member id {id:?} is already used on row {first}"));
        } else {
            first_row_of.insert(id.clone(), line);
        }
        if cell(Field::Name).is_empty() {
            problem(Field::Name, "a name is required".into());
        }
        let phone = cell(Field::Phone);
        if !phone.is_empty() && !valid_phone(phone) {
            problem(
                Field::Phone,
                format!("{phone:?} is not a phone number (digits, spaces, - ( ) and a leading +; 5 to 20 digits)"),
            );
        }
        let email = cell(Field::Email);
        if !email.is_empty() && !valid_email(email) {
            problem(Field::Email, format!("{email:?} is not an email address"));
        }
        let head = match parse_flag(cell(Field::Head)) {
            Some(h) => h,
            None => {
                problem(
                    Field::Head,
                    format!(
                        "{:?} is not yes or no (1/0, true/false, yes/no, 是/否)",
                        cell(Field::Head)
                    ),
                );
                false
            }
        };
        let department = match department_path(cell(Field::Department)) {
            Ok(parts) => Some(intern(&parts, &mut departments, &mut by_path)),
            Err(message) => {
                problem(Field::Department, message);
                None
            }
        };
        if let Some(department) = department {
            members.push(ChartMember {
                id,
                name: cell(Field::Name).to_string(),
                department,
                title: cell(Field::Title).to_string(),
                email: email.to_string(),
                phone: phone.to_string(),
                head,
            });
        }
    }
    progress(rows.len());
    if problems.is_empty() {
        Ok(Chart { departments, members })
    } else {
        Err(problems)
    }
}

/// The segments of a department path, checked: none empty, not deeper than
/// [`MAX_DEPTH`], no department its own ancestor.
fn department_path(path: &str) -> Result<Vec<&str>, String> {
    if path.is_empty() {
        return Err("a department path is required, e.g. 总部/技术部/前端组".into());
    }
    let parts: Vec<&str> = path.split('/').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{path:?} has an empty department name between slashes"));
    }
    if parts.len() > MAX_DEPTH {
        return Err(format!("{path:?} is {} levels deep; at most {MAX_DEPTH}", parts.len()));
    }
    for (i, p) in parts.iter().enumerate() {
        if parts[..i].contains(p) {
            return Err(format!("{path:?} is a cycle: {p:?} is its own ancestor"));
        }
        if p.len() > MAX_FIELD_BYTES {
            return Err(format!(
                "a department name in {path:?} is longer than {MAX_FIELD_BYTES} bytes"
            ));
        }
    }
    Ok(parts)
}

/// The index of the department at `parts`, made (with its ancestors, parents
/// first) when new.
fn intern(parts: &[&str], departments: &mut Vec<Department>, by_path: &mut BTreeMap<String, u32>) -> u32 {
    let mut parent = None;
    let mut path = String::new();
    for part in parts {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        let index = *by_path.entry(path.clone()).or_insert_with(|| {
            departments.push(Department {
                name: (*part).to_string(),
                parent,
                hidden: false,
            });
            (departments.len() - 1) as u32
        });
        parent = Some(index);
    }
    parent.expect("a path has at least one part")
}

fn valid_phone(phone: &str) -> bool {
    let body = phone.strip_prefix('+').unwrap_or(phone);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    body.chars().all(|c| c.is_ascii_digit() || " -()".contains(c)) && (5..=20).contains(&digits)
}

fn valid_email(email: &str) -> bool {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "" | "0" | "no" | "n" | "false" | "否" => Some(false),
        "1" | "yes" | "y" | "true" | "是" => Some(true),
        _ => None,
    }
}

impl Chart {
    /// The policy `base` with this chart as its departments and members. A
    /// member already in `base` (same id) keeps its devices, role and status;
    /// departments keep their hidden flag by path. Members not in the chart
    /// leave the policy.
    pub fn apply(&self, base: &Policy) -> Policy {
        let old_members: BTreeMap<&str, &OrgMember> = base.members.iter().map(|m| (m.id.as_str(), m)).collect();
        let hidden: std::collections::BTreeSet<String> = (0..base.departments.len() as u32)
            .filter(|&i| base.departments[i as usize].hidden)
            .map(|i| base.path(i))
            .collect();
        let mut next = Policy {
            departments: self.departments.clone(),
            members: Vec::with_capacity(self.members.len()),
            ..base.clone()
        };
        for i in 0..next.departments.len() as u32 {
            if hidden.contains(&next.path(i)) {
                next.departments[i as usize].hidden = true;
            }
        }
        for m in &self.members {
            let old = old_members.get(m.id.as_str());
            // A department admin keeps the role only while the department is there.
            let role = match old.map(|o| o.role) {
                Some(OrgRole::DepartmentAdmin(d)) => base
                    .departments
                    .get(d as usize)
                    .and_then(|_| next.department(&base.path(d)))
                    .map_or(OrgRole::Member, OrgRole::DepartmentAdmin),
                Some(role) => role,
                None => OrgRole::Member,
            };
            next.members.push(OrgMember {
                id: m.id.clone(),
                name: m.name.clone(),
                department: m.department,
                title: m.title.clone(),
                email: m.email.clone(),
                phone: m.phone.clone(),
                head: m.head,
                role,
                devices: old.map(|o| o.devices.clone()).unwrap_or_default(),
                status: old.map_or(MemberStatus::Active, |o| o.status),
            });
        }
        next
    }
}

#[cfg(test)]
mod tests;
