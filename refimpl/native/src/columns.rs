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
    /// `OptLeaf`), with `plan` to step over the common cases without a branch per field.
    SkipRun { plan: SkipPlan, fields: Box<[CNode]> },
}

/// How to step over one skipped leaf in `skip_run`'s fast loop, in one uniform shape so that
/// the loop has no branch per field: an optional one-byte `["null", T]` union index, then
/// either `size` bytes or a varint of at most `varint_max` bytes. The fast loop only ever
/// accepts a value that the exact path (`skip_leaf` / `skip_opt_leaf`) would accept and leaves
/// the cursor where it would; anything else (a string, a non-canonical union index, a long
/// varint, the end of the input...) sends the whole segment to the exact path, whose result
/// and error stand.
#[derive(Clone, Copy, Debug)]
pub struct FastOp {
    null_b: u8,
    value_b: u8,
    /// 1 when a one-byte union index precedes the value, else 0.
    opt: u8,
    /// Bytes of a fixed-size value (0 for a varint).
    size: u8,
    /// Most bytes of a varint the fast loop takes (4 for an int: 28 bits always fit; 8 for a
    /// long), 0 for a fixed-size value.
    varint_max: u8,
    /// A string: the fast forms take one of at most SHORT_STR ASCII bytes (valid UTF-8, so
    /// exactly what the exact path's check accepts); any other goes to the exact path.
    short_str: bool,
}

const SHORT_STR: usize = 16;
/// Bytes past a fast segment's `most` that `skip_fast` may read (two 8-byte loads after a
/// string's length byte).
const READ_AHEAD: usize = 24;

impl FastOp {
    /// The fast form of a skipped leaf, or None for one only the exact path steps over.
    fn of(n: &CNode) -> Option<FastOp> {
        let shape = |leaf: Leaf| match leaf {
            Leaf::F64 => Some((8, 0, false)),
            Leaf::F32 => Some((4, 0, false)),
            Leaf::Bool => Some((1, 0, false)),  // any byte is a boolean (true if not 0), as in fastavro
            Leaf::I64 => Some((0, 8, false)),
            Leaf::I32 => Some((0, 4, false)),
            Leaf::Str => Some((0, 0, true)),
            Leaf::Fixed(size) if (1..=64).contains(&size) => Some((size as u8, 0, false)),
            _ => None,
        };
        // A union index 0 or 1 is one zig-zag varint byte, 0x00 or 0x02.
        let byte = |i: i64| if (0..=1).contains(&i) { Some((i * 2) as u8) } else { None };
        match n {
            CNode::Leaf { leaf, .. } => {
                shape(*leaf).map(|(size, varint_max, short_str)| FastOp { null_b: 0, value_b: 0, opt: 0, size, varint_max, short_str })
            }
            CNode::OptLeaf { null_idx, other_idx, leaf, .. } => {
                let (null_b, value_b) = (byte(*null_idx)?, byte(*other_idx)?);
                shape(*leaf).map(|(size, varint_max, short_str)| FastOp { null_b, value_b, opt: 1, size, varint_max, short_str })
            }
            _ => None,
        }
    }

    /// The most bytes this op can step over.
    fn most(self) -> usize {
        let value = if self.short_str { 1 + SHORT_STR } else { self.size.max(self.varint_max) as usize };
        self.opt as usize + value
    }
}

/// Consecutive fields of a `SkipRun` that the fast loop takes (`fast`) or that only the exact
/// path steps over; `most` bounds the bytes a fast segment can span.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    start: usize,
    end: usize,
    fast: bool,
    most: usize,
    /// This fast segment's slot in a parser's `templates` (`number_segments`), or NO_SLOT.
    slot: usize,
}

const NO_SLOT: usize = usize::MAX;

