//! How text becomes words for the index: Chinese and Japanese runs are
//! segmented by jieba (search mode: long words also yield their parts), and
//! each of their characters is a word of its own too, so any part of a
//! Chinese text matches, across jieba's word boundaries ("度报" finds
//! "季度报告", segmented 季度 / 报告); every other run of letters and digits,
//! in any script, is one word (Latin with accents, Cyrillic, Greek, Hangul,
//! …), found by its prefixes; everything else separates words.
//!
//! jieba alone treats a non-ASCII letter outside its dictionary as a word of
//! its own: "привет" would be six one-letter words, and a query for it would
//! match any text holding those letters.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy_jieba::JiebaTokenizer;

/// The tokenizer registered for the text field.
#[derive(Clone, Default)]
pub(crate) struct Words {
    jieba: JiebaTokenizer,
}

/// What a character is to the tokenizer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Han ideographs and kana: segmented by jieba.
    Segmented,
    /// Any other letter or digit: words run until a separator.
    Letter,
    Separator,
}

fn class(c: char) -> Class {
    match c as u32 {
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => {
            Class::Segmented
        }
        _ if c.is_alphanumeric() => Class::Letter,
        _ => Class::Separator,
    }
}

/// Whether `word` is a segmented word of several characters: each of them
/// is a word too, so a query needs the characters, and the whole word only
/// ranks the texts holding it higher.
pub(crate) fn spelled_out(word: &str) -> bool {
    word.chars().nth(1).is_some() && word.chars().all(|c| class(c) == Class::Segmented)
}

impl Tokenizer for Words {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let mut tokens = Vec::new();
        let mut push = |from: usize, to: usize, word: &str| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text: word.to_string(),
                position_length: 1,
            });
        };
        let mut runs = Vec::new();
        let mut start = 0;
        let mut current = Class::Separator;
        for (at, c) in text.char_indices() {
            let now = class(c);
            if now != current {
                if current != Class::Separator {
                    runs.push((current, start, at));
                }
                start = at;
                current = now;
            }
        }
        if current != Class::Separator {
            runs.push((current, start, text.len()));
        }
        for (kind, from, to) in runs {
            let run = &text[from..to];
            match kind {
                Class::Letter => push(from, to, run),
                Class::Segmented => {
                    // Where jieba gave one character as a word already.
                    let mut single = std::collections::HashSet::new();
                    let mut stream = self.jieba.token_stream(run);
                    while let Some(t) = stream.next() {
                        if t.text.chars().any(char::is_alphanumeric) {
                            push(from + t.offset_from, from + t.offset_to, &t.text);
                            if t.text.chars().nth(1).is_none() {
                                single.insert(t.offset_from);
                            }
                        }
                    }
                    // Each character a word of its own.
                    for (at, c) in run.char_indices() {
                        if c.is_alphanumeric() && !single.contains(&at) {
                            push(from + at, from + at + c.len_utf8(), &run[at..at + c.len_utf8()]);
                        }
                    }
                }
                Class::Separator => {}
            }
        }
        WordStream { tokens, next: 0 }
    }
}

/// The words of one text, in order.
pub(crate) struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}
