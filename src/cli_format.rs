//! The CLI's byte handling and messages: value encodings, record delimiters, `KEY<SEP>VALUE`
//! lines, and the one-line error report.

use std::io::Write;

use base64::Engine as _;

/// How values (and keys read with `--parse-key`) are written on the command line, on standard
/// input and on standard output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes as they are (a consumed value is printed raw, whatever it holds).
    #[default]
    Text,
    /// Two hex digits per byte (either case on input; lower case on output).
    Hex,
    /// Standard base64 with padding (padding optional on input).
    Base64,
}

impl Encoding {
    pub fn decode(self, input: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self {
            Encoding::Text => Ok(input.to_vec()),
            Encoding::Hex => decode_hex(input),
            Encoding::Base64 => {
                let trimmed = input.trim_ascii();
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                engine
                    .decode(trimmed)
                    .map_err(|e| anyhow::anyhow!("invalid base64 {:?}: {e}", lossy(trimmed)))
            }
        }
    }

    pub fn write(self, out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
        match self {
            Encoding::Text => out.write_all(value),
            Encoding::Hex => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let mut text = Vec::with_capacity(value.len() * 2);
                for byte in value {
                    text.push(DIGITS[(byte >> 4) as usize]);
                    text.push(DIGITS[(byte & 0xf) as usize]);
                }
                out.write_all(&text)
            }
            Encoding::Base64 => out.write_all(
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .as_bytes(),
            ),
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.into_owned(),
    }
}

fn decode_hex(input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let digits = input.trim_ascii();
    let bad = || anyhow::anyhow!("invalid hex {:?}: expected pairs of 0-9a-f", lossy(digits));
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)
}

/// A one-byte separator as typed: one character (`,`), or an escape: `\n`, `\t`, `\r`, `\0`,
/// `\\`, `\xHH`. Also the names `newline`, `tab`, `nul`.
pub fn parse_byte(text: &str) -> anyhow::Result<u8> {
    let byte = match text {
        "\\n" | "newline" => b'\n',
        "\\t" | "tab" => b'\t',
        "\\r" => b'\r',
        "\\0" | "nul" => 0,
        "\\\\" => b'\\',
        _ => match text.strip_prefix("\\x") {
            Some(hex) if hex.len() == 2 => u8::from_str_radix(hex, 16)
                .map_err(|_| anyhow::anyhow!("invalid separator {text:?}: bad \\xHH"))?,
            _ if text.len() == 1 => text.as_bytes()[0],
            _ => anyhow::bail!(
                "invalid separator {text:?}: expected one byte: a character, \\n, \\t, \\r, \\0, \
                 \\\\ or \\xHH"
            ),
        },
    };
    Ok(byte)
}

/// `--delimiter`: one byte (as `parse_byte`), or `none` (the whole input is one record).
pub fn parse_delimiter(text: &str) -> anyhow::Result<Option<u8>> {
    match text {
        "none" | "" => Ok(None),
        _ => parse_byte(text).map(Some),
    }
}

/// Splits standard input into records: at each `delimiter` byte (a final delimiter ends the
/// last record rather than starting an empty one), or nothing at all (`None`: one record). A
/// newline delimiter also drops a `\r` before it, as text lines do.
pub struct Records<R> {
    input: R,
    delimiter: Option<u8>,
    done: bool,
}

impl<R: std::io::BufRead> Records<R> {
    pub fn new(input: R, delimiter: Option<u8>) -> Self {
        Records {
            input,
            delimiter,
            done: false,
        }
    }
}

impl<R: std::io::BufRead> Iterator for Records<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut record = Vec::new();
        let Some(delimiter) = self.delimiter else {
            self.done = true;
            return Some(self.input.read_to_end(&mut record).map(|_| record));
        };
        match self.input.read_until(delimiter, &mut record) {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                if record.last() == Some(&delimiter) {
                    record.pop();
                    if delimiter == b'\n' && record.last() == Some(&b'\r') {
                        record.pop();
                    }
                }
                Some(Ok(record))
            }
        }
    }
}

/// `KEY<SEP>VALUE` (`--parse-key`): split at the first separator. A record without one is an
/// error (as in Kafka's console producer), naming its number (from 1).
pub fn split_key(record: &[u8], separator: u8, number: u64) -> anyhow::Result<(&[u8], &[u8])> {
    match record.iter().position(|b| *b == separator) {
        Some(i) => Ok((&record[..i], &record[i + 1..])),
        None => anyhow::bail!(
            "record {number} has no key separator {:?} (--parse-key expects KEY<SEP>VALUE): {:?}",
            separator as char,
            lossy(record)
        ),
    }
}

