//! Protobuf wire format ↔ the same Python dicts as the Avro codec, for the Protobuf mirror
//! of an Avro schema that `refimpl/codecs/protogen.py` generates: `PbDecoder` reads it,
//! `PbEncoder` (below) writes it byte-identical to the generated classes' `SerializeToString()`.
//!
//! Why here: decoding a Rubin alert through the generated Python classes and converting the
//! message to a dict field by field spends ~80% of a subscriber's CPU in Python. The mirror is
//! fully determined by the Avro schema (every field in Avro order, numbered from 1), so the
//! compiled Avro tree is all this needs: no protoc output, no descriptor.
//!
//! The mapping it reads (protogen.py is the authority): `long`/`int` → int64/int32 varints,
//! `boolean` → bool varint, `float` → fixed32, `double` → fixed64, `string`/enum → string,
//! `bytes`/fixed → bytes, record → message, `["null", T]` scalar → `optional T` (absent = null),
//! array → `repeated` (packed or not), nullable array → a wrapper message whose field 1 is the
//! repeated items. Absent fields decode as the Python codec does: null where nullable, `[]` for
//! arrays, the proto3 zero for scalars, and left out for a required record. Timestamps become
//! aware UTC datetimes. The root must end with the `packet_end` sentinel.
//!
//! Strictness, where upb would be lenient: a wire type that does not match the field, a
//! message field that occurs twice, and groups are decode errors (our writer never makes
//! them). Unknown field numbers are skipped, as protobuf requires. Every length is checked
//! against the bytes that remain before anything is read or allocated.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::decode::{checked, new_ref, DErr, Owned};
use crate::pycache::PyCache;
use crate::reader::{derr, DResult, DecodeError, MAX_DEPTH};
use crate::schema::{Node, NodeId, Tree};

/// Field number of the sentinel that closes every root message, and its value ("RUBI").
pub const PACKET_END_FIELD: u64 = 536_870_911;
pub const PACKET_END_VALUE: u32 = 0x5255_4249;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

type DR = Result<*mut ffi::PyObject, DErr>;

/// A bounds-checked reader over one (sub)message; positions count from the whole input.
struct Wire<'b> {
    buf: &'b [u8],
    pos: usize,
    end: usize,
}

