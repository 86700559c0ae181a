//! Bounds-checked reading of Avro binary primitives, shared by the dict decoder, the columnar
//! decoder and the validating skipper.
//!
//! Why every read is checked against the bytes that remain: the input is untrusted (it comes
//! off the network), so a length or a block count is only believed once it is known to fit
//! in the input. Nothing here allocates from a count; callers size their buffers from
//! `remaining()`, never from what the data claims.

use crate::schema::{Node, NodeId, Tree};

/// Nesting depth limit (only reachable with recursive schemas or hostile data built for them).
pub const MAX_DEPTH: u32 = 200;
/// Items whose encoding takes zero bytes (e.g. `null`, an empty record) cannot be bounded by
/// the input size, so their total per message is capped instead.
pub const MAX_ZERO_SIZE_ITEMS: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct DecodeError {
    pub msg: String,
    pub pos: usize,
}

pub type DResult<T> = Result<T, DecodeError>;

#[cold]
#[inline(never)]
pub fn derr<T>(msg: impl Into<String>, pos: usize) -> DResult<T> {
    Err(DecodeError { msg: msg.into(), pos })
}

/// A block of an array or map: `count` items, and when the writer gave the block's byte size
/// (negative count), where the block must end.
pub struct Block {
    pub count: u64,
    pub end: Option<usize>,
    pub at: usize,
}

pub struct Cursor<'b> {
    pub buf: &'b [u8],
    pub pos: usize,
    pub zero_items: u64,
}

impl<'b> Cursor<'b> {
    pub fn new(buf: &'b [u8], pos: usize) -> Self {
        Cursor { buf, pos, zero_items: 0 }
    }

