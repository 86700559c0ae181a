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

#[derive(Clone)]
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
    /// `keys`: the keys' column (None in a projection that does not ask for it).
    Map { col: usize, mask: bool, keys: Option<usize>, values: Box<CNode>, min: u64 },
    /// Anything without a fixed columnar shape (general unions, recursive types): the value's
    /// byte range is kept and decoded to a Python object per row at the end.
    Object { col: usize, node: NodeId },
    /// A value none of whose columns a projection asked for: parsed and validated exactly as
    /// `inner` would be (same reads in the same order, so the same errors at the same bytes),
    /// but nothing is stored.
    Skip { inner: Box<CNode> },
    /// Consecutive leaf fields of a record that a projection skips (`fields`, each a `Leaf` or
    /// `OptLeaf`), with `ops` to step over the common cases without a call per field.
    SkipRun { ops: Box<[SkipOp]>, fields: Box<[CNode]> },
}

/// How to step over one skipped leaf in `Parser::skip_run`'s fast loop. The fast loop only
/// ever accepts a value that the exact path (`skip_leaf` / `skip_opt_leaf`) would accept and
/// leaves the cursor where it would; anything else (a string, a non-canonical union index, a
/// long varint, the end of the input...) goes to the exact path, whose result and error stand.
#[derive(Clone, Copy, Debug)]
pub struct SkipOp {
    /// Bytes of a fixed-size value (8, 4, 1), VARINT_64 / VARINT_32, or EXACT.
    kind: u8,
    /// `["null", T]`: the one-byte encodings of the null and the value branch indexes.
    opt: Option<(u8, u8)>,
}

const VARINT_64: u8 = 0xfe;
const VARINT_32: u8 = 0xfd;
const EXACT: u8 = 0xff;

impl SkipOp {
    fn of(n: &CNode) -> SkipOp {
        let kind = |leaf: Leaf| match leaf {
            Leaf::F64 => 8,
            Leaf::F32 => 4,
            Leaf::Bool => 1,
            Leaf::I64 => VARINT_64,
            Leaf::I32 => VARINT_32,
            _ => EXACT,
        };
        // A union index 0 or 1 is one zig-zag varint byte, 0x00 or 0x02.
        let byte = |i: i64| if (0..=1).contains(&i) { Some((i * 2) as u8) } else { None };
        match n {
            CNode::Leaf { leaf, .. } => SkipOp { kind: kind(*leaf), opt: None },
            CNode::OptLeaf { null_idx, other_idx, leaf, .. } => match (byte(*null_idx), byte(*other_idx)) {
                (Some(a), Some(b)) => SkipOp { kind: kind(*leaf), opt: Some((a, b)) },
                _ => SkipOp { kind: EXACT, opt: None },
            },
            _ => SkipOp { kind: EXACT, opt: None },
        }
    }
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
                Ok(CNode::Map { col, mask: nullable, keys: Some(keys), values: Box::new(inner), min: 1 + t.min_size[*values] })
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
                        CNode::SkipRun { ops, fields } => skip_run(ops, fields, cur)?,
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
                        if let Some(k) = keys {
                            let start = cur.pos - s.len();
                            self.cols[*k].refs.push((m, start as u32, s.len() as u32));
                        }
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
            CNode::Skip { inner } => self.skip(inner, cur, depth),
            CNode::SkipRun { ops, fields } => skip_run(ops, fields, cur),
        }
    }

    /// Walk one value of `n` as `parse` does (the same cursor reads in the same order, the same
    /// depth accounting), storing nothing: a projection rejects exactly the messages the full
    /// decode rejects, with the same message. Strings are still checked for UTF-8 for that
    /// reason (a full decode refuses invalid UTF-8 in any string; skipping the check would let a
    /// projected decode accept such a message); it costs little, Rubin strings being short.
    pub fn skip(&self, n: &CNode, cur: &mut Cursor<'_>, depth: u32) -> DResult<()> {
        if depth >= MAX_DEPTH {
            return derr("nesting deeper than the limit", cur.pos);
        }
        match n {
            CNode::Leaf { leaf, .. } => skip_leaf(*leaf, cur),
            CNode::OptLeaf { null_idx, other_idx, leaf, .. } => skip_opt_leaf(*null_idx, *other_idx, *leaf, cur),
            CNode::Opt { null_idx, other_idx, inner } => {
                let at = cur.pos;
                let i = cur.read_long()?;
                if i == *null_idx {
                    Ok(())
                } else if i == *other_idx {
                    self.skip(inner, cur, depth)
                } else {
                    derr(format!("union index {i} out of range (0..2)"), at)
                }
            }
            CNode::One { inner } => {
                cur.read_index(1, "union")?;
                self.skip(inner, cur, depth)
            }
            CNode::Record { fields, .. } => {
                for f in fields {
                    match f {
                        CNode::OptLeaf { null_idx, other_idx, leaf, .. } => skip_opt_leaf(*null_idx, *other_idx, *leaf, cur)?,
                        CNode::Leaf { leaf, .. } => skip_leaf(*leaf, cur)?,
                        CNode::SkipRun { ops, fields } => skip_run(ops, fields, cur)?,
                        _ => self.skip(f, cur, depth + 1)?,
                    }
                }
                Ok(())
            }
            CNode::Array { items, min, .. } => {
                while let Some(b) = cur.block(*min)? {
                    for _ in 0..b.count {
                        self.skip(items, cur, depth + 1)?;
                    }
                    cur.end_block(&b)?;
                }
                Ok(())
            }
            CNode::Map { values, min, .. } => {
                while let Some(b) = cur.block(*min)? {
                    for _ in 0..b.count {
                        cur.read_str()?;
                        self.skip(values, cur, depth + 1)?;
                    }
                    cur.end_block(&b)?;
                }
                Ok(())
            }
            CNode::Object { node, .. } => cur.skip(self.t, *node, depth),
            CNode::Skip { inner } => self.skip(inner, cur, depth),
            CNode::SkipRun { ops, fields } => skip_run(ops, fields, cur),
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
            CNode::Skip { .. } | CNode::SkipRun { .. } => {}
        }
    }
}