impl<'b> Wire<'b> {
    #[inline(always)]
    fn varint(&mut self) -> DResult<u64> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            if self.pos >= self.end {
                return derr("truncated varint", start);
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if i == 9 && b > 1 {
                return derr("varint longer than 64 bits", start);
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        derr("varint longer than 10 bytes", start)
    }

    #[inline(always)]
    fn take(&mut self, n: usize, what: &str) -> DResult<&'b [u8]> {
        if n > self.end - self.pos {
            return derr(
                format!("truncated {what}: needs {n} bytes, only {} left", self.end - self.pos),
                self.pos,
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline(always)]
    fn fixed32(&mut self) -> DResult<u32> {
        let b = self.take(4, "fixed32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline(always)]
    fn fixed64(&mut self) -> DResult<u64> {
        let b = self.take(8, "fixed64")?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// A length-delimited payload: its length is believed only once it fits.
    #[inline(always)]
    fn delimited(&mut self) -> DResult<Wire<'b>> {
        let at = self.pos;
        let n = self.varint()?;
        if n > (self.end - self.pos) as u64 {
            return derr(
                format!("length {n} exceeds the {} bytes remaining", self.end - self.pos),
                at,
            );
        }
        let sub = Wire { buf: self.buf, pos: self.pos, end: self.pos + n as usize };
        self.pos += n as usize;
        Ok(sub)
    }

    /// Skip one value of an unknown field.
    fn skip(&mut self, wire_type: u8, at: usize) -> DResult<()> {
        match wire_type {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.take(8, "fixed64").map(|_| ()),
            LEN => self.delimited().map(|_| ()),
            FIXED32 => self.take(4, "fixed32").map(|_| ()),
            w => derr(format!("wire type {w} (groups or invalid) is not supported"), at),
        }
    }
}

/// What one field holds after its nullable union is stripped.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Scalar,
    Message,
    Repeated,
    /// A nullable array: a wrapper message whose field 1 holds the items.
    Wrapped,
}

fn strip_null(t: &Tree, node: NodeId) -> (NodeId, bool) {
    if let Node::Union { branches, simple: Some((_, other)), .. } = &t.nodes[node] {
        return (branches[*other as usize], true);
    }
    (node, false)
}

fn wire_type_of(node: &Node) -> u8 {
    match node {
        Node::Boolean | Node::Int | Node::Long | Node::Timestamp { .. } => VARINT,
        Node::Float => FIXED32,
        Node::Double => FIXED64,
        _ => LEN,
    }
}

pub struct PbDecoder<'s, 'py> {
    pub t: &'s Tree,
    pub py: Python<'py>,
    pub cache: &'s PyCache,
}

impl<'s, 'py> PbDecoder<'s, 'py> {
    #[inline(always)]
    fn check(&self, p: *mut ffi::PyObject) -> DR {
        checked(self.py, p)
    }

    fn err<T>(&self, msg: impl Into<String>, pos: usize) -> Result<T, DErr> {
        Err(DErr::Avro(DecodeError { msg: msg.into(), pos }))
    }

    /// Decode the root message in `buf[start..]`; it must end with the packet_end sentinel.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn root(&self, buf: &[u8], start: usize) -> DR {
        let mut w = Wire { buf, pos: start, end: buf.len() };
        self.message(&mut w, self.t.root, 0, true)
    }

    /// One message of record `node`: a dict with every field of the record.
    unsafe fn message(&self, w: &mut Wire<'_>, node: NodeId, depth: u32, root: bool) -> DR {
        if depth >= MAX_DEPTH {
            return self.err("nesting deeper than the limit", w.pos);
        }
        let Node::Record { fields, name, template } = &self.t.nodes[node] else {
            return self.err(format!("{} is not a record", self.t.nodes[node].type_name()), w.pos);
        };
        // A presized copy of `{field: None, ...}`: absent nullable fields are already right.
        let d = Owned(self.check(ffi::PyDict_Copy(template.as_ptr()))?);
        // Which fields were set, so that absent ones get their default and a message field
        // given twice is caught.
        let mut seen = vec![false; fields.len()];
        let mut packet_end = false;
        while w.pos < w.end {
            let at = w.pos;
            let tag = w.varint()?;
            let number = tag >> 3;
            let wire_type = (tag & 7) as u8;
            if number == 0 {
                return self.err("field number 0", at);
            }
            if root && number == PACKET_END_FIELD {
                if wire_type != FIXED32 {
                    return self.err("packet_end is not fixed32", at);
                }
                let v = w.fixed32()?;
                if v != PACKET_END_VALUE {
                    return self.err(format!("packet_end is {v:#x}, not the sentinel"), at);
                }
                packet_end = true;
                continue;
            }
            if number > fields.len() as u64 {
                w.skip(wire_type, at)?;
                continue;
            }
            let i = (number - 1) as usize;
            let f = &fields[i];
            let (inner, nullable) = strip_null(self.t, f.node);
            let shape = match &self.t.nodes[inner] {
                Node::Record { .. } => Shape::Message,
                Node::Array { .. } if nullable => Shape::Wrapped,
                Node::Array { .. } => Shape::Repeated,
                _ => Shape::Scalar,
            };
            match shape {
                Shape::Scalar => {
                    let v = Owned(self.scalar(w, inner, wire_type, at, &f.name)?);
                    self.set(d.0, f.key.as_ptr(), v.0)?;
                }
                Shape::Message => {
                    if wire_type != LEN {
                        return self.err(format!("{}.{}: wire type {wire_type} for a message", name, f.name), at);
                    }
                    if seen[i] {
                        return self.err(format!("{}.{}: message field given twice", name, f.name), at);
                    }
                    let mut sub = w.delimited()?;
                    let v = Owned(self.message(&mut sub, inner, depth + 1, false)?);
                    self.set(d.0, f.key.as_ptr(), v.0)?;
                }
                Shape::Repeated => {
                    let list = self.list_of(d.0, f.key.as_ptr(), seen[i])?;
                    let Node::Array { items } = &self.t.nodes[inner] else { unreachable!() };
                    self.items(w, *items, wire_type, at, list, depth, &f.name)?;
                }
                Shape::Wrapped => {
                    if wire_type != LEN {
                        return self.err(format!("{}.{}: wire type {wire_type} for a list", name, f.name), at);
                    }
                    let list = self.list_of(d.0, f.key.as_ptr(), seen[i])?;
                    let Node::Array { items } = &self.t.nodes[inner] else { unreachable!() };
                    let mut sub = w.delimited()?;
                    while sub.pos < sub.end {
                        let at = sub.pos;
                        let tag = sub.varint()?;
                        if tag >> 3 == 1 {
                            self.items(&mut sub, *items, (tag & 7) as u8, at, list, depth + 1, &f.name)?;
                        } else {
                            sub.skip((tag & 7) as u8, at)?;
                        }
                    }
                }
            }
            seen[i] = true;
        }
        if root && !packet_end {
            return self.err("truncated: the packet_end sentinel that closes every alert is missing", w.pos);
        }
        for (i, f) in fields.iter().enumerate() {
            if seen[i] {
                continue;
            }
            let (inner, nullable) = strip_null(self.t, f.node);
            let v = if nullable {
                continue; // None, from the template
            } else {
                match &self.t.nodes[inner] {
                    Node::Record { .. } => {
                        // Required and absent: left out, as the Python codec does.
                        if ffi::PyDict_DelItem(d.0, f.key.as_ptr()) < 0 {
                            return Err(DErr::Py(PyErr::fetch(self.py)));
                        }
                        continue;
                    }
                    Node::Array { .. } => self.check(ffi::PyList_New(0))?,
                    Node::Boolean => new_ref(ffi::Py_False()),
                    Node::Int | Node::Long | Node::Timestamp { .. } => self.check(ffi::PyLong_FromLong(0))?,
                    Node::Float | Node::Double => self.check(ffi::PyFloat_FromDouble(0.0))?,
                    Node::String | Node::Enum { .. } => self.check(ffi::PyUnicode_FromStringAndSize(std::ptr::null(), 0))?,
                    Node::Bytes | Node::Fixed { .. } => self.check(ffi::PyBytes_FromStringAndSize(std::ptr::null(), 0))?,
                    _ => new_ref(ffi::Py_None()),
                }
            };
            let v = Owned(v);
            self.set(d.0, f.key.as_ptr(), v.0)?;
        }
        Ok(d.into_ptr())
    }

    #[inline(always)]
    unsafe fn set(&self, d: *mut ffi::PyObject, k: *mut ffi::PyObject, v: *mut ffi::PyObject) -> Result<(), DErr> {
        if ffi::PyDict_SetItem(d, k, v) < 0 {
            return Err(DErr::Py(PyErr::fetch(self.py)));
        }
        Ok(())
    }

    /// The list that field `k` of dict `d` accumulates into (a repeated field may come in
    /// several runs); a borrowed reference owned by `d`.
    unsafe fn list_of(&self, d: *mut ffi::PyObject, k: *mut ffi::PyObject, seen: bool) -> DR {
        if seen {
            let l = ffi::PyDict_GetItemWithError(d, k);
            if !l.is_null() {
                return Ok(l);
            }
        }
        let l = Owned(self.check(ffi::PyList_New(0))?);
        self.set(d, k, l.0)?;
        Ok(l.0)
    }

    /// One occurrence of a repeated field: a packed run of numbers or one element.
    #[allow(clippy::too_many_arguments)]
    unsafe fn items(
        &self,
        w: &mut Wire<'_>,
        item: NodeId,
        wire_type: u8,
        at: usize,
        list: *mut ffi::PyObject,
        depth: u32,
        field: &str,
    ) -> Result<(), DErr> {
        let node = &self.t.nodes[item];
        let expected = wire_type_of(node);
        let append = |v: *mut ffi::PyObject| -> Result<(), DErr> {
            let v = Owned(v);
            if ffi::PyList_Append(list, v.0) < 0 {
                return Err(DErr::Py(PyErr::fetch(self.py)));
            }
            Ok(())
        };
        if wire_type == LEN && expected != LEN {
            // Packed: the run's bytes bound its count, so nothing is allocated from a claim.
            let mut run = w.delimited()?;
            while run.pos < run.end {
                let at = run.pos;
                append(self.scalar(&mut run, item, expected, at, field)?)?;
            }
            return Ok(());
        }
        if let Node::Record { .. } = node {
            if wire_type != LEN {
                return self.err(format!("{field}: wire type {wire_type} for a message"), at);
            }
            let mut sub = w.delimited()?;
            return append(self.message(&mut sub, item, depth + 1, false)?);
        }
        append(self.scalar(w, item, wire_type, at, field)?)
    }

    /// One scalar of `node` read with `wire_type`.
    unsafe fn scalar(&self, w: &mut Wire<'_>, node: NodeId, wire_type: u8, at: usize, field: &str) -> DR {
        let n = &self.t.nodes[node];
        let expected = wire_type_of(n);
        if wire_type != expected {
            return self.err(
                format!("{field}: wire type {wire_type} where {} needs {expected}", n.type_name()),
                at,
            );
        }
        match n {
            Node::Boolean => {
                let v = w.varint()?;
                Ok(new_ref(if v != 0 { ffi::Py_True() } else { ffi::Py_False() }))
            }
            Node::Int => {
                let v = w.varint()? as i64 as i32; // int32: the low 32 bits, sign-extended on the wire
                self.check(ffi::PyLong_FromLong(v as _))
            }
            Node::Long => {
                let v = w.varint()? as i64;
                self.check(ffi::PyLong_FromLongLong(v))
            }
            Node::Timestamp { .. } => {
                let v = w.varint()? as i64;
                self.timestamp(v, at)
            }
            Node::Float => {
                let v = f32::from_bits(w.fixed32()?);
                self.check(ffi::PyFloat_FromDouble(v as f64))
            }
            Node::Double => {
                let v = f64::from_bits(w.fixed64()?);
                self.check(ffi::PyFloat_FromDouble(v))
            }
            Node::String | Node::Enum { .. } => {
                let mut s = w.delimited()?;
                let start = s.pos;
                let b = s.take(s.end - s.pos, "string")?;
                match std::str::from_utf8(b) {
                    Ok(s) => self.check(ffi::PyUnicode_FromStringAndSize(s.as_ptr().cast(), s.len() as ffi::Py_ssize_t)),
                    Err(e) => self.err(format!("{field}: invalid UTF-8 in string"), start + e.valid_up_to()),
                }
            }
            Node::Bytes | Node::Fixed { .. } => {
                let mut s = w.delimited()?;
                let b = s.take(s.end - s.pos, "bytes")?;
                self.check(ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t))
            }
            other => self.err(format!("{field}: {} has no Protobuf mirror", other.type_name()), at),
        }
    }

    /// Microseconds since the epoch as an aware UTC datetime (what the Python codec returns).
    #[cold]
    fn timestamp(&self, v: i64, at: usize) -> DR {
        let py = self.py;
        let r = (|| -> PyResult<Bound<'py, PyAny>> {
            let td = self.cache.timedelta.bind(py).call1((0, 0, v))?;
            self.cache.epoch.bind(py).add(td)
        })();
        match r {
            Ok(o) => Ok(o.into_ptr()),
            Err(_) => self.err(format!("timestamp {v} is outside the datetime range"), at),
        }
    }
}