/// The byte layout of one fast segment as last met: which bytes are union indexes, varint
/// continuation or end bytes, string lengths or string bytes (ASCII), and what they must be
/// (`byte & mask == expect`).
/// Rubin's records mostly repeat their null pattern and varint lengths from one to the next,
/// so a segment usually matches the previous one's layout; checking that is one vectorised
/// pass over the segment's bytes with no dependency between fields, where walking the fields
/// makes each position wait for the previous field's length.
#[derive(Default, Clone)]
pub struct Template {
    mask: Vec<u8>,
    expect: Vec<u8>,
}

impl Template {
    /// The segment's length if the bytes at `p` have this layout.
    #[inline]
    fn matches(&self, buf: &[u8], p: usize) -> Option<usize> {
        let len = self.mask.len();
        if len == 0 {
            return None;
        }
        let bytes = buf.get(p..p + len)?;
        let mut diff = 0u8;
        for ((&b, &m), &e) in bytes.iter().zip(&self.mask).zip(&self.expect) {
            diff |= (b & m) ^ e;
        }
        (diff == 0).then_some(len)
    }

    fn check(&mut self, at: usize, mask: u8, expect: u8) {
        self.mask[at] = mask;
        self.expect[at] = expect;
    }
}

/// The last few layouts a segment had, most recently matched first (a visit's records fall
/// into a few null patterns).
#[derive(Default, Clone)]
pub struct Layouts {
    seen: [Template; LAYOUTS],
}

const LAYOUTS: usize = 4;

impl Layouts {
    /// The segment's length if the bytes at `p` have one of the layouts; that layout moves to
    /// the front, so the common one is tried first.
    #[inline]
    fn matches(&mut self, buf: &[u8], p: usize) -> Option<usize> {
        let (i, len) = self.seen.iter().enumerate().find_map(|(i, t)| t.matches(buf, p).map(|len| (i, len)))?;
        if i > 0 {
            self.seen[..=i].rotate_right(1);
        }
        Some(len)
    }

    /// The least recently matched layout, moved to the front to be overwritten.
    fn replace(&mut self) -> &mut Template {
        self.seen.rotate_right(1);
        &mut self.seen[0]
    }
}

#[derive(Clone, Debug)]
pub struct SkipPlan {
    ops: Box<[FastOp]>,
    segs: Box<[Segment]>,
}

