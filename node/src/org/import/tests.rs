//! Import: encodings, formats, a deep chart, and every problem with its row
//! and column.

use super::*;
use crate::ids::DeviceId;

const CHART: &str = "工号,姓名,部门,职位,邮箱,手机,负责人
1001,张伟,总部/技术部/前端组,工程师,zhang@example.cn,13800138000,否
1002,李娜,总部/技术部,经理,li@example.cn,+86 138-0013-8001,是
1003,Wang Fang,总部/市场部,Marketing,,,
";

fn chart(text: &str) -> Chart {
    parse(&csv_rows(text.as_bytes()).unwrap(), |_| {}).unwrap()
}

fn problems(text: &str) -> Vec<String> {
    parse(&csv_rows(text.as_bytes()).unwrap(), |_| {})
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_chinese_chart_reads_the_same_in_utf8_with_a_bom_and_in_gbk() {
    let plain = chart(CHART);
    assert_eq!(plain.members.len(), 3);
    assert_eq!(plain.departments.len(), 4, "总部, 技术部, 前端组, 市场部");
    let policy = plain.apply(&Policy::default());
    assert_eq!(policy.path(plain.members[0].department), "总部/技术部/前端组");
    assert!(plain.members[1].head && !plain.members[0].head);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(CHART.as_bytes());
    assert_eq!(parse(&csv_rows(&bom).unwrap(), |_| {}).unwrap(), plain);
    let (gbk, _, lossy) = encoding_rs::GBK.encode(CHART);
    assert!(!lossy);
    assert!(std::str::from_utf8(&gbk).is_err(), "really GBK bytes");
    assert_eq!(parse(&csv_rows(&gbk).unwrap(), |_| {}).unwrap(), plain);
}

#[test]
fn paths_twelve_levels_deep_make_one_department_per_level() {
    let path: Vec<String> = (1..=12).map(|i| format!("层{i}")).collect();
    let text = format!("id,name,department\n7,Deep,{}\n8,Shallow,层1\n", path.join("/"));
    let c = chart(&text);
    assert_eq!(c.departments.len(), 12);
    assert!(
        c.departments
            .iter()
            .enumerate()
            .all(|(i, d)| d.parent.is_none_or(|p| (p as usize) < i))
    );
    let policy = c.apply(&Policy::default());
    assert_eq!(policy.path(c.members[0].department), path.join("/"));
    assert!(policy.check().is_ok());
}

#[test]
fn every_problem_is_reported_with_its_row_and_column() {
    let deep: Vec<String> = (1..=40).map(|i| format!("d{i}")).collect();
    let text = "id,name,department,phone,shoe size\n1,A,X,123\n";
    assert_eq!(
        problems(text),
        [
            "row 1, column E (shoe size): unknown column: the columns are member id, name, department, title, email, phone, department head (or 工号, 姓名, 部门, 职位, 邮箱, 手机, 负责人)"
        ]
    );
    let text = format!(
        "id,name,department,phone,email,head
1,A,X,13800138000,a@b.cn,yes
2,B,X/Y,call me,,
1,C,X,,,
4,D,总部/技术部/总部,,,
5,E,{},,,
6,F,X//Y,,,
7,,X,,not-an-email,maybe
",
        deep.join("/")
    );
    let got = problems(&text);
    let want = [
        "row 3, column D (phone): \"call me\" is not a phone number (digits, spaces, - ( ) and a leading +; 5 to 20 digits)",
        "row 4, column A (member id): member id \"1\" is already used on row 2",
        "row 5, column C (department): \"总部/技术部/总部\" is a cycle: \"总部\" is its own ancestor",
        "row 6, column C (department): \"d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20/d21/d22/d23/d24/d25/d26/d27/d28/d29/d30/d31/d32/d33/d34/d35/d36/d37/d38/d39/d40\" is 40 levels deep; at most 32",
        "row 7, column C (department): \"X//Y\" has an empty department name between slashes",
        "row 8, column B (name): a name is required",
        "row 8, column E (email): \"not-an-email\" is not an email address",
        "row 8, column F (department head): \"maybe\" is not yes or no (1/0, true/false, yes/no, 是/否)",
    ];
    assert_eq!(got, want);
    assert_eq!(
        problems("name,department\nA,X\n"),
        ["row 1: no member id column"],
        "a required column is missing"
    );
}

#[test]
fn an_xlsx_sheet_reads_like_its_csv_with_numbers_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["工号", "姓名", "部门", "职位", "邮箱", "手机", "负责人"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_number(1, 0, 1001.0).unwrap();
    sheet.write_string(1, 1, "张伟").unwrap();
    sheet.write_string(1, 2, "总部/技术部/前端组").unwrap();
    sheet.write_string(1, 3, "工程师").unwrap();
    sheet.write_string(1, 4, "zhang@example.cn").unwrap();
    sheet.write_number(1, 5, 13800138000.0).unwrap();
    sheet.write_string(1, 6, "否").unwrap();
    sheet.write_number(2, 0, 1002.0).unwrap();
    sheet.write_string(2, 1, "").unwrap();
    sheet.write_string(2, 2, "总部").unwrap();
    book.save(&path).unwrap();
    let rows = read_rows(&path).unwrap();
    let err = parse(&rows, |_| {}).unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].to_string(), "row 3, column B (name): a name is required");
    let mut rows = rows;
    rows[2][1] = "李娜".into();
    let c = parse(&rows, |_| {}).unwrap();
    assert_eq!(c.members[0].id, "1001");
    assert_eq!(c.members[0].phone, "13800138000");
    let csv_chart = chart(
        "工号,姓名,部门,职位,邮箱,手机,负责人\n1001,张伟,总部/技术部/前端组,工程师,zhang@example.cn,13800138000,否\n1002,李娜,总部,,,,\n",
    );
    assert_eq!(c, csv_chart);
}

