//! Markdown ⇄ blocks: how a document is edited, shown and exchanged.
//!
//! [`parse`] reads CommonMark (with GitHub tables, strikethrough and task lists)
//! into [`Block`]s; [`render`] writes blocks back as Markdown that parses to the
//! same blocks. Tables and HTML blocks are kept as written (they still merge
//! character by character); everything else is modelled, so that an edit of one
//! word is an edit of one word in the document, whatever Markdown spelling the
//! editor used.
//!
//! A mention is written `[@Name](outpost:user/USER_ID)`; a bare `@name` becomes one
//! when the caller's resolver knows the name.

use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, Event, LinkType, Options, Parser, Tag, TagEnd};

use super::block::{Block, BlockKind, Container, HARD_BREAK, ListItem, MAX_DEPTH, Marks, Run};

/// The link destination prefix that marks a mention.
pub const MENTION_SCHEME: &str = "outpost:user/";

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Parses Markdown into blocks. `resolve` maps a bare `@name` to a user id.
pub fn parse(md: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Vec<Block> {
    let events: Vec<(Event<'_>, Range<usize>)> = Parser::new_ext(md, options()).into_offset_iter().collect();
    let mut p = Parse {
        md,
        blocks: Vec::new(),
        current: None,
        containers: Vec::new(),
        lists: Vec::new(),
        pending_item: None,
        marks: Marks::default(),
        skip_until: None,
    };
    for (i, (event, range)) in events.iter().enumerate() {
        if let Some(depth) = &mut p.skip_until {
            match event {
                Event::Start(_) => *depth += 1,
                Event::End(_) if *depth == 0 => p.skip_until = None,
                Event::End(_) => *depth -= 1,
                _ => {}
            }
            continue;
        }
        p.event(event, range.clone(), &events[i..]);
    }
    p.flush();
    for block in &mut p.blocks {
        resolve_mentions(block, resolve);
    }
    p.blocks
}

struct Parse<'a> {
    md: &'a str,
    blocks: Vec<Block>,
    /// The block inline content goes into.
    current: Option<Block>,
    containers: Vec<Container>,
    /// Open lists: (ordered, start, loose, items so far).
    lists: Vec<(bool, Option<u64>, bool, usize)>,
    /// An item whose own block has not started yet.
    pending_item: Option<ListItem>,
    marks: Marks,
    /// Inside something kept as written: skip events until its end.
    skip_until: Option<usize>,
}

impl Parse<'_> {
    fn event(&mut self, event: &Event<'_>, range: Range<usize>, rest: &[(Event<'_>, Range<usize>)]) {
        match event {
            Event::Start(tag) => self.start(tag, range, rest),
            Event::End(tag) => self.end(*tag),
            Event::Text(text) => self.inline(text, &self.marks.clone()),
            Event::Code(code) => {
                let marks = Marks {
                    code: true,
                    ..self.marks.clone()
                };
                self.inline(code, &marks);
            }
            Event::InlineHtml(html) | Event::Html(html) => self.raw_inline(html),
            Event::SoftBreak => self.inline("\n", &self.marks.clone()),
            Event::HardBreak => self.inline(&HARD_BREAK.to_string(), &self.marks.clone()),
            Event::Rule => {
                self.block_boundary();
                self.blocks.push(Block::new(BlockKind::Rule, self.parents()));
            }
            Event::TaskListMarker(done) => {
                if let Some(item) = &mut self.pending_item {
                    item.checked = Some(*done);
                } else if let Some(Block {
                    kind: BlockKind::ListItem(item),
                    ..
                }) = &mut self.current
                {
                    item.checked = Some(*done);
                }
            }
            // Not enabled in `options`; kept as written should they appear.
            Event::FootnoteReference(_) | Event::InlineMath(_) | Event::DisplayMath(_) => {
                let raw = self.md[range].to_string();
                self.raw_inline(&raw);
            }
        }
    }

    fn start(&mut self, tag: &Tag<'_>, range: Range<usize>, rest: &[(Event<'_>, Range<usize>)]) {
        match tag {
            Tag::Paragraph => {
                self.flush();
                let kind = match self.pending_item.take() {
                    Some(item) => BlockKind::ListItem(item),
                    None => BlockKind::Paragraph,
                };
                self.open(kind);
            }
            Tag::Heading { level, .. } => {
                self.block_boundary();
                self.open(BlockKind::Heading(*level as u8));
            }
            Tag::CodeBlock(kind) => {
                self.block_boundary();
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info.split_whitespace().next().unwrap_or("").to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                self.open(BlockKind::Code { language });
            }
            Tag::BlockQuote(_) => {
                self.block_boundary();
                self.containers.push(Container::Quote);
            }
            Tag::List(start) => {
                self.block_boundary();
                let loose = list_is_loose(rest);
                let ordered = start.is_some();
                let start = start.filter(|s| *s != 1).map(|s| s.min(999_999_999));
                self.lists.push((ordered, start, loose, 0));
            }
            Tag::Item => {
                self.flush();
                let Some((ordered, start, loose, count)) = self.lists.last_mut() else {
                    return;
                };
                *count += 1;
                self.pending_item = Some(ListItem {
                    ordered: *ordered,
                    start: if *count == 1 { *start } else { None },
                    loose: *loose,
                    checked: None,
                });
            }
            Tag::Table(_) | Tag::HtmlBlock | Tag::MetadataBlock(_) | Tag::FootnoteDefinition(_) => {
                self.block_boundary();
                let kind = match tag {
                    Tag::HtmlBlock => BlockKind::Html,
                    _ => BlockKind::Table,
                };
                let mut block = Block::new(kind, self.parents());
                block.push(&self.source_lines(range), &Marks::default());
                self.blocks.push(block);
                self.skip_until = Some(0);
            }
            Tag::Image { .. } => {
                let raw = self.md[range].to_string();
                self.raw_inline(&raw);
                self.skip_until = Some(0);
            }
            Tag::Emphasis => self.marks.em = true,
            Tag::Strong => self.marks.strong = true,
            Tag::Strikethrough => self.marks.strike = true,
            Tag::Link {
                link_type,
                dest_url,
                title,
                ..
            } => {
                if let Some(user) = dest_url.strip_prefix(MENTION_SCHEME) {
                    self.marks.mention = Some(user.to_string());
                } else {
                    let dest = if *link_type == LinkType::Email && !dest_url.starts_with("mailto:") {
                        format!("mailto:{dest_url}")
                    } else {
                        dest_url.to_string()
                    };
                    let mut dest = destination(&dest);
                    if !title.is_empty() {
                        dest = format!("{dest} \"{}\"", title.replace('"', "\\\""));
                    }
                    self.marks.link = Some(dest);
                }
            }
            // Not enabled in `options`: their content reads as plain text.
            Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::Heading(_) => self.flush(),
            TagEnd::CodeBlock => {
                if let Some(Block { runs, .. }) = &mut self.current
                    && let Some(last) = runs.last_mut()
                    && last.text.ends_with('\n')
                {
                    last.text.pop();
                    if last.text.is_empty() {
                        runs.pop();
                    }
                }
                self.flush();
            }
            TagEnd::BlockQuote(_) => {
                self.block_boundary();
                self.containers.pop();
            }
            TagEnd::Item => {
                self.block_boundary();
                if let Some(last) = self.containers.last()
                    && last.is_item()
                {
                    self.containers.pop();
                }
            }
            TagEnd::List(_) => {
                self.block_boundary();
                self.lists.pop();
            }
            TagEnd::Emphasis => self.marks.em = false,
            TagEnd::Strong => self.marks.strong = false,
            TagEnd::Strikethrough => self.marks.strike = false,
            TagEnd::Link => {
                self.marks.link = None;
                self.marks.mention = None;
            }
            _ => {}
        }
    }

    /// Inline content: into the open block, or a new one (a tight list item's
    /// text, or text directly in a container).
    fn inline(&mut self, text: &str, marks: &Marks) {
        if self.current.is_none() {
            let kind = match self.pending_item.take() {
                Some(item) => BlockKind::ListItem(item),
                None => BlockKind::Paragraph,
            };
            self.open(kind);
        }
        if let Some(block) = &mut self.current {
            block.push(text, marks);
        }
    }

    fn raw_inline(&mut self, raw: &str) {
        let marks = Marks {
            raw: true,
            ..self.marks.clone()
        };
        self.inline(raw, &marks);
    }

    fn open(&mut self, kind: BlockKind) {
        self.flush();
        self.current = Some(Block::new(kind, self.parents()));
    }

    /// The containers a new block is in, at most [`MAX_DEPTH`] of them.
    fn parents(&self) -> Vec<Container> {
        self.containers.iter().take(MAX_DEPTH).copied().collect()
    }

    /// Ends the open block; a list item's own block starts before it.
    fn flush(&mut self) {
        if let Some(block) = self.current.take() {
            let container = block.as_container();
            self.blocks.push(block);
            if let Some(c) = container {
                self.containers.push(c);
            }
        }
    }

    /// A block-level event: the open block ends, and an item still waiting for
    /// its text gets an empty block of its own.
    fn block_boundary(&mut self) {
        self.flush();
        if let Some(item) = self.pending_item.take() {
            self.open(BlockKind::ListItem(item));
            self.flush();
        }
    }

    /// The source of a block kept as written, without the container prefixes
    /// (indentation, `>`) its later lines repeat, and without the final newline.
    fn source_lines(&self, range: Range<usize>) -> String {
        let line_start = self.md[..range.start].rfind('\n').map_or(0, |i| i + 1);
        let indent = range.start - line_start;
        let text = self.md[range].trim_end_matches('\n');
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
                let cut = line
                    .char_indices()
                    .take_while(|(at, c)| *at < indent && (c.is_whitespace() || *c == '>'))
                    .map(|(at, c)| at + c.len_utf8())
                    .last()
                    .unwrap_or(0);
                out.push_str(&line[cut..]);
            } else {
                out.push_str(line);
            }
        }
        out
    }
}