// ------------------------------------------------------------------------------------ encoder
//
// The encoder walks the same compiled tree to write what today's reference path
// (`_RecordCodec.to_message` + upb's `SerializeToString`) writes, byte for byte: fields in
// number order (= Avro order), `None` or a missing key = field absent, a non-optional scalar
// equal to its proto3 zero (bitwise, so -0.0 is written) left out, repeated numbers packed,
// a nullable array wrapped even when empty, nested messages length-prefixed, and the root closed
// by the packet_end sentinel. Why native: converting the dict to a message field by field in
// Python cost ~5x the native Avro encoder.
//
// Values are accepted as upb accepts them (ints for int fields via `__index__` but not bools or
// floats; anything `float()` takes except str for float fields; ints and bools for bool fields;
// valid UTF-8 bytes for strings), with three documented differences: bytes fields also take
// bytearray/memoryview (as the native Avro encoder does), timestamp fields take only ints and
// aware datetimes (the reference also `int()`s floats and strings), and an enum value must be
// one of its symbols. Anything else is an AvroEncodeError naming the field path.

use crate::encode::{EncErr, Seg};

type ER<'s> = Result<(), Box<EncErr<'s>>>;

#[cold]
#[inline(never)]
fn efail<'s, T>(msg: String) -> Result<T, Box<EncErr<'s>>> {
    Err(Box::new(EncErr { msg, path: Vec::new() }))
}