    #[inline(always)]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline(always)]
    pub fn read_long(&mut self) -> DResult<i64> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(((b >> 1) as i64) ^ -((b & 1) as i64));
            }
        }
        self.read_long_slow()
    }

    #[inline(never)]
    fn read_long_slow(&mut self) -> DResult<i64> {
        let start = self.pos;
        let mut n: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return derr("truncated varint (input ends inside it)", start);
            };
            self.pos += 1;
            if shift == 63 {
                // 10th byte: only the lowest bit still fits in 64 bits.
                if b & 0x80 != 0 {
                    return derr("varint longer than 10 bytes", start);
                }
                if b > 1 {
                    return derr("varint overflows 64 bits", start);
                }
            }
            n |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline(always)]
    pub fn read_int(&mut self) -> DResult<i32> {
        let at = self.pos;
        let v = self.read_long()?;
        if v < i32::MIN as i64 || v > i32::MAX as i64 {
            return derr(format!("int value {v} out of 32-bit range"), at);
        }
        Ok(v as i32)
    }

    #[inline(always)]
    pub fn take(&mut self, n: usize, what: &str) -> DResult<&'b [u8]> {
        if n > self.remaining() {
            return self.short(n, what);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[cold]
    #[inline(never)]
    fn short<T>(&self, n: usize, what: &str) -> DResult<T> {
        derr(
            format!("truncated {what}: needs {n} bytes, only {} left", self.remaining()),
            self.pos,
        )
    }

    #[inline(always)]
    pub fn read_f32(&mut self) -> DResult<f32> {
        let b = self.take(4, "float")?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline(always)]
    pub fn read_f64(&mut self) -> DResult<f64> {
        let b = self.take(8, "double")?;
        Ok(f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    #[inline(always)]
    pub fn read_bool(&mut self) -> DResult<bool> {
        // Like fastavro, any non-zero byte is true.
        Ok(self.take(1, "boolean")?[0] != 0)
    }

    /// A length prefix, checked against what is left before anything is read or allocated.
    #[inline(always)]
    pub fn read_len(&mut self, what: &str) -> DResult<usize> {
        let at = self.pos;
        let n = self.read_long()?;
        if n < 0 {
            return derr(format!("negative {what} length {n}"), at);
        }
        if n as u64 > self.remaining() as u64 {
            return derr(
                format!("{what} length {n} exceeds the {} bytes remaining", self.remaining()),
                at,
            );
        }
        Ok(n as usize)
    }

    #[inline(always)]
    pub fn read_bytes(&mut self) -> DResult<&'b [u8]> {
        let n = self.read_len("bytes")?;
        self.take(n, "bytes")
    }

    #[inline(always)]
    pub fn read_str(&mut self) -> DResult<&'b str> {
        let n = self.read_len("string")?;
        let start = self.pos;
        let b = self.take(n, "string")?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s),
            Err(e) => derr("invalid UTF-8 in string", start + e.valid_up_to()),
        }
    }

    /// A union branch or enum symbol index, checked against the number of choices.
    #[inline(always)]
    pub fn read_index(&mut self, n: usize, what: &str) -> DResult<usize> {
        let at = self.pos;
        let i = self.read_long()?;
        if i < 0 || i as u64 >= n as u64 {
            return derr(format!("{what} index {i} out of range (0..{n})"), at);
        }
        Ok(i as usize)
    }

    /// Next block header of an array or map; `None` at the terminating zero count.
    /// `item_min` is the minimum encoded size of one item, used to refuse counts that the
    /// remaining input cannot hold.
    pub fn block(&mut self, item_min: u64) -> DResult<Option<Block>> {
        let at = self.pos;
        let c = self.read_long()?;
        if c == 0 {
            return Ok(None);
        }
        let (count, end) = if c < 0 {
            if c == i64::MIN {
                return derr("invalid block count -2^63", at);
            }
            let size_at = self.pos;
            let size = self.read_long()?;
            if size < 0 || size as u64 > self.remaining() as u64 {
                return derr(
                    format!("block byte size {size} invalid or beyond the {} bytes remaining", self.remaining()),
                    size_at,
                );
            }
            ((-c) as u64, Some(self.pos + size as usize))
        } else {
            (c as u64, None)
        };
        let avail = match end {
            Some(e) => e - self.pos,
            None => self.remaining(),
        } as u64;
        if item_min > 0 {
            if count.saturating_mul(item_min) > avail {
                return derr(
                    format!(
                        "block count {count} cannot fit: items need at least {item_min} byte(s) each, only {avail} remain"
                    ),
                    at,
                );
            }
        } else {
            self.zero_items = self.zero_items.saturating_add(count);
            if self.zero_items > MAX_ZERO_SIZE_ITEMS {
                return derr(
                    format!("block count {count} of zero-size items exceeds the limit of {MAX_ZERO_SIZE_ITEMS}"),
                    at,
                );
            }
        }
        Ok(Some(Block { count, end, at }))
    }

    /// After the items of a sized block: the items must have filled it exactly.
    #[inline]
    pub fn end_block(&self, b: &Block) -> DResult<()> {
        if let Some(e) = b.end {
            if self.pos != e {
                return derr(
                    format!("block byte size does not match its items (ends at byte {}, expected {e})", self.pos),
                    b.at,
                );
            }
        }
        Ok(())
    }

    /// Validate and step over one value of `node` without building anything.
    pub fn skip(&mut self, t: &Tree, node: NodeId, depth: u32) -> DResult<()> {
        match &t.nodes[node] {
            Node::Null => Ok(()),
            Node::Boolean => self.take(1, "boolean").map(|_| ()),
            Node::Int => self.read_int().map(|_| ()),
            Node::Long | Node::Timestamp { .. } => self.read_long().map(|_| ()),
            Node::Float => self.take(4, "float").map(|_| ()),
            Node::Double => self.take(8, "double").map(|_| ()),
            Node::Bytes => self.read_bytes().map(|_| ()),
            Node::String => self.read_str().map(|_| ()),
            Node::Fixed { size, .. } => self.take(*size, "fixed").map(|_| ()),
            Node::Enum { symbols, .. } => self.read_index(symbols.len(), "enum").map(|_| ()),
            Node::Union { branches, .. } => {
                let i = self.read_index(branches.len(), "union")?;
                self.skip_nested(t, branches[i], depth)
            }
            Node::Record { fields, .. } => {
                for f in fields {
                    self.skip_nested(t, f.node, depth)?;
                }
                Ok(())
            }
            Node::Array { items } => {
                let min = t.min_size[*items];
                while let Some(b) = self.block(min)? {
                    for _ in 0..b.count {
                        self.skip_nested(t, *items, depth)?;
                    }
                    self.end_block(&b)?;
                }
                Ok(())
            }
            Node::Map { values } => {
                let min = 1 + t.min_size[*values];
                while let Some(b) = self.block(min)? {
                    for _ in 0..b.count {
                        self.read_str()?;
                        self.skip_nested(t, *values, depth)?;
                    }
                    self.end_block(&b)?;
                }
                Ok(())
            }
        }
    }

    #[inline]
    fn skip_nested(&mut self, t: &Tree, node: NodeId, depth: u32) -> DResult<()> {
        if depth >= MAX_DEPTH {
            return derr("nesting deeper than the limit", self.pos);
        }
        self.skip(t, node, depth + 1)
    }
}