impl SkipPlan {
    fn of(fields: &[CNode]) -> SkipPlan {
        let fast: Vec<Option<FastOp>> = fields.iter().map(FastOp::of).collect();
        let filler = FastOp { null_b: 0, value_b: 0, opt: 0, size: 0, varint_max: 0, short_str: false };
        let ops = fast.iter().map(|op| op.unwrap_or(filler)).collect();
        let mut segs: Vec<Segment> = Vec::new();
        for (i, op) in fast.iter().enumerate() {
            let is_fast = op.is_some();
            let most = op.map_or(0, FastOp::most);
            match segs.last_mut() {
                Some(seg) if seg.fast == is_fast => {
                    seg.end = i + 1;
                    seg.most += most;
                }
                _ => segs.push(Segment { start: i, end: i + 1, fast: is_fast, most, slot: NO_SLOT }),
            }
        }
        SkipPlan { ops, segs: segs.into_boxed_slice() }
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
    /// Each fast skip segment's last layout (`Template`), by its slot.
    pub templates: Vec<Layouts>,
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
                        CNode::SkipRun { plan, fields } => skip_run(plan, fields, cur, &mut self.templates)?,
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
            CNode::SkipRun { plan, fields } => skip_run(plan, fields, cur, &mut self.templates),
        }
    }

    /// Walk one value of `n` as `parse` does (the same cursor reads in the same order, the same
    /// depth accounting), storing nothing: a projection rejects exactly the messages the full
    /// decode rejects, with the same message. Strings are still checked for UTF-8 for that
    /// reason (a full decode refuses invalid UTF-8 in any string; skipping the check would let a
    /// projected decode accept such a message); it costs little, Rubin strings being short.
    pub fn skip(&mut self, n: &CNode, cur: &mut Cursor<'_>, depth: u32) -> DResult<()> {
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
                        CNode::SkipRun { plan, fields } => skip_run(plan, fields, cur, &mut self.templates)?,
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
            CNode::SkipRun { plan, fields } => skip_run(plan, fields, cur, &mut self.templates),
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
    let mut p = Parser { t, cols: &mut cols, templates: Vec::new() };
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

/// Step over the leaves of a `SkipRun`. A fast segment whose bytes have the layout it had last
/// time (`Template`) is stepped over in one pass; otherwise it is walked branch-free when the
/// input surely holds it, which also records its layout; anything that pass does not take goes
/// to the exact path from the segment's start, as does every other segment.
#[inline]
fn skip_run(plan: &SkipPlan, fields: &[CNode], cur: &mut Cursor<'_>, templates: &mut Vec<Layouts>) -> DResult<()> {
    for seg in plan.segs.iter() {
        if seg.fast {
            let mut template = if seg.slot == NO_SLOT {
                None
            } else {
                if templates.len() <= seg.slot {
                    templates.resize(seg.slot + 1, Layouts::default());
                }
                Some(&mut templates[seg.slot])
            };
            if let Some(len) = template.as_mut().and_then(|t| t.matches(cur.buf, cur.pos)) {
                cur.pos += len;
                continue;
            }
            if cur.pos + seg.most + READ_AHEAD <= cur.buf.len() {
                if let Some(p) = skip_fast(&plan.ops[seg.start..seg.end], cur.buf, cur.pos, template.map(Layouts::replace)) {
                    cur.pos = p;
                    continue;
                }
            }
        }
        for field in &fields[seg.start..seg.end] {
            match field {
                CNode::OptLeaf { null_idx, other_idx, leaf, .. } => skip_opt_leaf(*null_idx, *other_idx, *leaf, cur)?,
                CNode::Leaf { leaf, .. } => skip_leaf(*leaf, cur)?,
                _ => unreachable!("a skip run holds leaves only"),
            }
        }
    }
    Ok(())
}

/// One pass over `ops` from `p` with no data-dependent branch (nulls and values, varint
/// lengths are all arithmetic). The caller guarantees `p + most + READ_AHEAD <= buf.len()`. None when
/// a byte is not what the fast form takes (a union index other than the two one-byte ones, a
/// varint longer than `varint_max`, a string not short ASCII). On success the layout
/// met is recorded in `template`.
#[inline]
fn skip_fast(ops: &[FastOp], buf: &[u8], start: usize, template: Option<&mut Template>) -> Option<usize> {
    let mut bad = false;
    let mut p = start;
    for op in ops {
        let b = buf[p];
        let opt = op.opt != 0;
        let value = !opt | (b == op.value_b);
        bad |= opt & !value & (b != op.null_b);
        let q = p + op.opt as usize;
        let word = u64::from_le_bytes(buf[q..q + 8].try_into().expect("8 bytes"));
        // Bytes up to and including the first without its high bit: 9 when none of 8 ends it.
        let vlen = ((!word & 0x8080_8080_8080_8080).trailing_zeros() / 8 + 1) as usize;
        let is_varint = op.varint_max != 0;
        bad |= value & is_varint & (vlen > op.varint_max as usize);
        // A short ASCII string: a one-byte length 0..=SHORT_STR, then bytes below 0x80.
        let lb = word as u8;
        let slen = (lb >> 1) as usize;
        let head = |k: usize| if k == 0 { 0 } else { u64::MAX >> (64 - 8 * k) };
        let first = u64::from_le_bytes(buf[q + 1..q + 9].try_into().expect("8 bytes")) & head(slen.min(8));
        let second = u64::from_le_bytes(buf[q + 9..q + 17].try_into().expect("8 bytes")) & head(slen.clamp(8, 16) - 8);
        let ascii = (first | second) & 0x8080_8080_8080_8080 == 0;
        bad |= value & op.short_str & !((lb & 0x81 == 0) & (slen <= SHORT_STR) & ascii);
        let len = if is_varint {
            vlen
        } else if op.short_str {
            1 + slen
        } else {
            op.size as usize
        };
        p = q + value as usize * len;
    }
    if bad {
        return None;
    }
    if let Some(t) = template {
        record_layout(ops, buf, start, p - start, t);
    }
    Some(p)
}

/// The layout of the segment just stepped over (valid by `skip_fast`'s checks) as a template.
fn record_layout(ops: &[FastOp], buf: &[u8], start: usize, len: usize, t: &mut Template) {
    t.mask.clear();
    t.mask.resize(len, 0);
    t.expect.clear();
    t.expect.resize(len, 0);
    let mut at = 0;
    for op in ops {
        let mut value = true;
        if op.opt != 0 {
            let b = buf[start + at];
            t.check(at, 0xff, b);
            value = b == op.value_b;
            at += 1;
        }
        if !value {
            continue;
        }
        if op.varint_max != 0 {
            let mut n = 0;
            while buf[start + at + n] & 0x80 != 0 {
                t.check(at + n, 0x80, 0x80);
                n += 1;
            }
            t.check(at + n, 0x80, 0);
            at += n + 1;
        } else if op.short_str {
            let lb = buf[start + at];
            t.check(at, 0xff, lb);
            for k in 1..=(lb >> 1) as usize {
                t.check(at + k, 0x80, 0);
            }
            at += 1 + (lb >> 1) as usize;
        } else {
            at += op.size as usize;
        }
    }
    debug_assert_eq!(at, len);
}

/// Give every fast segment of `n`'s skip runs a slot of its own for its template.
fn number_segments(n: &mut CNode, next: &mut usize) {
    match n {
        CNode::SkipRun { plan, .. } => {
            for seg in plan.segs.iter_mut().filter(|s| s.fast) {
                seg.slot = *next;
                *next += 1;
            }
        }
        CNode::Opt { inner, .. } | CNode::One { inner } | CNode::Skip { inner } => number_segments(inner, next),
        CNode::Record { fields, .. } => fields.iter_mut().for_each(|f| number_segments(f, next)),
        CNode::Array { items, .. } => number_segments(items, next),
        CNode::Map { values, .. } => number_segments(values, next),
        CNode::Leaf { .. } | CNode::OptLeaf { .. } | CNode::Object { .. } => {}
    }
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
            let plan = SkipPlan::of(run);
            out.push(CNode::SkipRun { plan, fields: std::mem::take(run).into_boxed_slice() });
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
    let mut root = project_node(n, want, keep);
    number_segments(&mut root, &mut 0);
    root
}

fn project_node(n: &CNode, want: &[bool], keep: &mut [bool]) -> CNode {
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
        CNode::Opt { null_idx, other_idx, inner } => match project_node(inner, want, keep) {
            CNode::Skip { .. } => skip(n),
            p => CNode::Opt { null_idx: *null_idx, other_idx: *other_idx, inner: Box::new(p) },
        },
        CNode::One { inner } => match project_node(inner, want, keep) {
            CNode::Skip { .. } => skip(n),
            p => CNode::One { inner: Box::new(p) },
        },
        CNode::Record { valid_col, fields } => {
            let valid_col = valid_col.filter(|v| want[*v]);
            if let Some(v) = valid_col {
                keep[v] = true;
            }
            let fields: Vec<CNode> = fields.iter().map(|f| project_node(f, want, keep)).collect();
            if valid_col.is_none() && fields.iter().all(|f| matches!(f, CNode::Skip { .. })) {
                return skip(n);
            }
            CNode::Record { valid_col, fields: with_runs(fields, skipped_leaf) }
        }
        CNode::Array { col, mask, items, min } => {
            let items = project_node(items, want, keep);
            if !want[*col] && matches!(items, CNode::Skip { .. }) {
                return skip(n);
            }
            keep[*col] = true;
            CNode::Array { col: *col, mask: *mask, items: Box::new(items), min: *min }
        }
        CNode::Map { col, mask, keys, values, min } => {
            let keys = keys.filter(|k| want[*k]);
            let values = project_node(values, want, keep);
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
