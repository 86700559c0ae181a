//! Columnar decoding of a batch of messages (see README.md for the layout).
//!
//! Why: a visit's worth of alerts holds ~10^5-10^6 light-curve values; creating one Python
//! float per value is most of the cost of a dict decode. Here the schema is flattened once
//! into a column plan, every message is parsed straight into little-endian Rust buffers
//! (GIL released, no Python object per value), and Python gets one `bytes` per column that
//! numpy can wrap with `frombuffer` without a further copy.

use std::collections::HashSet;

use crate::reader::{derr, Cursor, DResult, MAX_DEPTH};
use crate::schema::{Node, NodeId, TimeUnit, Tree};

#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    Null,
    Bool,
    I32,
    I64,
    F32,
    F64,
    Str,
    Bytes,
    Fixed(usize),
    Enum(usize),
}

impl Leaf {
    /// Bytes per value in `data` (0 for columns stored as references).
    fn width(self) -> usize {
        match self {
            Leaf::Bool => 1,
            Leaf::I32 | Leaf::F32 | Leaf::Enum(_) => 4,
            Leaf::I64 | Leaf::F64 => 8,
            _ => 0,
        }
    }
}

pub enum CNode {
    Leaf { col: usize, leaf: Leaf, mask: bool },
    /// `["null", leaf]` (the shape of most Rubin fields), handled without recursion.
    OptLeaf { null_idx: i64, other_idx: i64, col: usize, leaf: Leaf },
    /// Two-branch union with null.
    Opt { null_idx: i64, other_idx: i64, inner: Box<CNode> },
    /// Single-branch union.
    One { inner: Box<CNode> },
    Record { valid_col: Option<usize>, fields: Vec<CNode> },
    Array { col: usize, mask: bool, items: Box<CNode>, min: u64 },
    Map { col: usize, mask: bool, keys: usize, values: Box<CNode>, min: u64 },
    /// Anything without a fixed columnar shape (general unions, recursive types): the value's
    /// byte range is kept and decoded to a Python object per row at the end.
    Object { col: usize, node: NodeId },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    /// `data` holds fixed-width little-endian values.
    Fixed,
    /// `refs` point into the messages (strings, bytes, fixed).
    Refs,
    /// int32 symbol codes in `data`; returned as a list of symbols.
    Enum(NodeId),
    /// `offsets` (int64, rows + 1) for arrays and maps.
    Offsets,
    /// Only a validity mask (nullable records).
    ValidOnly,
    Object(NodeId),
    Nothing,
}

pub struct ColSpec {
    pub path: String,
    pub kind: &'static str,
    pub mask: bool,
    pub store: Store,
}

pub struct Plan {
    pub root: CNode,
    pub cols: Vec<ColSpec>,
}

pub const NONE_REF: u32 = u32::MAX;

#[derive(Default)]
pub struct Col {
    pub data: Vec<u8>,
    pub valid: Vec<u8>,
    pub offsets: Vec<i64>,
    /// (message index or NONE_REF for null, start, length)
    pub refs: Vec<(u32, u32, u32)>,
}

struct Builder<'t> {
    t: &'t Tree,
    cols: Vec<ColSpec>,
    paths: HashSet<String>,
    stack: Vec<NodeId>,
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

