//! A look at a parquet file's footer before the parquet crate parses it.
//!
//! The crate trusts the footer's Thrift compact encoding in three ways that a crafted file
//! turns against it, so this walks the whole footer first, without recursion into the
//! schema, and refuses what the crate would not survive:
//! - it builds the schema tree, and later drops it, by recursion without a depth limit, so a
//!   footer of a few hundred kilobytes describing groups nested tens of thousands deep
//!   overflows the stack: an abort that no `catch_unwind` can stop. Schemas nested deeper
//!   than any real dataset's are refused ([`MAX_SCHEMA_DEPTH`]);
//! - it skips a list's elements one by one, trusting the list's count, and skips a boolean
//!   element without reading its byte, so a list of billions of booleans costs nothing to
//!   announce and minutes to skip. Every list is bounded by the bytes left, and a boolean in
//!   a list, set or map, which the format never puts in a footer or page header, is refused;
//! - it reads a known field by its id whatever type the encoding gives it, so a known field
//!   given another type makes it read the bytes that follow as something else, beyond what a
//!   walk by types saw (a 181-byte footer kept it looping for seconds). Every field the
//!   format defines, in every structure the footer holds (`FileMetaData`, schema elements
//!   and their logical types, row groups, column chunks, column metadata, statistics,
//!   key-value metadata, column orders, encryption), must have the format's type, as
//!   writers give it; with that the crate's reading and this walk's stay the same bytes.
//!
//! The page headers of the column chunks read get the same look ([`check_pages`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The largest footer read: real ones, even of files with thousands of row groups, are a
/// few megabytes at most.
pub(crate) const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// The deepest schema accepted: a Hugging Face `Image` is 2 levels deep, a list of structs 4.
pub(crate) const MAX_SCHEMA_DEPTH: usize = 64;

/// How deep Thrift values may nest inside a footer or page header (the format's own
/// structures nest 6 deep; the parquet crate skips unknown values up to 64 deep).
const MAX_VALUE_DEPTH: usize = 32;

/// Checks the footer of the parquet file `file`: its size, its encoding walked with every
/// known field's type checked, and the depth of its schema. `Err` says what is wrong, in
/// words for a message.
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
    check_footer_bytes(&bytes)
}

/// Checks a footer's bytes (the Thrift encoding of a `FileMetaData`): every known field of
/// its structures has the format's type, lists fit in the bytes left, and the schema is not
/// nested too deep.
fn check_footer_bytes(footer: &[u8]) -> Result<(), String> {
    let mut input = Compact {
        bytes: footer,
        at: 0,
    };
    input.typed_struct(&FILE_META_DATA, 0)?;
    let children = schema_children(footer)?;
    check_depth(&children)
}

/// The most a page header may take; real ones, with statistics, are a few kilobytes.
const MAX_PAGE_HEADER_BYTES: u64 = 16 << 20;

/// Checks the page headers of the column chunk `start..start + length` of `file`: each a
/// Thrift struct whose known fields have their type and whose lists fit in the bytes left,
/// followed by its page. `Err` says what is wrong, in words for a message.
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