#[test]
fn an_import_keeps_members_devices_and_hidden_departments() {
    let first = chart(CHART).apply(&Policy::default());
    let mut base = first.clone();
    let device = DeviceId([7; 32]);
    base.members[0].devices.push(device);
    base.departments[2].hidden = true; // 前端组
    let moved = CHART.replace("1001,张伟,总部/技术部/前端组", "1001,张伟,总部/市场部");
    let next = chart(&moved).apply(&base);
    assert_eq!(next.members[0].devices, [device], "devices follow the member id");
    assert_eq!(next.path(next.members[0].department), "总部/市场部");
    let hidden: Vec<String> = (0..next.departments.len() as u32)
        .filter(|&i| next.departments[i as usize].hidden)
        .map(|i| next.path(i))
        .collect();
    assert!(hidden.is_empty(), "前端组 left the chart: {hidden:?}");
    let kept = chart(CHART).apply(&base);
    assert!(kept.departments.iter().any(|d| d.hidden && d.name == "前端组"));
}

#[test]
fn an_unknown_extension_or_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_rows(&dir.path().join("chart.pdf")).unwrap_err();
    assert!(err.to_string().contains("use .xlsx, .xls, .ods or .csv"), "{err}");
    let err = read_rows(&dir.path().join("missing.csv")).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn rows_and_columns_are_numbered_as_the_file_shows_them() {
    // A blank line in a CSV still counts as a line.
    let text = "id,name,department\n1,A,X\n\n2,,X\n";
    assert_eq!(problems(text), ["row 4, column B (name): a name is required"]);
    // A sheet whose data starts at C3.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.xlsx");
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["id", "name", "department"].iter().enumerate() {
        sheet.write_string(2, 2 + c as u16, *h).unwrap();
    }
    sheet.write_string(3, 2, "1").unwrap();
    sheet.write_string(3, 4, "X").unwrap();
    book.save(&path).unwrap();
    let err = parse(&read_rows(&path).unwrap(), |_| {}).unwrap_err();
    assert_eq!(err[0].to_string(), "row 4, column D (name): a name is required");
}