impl Builder<'_> {
    fn add(&mut self, path: &str, kind: &'static str, mask: bool, store: Store) -> Result<usize, String> {
        if !self.paths.insert(path.to_string()) {
            return Err(format!("column path {path:?} occurs twice (a field is named like a generated column)"));
        }
        self.cols.push(ColSpec { path: path.to_string(), kind, mask, store });
        Ok(self.cols.len() - 1)
    }

    /// `own`: the column path of this value; `base`: the prefix for a record's fields (they
    /// differ only for array items and map values, whose fields sit directly under the array).
    fn build(&mut self, node: NodeId, own: &str, base: &str, nullable: bool, direct_opt: bool) -> Result<CNode, String> {
        let t = self.t;
        let leaf = |b: &mut Self, kind: &'static str, leaf: Leaf, store: Store| -> Result<CNode, String> {
            let mask = nullable && !matches!(leaf, Leaf::Null);
            let col = b.add(own, kind, mask, store)?;
            Ok(CNode::Leaf { col, leaf, mask })
        };
        match &t.nodes[node] {
            Node::Null => leaf(self, "null", Leaf::Null, Store::Nothing),
            Node::Boolean => leaf(self, "bool", Leaf::Bool, Store::Fixed),
            Node::Int => leaf(self, "int32", Leaf::I32, Store::Fixed),
            Node::Long => leaf(self, "int64", Leaf::I64, Store::Fixed),
            Node::Float => leaf(self, "float32", Leaf::F32, Store::Fixed),
            Node::Double => leaf(self, "float64", Leaf::F64, Store::Fixed),
            Node::Timestamp { unit, local } => {
                let kind = match (unit, local) {
                    (TimeUnit::Micros, false) => "timestamp-micros",
                    (TimeUnit::Millis, false) => "timestamp-millis",
                    (TimeUnit::Micros, true) => "local-timestamp-micros",
                    (TimeUnit::Millis, true) => "local-timestamp-millis",
                };
                leaf(self, kind, Leaf::I64, Store::Fixed)
            }
            Node::String => leaf(self, "string", Leaf::Str, Store::Refs),
            Node::Bytes => leaf(self, "bytes", Leaf::Bytes, Store::Refs),
            Node::Fixed { size, .. } => leaf(self, "fixed", Leaf::Fixed(*size), Store::Refs),
            Node::Enum { symbols, .. } => leaf(self, "enum", Leaf::Enum(symbols.len()), Store::Enum(node)),
            Node::Union { branches, simple, .. } => {
                if branches.len() == 1 {
                    let inner = self.build(branches[0], own, base, nullable, direct_opt)?;
                    return Ok(CNode::One { inner: Box::new(inner) });
                }
                if let Some((ni, oi)) = *simple {
                    let other = branches[oi as usize];
                    let inner = self.build(other, own, base, true, true)?;
                    if let CNode::Leaf { col, leaf, mask: true } = inner {
                        return Ok(CNode::OptLeaf { null_idx: ni as i64, other_idx: oi as i64, col, leaf });
                    }
                    return Ok(CNode::Opt { null_idx: ni as i64, other_idx: oi as i64, inner: Box::new(inner) });
                }
                let col = self.add(own, "object", false, Store::Object(node))?;
                Ok(CNode::Object { col, node })
            }
            Node::Record { fields, .. } => {
                if self.stack.contains(&node) {
                    let col = self.add(own, "object", false, Store::Object(node))?;
                    return Ok(CNode::Object { col, node });
                }
                self.stack.push(node);
                let valid_col = if direct_opt {
                    Some(self.add(own, "record", true, Store::ValidOnly)?)
                } else {
                    None
                };
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    let p = join(base, &f.name);
                    out.push(self.build(f.node, &p, &p, nullable, false)?);
                }
                self.stack.pop();
                Ok(CNode::Record { valid_col, fields: out })
            }
            Node::Array { items } => {
                let col = self.add(own, "array", nullable, Store::Offsets)?;
                let items_own = join(own, "items");
                let inner = self.build(*items, &items_own, own, false, false)?;
                Ok(CNode::Array { col, mask: nullable, items: Box::new(inner), min: t.min_size[*items] })
            }
            Node::Map { values } => {
                let col = self.add(own, "map", nullable, Store::Offsets)?;
                let keys = self.add(&join(own, "keys"), "string", false, Store::Refs)?;
                let values_own = join(own, "values");
                let inner = self.build(*values, &values_own, own, false, false)?;
                Ok(CNode::Map { col, mask: nullable, keys, values: Box::new(inner), min: 1 + t.min_size[*values] })
            }
        }
    }
}

pub fn plan(t: &Tree) -> Result<Plan, String> {
    let mut b = Builder { t, cols: Vec::new(), paths: HashSet::new(), stack: Vec::new() };
    let root = match &t.nodes[t.root] {
        Node::Record { .. } => b.build(t.root, "", "", false, false)?,
        _ => b.build(t.root, "value", "value", false, false)?,
    };
    Ok(Plan { root, cols: b.cols })
}