#[inline(always)]
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    out.reserve(10);
    // SAFETY: 10 bytes reserved; a 64-bit varint takes at most 10.
    unsafe {
        let len = out.len();
        let p = out.as_mut_ptr().add(len);
        let mut i = 0;
        while n >= 0x80 {
            *p.add(i) = (n as u8) | 0x80;
            n >>= 7;
            i += 1;
        }
        *p.add(i) = n as u8;
        out.set_len(len + i + 1);
    }
}

#[inline(always)]
fn varint_len(n: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes one byte.
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline(always)]
fn put_tag(out: &mut Vec<u8>, number: u64, wire_type: u8) {
    put_varint(out, (number << 3) | wire_type as u64);
}

/// Bytes reserved for a nested message's length before its size is known: enough for the
/// ~500-byte diaSources that dominate; other sizes move the body once (memmove).
const LEN_GUESS: usize = 2;

/// `bytes` values at least this long are spliced into the final object instead of being copied
/// into the scratch buffer (the three ~35 KB cutouts of an alert), when no length is pending.
const SPLICE_MIN: usize = 2048;

/// One converted scalar, ready to be written.
enum Val<'a> {
    Varint(u64),
    F32(u32),
    F64(u64),
    /// Bytes borrowed from a Python object the caller holds; the object itself when it is an
    /// immutable `bytes` that may be spliced.
    Len(&'a [u8], *mut ffi::PyObject),
    /// Any other byte buffer, kept exported until it is copied.
    Buf(pyo3::buffer::PyBuffer<u8>),
}

impl Val<'_> {
    /// Is this the proto3 zero a field without presence leaves out?
    #[inline(always)]
    fn is_zero(&self) -> bool {
        match self {
            Val::Varint(v) | Val::F64(v) => *v == 0,
            Val::F32(v) => *v == 0,
            Val::Len(b, _) => b.is_empty(),
            Val::Buf(b) => b.len_bytes() == 0,
        }
    }
}

/// A strong reference held while Python code may run (`__index__`, `__float__`, a Mapping's
/// `__getitem__`), so that a value cannot be freed under us by a mutation of its container.
struct Hold(*mut ffi::PyObject);
impl Hold {
    #[inline(always)]
    unsafe fn new(p: *mut ffi::PyObject) -> Self {
        ffi::Py_INCREF(p);
        Hold(p)
    }
}
impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        unsafe { ffi::Py_DECREF(self.0) }
    }
}

