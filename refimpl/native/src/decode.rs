//! Avro binary → Python objects, equal to what `fastavro.schemaless_reader` returns.
//!
//! Why raw FFI here: a Rubin alert has ~5,000 values and the decode cost is dominated by
//! per-value overhead. Building objects with the C API directly (interned, pre-hashed keys;
//! no intermediate Rust values; no per-field dispatch through Python) keeps each value to an
//! object allocation and a dict insert.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::pycache::PyCache;
use crate::reader::{derr, Cursor, DecodeError, MAX_DEPTH};
use crate::schema::{Node, NodeId, TimeUnit, Tree};

pub enum DErr {
    Avro(DecodeError),
    Py(PyErr),
}

impl From<DecodeError> for DErr {
    #[inline]
    fn from(e: DecodeError) -> Self {
        DErr::Avro(e)
    }
}

/// An owned reference that is released on drop, so early returns on error never leak.
pub struct Owned(pub *mut ffi::PyObject);

impl Owned {
    #[inline(always)]
    pub fn into_ptr(self) -> *mut ffi::PyObject {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for Owned {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { ffi::Py_DECREF(self.0) }
        }
    }
}

/// How to decode a record field of one node in `Decoder::field`: the scalar it is (or
/// `OTHER`), and for `["null", scalar]` unions the one-byte encodings of the null and the
/// value branch indexes.
///
/// Why: nearly every Rubin field is a scalar or a nullable scalar, and resolving it through the
/// node graph (node, union, branch node, then the scalar) costs about as much as creating the
/// value. Only canonical one-byte union indexes take the fast path; any other byte goes
/// through the exact path (`quick`), so values and errors are the same.
#[derive(Clone, Copy, Debug)]
pub struct FieldOp {
    kind: u8,
    opt: Option<(u8, u8)>,
}

const OTHER: u8 = 0;
const DOUBLE: u8 = 1;
const FLOAT: u8 = 2;
const LONG: u8 = 3;
const INT: u8 = 4;
const BOOLEAN: u8 = 5;

fn scalar_kind(n: &Node) -> u8 {
    match n {
        Node::Double => DOUBLE,
        Node::Float => FLOAT,
        Node::Long => LONG,
        Node::Int => INT,
        Node::Boolean => BOOLEAN,
        _ => OTHER,
    }
}

/// The `FieldOp` of every node (indexed like `Tree::nodes`).
pub fn field_ops(nodes: &[Node]) -> Vec<FieldOp> {
    nodes
        .iter()
        .map(|n| match n {
            Node::Union { branches, simple: Some((ni, oi)), .. } if branches.len() == 2 && *ni < 2 && *oi < 2 => {
                match scalar_kind(&nodes[branches[*oi as usize]]) {
                    OTHER => FieldOp { kind: OTHER, opt: None },
                    kind => FieldOp { kind, opt: Some((ni * 2, oi * 2)) },
                }
            }
            n => FieldOp { kind: scalar_kind(n), opt: None },
        })
        .collect()
}

pub struct Decoder<'s, 'b, 'py> {
    pub t: &'s Tree,
    pub cur: Cursor<'b>,
    pub py: Python<'py>,
    pub cache: &'s PyCache,
}

type DR = Result<*mut ffi::PyObject, DErr>;

/// A new reference from the C API, or the Python error it set (null means it raised).
#[inline(always)]
pub(crate) fn checked(py: Python<'_>, p: *mut ffi::PyObject) -> DR {
    if p.is_null() {
        Err(DErr::Py(PyErr::fetch(py)))
    } else {
        Ok(p)
    }
}

impl<'s, 'b, 'py> Decoder<'s, 'b, 'py> {
    #[inline(always)]
    fn check(&self, p: *mut ffi::PyObject) -> DR {
        checked(self.py, p)
    }

    #[inline(always)]
    fn nested(&mut self, node: NodeId, depth: u32) -> DR {
        if depth >= MAX_DEPTH {
            return Err(DErr::Avro(DecodeError { msg: "nesting deeper than the limit".into(), pos: self.cur.pos }));
        }
        unsafe { self.value(node, depth + 1) }
    }