pub struct Parser<'a> {
    pub t: &'a Tree,
    pub cols: &'a mut [Col],
}

impl Parser<'_> {
    pub fn init(cols: &mut [Col], specs: &[ColSpec]) {
        for (c, s) in cols.iter_mut().zip(specs) {
            if s.store == Store::Offsets {
                c.offsets.push(0);
            }
        }
    }

    pub fn parse(&mut self, n: &CNode, cur: &mut Cursor<'_>, m: u32, depth: u32) -> DResult<()> {
        if depth >= MAX_DEPTH {
            return derr("nesting deeper than the limit", cur.pos);
        }
        match n {
            CNode::Leaf { col, leaf, mask } => {
                let c = &mut self.cols[*col];
                read_leaf(c, *leaf, cur, m)?;
                if *mask {
                    c.valid.push(1);
                }
                Ok(())
            }
            CNode::OptLeaf { null_idx, other_idx, col, leaf } => self.opt_leaf(*null_idx, *other_idx, *col, *leaf, cur, m),
            CNode::Opt { null_idx, other_idx, inner } => {
                let at = cur.pos;
                let i = cur.read_long()?;
                if i == *null_idx {
                    self.fill_null(inner);
                    Ok(())
                } else if i == *other_idx {
                    self.parse(inner, cur, m, depth)
                } else {
                    derr(format!("union index {i} out of range (0..2)"), at)
                }
            }
            CNode::One { inner } => {
                cur.read_index(1, "union")?;
                self.parse(inner, cur, m, depth)
            }
            CNode::Record { valid_col, fields } => {
                if let Some(v) = valid_col {
                    self.cols[*v].valid.push(1);
                }
                for f in fields {
                    // Leaves inline: most fields are leaves, and a call per value costs more
                    // than the value itself.
                    match f {
                        CNode::OptLeaf { null_idx, other_idx, col, leaf } => {
                            self.opt_leaf(*null_idx, *other_idx, *col, *leaf, cur, m)?
                        }
                        CNode::Leaf { col, leaf, mask } => {
                            let c = &mut self.cols[*col];
                            read_leaf(c, *leaf, cur, m)?;
                            if *mask {
                                c.valid.push(1);
                            }
                        }
                        _ => self.parse(f, cur, m, depth + 1)?,
                    }
                }
                Ok(())
            }
            CNode::Array { col, mask, items, min } => {
                let mut total: i64 = 0;
                while let Some(b) = cur.block(*min)? {
                    for _ in 0..b.count {
                        self.parse(items, cur, m, depth + 1)?;
                    }
                    cur.end_block(&b)?;
                    total += b.count as i64;
                }
                let c = &mut self.cols[*col];
                let last = *c.offsets.last().unwrap_or(&0);
                c.offsets.push(last + total);
                if *mask {
                    c.valid.push(1);
                }
                Ok(())
            }
            CNode::Map { col, mask, keys, values, min } => {
                let mut total: i64 = 0;
                while let Some(b) = cur.block(*min)? {
                    for _ in 0..b.count {
                        let s = cur.read_str()?;
                        let start = cur.pos - s.len();
                        self.cols[*keys].refs.push((m, start as u32, s.len() as u32));
                        self.parse(values, cur, m, depth + 1)?;
                    }
                    cur.end_block(&b)?;
                    total += b.count as i64;
                }
                let c = &mut self.cols[*col];
                let last = *c.offsets.last().unwrap_or(&0);
                c.offsets.push(last + total);
                if *mask {
                    c.valid.push(1);
                }
                Ok(())
            }
            CNode::Object { col, node } => {
                let start = cur.pos;
                cur.skip(self.t, *node, depth)?;
                self.cols[*col].refs.push((m, start as u32, (cur.pos - start) as u32));
                Ok(())
            }
        }
    }

    #[inline(always)]
    fn opt_leaf(&mut self, null_idx: i64, other_idx: i64, col: usize, leaf: Leaf, cur: &mut Cursor<'_>, m: u32) -> DResult<()> {
        let at = cur.pos;
        let i = cur.read_long()?;
        let c = &mut self.cols[col];
        if i == other_idx {
            read_leaf(c, leaf, cur, m)?;
            c.valid.push(1);
        } else if i == null_idx {
            null_leaf(c, leaf);
            c.valid.push(0);
        } else {
            return derr(format!("union index {i} out of range (0..2)"), at);
        }
        Ok(())
    }

    /// A null at this row level: one invalid placeholder in every column below `n` that shares
    /// the row (array items are not rows of this level, so arrays just get an empty range).
    fn fill_null(&mut self, n: &CNode) {
        match n {
            CNode::Leaf { col, leaf, mask } => {
                let c = &mut self.cols[*col];
                null_leaf(c, *leaf);
                if *mask {
                    c.valid.push(0);
                }
            }
            CNode::OptLeaf { col, leaf, .. } => {
                let c = &mut self.cols[*col];
                null_leaf(c, *leaf);
                c.valid.push(0);
            }
            CNode::Opt { inner, .. } | CNode::One { inner } => self.fill_null(inner),
            CNode::Record { valid_col, fields } => {
                if let Some(v) = valid_col {
                    self.cols[*v].valid.push(0);
                }
                for f in fields {
                    self.fill_null(f);
                }
            }
            CNode::Array { col, mask, .. } | CNode::Map { col, mask, .. } => {
                let c = &mut self.cols[*col];
                let last = *c.offsets.last().unwrap_or(&0);
                c.offsets.push(last);
                if *mask {
                    c.valid.push(0);
                }
            }
            CNode::Object { col, .. } => self.cols[*col].refs.push((NONE_REF, 0, 0)),
        }
    }
}