/// A link destination as Markdown writes it: in `<…>` when it has blanks,
/// parentheses or angle brackets, or is empty.
fn destination(dest: &str) -> String {
    if !dest.is_empty() && !dest.contains(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>' | '\\')) {
        return dest.to_string();
    }
    let mut out = String::from("<");
    for c in dest.chars() {
        if matches!(c, '<' | '>' | '\\') {
            out.push('\\');
        }
        out.push(if c == '\n' { ' ' } else { c });
    }
    out.push('>');
    out
}

/// Whether the list starting at `rest[0]` is loose: one of its items holds a
/// paragraph directly (pulldown-cmark leaves paragraphs out of tight lists).
fn list_is_loose(rest: &[(Event<'_>, Range<usize>)]) -> bool {
    let mut depth = 0usize;
    for (event, _) in rest {
        match event {
            Event::Start(Tag::Paragraph) if depth == 2 => return true,
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    false
}

/// Turns each bare `@name` that `resolve` knows into a mention.
fn resolve_mentions(block: &mut Block, resolve: &dyn Fn(&str) -> Option<String>) {
    if matches!(block.kind, BlockKind::Code { .. } | BlockKind::Table | BlockKind::Html) {
        return;
    }
    let mut runs = Vec::with_capacity(block.runs.len());
    for run in std::mem::take(&mut block.runs) {
        if run.marks.code || run.marks.raw || run.marks.link.is_some() || run.marks.mention.is_some() {
            runs.push(run);
            continue;
        }
        let mut rest = run.text.as_str();
        let mut before_ok = true;
        while let Some(at) = find_mention(rest, before_ok) {
            let name_end = at + 1 + mention_name_len(&rest[at + 1..]);
            let name = &rest[at + 1..name_end];
            match resolve(name) {
                Some(user) => {
                    push_run(&mut runs, &rest[..at], &run.marks);
                    let marks = Marks {
                        mention: Some(user),
                        ..run.marks.clone()
                    };
                    push_run(&mut runs, &rest[at..name_end], &marks);
                }
                None => push_run(&mut runs, &rest[..name_end], &run.marks),
            }
            rest = &rest[name_end..];
            before_ok = false;
        }
        push_run(&mut runs, rest, &run.marks);
    }
    block.runs = runs;
}

fn push_run(runs: &mut Vec<Run>, text: &str, marks: &Marks) {
    if text.is_empty() {
        return;
    }
    match runs.last_mut() {
        Some(last) if last.marks == *marks => last.text.push_str(text),
        _ => runs.push(Run {
            text: text.to_string(),
            marks: marks.clone(),
        }),
    }
}

/// The byte offset of the next `@` that starts a mention: after a space or
/// punctuation (not inside an e-mail address), followed by a name.
fn find_mention(text: &str, at_start_ok: bool) -> Option<usize> {
    let mut previous: Option<char> = None;
    for (at, c) in text.char_indices() {
        let starts = match previous {
            None => at_start_ok,
            Some(p) => !p.is_alphanumeric() && p != '@' && p != '.' && p != '_',
        };
        if c == '@' && starts && mention_name_len(&text[at + 1..]) > 0 {
            return Some(at);
        }
        previous = Some(c);
    }
    None
}

/// How many bytes of `text` form a mentioned name: letters, digits, `.`, `-`, `_`,
/// not ending in punctuation.
fn mention_name_len(text: &str) -> usize {
    let mut end = 0;
    let mut last_word = 0;
    for (at, c) in text.char_indices() {
        if c.is_alphanumeric() {
            end = at + c.len_utf8();
            last_word = end;
        } else if matches!(c, '.' | '-' | '_') {
            end = at + c.len_utf8();
        } else {
            break;
        }
    }
    end.min(last_word)
}

/// Renders blocks as Markdown that parses back to the same blocks.
pub fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    let mut open: Vec<Open> = Vec::new();
    let mut previous: Option<&Block> = None;
    for block in blocks {
        let depth = block.parents.len();
        // Align the open containers with this block's parents.
        let keep = open
            .iter()
            .zip(&block.parents)
            .take_while(|(o, p)| o.container == **p)
            .count();
        // The item before this one at its depth, in the same kind of list.
        let adjacent = match &block.kind {
            BlockKind::ListItem(item) => open
                .get(depth)
                .filter(|o| keep == depth && o.container == item_container(item))
                .map(|o| (o.number, o.delimiter)),
            _ => None,
        };
        open.truncate(keep);
        while open.len() < depth {
            let container = block.parents[open.len()];
            open.push(Open::new(container, None, false));
        }
        let prefix: String = open.iter().map(|o| o.prefix()).collect();
        if let Some(prev) = previous
            && !tight_after(prev, block, &open)
        {
            out.push_str(prefix.trim_end());
            out.push('\n');
        }
        match &block.kind {
            BlockKind::ListItem(item) => {
                // An item with a start begins a new list: next to another list of
                // its kind, a different delimiter keeps them apart.
                let (number, delimiter) = match (adjacent, item.start) {
                    (Some((n, d)), None) => (n.saturating_add(1), d),
                    (Some((_, d)), Some(start)) => (start, other_delimiter(d)),
                    (None, start) => (start.unwrap_or(1), if item.ordered { '.' } else { '-' }),
                };
                let marker = if item.ordered {
                    format!("{number}{delimiter} ")
                } else {
                    format!("{delimiter} ")
                };
                let mut entry = Open::new(item_container(item), Some(number), item.loose).with_width(marker.len());
                entry.delimiter = delimiter;
                let inner = format!("{prefix}{}", " ".repeat(marker.len()));
                let task = match item.checked {
                    Some(true) => "[x] ",
                    Some(false) => "[ ] ",
                    None => "",
                };
                let body = inline(&block.runs);
                let first = format!("{prefix}{marker}{task}");
                write_lines(&mut out, &first, &inner, &body);
                open.push(entry);
            }
            kind => {
                let body = match kind {
                    BlockKind::Paragraph => inline(&block.runs),
                    BlockKind::Heading(level) => format!(
                        "{} {}",
                        "#".repeat(usize::from(*level).clamp(1, 6)),
                        inline_heading(&block.runs)
                    ),
                    BlockKind::Code { language } => code_block(language, &block.text()),
                    BlockKind::Rule => "***".to_string(),
                    BlockKind::Table | BlockKind::Html => block.text(),
                    BlockKind::ListItem(_) => unreachable!("handled above"),
                };
                write_lines(&mut out, &prefix, &prefix, &body);
            }
        }
        previous = Some(block);
    }
    out
}

/// An open container while rendering.
struct Open {
    container: Container,
    /// The item's number (ordered lists).
    number: u64,
    loose: bool,
    /// Indentation of the item's content: its marker's width.
    width: usize,
    /// The list's marker: `-` or `*` for bullets, `.` or `)` after numbers.
    delimiter: char,
}

impl Open {
    fn new(container: Container, number: Option<u64>, loose: bool) -> Self {
        Open {
            container,
            number: number.unwrap_or(1),
            loose,
            width: 2,
            delimiter: '-',
        }
    }

    fn with_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    fn prefix(&self) -> String {
        match self.container {
            Container::Quote => "> ".to_string(),
            _ => " ".repeat(self.width),
        }
    }
}

fn other_delimiter(d: char) -> char {
    match d {
        '.' => ')',
        ')' => '.',
        '-' => '*',
        _ => '-',
    }
}

fn item_container(item: &ListItem) -> Container {
    if item.ordered {
        Container::OrderedItem
    } else {
        Container::BulletItem
    }
}

/// Whether `block` follows `prev` without a blank line: inside a tight list,
/// when both belong to the same list tree.
fn tight_after(prev: &Block, block: &Block, open: &[Open]) -> bool {
    let own = match &block.kind {
        BlockKind::ListItem(item) => Some((block.parents.len(), item.loose)),
        _ => None,
    };
    // The list this block's spacing belongs to: its own, or its innermost item's.
    let Some((depth, loose)) = own.or_else(|| {
        open.iter()
            .rposition(|o| o.container.is_item())
            .map(|i| (i + 1, open[i].loose))
    }) else {
        return false;
    };
    if loose {
        return false;
    }
    let mut prev_path = prev.parents.clone();
    prev_path.extend(prev.as_container());
    let path = &block.parents;
    let shared = prev_path.iter().zip(path).take_while(|(a, b)| a == b).count();
    match own {
        // A following item of the same list, or the first of a list nested in
        // the item just written.
        Some(_) => {
            let same_list = prev_path.get(depth) == block.as_container().as_ref();
            shared >= depth
                && ((prev_path.len() > depth && same_list)
                    || (depth > 0 && path[depth - 1].is_item() && prev_path.len() == depth))
        }
        // More content of the item just written (or of its nested blocks).
        None => shared >= depth && prev_path.len() >= depth,
    }
}

/// Writes `body`'s lines, the first after `first`, the others after `rest`.
fn write_lines(out: &mut String, first: &str, rest: &str, body: &str) {
    for (i, line) in body.split('\n').enumerate() {
        let prefix = if i == 0 { first } else { rest };
        if line.is_empty() {
            out.push_str(prefix.trim_end());
        } else {
            out.push_str(prefix);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn code_block(language: &str, code: &str) -> String {
    // A backtick in the info string would end a backtick fence: use tildes.
    let c = if language.contains('`') { '~' } else { '`' };
    let fence = c.to_string().repeat(longest_run(code, c).max(2) + 1);
    if code.is_empty() {
        format!("{fence}{language}\n{fence}")
    } else {
        format!("{fence}{language}\n{code}\n{fence}")
    }
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut now) = (0, 0);
    for ch in text.chars() {
        now = if ch == c { now + 1 } else { 0 };
        best = best.max(now);
    }
    best
}

/// An inline mark that opens and closes with delimiters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delim {
    Link(String),
    Strong,
    Em,
    Strike,
}

impl Delim {
    fn open(&self) -> &'static str {
        match self {
            Delim::Link(_) => "[",
            Delim::Strong => "**",
            Delim::Em => "*",
            Delim::Strike => "~~",
        }
    }

    fn close(&self) -> String {
        match self {
            Delim::Link(dest) => format!("]({dest})"),
            other => other.open().to_string(),
        }
    }
}

/// The delimited marks of a run, outermost first.
fn delims(marks: &Marks) -> Vec<Delim> {
    let mut out = Vec::new();
    if let Some(user) = &marks.mention {
        out.push(Delim::Link(format!("{MENTION_SCHEME}{user}")));
    } else if let Some(dest) = &marks.link {
        out.push(Delim::Link(dest.clone()));
    }
    for (on, d) in [
        (marks.strong, Delim::Strong),
        (marks.em, Delim::Em),
        (marks.strike, Delim::Strike),
    ] {
        if on {
            out.push(d);
        }
    }
    out
}

/// Renders a block's runs as inline Markdown.
fn inline(runs: &[Run]) -> String {
    inline_in(runs, false)
}

/// A heading's runs: on one line, `#` escaped (a trailing one would close it).
fn inline_heading(runs: &[Run]) -> String {
    let flat: Vec<Run> = runs
        .iter()
        .map(|r| Run {
            text: r.text.replace(['\n', HARD_BREAK], " "),
            marks: r.marks.clone(),
        })
        .collect();
    inline_in(&flat, true)
}

fn inline_in(runs: &[Run], heading: bool) -> String {
    let runs = flank(runs);
    let mut out = String::new();
    let mut stack: Vec<Delim> = Vec::new();
    let mut line_start = true;
    for run in &runs {
        let wanted = delims(&run.marks);
        let keep = stack.iter().take_while(|d| wanted.contains(d)).count();
        while stack.len() > keep {
            let d = stack.pop().expect("longer than keep");
            out.push_str(&d.close());
        }
        for d in wanted {
            if !stack.contains(&d) {
                // A link right after a `!` would read as an image.
                if matches!(d, Delim::Link(_)) && out.ends_with('!') && !out.ends_with("\\!") {
                    out.insert(out.len() - 1, '\\');
                }
                out.push_str(d.open());
                stack.push(d);
                line_start = false;
            }
        }
        if run.marks.raw {
            out.push_str(&run.text);
        } else if run.marks.code {
            out.push_str(&code_span(&run.text));
        } else {
            escape_into(&mut out, &run.text, &mut line_start, heading);
            continue;
        }
        line_start = run.text.ends_with('\n');
    }
    while let Some(d) = stack.pop() {
        out.push_str(&d.close());
    }
    out
}

/// Moves whitespace at the edges of emphasis out of it: `** a**` does not
/// parse as strong, `**a**` does.
fn flank(runs: &[Run]) -> Vec<Run> {
    let mut chars: Vec<(char, Marks)> = runs
        .iter()
        .flat_map(|r| r.text.chars().map(move |c| (c, r.marks.clone())))
        .collect();
    type Flag = fn(&mut Marks) -> &mut bool;
    let flags: [Flag; 3] = [|m| &mut m.strong, |m| &mut m.em, |m| &mut m.strike];
    for flag in flags {
        let mut i = 0;
        while i < chars.len() {
            if !*flag(&mut chars[i].1) {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && *flag(&mut chars[i].1) {
                i += 1;
            }
            let mut s = start;
            while s < i && chars[s].0.is_whitespace() {
                *flag(&mut chars[s].1) = false;
                s += 1;
            }
            let mut e = i;
            while e > s && chars[e - 1].0.is_whitespace() {
                *flag(&mut chars[e - 1].1) = false;
                e -= 1;
            }
        }
    }
    let mut out: Vec<Run> = Vec::new();
    for (c, marks) in chars {
        match out.last_mut() {
            Some(last) if last.marks == marks => last.text.push(c),
            _ => out.push(Run {
                text: c.to_string(),
                marks,
            }),
        }
    }
    out
}

fn code_span(code: &str) -> String {
    let ticks = "`".repeat(longest_run(code, '`') + 1);
    let blank = code.chars().all(|c| c == ' ');
    let pad =
        !blank && (code.starts_with('`') || code.ends_with('`') || (code.starts_with(' ') && code.ends_with(' ')));
    if pad {
        format!("{ticks} {code} {ticks}")
    } else {
        format!("{ticks}{code}{ticks}")
    }
}

/// Escapes what Markdown would read as syntax. `line_start` tracks whether the
/// next character begins a line (where `#`, `>`, `-`, `1.` start blocks).
fn escape_into(out: &mut String, text: &str, line_start: &mut bool, heading: bool) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            out.push('\n');
            *line_start = true;
            i += 1;
            continue;
        }
        if c == HARD_BREAK {
            out.push_str("\\\n");
            *line_start = true;
            i += 1;
            continue;
        }
        if *line_start {
            if matches!(c, '#' | '>' | '-' | '+' | '=') {
                out.push('\\');
            } else if c.is_ascii_digit() {
                let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                if matches!(chars.get(i + digits), Some('.' | ')')) {
                    out.extend(&chars[i..i + digits]);
                    out.push('\\');
                    i += digits;
                    *line_start = false;
                    continue;
                }
            } else if c == ' ' || c == '\t' {
                // Leading blanks would be dropped or start a code block.
                out.push_str("&#32;");
                i += 1;
                continue;
            }
        }
        *line_start = false;
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '~' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '#' if heading => out.push_str("\\#"),
            // `![` would start an image.
            '!' if chars.get(i + 1) == Some(&'[') => out.push_str("\\!"),
            '&' if looks_like_entity(&chars[i + 1..]) => out.push_str("\\&"),
            ' ' if chars.get(i + 1) == Some(&'\n') => {
                // A blank before a line break: two would be a hard break, one
                // would be dropped. Written as an entity so it stays.
                out.push_str("&#32;");
            }
            _ => out.push(c),
        }
        i += 1;
    }
}

fn looks_like_entity(after: &[char]) -> bool {
    let name = after
        .iter()
        .take(32)
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '#')
        .count();
    name > 0 && after.get(name) == Some(&';')
}

/// Renders Markdown as HTML.
pub fn to_html(md: &str) -> String {
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, Parser::new_ext(md, options()));
    html
}

/// The text of blocks without any markup: one line per line of text, blocks
/// separated by blank lines.
pub fn to_plain(blocks: &[Block]) -> String {
    let mut out = String::new();
    for (i, block) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let text: String = block
            .text()
            .chars()
            .map(|c| if c == HARD_BREAK { '\n' } else { c })
            .collect();
        if let BlockKind::ListItem(item) = &block.kind {
            out.push_str(&"  ".repeat(block.parents.iter().filter(|p| p.is_item()).count()));
            out.push_str(if item.ordered { "· " } else { "• " });
        }
        out.push_str(&text);
        out.push('\n');
    }
    out
}