/// An error as one line: the chain of causes joined with ": ", each cause left out when the
/// text so far already says it (tonic's and hyper's errors repeat their sources).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether the error is writing to a closed pipe (`loghouse consume | head`): a quiet end.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8], delimiter: Option<u8>) -> Vec<Vec<u8>> {
        Records::new(input, delimiter)
            .collect::<std::io::Result<_>>()
            .unwrap()
    }

    #[test]
    fn input_splits_at_the_delimiter_and_a_final_one_starts_no_record() {
        let nl = Some(b'\n');
        assert_eq!(records(b"a\nb\n", nl), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(records(b"a\nb", nl), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            records(b"a\r\n\nb\n", nl),
            [b"a".to_vec(), vec![], b"b".to_vec()]
        );
        assert!(records(b"", nl).is_empty());
        assert_eq!(
            records(b"x\0y\r\n\0", Some(0)),
            [b"x".to_vec(), b"y\r\n".to_vec()]
        );
        // `none`: the whole input, even empty, is one record, byte for byte.
        assert_eq!(records(b"a\nb\n\xff", None), [b"a\nb\n\xff".to_vec()]);
        assert_eq!(records(b"", None), [Vec::<u8>::new()]);
    }

    #[test]
    fn delimiters_and_separators_parse_from_escapes_and_names() {
        assert_eq!(parse_delimiter("\n").unwrap(), Some(b'\n'));
        assert_eq!(parse_delimiter("\\n").unwrap(), Some(b'\n'));
        assert_eq!(parse_delimiter("newline").unwrap(), Some(b'\n'));
        assert_eq!(parse_delimiter("\\0").unwrap(), Some(0));
        assert_eq!(parse_delimiter("\\x1e").unwrap(), Some(0x1e));
        assert_eq!(parse_delimiter(",").unwrap(), Some(b','));
        assert_eq!(parse_delimiter("none").unwrap(), None);
        assert_eq!(parse_byte("\\t").unwrap(), b'\t');
        assert_eq!(parse_byte("tab").unwrap(), b'\t');
        assert_eq!(parse_byte("=").unwrap(), b'=');
        assert!(parse_byte("ab").is_err());
        assert!(parse_byte("\\xzz").is_err());
        assert!(parse_byte("é").is_err());
    }

    #[test]
    fn hex_and_base64_round_trip_and_reject_bad_input() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff, b'\n'];
        for encoding in [Encoding::Text, Encoding::Hex, Encoding::Base64] {
            let mut text = Vec::new();
            encoding.write(&mut text, &bytes).unwrap();
            assert_eq!(encoding.decode(&text).unwrap(), bytes, "{encoding:?}");
        }
        let mut text = Vec::new();
        Encoding::Hex.write(&mut text, b"hi\xff").unwrap();
        assert_eq!(text, b"6869ff");
        assert_eq!(Encoding::Hex.decode(b"6869FF\r\n").unwrap(), b"hi\xff");
        assert!(Encoding::Hex.decode(b"686").is_err());
        assert!(Encoding::Hex.decode(b"zz").is_err());
        let mut text = Vec::new();
        Encoding::Base64.write(&mut text, b"hello").unwrap();
        assert_eq!(text, b"aGVsbG8=");
        assert_eq!(Encoding::Base64.decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(Encoding::Base64.decode(b"aGVsbG8=\n").unwrap(), b"hello");
        assert!(Encoding::Base64.decode(b"a$==").is_err());
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(
            split_key(b"user-1\tclicked\tok", b'\t', 1).unwrap(),
            (&b"user-1"[..], &b"clicked\tok"[..])
        );
        assert_eq!(split_key(b"=v", b'=', 1).unwrap(), (&b""[..], &b"v"[..]));
        let error = split_key(b"novalue", b'\t', 7).unwrap_err().to_string();
        assert!(
            error.starts_with("record 7 has no key separator"),
            "{error}"
        );
    }

    #[test]
    fn errors_print_as_one_line_without_repeats() {
        let status = loghouse::client::ClientError::from(tonic::Status::permission_denied(
            "nobody is not permitted to consume on *",
        ));
        assert_eq!(
            one_line(&anyhow::Error::new(status)),
            "PERMISSION_DENIED: nobody is not permitted to consume on *"
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(io).context("cannot read ca.pem");
        assert_eq!(one_line(&error), "cannot read ca.pem: no such file");
        // A cause already in its parent's text is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect to x: {0}")]
        struct Outer(#[source] std::io::Error);
        let inner = std::io::Error::other("connection refused");
        assert_eq!(
            one_line(&anyhow::Error::new(Outer(inner))),
            "cannot connect to x: connection refused"
        );
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::new(pipe).context("writing")));
        assert!(!is_broken_pipe(&error));
    }
}