/// Append a fixed number of bytes (inlined: `extend_from_slice` with a run-time length is an
/// out-of-line call, and this is executed once per value).
#[inline(always)]
fn push_n<const N: usize>(v: &mut Vec<u8>, b: [u8; N]) {
    v.reserve(N);
    // SAFETY: N bytes reserved just above.
    unsafe {
        let len = v.len();
        std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().add(len), N);
        v.set_len(len + N);
    }
}

#[inline(always)]
fn read_leaf(c: &mut Col, leaf: Leaf, cur: &mut Cursor<'_>, m: u32) -> DResult<()> {
    match leaf {
        Leaf::F64 => {
            let b = cur.take(8, "double")?;
            push_n(&mut c.data, [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        Leaf::F32 => {
            let b = cur.take(4, "float")?;
            push_n(&mut c.data, [b[0], b[1], b[2], b[3]]);
        }
        Leaf::I64 => push_n(&mut c.data, cur.read_long()?.to_le_bytes()),
        Leaf::I32 => push_n(&mut c.data, cur.read_int()?.to_le_bytes()),
        Leaf::Bool => c.data.push(cur.read_bool()? as u8),
        Leaf::Str => {
            let s = cur.read_str()?;
            let start = cur.pos - s.len();
            c.refs.push((m, start as u32, s.len() as u32));
        }
        Leaf::Bytes => {
            let s = cur.read_bytes()?;
            let start = cur.pos - s.len();
            c.refs.push((m, start as u32, s.len() as u32));
        }
        Leaf::Fixed(size) => {
            let start = cur.pos;
            cur.take(size, "fixed")?;
            c.refs.push((m, start as u32, size as u32));
        }
        Leaf::Enum(nsym) => {
            let i = cur.read_index(nsym, "enum")?;
            push_n(&mut c.data, (i as i32).to_le_bytes());
        }
        Leaf::Null => {}
    }
    Ok(())
}

/// Placeholder for a null row: zeros in numeric data, a null reference for strings/bytes.
#[inline(always)]
fn null_leaf(c: &mut Col, leaf: Leaf) {
    match leaf.width() {
        8 => push_n(&mut c.data, [0u8; 8]),
        4 => push_n(&mut c.data, [0u8; 4]),
        1 => c.data.push(0),
        _ => {
            if matches!(leaf, Leaf::Str | Leaf::Bytes | Leaf::Fixed(_)) {
                c.refs.push((NONE_REF, 0, 0));
            }
        }
    }
}