    /// Scalars (and unions resolving to scalars) decoded inline; everything else through
    /// `value`. Why: most record fields are `["null", float]`-like, and two nested calls per
    /// value cost as much as creating the value.
    #[inline(always)]
    unsafe fn quick(&mut self, node: NodeId, depth: u32) -> DR {
        let t = self.t;
        let mut n = node;
        if let Node::Union { branches, .. } = &t.nodes[n] {
            let i = self.cur.read_index(branches.len(), "union")?;
            n = branches[i];
        }
        match &t.nodes[n] {
            Node::Null => Ok(new_ref(ffi::Py_None())),
            Node::Double => {
                let v = self.cur.read_f64()?;
                self.check(ffi::PyFloat_FromDouble(v))
            }
            Node::Float => {
                let v = self.cur.read_f32()?;
                self.check(ffi::PyFloat_FromDouble(v as f64))
            }
            Node::Long => {
                let v = self.cur.read_long()?;
                self.check(ffi::PyLong_FromLongLong(v))
            }
            Node::Int => {
                let v = self.cur.read_int()?;
                self.check(ffi::PyLong_FromLong(v as _))
            }
            Node::Boolean => {
                let b = self.cur.read_bool()?;
                Ok(new_ref(if b { ffi::Py_True() } else { ffi::Py_False() }))
            }
            _ => self.nested(n, depth),
        }
    }

    /// A record field: `quick`'s result, with the common shapes read straight from their
    /// `FieldOp` (after the union byte, the same reads as the exact path, so the same errors).
    #[inline(always)]
    unsafe fn field(&mut self, node: NodeId, depth: u32) -> DR {
        let op = self.t.field_ops[node];
        if let Some((null_b, value_b)) = op.opt {
            match self.cur.buf.get(self.cur.pos) {
                Some(&b) if b == null_b => {
                    self.cur.pos += 1;
                    return Ok(new_ref(ffi::Py_None()));
                }
                Some(&b) if b == value_b => self.cur.pos += 1,
                _ => return self.quick(node, depth),
            }
        }
        match op.kind {
            DOUBLE => {
                let v = self.cur.read_f64()?;
                self.check(ffi::PyFloat_FromDouble(v))
            }
            FLOAT => {
                let v = self.cur.read_f32()?;
                self.check(ffi::PyFloat_FromDouble(v as f64))
            }
            LONG => {
                let v = self.cur.read_long()?;
                self.check(ffi::PyLong_FromLongLong(v))
            }
            INT => {
                let v = self.cur.read_int()?;
                self.check(ffi::PyLong_FromLong(v as _))
            }
            BOOLEAN => {
                let b = self.cur.read_bool()?;
                Ok(new_ref(if b { ffi::Py_True() } else { ffi::Py_False() }))
            }
            _ => self.quick(node, depth),
        }
    }