/// The `num_children` of each schema element of a `FileMetaData`, in order. Run after the
/// typed walk, so every field has its type.
fn schema_children(footer: &[u8]) -> Result<Vec<i64>, String> {
    let mut input = Compact {
        bytes: footer,
        at: 0,
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

/// The name of a Thrift compact type, for messages.
fn type_name(kind: u8) -> String {
    match kind {
        BOOL_TRUE | BOOL_FALSE => "a bool".into(),
        BYTE => "a byte".into(),
        I16 => "an i16".into(),
        I32 => "an i32".into(),
        I64 => "an i64".into(),
        DOUBLE => "a double".into(),
        BINARY => "a binary".into(),
        LIST => "a list".into(),
        SET => "a set".into(),
        MAP => "a map".into(),
        STRUCT => "a struct".into(),
        UUID => "a uuid".into(),
        other => format!("the unknown type {other}"),
    }
}

/// The type a known field, or a known list's elements, has in the parquet format.
#[derive(Clone, Copy)]
enum Ty {
    Bool,
    Byte,
    I16,
    /// Also the format's enums.
    I32,
    I64,
    Double,
    /// Also strings.
    Binary,
    /// A struct or a union (a struct with one field set).
    Struct(&'static Struct),
    List(&'static Ty),
}

impl Ty {
    /// Its type in the compact encoding (a boolean field's type is also its value: either
    /// of the two is a bool).
    fn wire(self) -> u8 {
        match self {
            Ty::Bool => BOOL_TRUE,
            Ty::Byte => BYTE,
            Ty::I16 => I16,
            Ty::I32 => I32,
            Ty::I64 => I64,
            Ty::Double => DOUBLE,
            Ty::Binary => BINARY,
            Ty::Struct(_) => STRUCT,
            Ty::List(_) => LIST,
        }
    }
}

/// A structure of the parquet format: its name (for messages) and its fields' ids and
/// types. Fields not listed are skipped by the parquet crate, by their encoded type.
struct Struct {
    name: &'static str,
    fields: &'static [(i16, Ty)],
}

impl Struct {
    fn field(&self, id: i16) -> Option<Ty> {
        self.fields
            .iter()
            .find(|(known, _)| *known == id)
            .map(|&(_, ty)| ty)
    }
}

// The structures of parquet-format's `parquet.thrift` that a footer or a page header holds,
// each with all its fields (the parquet crate reads most of them by id).

/// A struct without fields: the variants of unions that carry no value.
const EMPTY: Struct = Struct {
    name: "an empty struct",
    fields: &[],
};
const FILE_META_DATA: Struct = Struct {
    name: "FileMetaData",
    fields: &[
        (1, Ty::I32),
        (2, Ty::List(&Ty::Struct(&SCHEMA_ELEMENT))),
        (3, Ty::I64),
        (4, Ty::List(&Ty::Struct(&ROW_GROUP))),
        (5, Ty::List(&Ty::Struct(&KEY_VALUE))),
        (6, Ty::Binary),
        (7, Ty::List(&Ty::Struct(&COLUMN_ORDER))),
        (8, Ty::Struct(&ENCRYPTION_ALGORITHM)),
        (9, Ty::Binary),
    ],
};
const SCHEMA_ELEMENT: Struct = Struct {
    name: "SchemaElement",
    fields: &[
        (1, Ty::I32),
        (2, Ty::I32),
        (3, Ty::I32),
        (4, Ty::Binary),
        (5, Ty::I32),
        (6, Ty::I32),
        (7, Ty::I32),
        (8, Ty::I32),
        (9, Ty::I32),
        (10, Ty::Struct(&LOGICAL_TYPE)),
    ],
};
const LOGICAL_TYPE: Struct = Struct {
    name: "LogicalType",
    fields: &[
        (1, Ty::Struct(&EMPTY)),
        (2, Ty::Struct(&EMPTY)),
        (3, Ty::Struct(&EMPTY)),
        (4, Ty::Struct(&EMPTY)),
        (5, Ty::Struct(&DECIMAL_TYPE)),
        (6, Ty::Struct(&EMPTY)),
        (7, Ty::Struct(&TIME_TYPE)),
        (8, Ty::Struct(&TIME_TYPE)),
        (10, Ty::Struct(&INT_TYPE)),
        (11, Ty::Struct(&EMPTY)),
        (12, Ty::Struct(&EMPTY)),
        (13, Ty::Struct(&EMPTY)),
        (14, Ty::Struct(&EMPTY)),
        (15, Ty::Struct(&EMPTY)),
        (16, Ty::Struct(&VARIANT_TYPE)),
        (17, Ty::Struct(&GEOMETRY_TYPE)),
        (18, Ty::Struct(&GEOGRAPHY_TYPE)),
        (19, Ty::Struct(&EMPTY)),
    ],
};
const DECIMAL_TYPE: Struct = Struct {
    name: "DecimalType",
    fields: &[(1, Ty::I32), (2, Ty::I32)],
};
/// `TimeType` and `TimestampType`, which have the same fields.
const TIME_TYPE: Struct = Struct {
    name: "TimeType",
    fields: &[(1, Ty::Bool), (2, Ty::Struct(&TIME_UNIT))],
};
const TIME_UNIT: Struct = Struct {
    name: "TimeUnit",
    fields: &[
        (1, Ty::Struct(&EMPTY)),
        (2, Ty::Struct(&EMPTY)),
        (3, Ty::Struct(&EMPTY)),
    ],
};
const INT_TYPE: Struct = Struct {
    name: "IntType",
    fields: &[(1, Ty::Byte), (2, Ty::Bool)],
};
const VARIANT_TYPE: Struct = Struct {
    name: "VariantType",
    fields: &[(1, Ty::Byte)],
};
const GEOMETRY_TYPE: Struct = Struct {
    name: "GeometryType",
    fields: &[(1, Ty::Binary)],
};
const GEOGRAPHY_TYPE: Struct = Struct {
    name: "GeographyType",
    fields: &[(1, Ty::Binary), (2, Ty::I32)],
};
const ROW_GROUP: Struct = Struct {
    name: "RowGroup",
    fields: &[
        (1, Ty::List(&Ty::Struct(&COLUMN_CHUNK))),
        (2, Ty::I64),
        (3, Ty::I64),
        (4, Ty::List(&Ty::Struct(&SORTING_COLUMN))),
        (5, Ty::I64),
        (6, Ty::I64),
        (7, Ty::I16),
    ],
};
const SORTING_COLUMN: Struct = Struct {
    name: "SortingColumn",
    fields: &[(1, Ty::I32), (2, Ty::Bool), (3, Ty::Bool)],
};
const COLUMN_CHUNK: Struct = Struct {
    name: "ColumnChunk",
    fields: &[
        (1, Ty::Binary),
        (2, Ty::I64),
        (3, Ty::Struct(&COLUMN_META_DATA)),
        (4, Ty::I64),
        (5, Ty::I32),
        (6, Ty::I64),
        (7, Ty::I32),
        (8, Ty::Struct(&COLUMN_CRYPTO_META_DATA)),
        (9, Ty::Binary),
    ],
};
const COLUMN_META_DATA: Struct = Struct {
    name: "ColumnMetaData",
    fields: &[
        (1, Ty::I32),
        (2, Ty::List(&Ty::I32)),
        (3, Ty::List(&Ty::Binary)),
        (4, Ty::I32),
        (5, Ty::I64),
        (6, Ty::I64),
        (7, Ty::I64),
        (8, Ty::List(&Ty::Struct(&KEY_VALUE))),
        (9, Ty::I64),
        (10, Ty::I64),
        (11, Ty::I64),
        (12, Ty::Struct(&STATISTICS)),
        (13, Ty::List(&Ty::Struct(&PAGE_ENCODING_STATS))),
        (14, Ty::I64),
        (15, Ty::I32),
        (16, Ty::Struct(&SIZE_STATISTICS)),
        (17, Ty::Struct(&GEOSPATIAL_STATISTICS)),
    ],
};
const STATISTICS: Struct = Struct {
    name: "Statistics",
    fields: &[
        (1, Ty::Binary),
        (2, Ty::Binary),
        (3, Ty::I64),
        (4, Ty::I64),
        (5, Ty::Binary),
        (6, Ty::Binary),
        (7, Ty::Bool),
        (8, Ty::Bool),
        (9, Ty::I64),
    ],
};
const PAGE_ENCODING_STATS: Struct = Struct {
    name: "PageEncodingStats",
    fields: &[(1, Ty::I32), (2, Ty::I32), (3, Ty::I32)],
};
const SIZE_STATISTICS: Struct = Struct {
    name: "SizeStatistics",
    fields: &[
        (1, Ty::I64),
        (2, Ty::List(&Ty::I64)),
        (3, Ty::List(&Ty::I64)),
    ],
};
const GEOSPATIAL_STATISTICS: Struct = Struct {
    name: "GeospatialStatistics",
    fields: &[(1, Ty::Struct(&BOUNDING_BOX)), (2, Ty::List(&Ty::I32))],
};
const BOUNDING_BOX: Struct = Struct {
    name: "BoundingBox",
    fields: &[
        (1, Ty::Double),
        (2, Ty::Double),
        (3, Ty::Double),
        (4, Ty::Double),
        (5, Ty::Double),
        (6, Ty::Double),
        (7, Ty::Double),
        (8, Ty::Double),
    ],
};
const KEY_VALUE: Struct = Struct {
    name: "KeyValue",
    fields: &[(1, Ty::Binary), (2, Ty::Binary)],
};
const COLUMN_ORDER: Struct = Struct {
    name: "ColumnOrder",
    fields: &[
        (1, Ty::Struct(&EMPTY)),
        (2, Ty::Struct(&EMPTY)),
        (3, Ty::Struct(&EMPTY)),
    ],
};
const ENCRYPTION_ALGORITHM: Struct = Struct {
    name: "EncryptionAlgorithm",
    fields: &[(1, Ty::Struct(&AES_GCM)), (2, Ty::Struct(&AES_GCM))],
};
/// `AesGcmV1` and `AesGcmCtrV1`, which have the same fields.
const AES_GCM: Struct = Struct {
    name: "AesGcmV1",
    fields: &[(1, Ty::Binary), (2, Ty::Binary), (3, Ty::Bool)],
};
const COLUMN_CRYPTO_META_DATA: Struct = Struct {
    name: "ColumnCryptoMetaData",
    fields: &[
        (1, Ty::Struct(&EMPTY)),
        (2, Ty::Struct(&ENCRYPTION_WITH_COLUMN_KEY)),
    ],
};
const ENCRYPTION_WITH_COLUMN_KEY: Struct = Struct {
    name: "EncryptionWithColumnKey",
    fields: &[(1, Ty::List(&Ty::Binary)), (2, Ty::Binary)],
};
const PAGE_HEADER: Struct = Struct {
    name: "PageHeader",
    fields: &[
        (1, Ty::I32),
        (2, Ty::I32),
        (3, Ty::I32),
        (4, Ty::I32),
        (5, Ty::Struct(&DATA_PAGE_HEADER)),
        (6, Ty::Struct(&EMPTY)),
        (7, Ty::Struct(&DICTIONARY_PAGE_HEADER)),
        (8, Ty::Struct(&DATA_PAGE_HEADER_V2)),
    ],
};
const DATA_PAGE_HEADER: Struct = Struct {
    name: "DataPageHeader",
    fields: &[
        (1, Ty::I32),
        (2, Ty::I32),
        (3, Ty::I32),
        (4, Ty::I32),
        (5, Ty::Struct(&STATISTICS)),
    ],
};
const DICTIONARY_PAGE_HEADER: Struct = Struct {
    name: "DictionaryPageHeader",
    fields: &[(1, Ty::I32), (2, Ty::I32), (3, Ty::Bool)],
};
const DATA_PAGE_HEADER_V2: Struct = Struct {
    name: "DataPageHeaderV2",
    fields: &[
        (1, Ty::I32),
        (2, Ty::I32),
        (3, Ty::I32),
        (4, Ty::I32),
        (5, Ty::I32),
        (6, Ty::I32),
        (7, Ty::Bool),
        (8, Ty::Struct(&STATISTICS)),
    ],
};

/// `Err` unless the field `id` of `parent`, encoded with the type `kind`, has the type
/// `expected` (for a boolean: either of its two).
fn expect_type(parent: &Struct, id: i16, kind: u8, expected: u8) -> Result<(), String> {
    let boolean = |k: u8| matches!(k, BOOL_TRUE | BOOL_FALSE);
    if kind == expected || (boolean(kind) && boolean(expected)) {
        Ok(())
    } else {
        Err(format!(
            "field {id} of its {} is {}, where the format has {}",
            parent.name,
            type_name(kind),
            type_name(expected)
        ))
    }
}

/// A reader of the Thrift compact protocol over a byte slice.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
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

    /// The next field's id and type, or `None` at the end of the struct. As in the parquet
    /// crate, a header whose type is 0 ends the struct whatever its id part holds.
    fn field_header(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b & 0x0f == 0 {
            return Ok(None);
        }
        let delta = (b >> 4) as i16;
        let id = if delta == 0 {
            self.zigzag()? as i16
        } else {
            last.checked_add(delta)
                .ok_or("its footer numbers a field past 32767")?
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
        // Every element takes at least a byte (booleans are refused): a larger count is a
        // lie.
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(Self::truncated());
        }
        Ok((count, b & 0x0f))
    }

    /// A `PageHeader`'s `compressed_page_size` (field 3), checked to be present and not
    /// negative, with every known field of the header and the headers nested in it checked
    /// to have its format's type.
    fn page_header(&mut self) -> Result<u64, String> {
        let mut last = 0i16;
        let mut size = None;
        while let Some((id, kind)) = self.field_header(&mut last)? {
            match PAGE_HEADER.field(id) {
                Some(ty) => {
                    expect_type(&PAGE_HEADER, id, kind, ty.wire())?;
                    if id == 3 {
                        size = Some(self.zigzag()?);
                    } else {
                        self.typed_value(ty, 1)?;
                    }
                }
                None => self.skip(kind, 1)?,
            }
        }
        match size {
            Some(size) if (0..=i64::from(i32::MAX)).contains(&size) => Ok(size as u64),
            Some(size) => Err(format!("it gives the page {size} bytes")),
            None => Err("it gives no page size".into()),
        }
    }

    /// The struct `parent`: each known field checked to have its type and walked as that
    /// type, any other field skipped by its encoded type.
    fn typed_struct(&mut self, parent: &Struct, depth: usize) -> Result<(), String> {
        if depth > MAX_VALUE_DEPTH {
            return Err("its footer nests values too deep".into());
        }
        let mut last = 0i16;
        while let Some((id, kind)) = self.field_header(&mut last)? {
            match parent.field(id) {
                Some(ty) => {
                    expect_type(parent, id, kind, ty.wire())?;
                    self.typed_value(ty, depth + 1)?;
                }
                None => self.skip(kind, depth + 1)?,
            }
        }
        Ok(())
    }

    /// One value of the known type `ty`, its type already checked.
    fn typed_value(&mut self, ty: Ty, depth: usize) -> Result<(), String> {
        match ty {
            Ty::Struct(parent) => self.typed_struct(parent, depth),
            Ty::List(element) => {
                let (count, kind) = self.collection_header()?;
                // The parquet crate reads an empty list whatever element type it gives
                // (some writers give none), and refuses a list of elements of another type.
                if count > 0 && kind != element.wire() {
                    return Err(format!(
                        "its footer holds a list of {} where the format has a list of {}",
                        type_name(kind),
                        type_name(element.wire())
                    ));
                }
                for _ in 0..count {
                    self.typed_value(*element, depth + 1)?;
                }
                Ok(())
            }
            other => self.skip(other.wire(), depth),
        }
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

    /// Skips a collection element. A boolean is refused: the format puts none in a list,
    /// set or map of a footer or page header, and the parquet crate skips such a boolean
    /// without reading its byte, so a list of billions costs it minutes and past one its
    /// reading and this walk's would part.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        match kind {
            BOOL_TRUE | BOOL_FALSE => {
                Err("its footer holds a boolean in a list, set or map".into())
            }
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
        assert!(
            e.contains("field 3 of its PageHeader is an i16, where the format has an i32"),
            "{e}"
        );
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

    /// A parquet file as writers make them: a schema with a logical type, statistics, page
    /// encoding stats, size statistics and key-value metadata in the footer.
    fn written_file() -> Vec<u8> {
        use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
        use parquet::file::metadata::KeyValue;
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;
        let message = "message schema { required double age; optional binary name (STRING); }";
        let schema = Arc::new(parse_message_type(message).unwrap());
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "huggingface".into(),
                "{}".to_string(),
            )]))
            .build();
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(props)).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<DoubleType>()
            .write_batch(&[31.0, 45.5], None, None)
            .unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(&[ByteArray::from("ann")], Some(&[1, 0]), None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        out
    }

    /// The footer of the parquet file `file`.
    fn footer(file: &[u8]) -> &[u8] {
        let tail = file.len() - 8;
        let length = u32::from_le_bytes(file[tail..tail + 4].try_into().unwrap()) as usize;
        &file[tail - length..tail]
    }

    /// `footer` with `fields` (each with a full id) added before its last field's end.
    fn with_fields(footer: &[u8], fields: &[u8]) -> Vec<u8> {
        assert_eq!(footer.last(), Some(&0), "a FileMetaData ends in a stop");
        let mut bytes = footer[..footer.len() - 1].to_vec();
        bytes.extend(fields);
        bytes.push(0);
        bytes
    }

    #[test]
    fn written_footers_are_accepted() {
        let file = written_file();
        assert_eq!(check_footer_bytes(footer(&file)), Ok(()));
        // An unknown field the crate skips, of any type but a collection of booleans.
        let unknown = [0x08, 0x64, 0x02, 0x61, 0x62, 0x0c, 0x66, 0x15, 0x02, 0x00];
        assert_eq!(
            check_footer_bytes(&with_fields(footer(&file), &unknown)),
            Ok(())
        );
    }

    #[test]
    fn footer_fields_of_other_types_are_refused() {
        let file = written_file();
        // row_groups (4) as an i32, which the parquet crate would read as a list header.
        let retyped = with_fields(footer(&file), &[0x05, 0x08, 0x02]);
        let e = check_footer_bytes(&retyped).unwrap_err();
        assert!(
            e.contains("field 4 of its FileMetaData is an i32, where the format has a list"),
            "{e}"
        );
        // key_value_metadata (5) as a list of i32s, not of KeyValue structs.
        let elements = with_fields(footer(&file), &[0x09, 0x0a, 0x15, 0x02]);
        let e = check_footer_bytes(&elements).unwrap_err();
        assert!(
            e.contains("a list of an i32 where the format has a list of a struct"),
            "{e}"
        );
        // An unknown field 50 holding a list of one boolean, which the crate skips without
        // reading its byte.
        let booleans = with_fields(footer(&file), &[0x09, 0x64, 0x11, 0x01]);
        let e = check_footer_bytes(&booleans).unwrap_err();
        assert!(e.contains("a boolean in a list"), "{e}");
    }

    /// A file from a fuzzing run whose footer holds known fields of other types and lists
    /// of booleans: the parquet crate's footer parser looped on it for seconds.
    const LOOPING_FOOTER: &str = "MTExMTExMTExMTExMTExMX0xMTExMTExMTExMzExMTExMTExMTExMTExMTExMTExMTEBAAAAAAAADTEx+vr6+vr6+vr6+vr6+gkFBQUF+fr6ARkAAAAAAAAAMTExMTExMTExMTExMTExMTExMTExsTExMTIxMTExMTExMTExMTEx+jExMQUFARkA+voxMTGxMTExMjExMTExMTExMTExMTH6+lsG8vr+5v8FBQepAAAAUEFSMQ==";

    /// Decodes standard base64 (the tests' own fixed inputs).
    fn base64(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut count = 0;
        let mut out = Vec::new();
        for c in text.bytes().filter(|&c| c != b'=') {
            let value = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            bits = bits << 6 | value;
            count += 6;
            if count >= 8 {
                count -= 8;
                out.push((bits >> count) as u8);
            }
        }
        out
    }

    #[test]
    fn a_footer_the_parquet_crate_loops_on_is_refused_at_once() {
        let file = base64(LOOPING_FOOTER);
        assert_eq!(file.len(), 181);
        let started = std::time::Instant::now();
        let e = check_footer_bytes(footer(&file)).unwrap_err();
        assert!(e.contains("where the format has"), "{e}");
        assert!(started.elapsed().as_millis() < 100);
    }

    #[test]
    fn compact_numbers_decode() {
        // zigzag: 0 → 0, 1 → −1, 2 → 1, 300 → 150.
        let mut c = Compact {
            bytes: &[0x00, 0x01, 0x02, 0xac, 0x02],
            at: 0,
        };
        assert_eq!(c.zigzag().unwrap(), 0);
        assert_eq!(c.zigzag().unwrap(), -1);
        assert_eq!(c.zigzag().unwrap(), 1);
        assert_eq!(c.zigzag().unwrap(), 150);
        assert!(c.byte().is_err());
    }
}