/// Parse `msgs` (each from byte `start`; message `i` is numbered `first + i` in references
/// and errors) into fresh columns, filling only those `keep` allows (all when None); `hint`
/// sizes the buffers from an earlier batch. The first bad message ends the parse with its error.
#[allow(clippy::too_many_arguments)]
pub fn parse_messages(
    t: &Tree,
    root: &CNode,
    specs: &[ColSpec],
    keep: Option<&[bool]>,
    hint: &[[usize; 4]],
    msgs: &[&[u8]],
    first: usize,
    start: usize,
) -> Result<Vec<Col>, String> {
    let nmsg = msgs.len();
    let mut cols: Vec<Col> = (0..specs.len()).map(|_| Col::default()).collect();
    if hint.len() == specs.len() {
        // Sizes learned from the previous batch (never from the input's own counts).
        for (i, (c, h)) in cols.iter_mut().zip(hint).enumerate() {
            if keep.is_some_and(|k| !k[i]) {
                continue;
            }
            c.data.reserve(h[0] * nmsg + h[0] / 2);
            c.valid.reserve(h[1] * nmsg + h[1] / 2);
            c.offsets.reserve(h[2] * nmsg + 1);
            c.refs.reserve(h[3] * nmsg);
        }
    }
    Parser::init(&mut cols, specs);
    let mut p = Parser { t, cols: &mut cols };
    for (i, buf) in msgs.iter().enumerate() {
        let m = first + i;
        let mut cur = Cursor::new(buf, start);
        if let Err(e) = p.parse(root, &mut cur, m as u32, 0) {
            return Err(format!("message {m}: {} at byte {}", e.msg, e.pos));
        }
        if cur.pos != buf.len() {
            return Err(format!("message {m}: {} trailing byte(s) after the record at byte {}", buf.len() - cur.pos, cur.pos));
        }
    }
    Ok(cols)
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

/// `read_leaf` without storing: the same reads, so the same checks and errors.
#[inline(always)]
fn skip_leaf(leaf: Leaf, cur: &mut Cursor<'_>) -> DResult<()> {
    match leaf {
        Leaf::F64 => cur.take(8, "double").map(|_| ()),
        Leaf::F32 => cur.take(4, "float").map(|_| ()),
        Leaf::I64 => cur.read_long().map(|_| ()),
        Leaf::I32 => cur.read_int().map(|_| ()),
        Leaf::Bool => cur.read_bool().map(|_| ()),
        Leaf::Str => cur.read_str().map(|_| ()),
        Leaf::Bytes => cur.read_bytes().map(|_| ()),
        Leaf::Fixed(size) => cur.take(size, "fixed").map(|_| ()),
        Leaf::Enum(nsym) => cur.read_index(nsym, "enum").map(|_| ()),
        Leaf::Null => Ok(()),
    }
}

/// `Parser::opt_leaf` without storing.
#[inline(always)]
fn skip_opt_leaf(null_idx: i64, other_idx: i64, leaf: Leaf, cur: &mut Cursor<'_>) -> DResult<()> {
    let at = cur.pos;
    let i = cur.read_long()?;
    if i == other_idx {
        skip_leaf(leaf, cur)
    } else if i == null_idx {
        Ok(())
    } else {
        derr(format!("union index {i} out of range (0..2)"), at)
    }
}

/// Step over the leaves of a `SkipRun`: a tight loop over `ops` (the cursor position in a
/// local), each field the fast loop does not take going through the exact path.
#[inline]
fn skip_run(ops: &[SkipOp], fields: &[CNode], cur: &mut Cursor<'_>) -> DResult<()> {
    let buf = cur.buf;
    let n = buf.len();
    let mut p = cur.pos;
    for (op, field) in ops.iter().zip(fields) {
        let mut q = p;
        if let Some((null_b, value_b)) = op.opt {
            match buf.get(q) {
                Some(&b) if b == null_b => {
                    p = q + 1;
                    continue;
                }
                Some(&b) if b == value_b => q += 1,
                _ => q = usize::MAX,
            }
        }
        let end = match op.kind {
            _ if q == usize::MAX => None,
            VARINT_64 | VARINT_32 => {
                // Up to 9 bytes (63 bits) for a long, 4 (28 bits) for an int: always valid.
                let most = if op.kind == VARINT_64 { 9 } else { 4 };
                let stop = n.min(q + most);
                buf[q..stop].iter().position(|&b| b < 0x80).map(|i| q + i + 1)
            }
            EXACT => None,
            size => {
                let e = q + size as usize;
                if e <= n {
                    Some(e)
                } else {
                    None
                }
            }
        };
        p = match end {
            Some(e) => e,
            None => {
                cur.pos = p;
                match field {
                    CNode::OptLeaf { null_idx, other_idx, leaf, .. } => skip_opt_leaf(*null_idx, *other_idx, *leaf, cur)?,
                    CNode::Leaf { leaf, .. } => skip_leaf(*leaf, cur)?,
                    _ => unreachable!("a skip run holds leaves only"),
                }
                cur.pos
            }
        };
    }
    cur.pos = p;
    Ok(())
}

fn is_leaf(n: &CNode) -> bool {
    matches!(n, CNode::Leaf { .. } | CNode::OptLeaf { .. })
}

fn leaf_field(f: &CNode) -> Option<&CNode> {
    is_leaf(f).then_some(f)
}

fn skipped_leaf(f: &CNode) -> Option<&CNode> {
    match f {
        CNode::Skip { inner } if is_leaf(inner) => Some(inner),
        _ => None,
    }
}

/// A record's fields with each run of skipped leaves (`skipped(field)` gives the leaf, or None
/// for a field that is kept or not a leaf) made one `SkipRun`.
fn with_runs(fields: Vec<CNode>, skipped: fn(&CNode) -> Option<&CNode>) -> Vec<CNode> {
    let mut out = Vec::with_capacity(fields.len());
    let mut run: Vec<CNode> = Vec::new();
    let close = |run: &mut Vec<CNode>, out: &mut Vec<CNode>| {
        if !run.is_empty() {
            let ops = run.iter().map(SkipOp::of).collect();
            out.push(CNode::SkipRun { ops, fields: std::mem::take(run).into_boxed_slice() });
        }
    };
    for f in fields {
        match skipped(&f) {
            Some(leaf) => run.push(leaf.clone()),
            None => {
                close(&mut run, &mut out);
                out.push(f);
            }
        }
    }
    close(&mut run, &mut out);
    out
}

/// `n` as a skipped subtree walks it: the same nodes, with each record's leaf fields in runs.
fn skip_form(n: &CNode) -> CNode {
    match n {
        CNode::Record { fields, .. } => {
            let fields = fields.iter().map(|f| if is_leaf(f) { f.clone() } else { skip_form(f) }).collect();
            CNode::Record { valid_col: None, fields: with_runs(fields, leaf_field) }
        }
        CNode::Opt { null_idx, other_idx, inner } => {
            CNode::Opt { null_idx: *null_idx, other_idx: *other_idx, inner: Box::new(skip_form(inner)) }
        }
        CNode::One { inner } => CNode::One { inner: Box::new(skip_form(inner)) },
        CNode::Array { col, mask, items, min } => {
            CNode::Array { col: *col, mask: *mask, items: Box::new(skip_form(items)), min: *min }
        }
        CNode::Map { col, mask, keys, values, min } => {
            CNode::Map { col: *col, mask: *mask, keys: *keys, values: Box::new(skip_form(values)), min: *min }
        }
        CNode::Skip { inner } => skip_form(inner),
        _ => n.clone(),
    }
}

/// The plan's tree cut down to the columns in `want` (indexed like `Plan::cols`): every subtree
/// without a wanted column becomes a `Skip`. `keep` is set for each column the projected tree
/// fills: the wanted ones, plus the offsets of every array or map that holds a wanted column
/// (flat item rows are of no use without them). Validity columns of nullable records and map
/// keys are kept only when asked for.
pub fn project(n: &CNode, want: &[bool], keep: &mut [bool]) -> CNode {
    let skip = |n: &CNode| CNode::Skip { inner: Box::new(skip_form(n)) };
    match n {
        CNode::Leaf { col, .. } | CNode::OptLeaf { col, .. } | CNode::Object { col, .. } => {
            if want[*col] {
                keep[*col] = true;
                n.clone()
            } else {
                skip(n)
            }
        }
        CNode::Opt { null_idx, other_idx, inner } => match project(inner, want, keep) {
            CNode::Skip { .. } => skip(n),
            p => CNode::Opt { null_idx: *null_idx, other_idx: *other_idx, inner: Box::new(p) },
        },
        CNode::One { inner } => match project(inner, want, keep) {
            CNode::Skip { .. } => skip(n),
            p => CNode::One { inner: Box::new(p) },
        },
        CNode::Record { valid_col, fields } => {
            let valid_col = valid_col.filter(|v| want[*v]);
            if let Some(v) = valid_col {
                keep[v] = true;
            }
            let fields: Vec<CNode> = fields.iter().map(|f| project(f, want, keep)).collect();
            if valid_col.is_none() && fields.iter().all(|f| matches!(f, CNode::Skip { .. })) {
                return skip(n);
            }
            CNode::Record { valid_col, fields: with_runs(fields, skipped_leaf) }
        }
        CNode::Array { col, mask, items, min } => {
            let items = project(items, want, keep);
            if !want[*col] && matches!(items, CNode::Skip { .. }) {
                return skip(n);
            }
            keep[*col] = true;
            CNode::Array { col: *col, mask: *mask, items: Box::new(items), min: *min }
        }
        CNode::Map { col, mask, keys, values, min } => {
            let keys = keys.filter(|k| want[*k]);
            let values = project(values, want, keep);
            if !want[*col] && keys.is_none() && matches!(values, CNode::Skip { .. }) {
                return skip(n);
            }
            keep[*col] = true;
            if let Some(k) = keys {
                keep[k] = true;
            }
            CNode::Map { col: *col, mask: *mask, keys, values: Box::new(values), min: *min }
        }
        CNode::Skip { .. } | CNode::SkipRun { .. } => n.clone(),
    }
}
