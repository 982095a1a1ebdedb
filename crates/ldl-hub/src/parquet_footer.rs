//! A look at a parquet file's footer before the parquet crate parses it. The crate builds
//! the schema tree, and later drops it, by recursion without a depth limit, so a footer of a
//! few hundred kilobytes describing groups nested tens of thousands deep overflows the stack:
//! an abort that no `catch_unwind` can stop. This walks the footer's Thrift compact encoding
//! without recursion into the schema, and refuses a footer that is too large or a schema
//! nested deeper than any real dataset's.
//!
//! The page headers of the column chunks read get the same look ([`check_pages`]): the
//! crate skips a header's fields it does not know element by element, trusting a list's
//! count, so a 500-byte file announcing a list of billions of empty elements keeps it
//! reading for minutes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The largest footer read: real ones, even of files with thousands of row groups, are a
/// few megabytes at most.
pub(crate) const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// The deepest schema accepted: a Hugging Face `Image` is 2 levels deep, a list of structs 4.
pub(crate) const MAX_SCHEMA_DEPTH: usize = 64;

/// How deep Thrift values may nest inside the footer's fields (logical types are 2 deep).
const MAX_VALUE_DEPTH: usize = 32;

/// Checks the footer of the parquet file `file`: its size, and the depth of its schema.
/// `Err` says what is wrong, in words for a message.
pub(crate) fn check_footer(file: &mut File) -> Result<(), String> {
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    if length < 12 {
        return Err(format!("{length} bytes is too short for a parquet file"));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        return Err("it does not end with parquet's `PAR1` marker".into());
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer > length - 12 {
        return Err(format!(
            "its footer claims {footer} bytes of a {length}-byte file"
        ));
    }
    if footer > MAX_FOOTER_BYTES {
        return Err(format!(
            "its footer takes {footer} bytes, more than the {MAX_FOOTER_BYTES} ldl reads"
        ));
    }
    let mut bytes = vec![0u8; footer as usize];
    file.seek(SeekFrom::End(-8 - footer as i64))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let children = schema_children(&bytes)?;
    check_depth(&children)
}

/// The most a page header may take; real ones, with statistics, are a few kilobytes.
const MAX_PAGE_HEADER_BYTES: u64 = 16 << 20;

/// Checks the page headers of the column chunk `start..start + length` of `file`: each a
/// Thrift struct whose lists fit in the bytes left, followed by its page. `Err` says what
/// is wrong, in words for a message.
pub(crate) fn check_pages(file: &mut File, start: u64, length: u64) -> Result<(), String> {
    let file_length = file.metadata().map_err(|e| e.to_string())?.len();
    let end = start
        .checked_add(length)
        .filter(|&end| end <= file_length)
        .ok_or_else(|| {
            format!("a column chunk claims bytes {start}..+{length} of a {file_length}-byte file")
        })?;
    let mut at = start;
    while at < end {
        // Most headers are small: read a little, and more only when it ends too soon.
        let mut want = 4096;
        let (header, page) = loop {
            let take = want.min(end - at).min(MAX_PAGE_HEADER_BYTES);
            let mut bytes = vec![0u8; take as usize];
            file.seek(SeekFrom::Start(at))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| e.to_string())?;
            let mut input = Compact {
                bytes: &bytes,
                at: 0,
                page: true,
            };
            match input.page_header() {
                Ok(page) => break (input.at as u64, page),
                Err(e)
                    if e == Compact::truncated()
                        && take < (end - at).min(MAX_PAGE_HEADER_BYTES) =>
                {
                    want = take.saturating_mul(4);
                }
                Err(e) if e == Compact::truncated() => {
                    return Err(format!(
                        "the page header at byte {at} is cut off or too large"
                    ))
                }
                Err(e) => {
                    let e = e.replacen("its footer ", "it ", 1);
                    return Err(format!("the page header at byte {at}: {e}"));
                }
            }
        };
        at = at
            .checked_add(header)
            .and_then(|a| a.checked_add(page))
            .filter(|&next| next <= end)
            .ok_or_else(|| format!("the page at byte {at} runs past its column chunk"))?;
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The `num_children` of each schema element of a `FileMetaData`, in order.
fn schema_children(footer: &[u8]) -> Result<Vec<i64>, String> {
    let mut input = Compact {
        bytes: footer,
        at: 0,
        page: false,
    };
    let mut children = Vec::new();
    let mut last = 0i16;
    while let Some((id, kind)) = input.field_header(&mut last)? {
        if id == 2 && kind == LIST {
            let (count, element) = input.collection_header()?;
            for _ in 0..count {
                if element != STRUCT {
                    return Err("its schema is not a list of elements".into());
                }
                children.push(input.schema_element()?);
            }
        } else {
            input.skip(kind, 0)?;
        }
    }
    Ok(children)
}

/// The depth of the tree the flat schema list describes (each element followed by its
/// children), or `Err` when it is deeper than [`MAX_SCHEMA_DEPTH`] or inconsistent.
fn check_depth(children: &[i64]) -> Result<(), String> {
    // Children still expected by each open group, outermost first.
    let mut open: Vec<i64> = Vec::new();
    for (index, &count) in children.iter().enumerate() {
        if index > 0 && open.is_empty() {
            return Err("its schema has elements after the root's last child".into());
        }
        if let Some(slots) = open.last_mut() {
            *slots -= 1;
        }
        if count < 0 {
            return Err(format!("schema element {index} has {count} children"));
        }
        if count > 0 {
            open.push(count);
            if open.len() > MAX_SCHEMA_DEPTH {
                return Err(format!(
                    "its schema nests groups more than {MAX_SCHEMA_DEPTH} deep"
                ));
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    Ok(())
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

/// `Err` unless the field `id` has the type `expected` (for a boolean: either of its two).
fn expect_type(id: i16, kind: u8, expected: u8) -> Result<(), String> {
    let boolean = |k: u8| matches!(k, BOOL_TRUE | BOOL_FALSE);
    if kind == expected || (boolean(kind) && boolean(expected)) {
        Ok(())
    } else {
        Err(format!(
            "its field {id} has the type {kind}, not {expected}"
        ))
    }
}

/// A reader of the Thrift compact protocol over a byte slice.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Whether this is a page header, where a boolean in a list, set or map is refused:
    /// the parquet crate skips such a boolean without reading its byte, so past one its
    /// reading and this walk's would part.
    page: bool,
}

impl Compact<'_> {
    fn truncated() -> String {
        "its footer ends in the middle of a value".into()
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or_else(Self::truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn advance(&mut self, n: u64) -> Result<(), String> {
        let end = (self.at as u64)
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len() as u64)
            .ok_or_else(Self::truncated)?;
        self.at = end as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("its footer holds a malformed number".into())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// The next field's id and type, or `None` at the end of the struct.
    fn field_header(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let delta = (b >> 4) as i16;
        let id = if delta == 0 {
            self.zigzag()? as i16
        } else {
            last.wrapping_add(delta)
        };
        *last = id;
        Ok(Some((id, b & 0x0f)))
    }

    /// A list's or set's element count and element type.
    fn collection_header(&mut self) -> Result<(u64, u8), String> {
        let b = self.byte()?;
        let count = match b >> 4 {
            15 => self.varint()?,
            short => u64::from(short),
        };
        // Every element takes at least a byte: a larger count is a lie.
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(Self::truncated());
        }
        Ok((count, b & 0x0f))
    }

    /// A `PageHeader`'s `compressed_page_size` (field 3), checked to be present and not
    /// negative.
    ///
    /// The parquet crate reads a header's known fields by their id whatever type the
    /// encoding gives them, and skips the others by their type: a known field given
    /// another type would make it read the bytes that follow as something else, beyond
    /// what this walk saw. So each known field, here and in the headers nested in it, must
    /// have its type in the parquet format; writers always give it.
    fn page_header(&mut self) -> Result<u64, String> {
        const DATA: &[(i16, u8)] = &[(1, I32), (2, I32), (3, I32), (4, I32)];
        const INDEX: &[(i16, u8)] = &[];
        const DICTIONARY: &[(i16, u8)] = &[(1, I32), (2, I32), (3, BOOL_TRUE)];
        const DATA_V2: &[(i16, u8)] = &[
            (1, I32),
            (2, I32),
            (3, I32),
            (4, I32),
            (5, I32),
            (6, I32),
            (7, BOOL_TRUE),
        ];
        let mut last = 0i16;
        let mut size = None;
        while let Some((id, kind)) = self.field_header(&mut last)? {
            let nested = match id {
                5 => Some(DATA),
                6 => Some(INDEX),
                7 => Some(DICTIONARY),
                8 => Some(DATA_V2),
                _ => None,
            };
            match (id, nested) {
                (1..=4, _) => {
                    expect_type(id, kind, I32)?;
                    let value = self.zigzag()?;
                    if id == 3 {
                        size = Some(value);
                    }
                }
                (_, Some(fields)) => {
                    expect_type(id, kind, STRUCT)?;
                    self.typed_struct(fields)?;
                }
                _ => self.skip(kind, 1)?,
            }
        }
        match size {
            Some(size) if (0..=i64::from(i32::MAX)).contains(&size) => Ok(size as u64),
            Some(size) => Err(format!("it gives the page {size} bytes")),
            None => Err("it gives no page size".into()),
        }
    }

    /// A struct whose fields `fields` (id and type) must have their type; any other field
    /// is skipped.
    fn typed_struct(&mut self, fields: &[(i16, u8)]) -> Result<(), String> {
        let mut last = 0i16;
        while let Some((id, kind)) = self.field_header(&mut last)? {
            if let Some(&(_, expected)) = fields.iter().find(|(known, _)| *known == id) {
                expect_type(id, kind, expected)?;
            }
            self.skip(kind, 2)?;
        }
        Ok(())
    }

    /// A `SchemaElement`'s `num_children` (field 5), 0 when absent.
    fn schema_element(&mut self) -> Result<i64, String> {
        let mut last = 0i16;
        let mut children = 0;
        while let Some((id, kind)) = self.field_header(&mut last)? {
            if id == 5 && kind == I32 {
                children = self.zigzag()?;
            } else {
                self.skip(kind, 1)?;
            }
        }
        Ok(children)
    }

    /// Skips one value of type `kind`, `depth` values deep.
    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_VALUE_DEPTH {
            return Err("its footer nests values too deep".into());
        }
        match kind {
            // In a struct a boolean is all in its field header.
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(|_| ()),
            DOUBLE => self.advance(8),
            BINARY => {
                let n = self.varint()?;
                self.advance(n)
            }
            UUID => self.advance(16),
            LIST | SET => {
                let (count, element) = self.collection_header()?;
                for _ in 0..count {
                    self.skip_element(element, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                if count > (self.bytes.len() - self.at) as u64 {
                    return Err(Self::truncated());
                }
                let types = self.byte()?;
                for _ in 0..count {
                    self.skip_element(types >> 4, depth + 1)?;
                    self.skip_element(types & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => {
                let mut last = 0i16;
                while let Some((_, field)) = self.field_header(&mut last)? {
                    self.skip(field, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("its footer holds an unknown value type {other}")),
        }
    }

    /// Skips a collection element: there a boolean takes a byte.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        match kind {
            BOOL_TRUE | BOOL_FALSE if self.page => {
                Err("it holds a boolean in a list, set or map".into())
            }
            BOOL_TRUE | BOOL_FALSE => self.advance(1),
            other => self.skip(other, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_the_flat_schema() {
        // root { a; g { b; h { c } } }: depth 3.
        assert!(check_depth(&[2, 0, 2, 0, 1, 0]).is_ok());
        let deep: Vec<i64> = std::iter::repeat_n(1, MAX_SCHEMA_DEPTH + 1)
            .chain([0])
            .collect();
        assert!(check_depth(&deep)
            .unwrap_err()
            .contains("more than 64 deep"));
        assert!(check_depth(&[1, 0, 0]).is_err(), "a stray element");
        assert!(check_depth(&[1, -1]).is_err());
    }

    #[test]
    fn page_headers_whose_lists_cannot_fit_are_refused_at_once() {
        // PageHeader { type: 0, uncompressed_page_size: 1, compressed_page_size: 1 }, a
        // one-byte page, and the same header with a field 50 listing 2³¹ empty binaries,
        // which the parquet crate would skip one by one.
        let header = [0x15, 0x00, 0x15, 0x02, 0x15, 0x02];
        let mut good = header.to_vec();
        good.extend([0x00, 0x7f]);
        let mut bad = header.to_vec();
        bad.extend([
            0x09, 0x64, 0xf8, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00, 0x00, 0x00,
        ]);
        bad.extend([0x00, 0x7f]);
        let dir = tempfile::tempdir().unwrap();
        let check = |bytes: &[u8]| {
            let path = dir.path().join("chunk");
            std::fs::write(&path, bytes).unwrap();
            let mut file = File::open(&path).unwrap();
            check_pages(&mut file, 0, bytes.len() as u64)
        };
        assert_eq!(check(&good), Ok(()));
        let started = std::time::Instant::now();
        let e = check(&bad).unwrap_err();
        assert!(e.starts_with("the page header at byte 0"), "{e}");
        assert!(started.elapsed().as_secs() < 1);
        // Field 3 (the page size) as an i16 and field 5 (a data page header) as an i32,
        // which the parquet crate would read as their format's types, off the bytes.
        let mut retyped = vec![0x15, 0x00, 0x15, 0x12, 0x15, 0x12, 0x04, 0x06, 0x15];
        retyped.extend([0x15, 0x10, 0x15, 0x06, 0x00]);
        retyped.extend([0u8; 9]);
        let e = check(&retyped).unwrap_err();
        assert!(e.contains("its field 3 has the type 4, not 5"), "{e}");
        // An unknown field 50 holding a list of one boolean, which the crate skips without
        // reading its byte.
        let mut booleans = header.to_vec();
        booleans.extend([0x09, 0x64, 0x11, 0x01, 0x00, 0x7f]);
        let e = check(&booleans).unwrap_err();
        assert!(e.contains("a boolean in a list"), "{e}");
        // A page that runs past its chunk, and a chunk past the file.
        let e = check(&good[..good.len() - 1]).unwrap_err();
        assert!(e.contains("runs past its column chunk"), "{e}");
        let path = dir.path().join("chunk");
        let mut file = File::open(&path).unwrap();
        assert!(check_pages(&mut file, 4, u64::MAX).is_err());
    }

    #[test]
    fn compact_numbers_decode() {
        // zigzag: 0 → 0, 1 → −1, 2 → 1, 300 → 150.
        let mut c = Compact {
            bytes: &[0x00, 0x01, 0x02, 0xac, 0x02],
            at: 0,
            page: false,
        };
        assert_eq!(c.zigzag().unwrap(), 0);
        assert_eq!(c.zigzag().unwrap(), -1);
        assert_eq!(c.zigzag().unwrap(), 1);
        assert_eq!(c.zigzag().unwrap(), 150);
        assert!(c.byte().is_err());
    }
}