/// Python type name of `v`, for messages.
unsafe fn tname(py: Python<'_>, v: *mut ffi::PyObject) -> String {
    let b = Bound::from_borrowed_ptr(py, v);
    b.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Fetch (and clear) the pending Python exception as text.
unsafe fn take_err(py: Python<'_>) -> String {
    match PyErr::take(py) {
        Some(e) => e.to_string(),
        None => "unknown error".into(),
    }
}

pub struct PbEncoder<'s, 'py> {
    pub t: &'s Tree,
    pub out: Vec<u8>,
    pub py: Python<'py>,
    pub cache: &'s PyCache,
    /// (position in `out`, strong reference to an immutable `bytes`) to splice in at the end.
    splices: Vec<(usize, *mut ffi::PyObject)>,
    spliced_len: usize,
    /// Nested messages whose length is still a placeholder: no splicing while any is open,
    /// since a splice inside one would have to be counted into its length.
    open: u32,
}

impl Drop for PbEncoder<'_, '_> {
    fn drop(&mut self) {
        for &(_, o) in &self.splices {
            // The encoder only lives inside a call holding the GIL.
            unsafe { ffi::Py_DECREF(o) }
        }
    }
}

impl<'s, 'py> PbEncoder<'s, 'py> {
    pub fn new(t: &'s Tree, py: Python<'py>, cache: &'s PyCache, capacity: usize) -> Self {
        PbEncoder { t, out: Vec::with_capacity(capacity), py, cache, splices: Vec::new(), spliced_len: 0, open: 0 }
    }

    /// Copy the encoding into a new `bytes` object (the only copy of spliced values).
    pub fn finish(&self) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let py = self.py;
        let total = self.out.len() + self.spliced_len;
        unsafe {
            let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), total as ffi::Py_ssize_t);
            let o = Bound::from_owned_ptr_or_err(py, o)?;
            let dst = ffi::PyBytes_AsString(o.as_ptr()).cast::<u8>();
            let mut d = 0usize;
            let mut s = 0usize;
            for &(at, b) in &self.splices {
                let n = at - s;
                std::ptr::copy_nonoverlapping(self.out.as_ptr().add(s), dst.add(d), n);
                d += n;
                s = at;
                let bl = ffi::PyBytes_Size(b) as usize;
                std::ptr::copy_nonoverlapping(ffi::PyBytes_AsString(b).cast::<u8>(), dst.add(d), bl);
                d += bl;
            }
            let n = self.out.len() - s;
            std::ptr::copy_nonoverlapping(self.out.as_ptr().add(s), dst.add(d), n);
            debug_assert_eq!(d + n, total);
            Ok(o.cast_into_unchecked())
        }
    }

    /// Encode `v` as the root message (after whatever `out` already holds, e.g. the frame),
    /// closed by the packet_end sentinel.
    ///
    /// # Safety
    /// The GIL must be held and `v` be a valid object.
    pub unsafe fn root(&mut self, v: *mut ffi::PyObject) -> ER<'s> {
        let root = self.t.root;
        if !matches!(self.t.nodes[root], Node::Record { .. }) {
            return efail(format!("a {} schema has no Protobuf mirror (the root must be a record)", self.t.nodes[root].type_name()));
        }
        if v == ffi::Py_None() {
            return efail("expected an alert (dict), got NoneType".into());
        }
        self.message(root, v, 0)?;
        put_tag(&mut self.out, PACKET_END_FIELD, FIXED32);
        self.out.extend_from_slice(&PACKET_END_VALUE.to_le_bytes());
        Ok(())
    }

    #[inline(always)]
    fn open_len(&mut self) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(&[0u8; LEN_GUESS]);
        self.open += 1;
        at
    }

    /// Write the length of the body that follows the placeholder at `at`, moving the body if
    /// its length takes more or fewer bytes than were reserved.
    #[inline(always)]
    fn close_len(&mut self, at: usize) {
        self.open -= 1;
        let body = at + LEN_GUESS;
        let end = self.out.len();
        let n = (end - body) as u64;
        let l = varint_len(n);
        if l < LEN_GUESS {
            self.out.copy_within(body..end, at + l);
            self.out.truncate(end - (LEN_GUESS - l));
        } else if l > LEN_GUESS {
            self.out.resize(end + (l - LEN_GUESS), 0);
            self.out.copy_within(body..end, at + l);
        }
        let mut v = n;
        for i in 0..l {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            self.out[at + i] = if i + 1 < l { b | 0x80 } else { b };
        }
    }

    /// The fields of record `node` from the mapping `v`, in field-number order.
    unsafe fn message(&mut self, node: NodeId, v: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        if depth >= MAX_DEPTH {
            return efail("nesting deeper than the limit (cyclic data?)".into());
        }
        let t = self.t;
        let Node::Record { fields, name, .. } = &t.nodes[node] else {
            return efail(format!("{} is not a record", t.nodes[node].type_name()));
        };
        let _h = Hold::new(v);
        if ffi::PyDict_Check(v) != 0 {
            // Records are nearly always built in schema order: walk the dict's entries alongside
            // the fields and fall back to hash look-ups from the first key out of place.
            let exact = ffi::PyDict_CheckExact(v) != 0;
            let mut pos: ffi::Py_ssize_t = 0;
            let mut ordered = exact;
            for (i, f) in fields.iter().enumerate() {
                let mut x: *mut ffi::PyObject = std::ptr::null_mut();
                if ordered {
                    let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                    let mut val: *mut ffi::PyObject = std::ptr::null_mut();
                    if ffi::PyDict_Next(v, &mut pos, &mut k, &mut val) != 0 && f.matches_key(k) {
                        x = val;
                    } else {
                        ordered = false;
                    }
                }
                if x.is_null() {
                    x = ffi::PyDict_GetItemWithError(v, f.key.as_ptr());
                    if x.is_null() {
                        if !ffi::PyErr_Occurred().is_null() {
                            return Err(Box::new(EncErr { msg: take_err(self.py), path: vec![Seg::Field(&f.name)] }));
                        }
                        continue; // missing: absent, as `record.get(name)` is None
                    }
                }
                if x == ffi::Py_None() {
                    continue;
                }
                let _x = Hold::new(x);
                self.field(i as u64 + 1, f.node, x, depth).map_err(|mut e| {
                    e.path.push(Seg::Field(&f.name));
                    e
                })?;
            }
            return Ok(());
        }
        match ffi::PyObject_IsInstance(v, self.cache.mapping.as_ptr()) {
            1 => {}
            0 => return efail(format!("expected record {name} (dict), got {}", tname(self.py, v))),
            _ => return efail(take_err(self.py)),
        }
        for (i, f) in fields.iter().enumerate() {
            let x = ffi::PyObject_GetItem(v, f.key.as_ptr());
            if x.is_null() {
                if ffi::PyErr_ExceptionMatches(ffi::PyExc_KeyError) != 0 {
                    ffi::PyErr_Clear();
                    continue;
                }
                return Err(Box::new(EncErr { msg: take_err(self.py), path: vec![Seg::Field(&f.name)] }));
            }
            let x = Owned(x);
            if x.0 == ffi::Py_None() {
                continue;
            }
            self.field(i as u64 + 1, f.node, x.0, depth).map_err(|mut e| {
                e.path.push(Seg::Field(&f.name));
                e
            })?;
        }
        Ok(())
    }

    /// One present (non-None) field value.
    #[inline(always)]
    unsafe fn field(&mut self, number: u64, node: NodeId, x: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        let t = self.t;
        let (inner, nullable) = match &t.nodes[node] {
            Node::Union { branches, simple: Some((_, other)), .. } => (branches[*other as usize], true),
            Node::Union { names, .. } => {
                return efail(format!("a union of [{}] has no Protobuf mirror", names.join(", ")));
            }
            _ => (node, false),
        };
        match &t.nodes[inner] {
            Node::Record { .. } => {
                put_tag(&mut self.out, number, LEN);
                let at = self.open_len();
                self.message(inner, x, depth + 1)?;
                self.close_len(at);
                Ok(())
            }
            Node::Array { items } if nullable => {
                // The wrapper message: present (even when empty), its field 1 the items.
                put_tag(&mut self.out, number, LEN);
                let at = self.open_len();
                self.repeated(1, *items, x, depth + 1)?;
                self.close_len(at);
                Ok(())
            }
            Node::Array { items } => self.repeated(number, *items, x, depth),
            _ => {
                let val = self.convert(inner, x)?;
                if !nullable && val.is_zero() {
                    return Ok(()); // proto3 implicit presence: the zero is not written
                }
                self.emit(number, inner, val);
                Ok(())
            }
        }
    }

    /// Tag and value of one scalar.
    #[inline(always)]
    unsafe fn emit(&mut self, number: u64, node: NodeId, val: Val<'_>) {
        put_tag(&mut self.out, number, wire_type_of(&self.t.nodes[node]));
        self.value(val);
    }

    /// The value of one scalar, without its tag (also the element of a packed run).
    #[inline(always)]
    unsafe fn value(&mut self, val: Val<'_>) {
        match val {
            Val::Varint(v) => put_varint(&mut self.out, v),
            Val::F32(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            Val::F64(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            Val::Len(b, obj) => {
                put_varint(&mut self.out, b.len() as u64);
                if b.len() >= SPLICE_MIN && self.open == 0 && !obj.is_null() {
                    ffi::Py_INCREF(obj);
                    self.splices.push((self.out.len(), obj));
                    self.spliced_len += b.len();
                } else {
                    self.out.extend_from_slice(b);
                }
            }
            Val::Buf(b) => {
                let n = b.len_bytes();
                put_varint(&mut self.out, n as u64);
                if n > 0 {
                    self.out.extend_from_slice(std::slice::from_raw_parts(b.buf_ptr() as *const u8, n));
                }
            }
        }
    }

    /// A repeated field: packed for numbers, one tagged element each otherwise; nothing for [].
    unsafe fn repeated(&mut self, number: u64, item: NodeId, v: *mut ffi::PyObject, depth: u32) -> ER<'s> {
        let list: Owned;
        let seq = if ffi::PyList_Check(v) != 0 || ffi::PyTuple_Check(v) != 0 {
            v
        } else if ffi::PyUnicode_Check(v) != 0
            || ffi::PyBytes_Check(v) != 0
            || ffi::PyByteArray_Check(v) != 0
            || ffi::PyDict_Check(v) != 0
        {
            return efail(format!("expected a list, got {}", tname(self.py, v)));
        } else {
            // The reference does `list(value)` for any other iterable (numpy arrays, generators).
            let l = ffi::PySequence_List(v);
            if l.is_null() {
                let e = take_err(self.py);
                return efail(format!("expected a list, got {} ({e})", tname(self.py, v)));
            }
            list = Owned(l);
            list.0
        };
        let _h = Hold::new(seq);
        let is_list = ffi::PyList_Check(seq) != 0;
        let len = |s: *mut ffi::PyObject| if is_list { ffi::PyList_Size(s) } else { ffi::PyTuple_Size(s) };
        let n = len(seq);
        if n <= 0 {
            return Ok(());
        }
        let t = self.t;
        let node = &t.nodes[item];
        let packed = match node {
            Node::Boolean | Node::Int | Node::Long | Node::Timestamp { .. } | Node::Float | Node::Double => true,
            Node::Record { .. } | Node::String | Node::Enum { .. } | Node::Bytes | Node::Fixed { .. } => false,
            other => return efail(format!("an array of {} has no Protobuf mirror", other.type_name())),
        };
        let at = if packed {
            put_tag(&mut self.out, number, LEN);
            Some(self.open_len())
        } else {
            None
        };
        let mut i: ffi::Py_ssize_t = 0;
        // Bounded by the list's current size, re-read every step: Python code run by a
        // conversion may shrink it.
        while i < len(seq) {
            let x = if is_list { ffi::PyList_GetItem(seq, i) } else { ffi::PyTuple_GetItem(seq, i) };
            if x.is_null() {
                ffi::PyErr_Clear();
                return efail("list changed size while being encoded".into());
            }
            let _x = Hold::new(x);
            let r = if let Node::Record { .. } = node {
                if x == ffi::Py_None() {
                    efail(format!("expected record {} (dict), got NoneType", node.type_name()))
                } else {
                    put_tag(&mut self.out, number, LEN);
                    let at = self.open_len();
                    let r = self.message(item, x, depth + 1);
                    if r.is_ok() {
                        self.close_len(at);
                    }
                    r
                }
            } else {
                match self.convert(item, x) {
                    Ok(val) if packed => {
                        self.value(val);
                        Ok(())
                    }
                    Ok(val) => {
                        self.emit(number, item, val);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            r.map_err(|mut e| {
                e.path.push(Seg::Index(i as usize));
                e
            })?;
            i += 1;
        }
        if let Some(at) = at {
            self.close_len(at);
        }
        Ok(())
    }

    /// A Python value as the scalar of `node`, converted as upb converts it.
    unsafe fn convert<'a>(&self, node: NodeId, x: *mut ffi::PyObject) -> Result<Val<'a>, Box<EncErr<'s>>> {
        let t = self.t;
        match &t.nodes[node] {
            Node::Double => Ok(Val::F64(self.float(x, "double")?.to_bits())),
            Node::Float => Ok(Val::F32((self.float(x, "float")? as f32).to_bits())),
            Node::Long => Ok(Val::Varint(self.int(x, "int64")? as u64)),
            Node::Int => {
                let v = self.int(x, "int32")?;
                if v < i32::MIN as i64 || v > i32::MAX as i64 {
                    return efail(format!("value {v} is out of range for int32"));
                }
                Ok(Val::Varint(v as u64)) // negative int32: sign-extended to 10 bytes, as protobuf does
            }
            Node::Boolean => Ok(Val::Varint(self.boolean(x)? as u64)),
            Node::Timestamp { .. } => Ok(Val::Varint(self.micros(x)? as u64)),
            Node::String => {
                if ffi::PyUnicode_Check(x) != 0 {
                    let mut n: ffi::Py_ssize_t = 0;
                    let p = ffi::PyUnicode_AsUTF8AndSize(x, &mut n);
                    if p.is_null() {
                        return efail(format!("string cannot be encoded as UTF-8: {}", take_err(self.py)));
                    }
                    return Ok(Val::Len(std::slice::from_raw_parts(p.cast::<u8>(), n as usize), std::ptr::null_mut()));
                }
                if ffi::PyBytes_Check(x) != 0 {
                    let b = std::slice::from_raw_parts(ffi::PyBytes_AsString(x).cast::<u8>(), ffi::PyBytes_Size(x) as usize);
                    if let Err(e) = std::str::from_utf8(b) {
                        return efail(format!("bytes for a string are not UTF-8 (at byte {})", e.valid_up_to()));
                    }
                    return Ok(Val::Len(b, std::ptr::null_mut()));
                }
                efail(format!("expected string (str), got {}", tname(self.py, x)))
            }
            Node::Enum { symbols, name, .. } => {
                if ffi::PyUnicode_Check(x) != 0 {
                    let mut n: ffi::Py_ssize_t = 0;
                    let p = ffi::PyUnicode_AsUTF8AndSize(x, &mut n);
                    if !p.is_null() {
                        let s = std::slice::from_raw_parts(p.cast::<u8>(), n as usize);
                        if symbols.iter().any(|y| y.as_bytes() == s) {
                            return Ok(Val::Len(s, std::ptr::null_mut()));
                        }
                    } else {
                        ffi::PyErr_Clear();
                    }
                    let r = Bound::from_borrowed_ptr(self.py, x).repr().map(|r| r.to_string()).unwrap_or_default();
                    return efail(format!("{r} is not a symbol of enum {name}"));
                }
                efail(format!("expected a symbol of enum {name} (str), got {}", tname(self.py, x)))
            }
            Node::Bytes | Node::Fixed { .. } => {
                let val = self.buffer(x)?;
                if let Node::Fixed { name, size } = &t.nodes[node] {
                    let n = match &val {
                        Val::Len(b, _) => b.len(),
                        Val::Buf(b) => b.len_bytes(),
                        _ => 0,
                    };
                    if n != *size {
                        return efail(format!("fixed {name} needs {size} bytes, got {n}"));
                    }
                }
                Ok(val)
            }
            other => efail(format!("{} has no Protobuf mirror", other.type_name())),
        }
    }

    /// What upb's float conversion takes: anything `PyFloat_AsDouble` takes (float, int, bool,
    /// numpy floats, `__float__`); str and bytes are refused by it.
    #[inline(always)]
    unsafe fn float(&self, x: *mut ffi::PyObject, what: &str) -> Result<f64, Box<EncErr<'s>>> {
        if ffi::PyFloat_CheckExact(x) != 0 {
            return Ok(ffi::PyFloat_AsDouble(x));
        }
        let v = ffi::PyFloat_AsDouble(x);
        if v == -1.0 && !ffi::PyErr_Occurred().is_null() {
            let e = take_err(self.py);
            return efail(format!("expected {what}, got {} ({e})", tname(self.py, x)));
        }
        Ok(v)
    }

    /// An integer by `__index__` (int, numpy ints), not bool, within 64 bits.
    #[inline(always)]
    unsafe fn int(&self, x: *mut ffi::PyObject, what: &str) -> Result<i64, Box<EncErr<'s>>> {
        if ffi::PyBool_Check(x) != 0 {
            return efail(format!("expected {what}, got bool"));
        }
        let idx = if ffi::PyLong_Check(x) != 0 {
            Owned(crate::decode::new_ref(x))
        } else {
            let i = ffi::PyNumber_Index(x);
            if i.is_null() {
                let e = take_err(self.py);
                return efail(format!("expected {what}, got {} ({e})", tname(self.py, x)));
            }
            Owned(i)
        };
        let v = ffi::PyLong_AsLongLong(idx.0);
        if v == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            let r = Bound::from_borrowed_ptr(self.py, idx.0).repr().map(|r| r.to_string()).unwrap_or_default();
            return efail(format!("value {r} is out of range for {what}"));
        }
        Ok(v)
    }

    /// upb's bool conversion: bool, or any integer by `__index__` (nonzero = true), numpy bools.
    unsafe fn boolean(&self, x: *mut ffi::PyObject) -> Result<bool, Box<EncErr<'s>>> {
        if x == ffi::Py_True() {
            return Ok(true);
        }
        if x == ffi::Py_False() {
            return Ok(false);
        }
        if ffi::PyFloat_Check(x) == 0 && ffi::PyUnicode_Check(x) == 0 {
            let i = ffi::PyNumber_Index(x);
            if !i.is_null() {
                let i = Owned(i);
                return match ffi::PyObject_IsTrue(i.0) {
                    -1 => efail(take_err(self.py)),
                    r => Ok(r == 1),
                };
            }
            ffi::PyErr_Clear();
            if is_numpy_bool(self.py, x) {
                return match ffi::PyObject_IsTrue(x) {
                    -1 => efail(take_err(self.py)),
                    r => Ok(r == 1),
                };
            }
        }
        efail(format!("expected boolean, got {}", tname(self.py, x)))
    }

    /// A timestamp field: an int (microseconds) or an aware datetime, as exact microseconds
    /// since the epoch (what the reference's `_to_micros` computes, whatever the Avro unit).
    unsafe fn micros(&self, x: *mut ffi::PyObject) -> Result<i64, Box<EncErr<'s>>> {
        if ffi::PyLong_Check(x) != 0 && ffi::PyBool_Check(x) == 0 {
            return self.int(x, "timestamp (int64 microseconds)");
        }
        match ffi::PyObject_IsInstance(x, self.cache.datetime.as_ptr()) {
            1 => {}
            0 => return self.int(x, "timestamp (datetime or int64 microseconds)"),
            _ => return efail(take_err(self.py)),
        }
        let py = self.py;
        let b = Bound::from_borrowed_ptr(py, x);
        let r = (|| -> PyResult<i128> {
            let delta = b.sub(self.cache.epoch.bind(py))?;
            let days: i128 = delta.getattr("days")?.extract()?;
            let secs: i128 = delta.getattr("seconds")?.extract()?;
            let us: i128 = delta.getattr("microseconds")?.extract()?;
            Ok((days * 86_400 + secs) * 1_000_000 + us)
        })();
        match r {
            Ok(v) if v >= i64::MIN as i128 && v <= i64::MAX as i128 => Ok(v as i64),
            Ok(v) => efail(format!("timestamp {v} out of 64-bit range")),
            Err(e) => efail(format!("cannot convert datetime (it must be timezone-aware): {e}")),
        }
    }

    /// bytes, bytearray, memoryview or another C-contiguous byte buffer. An exact `bytes` is
    /// returned with the object itself, the one kind that may be spliced (it cannot change).
    unsafe fn buffer<'a>(&self, x: *mut ffi::PyObject) -> Result<Val<'a>, Box<EncErr<'s>>> {
        if ffi::PyBytes_Check(x) != 0 {
            let b = std::slice::from_raw_parts(ffi::PyBytes_AsString(x).cast::<u8>(), ffi::PyBytes_Size(x) as usize);
            let obj = if ffi::PyBytes_CheckExact(x) != 0 { x } else { std::ptr::null_mut() };
            return Ok(Val::Len(b, obj));
        }
        if ffi::PyByteArray_Check(x) != 0 {
            let b = std::slice::from_raw_parts(ffi::PyByteArray_AsString(x).cast::<u8>(), ffi::PyByteArray_Size(x) as usize);
            return Ok(Val::Len(b, std::ptr::null_mut()));
        }
        if ffi::PyUnicode_Check(x) == 0 {
            let o = Bound::from_borrowed_ptr(self.py, x);
            if let Ok(buf) = pyo3::buffer::PyBuffer::<u8>::get(&o) {
                if buf.is_c_contiguous() {
                    return Ok(Val::Buf(buf));
                }
            }
            ffi::PyErr_Clear();
        }
        efail(format!("expected bytes, got {}", tname(self.py, x)))
    }
}

/// numpy.bool_ (numpy.bool in numpy 2), which upb accepts for bool fields.
unsafe fn is_numpy_bool(py: Python<'_>, v: *mut ffi::PyObject) -> bool {
    let b = Bound::from_borrowed_ptr(py, v);
    let ty = b.get_type();
    let Ok(name) = ty.name() else { return false };
    let Ok(module) = ty.module() else { return false };
    let (name, module) = (name.to_string(), module.to_string());
    module == "numpy" && (name == "bool_" || name == "bool")
}