    /// Decode one value of `node`; returns a new reference.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn value(&mut self, node: NodeId, depth: u32) -> DR {
        let t = self.t;
        match &t.nodes[node] {
            Node::Null => Ok(new_ref(ffi::Py_None())),
            Node::Boolean => {
                let b = self.cur.read_bool()?;
                Ok(new_ref(if b { ffi::Py_True() } else { ffi::Py_False() }))
            }
            Node::Int => {
                let v = self.cur.read_int()?;
                self.check(ffi::PyLong_FromLong(v as _))
            }
            Node::Long => {
                let v = self.cur.read_long()?;
                self.check(ffi::PyLong_FromLongLong(v))
            }
            Node::Float => {
                let v = self.cur.read_f32()?;
                self.check(ffi::PyFloat_FromDouble(v as f64))
            }
            Node::Double => {
                let v = self.cur.read_f64()?;
                self.check(ffi::PyFloat_FromDouble(v))
            }
            Node::String => {
                let s = self.cur.read_str()?;
                self.check(ffi::PyUnicode_FromStringAndSize(s.as_ptr().cast(), s.len() as ffi::Py_ssize_t))
            }
            Node::Bytes => {
                let b = self.cur.read_bytes()?;
                self.check(ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t))
            }
            Node::Fixed { size, .. } => {
                let b = self.cur.take(*size, "fixed")?;
                self.check(ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t))
            }
            Node::Enum { py_symbols, .. } => {
                let i = self.cur.read_index(py_symbols.len(), "enum")?;
                Ok(new_ref(py_symbols[i].as_ptr()))
            }
            Node::Timestamp { unit, local } => {
                let at = self.cur.pos;
                let v = self.cur.read_long()?;
                self.timestamp(v, *unit, *local, at)
            }
            Node::Union { branches, .. } => {
                let i = self.cur.read_index(branches.len(), "union")?;
                self.value(branches[i], depth)
            }
            Node::Record { fields, template, .. } => {
                let d = Owned(self.check(ffi::PyDict_Copy(template.as_ptr()))?);
                for f in fields {
                    let v = Owned(self.field(f.node, depth)?);
                    if ffi::PyDict_SetItem(d.0, f.key.as_ptr(), v.0) < 0 {
                        return Err(DErr::Py(PyErr::fetch(self.py)));
                    }
                }
                Ok(d.into_ptr())
            }
            Node::Array { items } => {
                let items = *items;
                let min = t.min_size[items];
                let list = Owned(self.check(ffi::PyList_New(0))?);
                let mut first = true;
                while let Some(b) = self.cur.block(min)? {
                    if first && min > 0 {
                        // The count was checked against the remaining input (min > 0), so
                        // this pre-allocation is bounded by the message size.
                        let l = self.check(ffi::PyList_New(b.count as ffi::Py_ssize_t))?;
                        drop(list);
                        let list2 = Owned(l);
                        for i in 0..b.count {
                            let v = self.quick(items, depth)?;
                            ffi::PyList_SetItem(list2.0, i as ffi::Py_ssize_t, v);
                        }
                        self.cur.end_block(&b)?;
                        return self.array_rest(list2, items, min, depth);
                    }
                    first = false;
                    for _ in 0..b.count {
                        let v = Owned(self.nested(items, depth)?);
                        if ffi::PyList_Append(list.0, v.0) < 0 {
                            return Err(DErr::Py(PyErr::fetch(self.py)));
                        }
                    }
                    self.cur.end_block(&b)?;
                }
                Ok(list.into_ptr())
            }
            Node::Map { values } => {
                let values = *values;
                let min = 1 + t.min_size[values];
                let d = Owned(self.check(ffi::PyDict_New())?);
                while let Some(b) = self.cur.block(min)? {
                    for _ in 0..b.count {
                        let k = self.cur.read_str()?;
                        let k = Owned(self.check(ffi::PyUnicode_FromStringAndSize(
                            k.as_ptr().cast(),
                            k.len() as ffi::Py_ssize_t,
                        ))?);
                        let v = Owned(self.nested(values, depth)?);
                        if ffi::PyDict_SetItem(d.0, k.0, v.0) < 0 {
                            return Err(DErr::Py(PyErr::fetch(self.py)));
                        }
                    }
                    self.cur.end_block(&b)?;
                }
                Ok(d.into_ptr())
            }
        }
    }

    /// Blocks after the first (writers other than fastavro may split arrays).
    unsafe fn array_rest(&mut self, list: Owned, items: NodeId, min: u64, depth: u32) -> DR {
        while let Some(b) = self.cur.block(min)? {
            for _ in 0..b.count {
                let v = Owned(self.nested(items, depth)?);
                if ffi::PyList_Append(list.0, v.0) < 0 {
                    return Err(DErr::Py(PyErr::fetch(self.py)));
                }
            }
            self.cur.end_block(&b)?;
        }
        Ok(list.into_ptr())
    }

    /// fastavro: `epoch + timedelta(microseconds=v)` (x1000 for millis), naive epoch for the
    /// local-timestamp types. Out-of-range values are decode errors (fastavro: OverflowError).
    #[cold]
    fn timestamp(&self, v: i64, unit: TimeUnit, local: bool, at: usize) -> DR {
        let py = self.py;
        let micros: i128 = match unit {
            TimeUnit::Micros => v as i128,
            TimeUnit::Millis => v as i128 * 1000,
        };
        let r = (|| -> PyResult<Bound<'py, PyAny>> {
            let td = self.cache.timedelta.bind(py).call1((0, 0, micros))?;
            let epoch = if local { &self.cache.epoch_naive } else { &self.cache.epoch };
            epoch.bind(py).add(td)
        })();
        match r {
            Ok(o) => Ok(o.into_ptr()),
            Err(_) => derr(format!("timestamp {v} is outside the datetime range"), at).map_err(DErr::Avro),
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn new_ref(p: *mut ffi::PyObject) -> *mut ffi::PyObject {
    ffi::Py_INCREF(p);
    p
}
