//! Protobuf wire format → the same Python dicts as the Avro decoder, for the Protobuf mirror
//! of an Avro schema that `refimpl/codecs/protogen.py` generates.
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
